"""The sm_100a kernel (device code, traced per compile): `ScaledMmSm100`, its launch (TMA atoms,
the persistent grid) and its warp roles (TMA loads, the 2-CTA tcgen05 MMA, the epilogue warps:
`epilogue.EpilogueMixin`). See the package docstring for the structure."""

from __future__ import annotations

from typing import Optional

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
import cutlass.utils.blackwell_helpers as sm100_utils
from cutlass.cute.nvgpu import OperandMajorMode, cpasync, tcgen05
from cutlass.memory import SmemAllocator, TmemAllocator, get_num_tmem_alloc_cols
from cutlass.pipeline import pipeline_init_arrive, pipeline_init_wait
from cutlass.tensor_utils import LayoutEnum

from fastdispatch.kernels.scaled_mm._compile import TorchLayoutEntries
from fastdispatch.kernels.scaled_mm._schedule import grouped_cluster_tile, load_k_tiles, persistent_grid
from fastdispatch.kernels.scaled_mm.sm100.config import Sm100Config, _epilogue_bytes, _stage_bytes
from fastdispatch.kernels.scaled_mm.sm100.epilogue import EpilogueMixin

Float32, Int32 = cutlass.Float32, cutlass.Int32


class ScaledMmSm100(EpilogueMixin, TorchLayoutEntries):
    """One compiled variant: a resolved `Sm100Config` plus has_bias. Entry points `run` /
    `run_bias` (from `TorchLayoutEntries`, traced by cute.compile), device code in
    `kernel` and `_epilogue`."""

    def __init__(self, cfg: Sm100Config, has_bias: bool):
        self.cfg = cfg
        self.has_bias = has_bias
        self.ab_dtype = cutlass.Float8E4M3FN
        self.acc_dtype = Float32
        self.c_dtype = cutlass.BFloat16
        self.mma_tiler = (cfg.tile_m, cfg.tile_n, cfg.tile_k)
        self.cta_tile = (cfg.cta_tile_m, cfg.tile_n, cfg.tile_k)
        self.epi_tile = (cfg.cta_tile_m, cfg.epi_n)
        self.cluster_shape_mn = (cfg.cluster_m, cfg.cluster_n)
        self.max_clusters = cfg.num_sms // (cfg.cluster_m * cfg.cluster_n)
        self.epilogue_warps = (0, 1, 2, 3)
        self.mma_warp = 4
        self.tma_warp = 5
        self.threads = 32 * 6
        self.epi_sync_bar = 1
        self.tmem_alloc_bar = 2

    def __repr__(self):
        # Goes into the kernel's symbol name (profiles, PTX): stable and descriptive, where
        # the default repr would hold a memory address.
        c = self.cfg
        return (
            f"scaled_mm_sm100_{c.tile_m}x{c.tile_n}x{c.tile_k}_c{c.cluster_m}x{c.cluster_n}"
            f"_s{c.ab_stages}a{c.acc_stages}e{c.epi_n}{'_bias' if self.has_bias else ''}"
        )

    # -- host side (traced once per compile) ------------------------------------------

    def _tiled_mma(self):
        op = tcgen05.MmaF8F6F4Op(
            self.ab_dtype,
            self.ab_dtype,
            self.acc_dtype,
            (self.cfg.tile_m, self.cfg.tile_n, 32),
            tcgen05.CtaGroup.TWO,
            tcgen05.OperandSource.SMEM,
            OperandMajorMode.K,
            OperandMajorMode.K,
        )
        return cute.make_tiled_mma(cute.make_mma_atom(op))

    @cute.jit
    def _launch(self, a, bt, scale_a, scale_b, out, bias, stream):
        cfg = self.cfg
        tiled_mma = self._tiled_mma()
        cluster_layout_vmnk = cute.tiled_divide(
            cute.make_layout((*self.cluster_shape_mn, 1)), (tiled_mma.thr_id.shape,)
        )
        a_smem = sm100_utils.make_smem_layout_a(tiled_mma, self.mma_tiler, self.ab_dtype, cfg.ab_stages)
        b_smem = sm100_utils.make_smem_layout_b(tiled_mma, self.mma_tiler, self.ab_dtype, cfg.ab_stages)
        c_smem = sm100_utils.make_smem_layout_epi(self.c_dtype, LayoutEnum.ROW_MAJOR, self.epi_tile, cfg.c_stages)
        a_smem_one = cute.slice_(a_smem, (None, None, None, 0))
        b_smem_one = cute.slice_(b_smem, (None, None, None, 0))
        a_bytes = cute.size_in_bytes(self.ab_dtype, a_smem_one)
        b_bytes = cute.size_in_bytes(self.ab_dtype, b_smem_one)
        # max_ab_stages() sized the ring in plain Python; hold it to the real layouts.
        assert a_bytes + b_bytes == _stage_bytes(cfg), (a_bytes, b_bytes)
        assert cute.size_in_bytes(self.c_dtype, c_smem) == _epilogue_bytes(cfg)

        # TMA loads: each CTA loads its half of A and of B and signals the leader CTA's
        # barrier (2-CTA atom); with cluster_n > 1, A is also multicast along N.
        a_op = sm100_utils.cluster_shape_to_tma_atom_A(self.cluster_shape_mn, tiled_mma.thr_id)
        b_op = sm100_utils.cluster_shape_to_tma_atom_B(self.cluster_shape_mn, tiled_mma.thr_id)
        tma_atom_a, tma_a = cute.nvgpu.make_tiled_tma_atom_A(
            a_op, a, a_smem_one, self.mma_tiler, tiled_mma, cluster_layout_vmnk.shape
        )
        tma_atom_b, tma_b = cute.nvgpu.make_tiled_tma_atom_B(
            b_op, bt, b_smem_one, self.mma_tiler, tiled_mma, cluster_layout_vmnk.shape
        )
        tma_atom_c, tma_c = cpasync.make_tiled_tma_atom(
            cpasync.CopyBulkTensorTileS2GOp(), out, cute.select(c_smem, mode=[0, 1]), self.epi_tile
        )
        tx_bytes = (a_bytes + b_bytes) * cute.size(tiled_mma.thr_id.shape)

        m, n = out.shape
        pair_m = cfg.tile_m * (cfg.cluster_m // 2)   # rows of one cluster tile (a CTA pair's MMA)
        tiles_m, tiles_n, num_clusters = persistent_grid(m, n, pair_m, cfg.tile_n * cfg.cluster_n, self.max_clusters)

        self.kernel(
            tiled_mma, tma_atom_a, tma_a, tma_atom_b, tma_b, tma_atom_c, tma_c,
            scale_a, scale_b, bias, cluster_layout_vmnk, a_smem, b_smem, c_smem,
            tiles_m, tiles_n, tx_bytes,
        ).launch(
            grid=(cfg.cluster_m, cfg.cluster_n, num_clusters),
            block=[self.threads, 1, 1],
            cluster=(cfg.cluster_m, cfg.cluster_n, 1),
            stream=stream,
        )

    # -- device side ------------------------------------------------------------------

    @cute.jit
    def _tile_coords(self, tile, tiles_m, tiles_n, vmnk):
        """Linear cluster-tile index -> this CTA's MMA-tile (m, n), in L2 groups of
        `group_m` cluster rows walked column by column (all roles agree on it)."""
        cm, cn = grouped_cluster_tile(tile, tiles_m, tiles_n, self.cfg.group_m)
        return cm * (self.cfg.cluster_m // 2) + vmnk[1], cn * self.cfg.cluster_n + vmnk[2]

    @cute.kernel
    def kernel(
        self,
        tiled_mma: cute.TiledMma,
        tma_atom_a: cute.CopyAtom,
        mA: cute.Tensor,
        tma_atom_b: cute.CopyAtom,
        mB: cute.Tensor,
        tma_atom_c: cute.CopyAtom,
        mC: cute.Tensor,
        mSA: cute.Tensor,
        mSB: cute.Tensor,
        mBias: Optional[cute.Tensor],
        cluster_layout_vmnk: cute.Layout,
        a_smem: cute.ComposedLayout,
        b_smem: cute.ComposedLayout,
        c_smem: cute.ComposedLayout,
        tiles_m: Int32,
        tiles_n: Int32,
        tx_bytes: cutlass.Constexpr,
    ):
        cfg = self.cfg
        warp_idx = cute.arch.make_warp_uniform(cute.arch.warp_idx())
        tidx, _, _ = cute.arch.thread_idx()
        # Hoisted once: CTA rank, its place in the cluster, the persistent walk.
        cta_rank = cute.arch.make_warp_uniform(cute.arch.block_idx_in_cluster())
        vmnk = cluster_layout_vmnk.get_flat_coord(cta_rank)
        is_leader_cta = vmnk[0] == 0
        _, _, cluster_id = cute.arch.block_idx()
        _, _, num_clusters = cute.arch.grid_dim()
        num_tiles = tiles_m * tiles_n

        if warp_idx == self.tma_warp:
            cpasync.prefetch_descriptor(tma_atom_a)
            cpasync.prefetch_descriptor(tma_atom_b)
            cpasync.prefetch_descriptor(tma_atom_c)

        @cute.struct
        class SharedStorage:
            ab_mbar: cute.struct.MemRange[cutlass.Int64, cfg.ab_stages * 2]
            acc_mbar: cute.struct.MemRange[cutlass.Int64, cfg.acc_stages * 2]
            tmem_dealloc_mbar: cutlass.Int64
            tmem_holding_buf: Int32

        smem = SmemAllocator()
        storage = smem.allocate(SharedStorage)

        # A/B ring: TMA (both CTAs, and multicast peers) -> MMA of the leader CTA. A stage of
        # this CTA is free once every MMA reading it has committed: the pairs sharing its A
        # (along N) and its B (along M) -- one empty-barrier arrival from each.
        vm, vn = cute.size(cluster_layout_vmnk.shape[1]), cute.size(cluster_layout_vmnk.shape[2])
        num_tma_producers = vm + vn - 1
        ab_pipe = pipeline.PipelineTmaUmma.create(
            barrier_storage=storage.ab_mbar.data_ptr(),
            num_stages=cfg.ab_stages,
            producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread),
            consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, num_tma_producers),
            tx_count=tx_bytes,
            cta_layout_vmnk=cluster_layout_vmnk,
            defer_sync=True,
        )
        # Accumulators: MMA -> the epilogue warps of both CTAs of the pair.
        acc_pipe = pipeline.PipelineUmmaAsync.create(
            barrier_storage=storage.acc_mbar.data_ptr(),
            num_stages=cfg.acc_stages,
            producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread),
            consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, len(self.epilogue_warps) * 2),
            cta_layout_vmnk=cluster_layout_vmnk,
            defer_sync=True,
        )
        tmem = TmemAllocator(
            storage.tmem_holding_buf.ptr,
            barrier_for_retrieve=pipeline.NamedBarrier(
                barrier_id=self.tmem_alloc_bar, num_threads=32 * (1 + len(self.epilogue_warps))
            ),
            allocator_warp_id=self.epilogue_warps[0],
            is_two_cta=True,
            two_cta_tmem_dealloc_mbar_ptr=storage.tmem_dealloc_mbar.ptr,
        )
        pipeline_init_arrive(cluster_shape_mn=cluster_layout_vmnk, is_relaxed=True)

        sA = smem.allocate_tensor(self.ab_dtype, a_smem.outer, byte_alignment=128, swizzle=a_smem.inner)
        sB = smem.allocate_tensor(self.ab_dtype, b_smem.outer, byte_alignment=128, swizzle=b_smem.inner)
        sC = smem.allocate_tensor(self.c_dtype, c_smem.outer, byte_alignment=128, swizzle=c_smem.inner)

        # Global tiles, partitioned for this CTA's half of the MMA.
        gA = cute.local_tile(mA, cute.slice_(self.mma_tiler, (None, 0, None)), (None, None))
        gB = cute.local_tile(mB, cute.slice_(self.mma_tiler, (0, None, None)), (None, None))
        gC = cute.local_tile(mC, cute.slice_(self.mma_tiler, (None, None, 0)), (None, None))
        cC = cute.local_tile(
            cute.make_identity_tensor(mC.shape), cute.slice_(self.mma_tiler, (None, None, 0)), (None, None)
        )
        k_tiles = cute.size(gA, mode=[3])
        thr_mma = tiled_mma.get_slice(vmnk[0])
        tCgA = thr_mma.partition_A(gA)  # (MMA, MMA_M, MMA_K, RestM, RestK)
        tCgB = thr_mma.partition_B(gB)  # (MMA, MMA_N, MMA_K, RestN, RestK)
        tCgC = thr_mma.partition_C(gC)  # (MMA, MMA_M, MMA_N, RestM, RestN)
        tCcC = thr_mma.partition_C(cC)

        tAsA, tAgA = cpasync.tma_partition(
            tma_atom_a,
            vmnk[2],
            cute.make_layout(cute.slice_(cluster_layout_vmnk, (0, 0, None, 0)).shape),
            cute.group_modes(sA, 0, 3),
            cute.group_modes(tCgA, 0, 3),
        )
        tBsB, tBgB = cpasync.tma_partition(
            tma_atom_b,
            vmnk[1],
            cute.make_layout(cute.slice_(cluster_layout_vmnk, (0, None, 0, 0)).shape),
            cute.group_modes(sB, 0, 3),
            cute.group_modes(tCgB, 0, 3),
        )
        a_mcast = cpasync.create_tma_multicast_mask(cluster_layout_vmnk, vmnk, mcast_mode=2)
        b_mcast = cpasync.create_tma_multicast_mask(cluster_layout_vmnk, vmnk, mcast_mode=1)

        tCrA = tiled_mma.make_fragment_A(sA)
        tCrB = tiled_mma.make_fragment_B(sB)
        acc_shape = tiled_mma.partition_shape_C(self.mma_tiler[:2])
        tCtAcc_fake = tiled_mma.make_fragment_C(cute.append(acc_shape, cfg.acc_stages))

        pipeline_init_wait(cluster_shape_mn=cluster_layout_vmnk)

        # ---------------- TMA warp: one rolled K-loop per tile --------------------------
        if warp_idx == self.tma_warp:
            ab_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, cfg.ab_stages)
            tile = cluster_id
            while tile < num_tiles:
                mma_m, mma_n = self._tile_coords(tile, tiles_m, tiles_n, vmnk)
                tAgA_t = tAgA[(None, mma_m, None)]
                tBgB_t = tBgB[(None, mma_n, None)]
                ab_state = load_k_tiles(ab_pipe, ab_state, 0, k_tiles, tma_atom_a, tAgA_t, tAsA, a_mcast,
                                        tma_atom_b, tBgB_t, tBsB, b_mcast)
                tile += num_clusters
            ab_pipe.producer_tail(ab_state)

        # ---------------- MMA warp (leader CTA issues for the pair) ---------------------
        if warp_idx == self.mma_warp:
            tmem.wait_for_alloc()
            tCtAcc_base = cute.make_tensor(tmem.retrieve_ptr(self.acc_dtype), tCtAcc_fake.layout)
            if is_leader_cta:
                ab_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, cfg.ab_stages)
                acc_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, cfg.acc_stages)
                num_kblocks = cute.size(tCrA, mode=[2])
                tile = cluster_id
                while tile < num_tiles:
                    acc_pipe.producer_acquire(acc_state)
                    tCtAcc = tCtAcc_base[(None, None, None, acc_state.index)]
                    tiled_mma.set(tcgen05.Field.ACCUMULATE, False)
                    for k in cutlass.range(k_tiles, unroll=1):
                        ab_pipe.consumer_wait(ab_state)
                        for kb in cutlass.range_constexpr(num_kblocks):
                            crd = (None, None, kb, ab_state.index)
                            cute.gemm(tiled_mma, tCtAcc, tCrA[crd], tCrB[crd], tCtAcc)
                            tiled_mma.set(tcgen05.Field.ACCUMULATE, True)
                        # tcgen05.commit: the stage is free once these MMAs have read it.
                        ab_pipe.consumer_release(ab_state)
                        ab_state.advance()
                    acc_pipe.producer_commit(acc_state)
                    acc_state.advance()
                    tile += num_clusters
                acc_pipe.producer_tail(acc_state)

        # ---------------- epilogue warps ------------------------------------------------
        if warp_idx < self.mma_warp:
            tmem.allocate(get_num_tmem_alloc_cols(tCtAcc_fake, arch="sm_100"))
            tmem.wait_for_alloc()
            tmem_ptr = tmem.retrieve_ptr(self.acc_dtype)
            tCtAcc_base = cute.make_tensor(tmem_ptr, tCtAcc_fake.layout)
            self._epilogue(
                tidx, warp_idx, tiled_mma, tCtAcc_base, tCgC, tCcC, sC, tma_atom_c, mSA, mSB, mBias,
                acc_pipe, cluster_id, num_clusters, num_tiles, tiles_m, tiles_n, vmnk,
            )
            tmem.relinquish_alloc_permit()
            tmem.free(tmem_ptr)

