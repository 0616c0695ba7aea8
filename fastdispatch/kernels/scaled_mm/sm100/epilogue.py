"""The sm_100a kernel's epilogue (device code, traced per compile): `EpilogueMixin`, the method of
`kernel.ScaledMmSm100` its epilogue warps run: per (cta_m x epi_n) subtile, tcgen05.ld from TMEM,
scale_a x scale_b (and the bias) in fp32, bf16 into SMEM, TMA store."""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
import cutlass.utils.blackwell_helpers as sm100_utils
from cutlass.cute.nvgpu import cpasync, tcgen05
from cutlass.tensor_utils import LayoutEnum

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


class EpilogueMixin:
    """The epilogue of `ScaledMmSm100` (a mixin: no state of its own)."""

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

