"""Blackwell (sm_100a, tcgen05) fp8 e4m3 GEMM with rowwise scales, in CuTe DSL (per key).

    out[m, n] = bf16((A[m, :] @ Bt[n, :]) * scale_a[m] * scale_b[n] (+ bias[n]))

The binary takes torch._scaled_mm's layouts (A e4m3 [M, K] row-major, B e4m3 [K, N]
column-major, scales fp32 [M, 1] and [1, N], optional bias bf16 [N], out bf16 [M, N]) and views
B as Bt [N, K] row-major (K-major) and the scales as vectors (`_compile.TorchLayoutEntries`); fp32
accumulation in tensor memory, both scales (and the bias) applied in fp32 before the one bf16
rounding.

Structure (one CTA pair = one 2-CTA MMA tile of tile_m x tile_n):
- persistent: one cluster per `num_sms / cluster_size` slots, walking output tiles with our
  own static, L2-grouped tile order (`_tile_coords`), identical in every role;
- role-local warp specialization: warps 0-3 epilogue (one TMEM lane quarter each), warp 4
  MMA (leader CTA of the pair issues `tcgen05.mma.cta_group::2`), warp 5 TMA loads;
- A/B ring of `ab_stages` SMEM stages (as many as the SMEM budget allows: 8 at
  256x128x128) filled by one rolled producer K-loop whose blocking acquire is the only
  wait (no unrolled prologue, no per-iteration "peek" predicates);
- `acc_stages` (2) fp32 accumulators in TMEM so the epilogue of tile i overlaps the
  mainloop of tile i+1;
- epilogue per (cta_m x epi_n) subtile: scale_b (and bias) for those columns read right
  then (clamped 128-bit loads, no predicates), tcgen05.ld, multiply by scale_a (one
  register per tile: the 32x32b TMEM load gives each thread one row) and scale_b in fp32,
  bf16 to SMEM, TMA store (OOB rows/columns are clipped by TMA: partial tiles need no masks).

Requirements on the arguments (the dispatcher checks them, the binary assumes them):
16-byte aligned data pointers, contiguous row-major tensors, K % 16 == 0, N % 8 == 0,
M, N, K >= 1. `compile_sm100` builds one binary for all M/N/K; it is compiled for sm_100a
without a GPU (`ptx_sm100`) and was never run here: "compiled, not run".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
import cutlass.utils.blackwell_helpers as sm100_utils
from cutlass.cute.nvgpu import OperandMajorMode, cpasync, tcgen05
from cutlass.memory import SmemAllocator, TmemAllocator, get_num_tmem_alloc_cols
from cutlass.pipeline import pipeline_init_arrive, pipeline_init_wait
from cutlass.tensor_utils import LayoutEnum

__all__ = [
    "Sm100Config",
    "compile_sm100",
    "default_config",
    "max_ab_stages",
    "ptx_sm100",
    "smem_bytes",
]

ARCH = "sm_100a"
#: Dynamic SMEM one CTA may use on B200 (228 KB per SM minus the 1 KB the driver keeps).
SMEM_CAPACITY = 232448
#: Reserved for mbarriers, the TMEM address slot and alignment padding.
SMEM_RESERVED = 1024
#: Streaming multiprocessors of a B200 (sizes the persistent grid).
B200_SMS = 148

from fastdispatch.kernels.scaled_mm._compile import (  # noqa: E402
    TorchLayoutEntries, compile_kernel, ptx_of, resolve_stages)
from fastdispatch.kernels.scaled_mm._schedule import grouped_cluster_tile, load_k_tiles, persistent_grid  # noqa: E402


@dataclass(frozen=True)
class Sm100Config:
    """Compile-time configuration of the sm_100a scaled_mm kernel (hashable: a cache key).

    - ``tile_m, tile_n, tile_k``: the 2-CTA MMA tile of one CTA pair; each CTA owns
      ``tile_m // 2`` rows of it and half of B's ``tile_n`` rows. ``tile_m`` must be 256
      (each CTA's 128 accumulator rows map onto the 128 TMEM lanes), ``tile_n`` a multiple
      of 32 in [32, 256], ``tile_k`` a multiple of 32 (one fp8 MMA instruction is K=32).
    - ``cluster_m, cluster_n``: cluster shape in CTAs; ``cluster_m`` even (CTA pairs
      along M), ``cluster_n > 1`` multicasts A across the cluster's N direction.
    - ``ab_stages``: A/B SMEM ring depth; ``None`` = the most that fit (`max_ab_stages`).
    - ``acc_stages``: TMEM accumulator buffers (``acc_stages * tile_n <= 512`` columns).
    - ``epi_n``: epilogue subtile width (columns per tcgen05.ld / TMA store).
    - ``c_stages``: SMEM buffers of the TMA-store epilogue.
    - ``group_m``: tile-order group height (in cluster tiles) for L2 reuse of B.
    - ``num_sms``: SMs of the target part; the grid holds ``num_sms // cluster size`` clusters.
    """

    tile_m: int = 256
    tile_n: int = 128
    tile_k: int = 128
    cluster_m: int = 2
    cluster_n: int = 1
    ab_stages: Optional[int] = None
    acc_stages: int = 2
    epi_n: int = 32
    c_stages: int = 2
    group_m: int = 8
    num_sms: int = B200_SMS

    def __post_init__(self):
        errs = []
        if self.tile_m != 256:
            errs.append("tile_m must be 256 (2-CTA MMA, 128 TMEM lanes per CTA)")
        if not (32 <= self.tile_n <= 256 and self.tile_n % 32 == 0):
            errs.append("tile_n must be a multiple of 32 in [32, 256]")
        if self.tile_k < 32 or self.tile_k % 32:
            errs.append("tile_k must be a positive multiple of 32")
        if self.cluster_m < 2 or self.cluster_m % 2 or self.cluster_m & (self.cluster_m - 1):
            errs.append("cluster_m must be a power of two >= 2")
        if self.cluster_n < 1 or self.cluster_n & (self.cluster_n - 1):
            errs.append("cluster_n must be a power of two")
        if self.cluster_m * self.cluster_n > 16:
            errs.append("cluster size must be <= 16")
        if self.acc_stages < 1 or self.acc_stages * self.tile_n > 512:
            errs.append("acc_stages * tile_n must be in [tile_n, 512] TMEM columns")
        if self.epi_n not in (16, 32, 64) or self.tile_n % self.epi_n:
            errs.append("epi_n must be 16, 32 or 64 and divide tile_n")
        if self.c_stages < 1 or self.group_m < 1 or self.num_sms < self.cluster_m * self.cluster_n:
            errs.append("c_stages, group_m >= 1 and num_sms >= cluster size")
        if self.ab_stages is not None and self.ab_stages < 2:
            errs.append("ab_stages must be >= 2")
        if errs:
            raise ValueError(f"invalid Sm100Config {self}: " + "; ".join(errs))

    @property
    def cta_tile_m(self) -> int:
        """Accumulator rows owned by one CTA of the pair."""
        return self.tile_m // 2

    def resolved(self) -> "Sm100Config":
        """This config with ``ab_stages`` filled in (and checked against the SMEM budget)."""
        return resolve_stages(self, "ab_stages", max_ab_stages(self))


def _stage_bytes(cfg: Sm100Config) -> int:
    # Per CTA: its half of A's tile_m rows and its half of B's tile_n rows (2-CTA MMA splits
    # B between the pair), 1 byte per e4m3 element.
    return (cfg.tile_m // 2) * cfg.tile_k + (cfg.tile_n // 2) * cfg.tile_k


def _epilogue_bytes(cfg: Sm100Config) -> int:
    return cfg.c_stages * cfg.cta_tile_m * cfg.epi_n * 2  # bf16 staging for the TMA store


def max_ab_stages(config: Sm100Config) -> int:
    """Deepest A/B ring that fits the SMEM budget (232448 B per CTA on B200, minus the
    epilogue staging and 1 KB for barriers): 8 for the default 256x128x128 tile.
    The kernel re-derives the stage size from its SMEM layouts and checks it matches."""
    free = SMEM_CAPACITY - SMEM_RESERVED - _epilogue_bytes(config)
    return free // _stage_bytes(config)


def smem_bytes(config: Sm100Config) -> int:
    """SMEM one CTA uses for ``config`` (ring + epilogue staging + reserved barrier space)."""
    cfg = config.resolved()
    return cfg.ab_stages * _stage_bytes(cfg) + _epilogue_bytes(cfg) + SMEM_RESERVED


def default_config(m: int, n: int, k: int) -> Sm100Config:
    """The config for an M x N x K problem: the seed's 256x128x128, cluster (2, 1), deepest
    ring. One tile shape serves every size for now (small-M specializations would go here)."""
    del m, n, k
    return Sm100Config().resolved()


# ---------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------

Float32, Int32 = cutlass.Float32, cutlass.Int32


def _as_mn(t):
    """((ATOM_M, ATOM_N), MMA_M, MMA_N, *rest) -> ((ATOM_M, MMA_M), (ATOM_N, MMA_N), *rest)
    so that an MMA-partitioned C (or accumulator) can be tiled by an (M, N) epilogue tile."""
    lay = t.layout
    s, d = lay.shape, lay.stride
    new = cute.make_layout(
        ((s[0][0], s[1]), (s[0][1], s[2]), *s[3:]),
        stride=((d[0][0], d[1]), (d[0][1], d[2]), *d[3:]),
    )
    return cute.make_tensor(t.iterator, new)


class ScaledMmSm100(TorchLayoutEntries):
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

    @cute.jit
    def _epilogue(
        self, tidx, warp_idx, tiled_mma, tCtAcc_base, tCgC, tCcC, sC, tma_atom_c, mSA, mSB, mBias,
        acc_pipe, cluster_id, num_clusters, num_tiles, tiles_m, tiles_n, vmnk,
    ):
        cfg = self.cfg
        epi_n = cfg.epi_n
        n_total = mSB.shape[0]
        m_total = mSA.shape[0]
        tAcc = _as_mn(tCtAcc_base)  # (CTA_M, TILE_N, ACC_STAGE)
        tCgC = _as_mn(tCgC)  # (CTA_M, TILE_N, RestM, RestN)
        tCcC = _as_mn(tCcC)

        t2r_atom = sm100_utils.get_tmem_load_op(
            self.cta_tile, LayoutEnum.ROW_MAJOR, self.c_dtype, self.acc_dtype, self.epi_tile, True
        )
        tAcc_epi = cute.flat_divide(tAcc, self.epi_tile)  # (EPI_M, EPI_N, 1, SUB, STAGE)
        t2r = tcgen05.make_tmem_copy(t2r_atom, tAcc_epi[(None, None, 0, 0, 0)])
        thr_t2r = t2r.get_slice(tidx)
        tTR_tAcc = thr_t2r.partition_S(tAcc_epi)  # (T2R, T2R_M, T2R_N, 1, SUB, STAGE)
        gC_epi = cute.flat_divide(tCgC, self.epi_tile)  # (EPI_M, EPI_N, 1, SUB, RestM, RestN)
        cC_epi = cute.flat_divide(tCcC, self.epi_tile)
        tTR_gC = thr_t2r.partition_D(gC_epi)
        tTR_cC = thr_t2r.partition_D(cC_epi)
        tTR_rAcc = cute.make_rmem_tensor(tTR_gC[(None, None, None, 0, 0, 0, 0)].shape, self.acc_dtype)
        # The 32x32b TMEM load gives each thread one accumulator row and epi_n consecutive
        # columns of it: one scale_a per thread, and scale_b/bias as plain vectors.
        assert cute.size(tTR_rAcc) == epi_n

        tTR_rC = cute.make_rmem_tensor(tTR_rAcc.shape, self.c_dtype)
        r2s_atom = sm100_utils.get_smem_store_op(LayoutEnum.ROW_MAJOR, self.c_dtype, self.acc_dtype, t2r)
        r2s = cute.make_tiled_copy_D(r2s_atom, t2r)
        tRS_sC = r2s.get_slice(tidx).partition_D(sC)
        tRS_rC = r2s.retile(tTR_rC)
        bSG_sC, bSG_gC_all = cpasync.tma_partition(
            tma_atom_c, 0, cute.make_layout(1), cute.group_modes(sC, 0, 2), cute.group_modes(gC_epi, 0, 2)
        )

        rSB = cute.make_rmem_tensor((4, epi_n // 4), Float32)
        rBias = cute.make_rmem_tensor((8, epi_n // 8), cutlass.BFloat16)
        epi_bar = pipeline.NamedBarrier(barrier_id=self.epi_sync_bar, num_threads=32 * len(self.epilogue_warps))
        c_pipe = pipeline.PipelineTmaStore.create(
            num_stages=cfg.c_stages,
            producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, 32 * len(self.epilogue_warps)),
        )
        acc_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, cfg.acc_stages)
        subtiles = cfg.tile_n // epi_n
        c_buf = Int32(0)
        tile = cluster_id
        while tile < num_tiles:
            mma_m, mma_n = self._tile_coords(tile, tiles_m, tiles_n, vmnk)
            bSG_gC = bSG_gC_all[(None, 0, None, mma_m, mma_n)]
            tTR_tAcc_t = tTR_tAcc[(None, None, None, 0, None, acc_state.index)]
            tTR_cC_t = tTR_cC[(None, None, None, 0, None, mma_m, mma_n)]
            # This thread's row (one register per tile); rows past M are clipped by the TMA
            # store, so clamping keeps the load in bounds without a predicate.
            row = tTR_cC_t[0][0]
            scale_row = mSA[cutlass.min(row, m_total - 1)]
            acc_pipe.consumer_wait(acc_state)
            for s in cutlass.range_constexpr(subtiles):
                # scale_b (and bias) of this subtile's columns, read after the accumulator wait
                # and only for this subtile: the seed's whole-tile hoist spilled.
                col0 = mma_n * cfg.tile_n + s * epi_n
                for v in cutlass.range_constexpr(epi_n // 4):
                    # Columns past N: clamp to the last whole vector (N % 8 == 0), whose
                    # values only reach columns the TMA store clips.
                    col = cute.assume(cutlass.min(col0 + 4 * v, n_total - 4), divby=4)
                    cute.autovec_copy(cute.make_tensor(mSB.iterator + col, cute.make_layout(4)), rSB[(None, v)])
                if cutlass.const_expr(self.has_bias):
                    for v in cutlass.range_constexpr(epi_n // 8):
                        col = cute.assume(cutlass.min(col0 + 8 * v, n_total - 8), divby=8)
                        cute.autovec_copy(
                            cute.make_tensor(mBias.iterator + col, cute.make_layout(8)), rBias[(None, v)]
                        )
                cute.copy(t2r, tTR_tAcc_t[(None, None, None, s)], tTR_rAcc)
                if s == subtiles - 1:
                    # All of this warp's TMEM reads are done: hand the buffer back early.
                    cute.arch.fence_view_async_tmem_load()
                    with cute.arch.elect_one():
                        acc_pipe.consumer_release(acc_state)
                    acc_state.advance()
                for j in cutlass.range_constexpr(epi_n):
                    val = tTR_rAcc[j] * scale_row * rSB[j]
                    if cutlass.const_expr(self.has_bias):
                        val = val + Float32(rBias[j])
                    tTR_rAcc[j] = val
                tRS_rC.store(r2s.retile(tTR_rAcc).load().to(self.c_dtype))
                cute.copy(r2s, tRS_rC, tRS_sC[(None, None, None, c_buf)])
                # Make the st.shared visible to the TMA (async proxy) before it reads.
                cute.arch.fence_proxy("async.shared", space="cta")
                epi_bar.arrive_and_wait()
                if warp_idx == self.epilogue_warps[0]:
                    cute.copy(tma_atom_c, bSG_sC[(None, c_buf)], bSG_gC[(None, s)])
                    c_pipe.producer_commit()
                    c_pipe.producer_acquire()
                epi_bar.arrive_and_wait()
                c_buf = (c_buf + 1) % cfg.c_stages
            tile += num_clusters
        c_pipe.producer_tail()


def compile_sm100(config: Sm100Config, *, has_bias: bool, out_dtype="bf16", keep_ptx=False):
    """Compile the kernel for sm_100a: one binary for all M/N/K, TVM-FFI enabled.

    Call the result with torch tensors, on torch's current stream (graph capture works):
    ``fn(a, b, scale_a, scale_b, out)`` (torch._scaled_mm's layouts: b [K, N] column-major,
    scales [M, 1] and [1, N]) or, with ``has_bias``, ``fn(..., out, bias)``
    (4.8.1 wraps it in a kwargs wrapper; ``fn.__tvm_ffi_object__()`` is the fast path).
    See the module docstring for the argument requirements. ``keep_ptx`` keeps the PTX
    and cubin reachable as ``fn.__ptx__`` / ``fn.__cubin__``. Compiles under a process
    lock (cute.compile is not thread-safe); compiling needs no GPU.
    """
    if out_dtype != "bf16":   # the epilogue writes bf16 (its TMA store and SMEM staging)
        raise NotImplementedError(f"out_dtype={out_dtype!r}: only 'bf16' is implemented")
    return compile_kernel(ScaledMmSm100(config.resolved(), has_bias), ARCH, has_bias, out_dtype,
                          keep_ptx=keep_ptx)


def ptx_sm100(config: Sm100Config, *, has_bias: bool = False) -> str:
    """Compile for sm_100a (no GPU needed) and return the kernel's PTX."""
    return ptx_of(compile_sm100(config, has_bias=has_bias, keep_ptx=True))
