"""The sm_90a kernel object (per compile): `ScaledMmSm90`, one resolved `Sm90Config` plus
has_bias. Host side (traced once per compile by cute.compile through `TorchLayoutEntries`):
`launch.LaunchMixin._launch` (the WGMMA, SMEM layouts, TMA atoms, the persistent grid). Device
code: the `kernel` function (producer and consumer roles, barriers, SMEM carve-up, the persistent tile
walk); its K loops come from `mainloop.MainloopMixin`, its epilogues from
`epilogue.EpilogueMixin` (``@cute.jit`` methods traced through ``self``, inlined into
`kernel`). The class's ``__repr__`` is the kernel's symbol name.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
from cutlass.cute.nvgpu import cpasync
from cutlass.pipeline import pipeline_init_arrive, pipeline_init_wait
from cutlass.utils import SmemAllocator

from fastdispatch.kernels.scaled_mm._compile import TorchLayoutEntries
from fastdispatch.kernels.scaled_mm._schedule import grouped_cluster_tile
from fastdispatch.kernels.scaled_mm.sm90 import block_scales
from fastdispatch.kernels.scaled_mm.sm90.config import OPERAND_DTYPES, OUT_DTYPES, Sm90Config
from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_ring_slots, scale_slot_rows
from fastdispatch.kernels.scaled_mm.sm90.epilogue import EpilogueMixin
from fastdispatch.kernels.scaled_mm.sm90.launch import LaunchMixin
from fastdispatch.kernels.scaled_mm.sm90.mainloop import MainloopMixin
from fastdispatch.kernels.scaled_mm.sm90.pingpong import PingpongMixin
from fastdispatch.kernels.scaled_mm.sm90.producer import ProducerMixin
from fastdispatch.kernels.scaled_mm.sm90.row_blocks import RowBlocksMixin
from fastdispatch.kernels.scaled_mm.sm90.smem_scales import SmemValues, slot_layout
from fastdispatch.kernels.scaled_mm.sm90.split_k import SplitKMixin

Float32, Int32 = cutlass.Float32, cutlass.Int32


class ScaledMmSm90(LaunchMixin, ProducerMixin, MainloopMixin, RowBlocksMixin, SplitKMixin, PingpongMixin,
                   EpilogueMixin, TorchLayoutEntries):
    """One compiled variant: a resolved `Sm90Config` plus has_bias. Entry points `run` /
    `run_bias` (from `TorchLayoutEntries`, traced by cute.compile), the host side
    (`LaunchMixin`), device code in `kernel`, the producer warps (`ProducerMixin`), the K loops (`MainloopMixin`,
    `RowBlocksMixin`) and the epilogues (`EpilogueMixin`)."""

    def __init__(self, cfg: Sm90Config, has_bias: bool):
        self.cfg = cfg
        self.has_bias = has_bias
        # The MMA's first operand is A, or Bt with swap_ab (out^T = Bt @ A^T): its element
        # type names the WGMMA kind (e5m2 x e4m3 is not e4m3 x e5m2).
        a_type = getattr(cutlass, OPERAND_DTYPES[cfg.a_dtype])
        b_type = getattr(cutlass, OPERAND_DTYPES[cfg.b_dtype])
        self.a_dtype, self.b_dtype = (b_type, a_type) if cfg.swap_ab else (a_type, b_type)
        self.acc_dtype = Float32
        self.c_dtype = getattr(cutlass, OUT_DTYPES[cfg.out_dtype])
        # Block scales are applied per k-tile in the K loop; the epilogue then adds only the bias.
        self.blockwise = cfg.scales != "rowwise"
        self.tiler = (cfg.tile_m, cfg.tile_n, cfg.tile_k)
        self.epi_tile = (cfg.tile_m, cfg.epi_n)
        self.cluster_mn = (cfg.cluster_m, cfg.cluster_n)
        # The launch cluster: the multicast cluster, or split_k CTAs along K (never both).
        self.launch_cluster = (cfg.cluster_m * cfg.split_k, cfg.cluster_n)
        self.max_clusters = cfg.num_sms // (self.launch_cluster[0] * self.launch_cluster[1])
        self.consumer_threads = 128 * cfg.consumer_wgs
        # The consumer threads of one tile (they read each of its stages, store it together).
        self.tile_threads = 128 if cfg.pingpong else self.consumer_threads
        self.threads = 128 + self.consumer_threads
        # setmaxnreg budgets (65536 registers per SM): the producer warpgroup keeps 40, the
        # consumers take the rest (232 with two consumer warpgroups: 40*128 + 232*256 <= 64K).
        self.producer_regs = 40
        self.consumer_regs = 232 if cfg.consumer_wgs == 2 else 240
        self.epi_bar_id = 1       # (``pingpong``: 1 + the consumer warpgroup's index)
        self.stagger_bar_id = 2   # ``stagger_wgs`` (never with ``pingpong``)
        # Swap-AB tiles with one consumer warpgroup hold few scales per thread (240 registers
        # to spare): their loads are issued before the K loop, so the HBM latency hides under
        # it instead of following it. With two warpgroups (168 registers per thread until
        # setmaxnreg) they would spill: loaded after the K loop, as for the large tiles.
        # ``scales_before_loop`` asks for the same elsewhere (a trial knob).
        self.early_scales = cfg.swap_ab and cfg.consumer_wgs == 1 or cfg.scales_before_loop

    def __repr__(self):
        # Goes into the kernel's symbol name (profiles, PTX): stable and descriptive.
        c = self.cfg
        return (
            f"scaled_mm_sm90_{c.tile_m}x{c.tile_n}x{c.tile_k}_w{c.consumer_wgs}_c{c.cluster_m}x{c.cluster_n}"
            f"_s{c.stages}p{c.promote}{'_swap' if c.swap_ab else ''}{'_pdl' if c.pdl else ''}{f'_ovl{c.overlap_promotion}' if c.overlap_promotion else ''}"
            f"{f'_splitk{c.split_k}' if c.split_k > 1 else ''}{f'_rows{c.row_blocks}' if c.row_blocks > 1 else ''}"
            f"{'_late' if c.late_scale_loads else ''}{'_aleader' if c.a_from_leader else ''}"
            f"{'_stagger' if c.stagger_wgs else ''}"
            f"{'_sfatma' if c.scale_a_tma else ''}"
            f"{'_static' if c.static_stages else ''}{'_early' if c.early_wait else ''}{'_pingpong' if c.pingpong else ''}"
            f"{'_sbl' if c.scales_before_loop else ''}"
            f"{'_bias' if self.has_bias else ''}"
            f"{'' if c.scales == 'rowwise' else '_' + c.scales}"
            f"{'' if (c.a_dtype, c.b_dtype, c.out_dtype) == ('e4m3', 'e4m3', 'bf16') else f'_{c.a_dtype}x{c.b_dtype}_{c.out_dtype}'}"
        )

    # -- device side ------------------------------------------------------------------

    @cute.jit
    def _tile_coords(self, tile, tiles_m, tiles_n, cluster_coord):
        """Linear cluster-tile index -> this CTA's tile (m, n): L2 groups of `group_m` cluster
        rows, walked column by column inside a group (every role computes the same)."""
        cm, cn = grouped_cluster_tile(tile, tiles_m, tiles_n, self.cfg.group_m)
        return cm * self.cfg.cluster_m + cluster_coord[0], cn * self.cfg.cluster_n + cluster_coord[1]

    @cute.kernel
    def kernel(
        self,
        tiled_mma: cute.TiledMma,
        tma_atom_a: cute.CopyAtom,
        mA: cute.Tensor,
        tma_atom_b: cute.CopyAtom,
        mB: cute.Tensor,
        tma_atom_c: Optional[cute.CopyAtom],
        mC: cute.Tensor,
        mRowScale: cute.Tensor,
        mColScale: cute.Tensor,
        mBias: Optional[cute.Tensor],
        cta_layout_mnk: cute.Layout,
        a_smem: cute.ComposedLayout,
        b_smem: cute.ComposedLayout,
        c_smem: Optional[cute.ComposedLayout],
        tiles_m: Int32,
        tiles_n: Int32,
        tx_bytes: cutlass.Constexpr,
        tma_atom_s: Optional[cute.CopyAtom],
        mRowScaleTma: Optional[cute.Tensor],
    ):
        cfg = self.cfg
        tidx, _, _ = cute.arch.thread_idx()
        warp_idx = cute.arch.make_warp_uniform(cute.arch.warp_idx())
        wg_idx = cute.arch.make_warp_uniform(tidx // 128)
        # Hoisted once: this CTA's place in its cluster and the persistent walk. A split_k
        # cluster's CTAs all work on the same tile: their rank is their part of K.
        cta_rank = cute.arch.make_warp_uniform(cute.arch.block_idx_in_cluster())
        k_rank = Int32(0)
        if cutlass.const_expr(cfg.split_k > 1):
            k_rank = cta_rank
            cluster_coord = cta_layout_mnk.get_flat_coord(0)
        else:
            cluster_coord = cta_layout_mnk.get_flat_coord(cta_rank)
        _, _, cluster_id = cute.arch.block_idx()
        _, _, num_clusters = cute.arch.grid_dim()
        num_tiles = tiles_m * tiles_n

        if warp_idx == 0:
            cpasync.prefetch_descriptor(tma_atom_a)
            cpasync.prefetch_descriptor(tma_atom_b)
            if cutlass.const_expr(not cfg.swap_ab):
                cpasync.prefetch_descriptor(tma_atom_c)
            if cutlass.const_expr(cfg.scale_a_tma):
                cpasync.prefetch_descriptor(tma_atom_s)

        @cute.struct
        class SharedStorage:
            ab_mbar: cute.struct.MemRange[cutlass.Int64, cfg.stages * 2]
            red_mbar: cute.struct.MemRange[cutlass.Int64, 2]  # partials full / slots empty
            # smem_scales' ring (one unused word otherwise, inside the first 1 KB: the
            # 1024-aligned tiles after it keep their offsets)
            scale_mbar: cute.struct.MemRange[cutlass.Int64, 2 * scale_ring_slots(cfg, cfg.stages) if cfg.smem_scales else 1]

        smem = SmemAllocator()
        storage = smem.allocate(SharedStorage)
        # A stage is free once every consumer warp of every CTA that reads it (this CTA and
        # the multicast peers that received the same tiles) has arrived on its empty barrier
        # (``pingpong``: one warpgroup reads it).
        ab_pipe = pipeline.PipelineTmaAsync.create(
            barrier_storage=storage.ab_mbar.data_ptr(),
            num_stages=cfg.stages,
            producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread),
            consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.tile_threads),
            tx_count=tx_bytes,
            cta_layout_vmnk=cute.make_layout((1, *cta_layout_mnk.shape)),
            enable_multicast_signaling=True,
            defer_sync=True,
        )
        if cutlass.const_expr(cfg.split_k > 1):
            # No multicast: lane 0 of each consumer warp frees the stage in its own CTA (the
            # helper would derive the signalling lanes from the launch cluster's rank).
            ab_pipe = dataclasses.replace(ab_pipe, is_signaling_thread=tidx % 32 == 0)
        # smem_scales: a slot of the scale ring is full once every lane of the loader warp saw
        # its copies land (one cp.async arrival each; scale_a_tma: the TMA copies' bytes after
        # one expect-tx arrival, and lane 0's cp.async arrival for the block values), free once
        # every consumer thread has arrived after the promotion that used its values.
        scale_pipe = None
        if cutlass.const_expr(cfg.smem_scales):
            scale_pipe = pipeline.PipelineCpAsync.create(
                barrier_storage=storage.scale_mbar.data_ptr(),
                num_stages=scale_ring_slots(cfg, cfg.stages),
                producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, 2 if cfg.scale_a_tma else 32),
                consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.consumer_threads),
                defer_sync=True,
            )
        red_full = storage.red_mbar.data_ptr()
        red_empty = red_full + 1
        if cutlass.const_expr(cfg.split_k > 1):
            if tidx == 0:
                # full (used in rank 0): rank 0's expect-tx arrival, then the partials' bytes
                # (st.async); empty (in the other ranks): each rank-0 consumer thread arrives
                # once it has read them.
                cute.arch.mbarrier_init(red_full, 1)
                cute.arch.mbarrier_init(red_empty, self.consumer_threads)
        pipeline_init_arrive(cluster_shape_mn=self.launch_cluster, is_relaxed=True)

        sA = smem.allocate_tensor(self.a_dtype, a_smem.outer, byte_alignment=1024, swizzle=a_smem.inner)
        # The CTA tile's further A row blocks (``row_blocks``), each a ring of its own.
        sA_more = [smem.allocate_tensor(self.a_dtype, a_smem.outer, byte_alignment=1024, swizzle=a_smem.inner)
                   for _ in range(cfg.row_blocks - 1)]
        sB = smem.allocate_tensor(self.b_dtype, b_smem.outer, byte_alignment=1024, swizzle=b_smem.inner)
        sS = None
        scale_tma = None
        if cutlass.const_expr(cfg.smem_scales):
            # (TMA destinations are 128-byte aligned.)
            sS = smem.allocate_tensor(Float32, slot_layout(cfg), byte_alignment=128 if cfg.scale_a_tma else 16)
        if cutlass.const_expr(cfg.scale_a_tma):
            # Box (rows, 1) of A's scales -> the rows of scale block h of slot i (index h + blocks * i).
            rows = scale_slot_rows(cfg)
            sS_rows = cute.make_tensor(sS.iterator, cute.make_layout(
                (rows, 1, cfg.tile_k // 128 * scale_ring_slots(cfg, cfg.stages)), stride=(1, rows, rows)))
            gS = cute.local_tile(mRowScaleTma, (rows, 1), (None, None))   # (rows, 1, RestM, RestKB)
            tSsS, tSgS = cpasync.tma_partition(tma_atom_s, 0, cute.make_layout(1), cute.group_modes(sS_rows, 0, 2),
                                               cute.group_modes(gS, 0, 2))
            scale_tma = (tma_atom_s, tSgS, tSsS)
        sRed = None
        if cutlass.const_expr(cfg.split_k > 1):
            # Partial slots, fp32 in accumulator-fragment order: (4 values, thread, vector,
            # slot), so each thread moves 16 B at a time and a warp 512 contiguous bytes.
            threads = self.consumer_threads
            vecs = cfg.tile_m * cfg.tile_n // threads // 4
            red_layout = cute.make_layout((4, threads, vecs, cfg.split_k - 1),
                                          stride=(1, 4, 4 * threads, 4 * threads * vecs))
            sRed = smem.allocate_tensor(Float32, red_layout, byte_alignment=16)

        gA = cute.local_tile(mA, (cfg.tile_m, cfg.tile_k), (None, None))  # (TM, TK, RestM, RestK)
        gB = cute.local_tile(mB, (cfg.tile_n, cfg.tile_k), (None, None))
        k_tiles = cute.size(gA, mode=[3])
        # This CTA's contiguous part of every tile's K loop.
        k_begin = Int32(0)
        k_count = k_tiles
        if cutlass.const_expr(cfg.split_k > 1):
            per_cta = (k_tiles + cfg.split_k - 1) // cfg.split_k
            k_begin = k_rank * per_cta
            k_count = cutlass.max(cutlass.min(per_cta, k_tiles - k_begin), 0)
        a_peers = cute.make_layout(cute.slice_(cta_layout_mnk, (0, None, 0)).shape)
        a_slice = cluster_coord[1]
        if cutlass.const_expr(cfg.a_from_leader):   # one CTA loads the whole tile
            a_peers, a_slice = cute.make_layout(1), 0
        tAsA, tAgA = cpasync.tma_partition(tma_atom_a, a_slice, a_peers, cute.group_modes(sA, 0, 2),
                                           cute.group_modes(gA, 0, 2))
        tAsA_more = [cpasync.tma_partition(tma_atom_a, a_slice, a_peers, cute.group_modes(s_more, 0, 2),
                                           cute.group_modes(gA, 0, 2))[0] for s_more in sA_more]
        tBsB, tBgB = cpasync.tma_partition(
            tma_atom_b,
            cluster_coord[0],
            cute.make_layout(cute.slice_(cta_layout_mnk, (None, 0, 0)).shape),
            cute.group_modes(sB, 0, 2),
            cute.group_modes(gB, 0, 2),
        )

        pipeline_init_wait(cluster_shape_mn=self.launch_cluster)
        if cutlass.const_expr(cfg.pdl):
            # Everything above touched only SMEM and the kernel parameters; from here on the
            # previous kernel's results must be visible.
            cute.arch.griddepcontrol_wait()
            cute.arch.griddepcontrol_launch_dependents()

        # ------ producer warpgroup: warp 0 issues every TMA load, warp 1 copies SMEM scales ------
        if wg_idx == 0:
            cute.arch.setmaxregister_decrease(self.producer_regs)
            if warp_idx == 0:
                self._tma_producer(ab_pipe, cta_layout_mnk, cluster_coord, cluster_id, num_clusters, num_tiles, tiles_m,
                                   tiles_n, k_begin, k_count, tma_atom_a, tAgA, (tAsA, *tAsA_more), tma_atom_b, tBgB, tBsB)
            if cutlass.const_expr(cfg.smem_scales):
                if warp_idx == 1:
                    self._scale_loader(scale_pipe, sS, mRowScale, mColScale, tiles_m, tiles_n, num_tiles,
                                       cluster_id, num_clusters, cluster_coord, k_begin, k_count, tidx % 32,
                                       scale_tma)

        # ---------------- consumer warpgroups: WGMMA + epilogue --------------------------
        if wg_idx > 0:
            cute.arch.setmaxregister_increase(self.consumer_regs)
            # This thread's place among its tile's consumers, and its warpgroup's first thread's.
            ctidx = tidx - 128
            wg_first = (wg_idx - 1) * 128
            if cutlass.const_expr(cfg.pingpong):   # (a warpgroup per tile)
                ctidx, wg_first = ctidx % 128, 0
            # A/B descriptors are per warpgroup (slice at its first thread); the accumulator
            # coordinates are per thread (slice at this thread).
            thr_mma = tiled_mma.get_slice(wg_first)
            tCrA = tiled_mma.make_fragment_A(thr_mma.partition_A(sA))
            tCrB = tiled_mma.make_fragment_B(thr_mma.partition_B(sB))
            tCcC = tiled_mma.get_slice(ctidx).partition_C(cute.make_identity_tensor((cfg.tile_m, cfg.tile_n)))
            acc = cute.make_rmem_tensor(tCcC.shape, self.acc_dtype)
            # Block scales: the scale values of the next `lookahead` k-tiles, one register
            # tensor per 128-deep scale block in flight (block s's in rings[s % lookahead]).
            rings = None
            if cutlass.const_expr(self.blockwise and not cfg.smem_scales):
                rings = tuple(cute.make_rmem_tensor((block_scales.raw_count(cfg),), Float32)
                              for _ in range(block_scales.lookahead(cfg)))
            acc_tmp = None
            acc_tmp2 = None
            if cutlass.const_expr(cfg.promote > 0):
                acc_tmp = cute.make_rmem_tensor(tCcC.shape, self.acc_dtype)
            if cutlass.const_expr(cfg.overlap_promotion or (self.blockwise and cfg.tile_k == 256)):
                acc_tmp2 = cute.make_rmem_tensor(tCcC.shape, self.acc_dtype)

            epi = None
            if cutlass.const_expr(not cfg.swap_ab):
                epi = self._tma_epilogue_setup(ctidx, tiled_mma, acc, tma_atom_c, mC, c_smem, smem)
            # ``row_blocks``: each further A row block's fragments, accumulator and scale look-ahead.
            row_state = None
            if cutlass.const_expr(cfg.row_blocks > 1):
                row_state = self._row_blocks_setup(tiled_mma, thr_mma, sA_more, tCcC, tCrA, acc, rings, sS, scale_pipe)

            consumed = Int32(0)  # ring position of this CTA's next tile
            n_done = Int32(0)
            tile = cluster_id
            # ``pingpong``: this warpgroup's tiles are every other one of the CTA's, from the
            # first or the second; the other's k-tiles lie between them in the ring.
            walkers = 1
            if cutlass.const_expr(cfg.pingpong):
                walkers = cfg.consumer_wgs
                tile, consumed = self._pingpong_start(wg_idx - 1, cluster_id, num_clusters, k_count)
            while tile < num_tiles:
                tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
                if cutlass.const_expr(cfg.row_blocks > 1):
                    self._row_blocks_tile(ab_pipe, row_state, acc_tmp, tCrB, tCcC, tm, tn, consumed, k_count, k_begin,
                                          mRowScale, mColScale, mBias, epi, n_done, warp_idx)
                    consumed += k_count
                else:
                    early = None
                    if cutlass.const_expr(self.early_scales):
                        early = self._load_scales(tCcC, tm, tn, mRowScale, mColScale, mBias)
                    # (The MMA's accumulate flag is state: rebinding carries it through the loop.)
                    # Block scales: what the K loop needs to load each k-tile's factors.
                    blocks = None
                    if cutlass.const_expr(cfg.smem_scales):
                        blocks = (SmemValues(cfg, sS, scale_pipe, tCcC, 0).at_tile(tn), None)
                    elif cutlass.const_expr(self.blockwise):
                        # (k_begin counts k-tiles; the scales count 128-deep blocks.)
                        ctx = block_scales.tile_context(cfg, tCcC, tm, tn, k_begin * (cfg.tile_k // 128), mRowScale,
                                                        mColScale)
                        for d in cutlass.range_constexpr(len(rings)):   # the first k-tiles'; the loops load ahead
                            block_scales.load_raw(cfg, ctx, d, rings[d])
                        blocks = (ctx, rings)
                    if cutlass.const_expr(cfg.pingpong):
                        self._pingpong_turn(wg_idx - 1, n_done)
                    if cutlass.const_expr(cfg.overlap_promotion):
                        self._mainloop_overlapped(ab_pipe, acc, acc_tmp, acc_tmp2, tCrA, tCrB, consumed, k_count,
                                                  blocks)
                    elif cutlass.const_expr(self.blockwise):
                        self._mainloop_blocks(ab_pipe, acc, acc_tmp, acc_tmp2, tCrA, tCrB, consumed, k_count, blocks,
                                              n_done)
                    else:
                        tiled_mma = self._mainloop(ab_pipe, tiled_mma, acc, acc_tmp, tCrA, tCrB, consumed, k_count)
                    if cutlass.const_expr(cfg.pingpong):
                        self._pingpong_pass(wg_idx - 1, tile + num_clusters, num_tiles)
                    consumed += k_count * walkers
                    if cutlass.const_expr(cfg.split_k > 1):
                        self._reduce_partials(acc, sRed, red_full, red_empty, k_rank, ctidx, n_done)
                    # The CTA of rank 0 holds the sum (split_k) and stores it.
                    if k_rank == 0:
                        if cutlass.const_expr(self.early_scales):
                            self._scale(acc, early)
                        else:
                            self._scale(acc, self._load_scales(tCcC, tm, tn, mRowScale, mColScale, mBias))
                        if cutlass.const_expr(cfg.swap_ab):
                            self._store_epilogue(acc, tCcC, tm, tn, mC)
                        else:
                            self._tma_epilogue(epi, acc, tm, tn, n_done, warp_idx)
                n_done += 1
                tile += num_clusters * walkers
            if cutlass.const_expr(not cfg.swap_ab):
                epi[-1].producer_tail()
            if cutlass.const_expr(cfg.split_k > 1):
                if k_rank != 0:
                    # The leader's last arrival on this CTA's barrier must land before exit.
                    cute.arch.mbarrier_wait(red_empty, (n_done + 1) % 2)
