"""The sm_90a kernel's epilogues (device code, traced per compile): `EpilogueMixin`, methods of
`kernel.ScaledMmSm90` run by the consumer warpgroups once per tile after its K loop.

`_load_scales` / `_scale`: the rowwise scales (row x column) and the bias applied to the fp32
accumulator in place (block scales were applied in the K loop: only the bias is left);
`_store_epilogue`: predicated stores from registers (swap-AB); `_tma_epilogue_setup` (once per
CTA) and `_tma_epilogue`: stmatrix into SMEM subtiles and TMA stores.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
from cutlass.cute.nvgpu import cpasync

Float32 = cutlass.Float32


class EpilogueMixin:
    """The epilogues of `ScaledMmSm90` (a mixin: no state of its own)."""

    @cute.jit
    def _load_scales(self, tCcC, tm, tn, mRowScale, mColScale, mBias):
        """This thread's epilogue operands for tile (tm, tn): per accumulator element its row
        scale, column scale and (with bias) bias, as lists of registers. Coordinates past the
        problem are clamped (those values are never stored), so the loads need no predicates;
        repeated rows/columns are loaded once (CSE)."""
        cfg = self.cfg
        r0 = tm * cfg.tile_m
        c0 = tn * cfg.tile_n
        row_scale, col_scale, bias = [], [], []
        if cutlass.const_expr(self.blockwise):
            # The K loop applied the block scales: only the bias is left (N = its extent).
            if cutlass.const_expr(self.has_bias):
                n_last = mBias.shape[0] - 1
                for i in cutlass.range_constexpr(cute.size(tCcC)):
                    r, c = tCcC[i]
                    bias.append(Float32(mBias[cutlass.min((r0 + r) if cfg.swap_ab else (c0 + c), n_last)]))
            return row_scale, col_scale, bias
        rows = mRowScale.shape[0]
        cols = mColScale.shape[0]
        for i in cutlass.range_constexpr(cute.size(tCcC)):
            r, c = tCcC[i]
            r = cutlass.min(r0 + r, rows - 1)
            c = cutlass.min(c0 + c, cols - 1)
            row_scale.append(mRowScale[r])
            col_scale.append(mColScale[c])
            if cutlass.const_expr(self.has_bias):
                bias.append(Float32(mBias[r if cfg.swap_ab else c]))
        return row_scale, col_scale, bias

    @cute.jit
    def _scale(self, acc, scales):
        """acc *= row_scale * col_scale (+ bias), in fp32, over the whole fragment."""
        row_scale, col_scale, bias = scales
        for i in cutlass.range_constexpr(cute.size(acc)):
            v = acc[i]
            if cutlass.const_expr(not self.blockwise):
                v = v * row_scale[i] * col_scale[i]
            if cutlass.const_expr(self.has_bias):
                v = v + bias[i]
            acc[i] = v

    @cute.jit
    def _store_epilogue(self, acc, tCcC, tm, tn, mC):
        """Predicated bf16 stores straight from registers (swap-AB: out is tiny next to Bt)."""
        cfg = self.cfg
        rows, cols = mC.shape
        r0 = tm * cfg.tile_m
        c0 = tn * cfg.tile_n
        for i in cutlass.range_constexpr(cute.size(acc)):
            r, c = tCcC[i]
            if r0 + r < rows and c0 + c < cols:
                mC[(r0 + r, c0 + c)] = acc[i].to(self.c_dtype)

    @cute.jit
    def _tma_epilogue_setup(self, ctidx, tiled_mma, acc, tma_atom_c, mC, c_smem, smem):
        """Per-CTA epilogue state: the stmatrix copy, its views of SMEM and of the accumulator,
        the TMA-store partition of out and the store pipeline."""
        sC = smem.allocate_tensor(self.c_dtype, c_smem.outer, byte_alignment=1024, swizzle=c_smem.inner)
        # Four 8x8 matrices per stmatrix (16 columns of a warp's rows), two (8 columns) where 16
        # does not divide the subtile's width (8, 56, 88).
        matrices = 4 if self.cfg.epi_n % 16 == 0 else 2
        stm = cute.make_copy_atom(cute.nvgpu.warp.StMatrix8x8x16bOp(False, matrices), self.c_dtype)
        r2s = cute.make_tiled_copy_S(stm, cute.make_tiled_copy_C_atom(stm, tiled_mma))
        thr_r2s = r2s.get_slice(ctidx)
        tRS_sC = thr_r2s.partition_D(sC)  # (R2S, R2S_M, R2S_N, EPI_STAGE)
        tRS_rAcc = r2s.retile(acc)  # the accumulator in stmatrix order, subtile after subtile
        sub_shape = cute.shape(thr_r2s.partition_S(sC))[:3]
        tRS_rC = cute.make_rmem_tensor(sub_shape, self.c_dtype)
        gC = cute.local_tile(mC, (self.cfg.tile_m, self.cfg.tile_n), (None, None))  # (TM, TN, RestM, RestN)
        gC_epi = cute.flat_divide(gC, self.epi_tile)  # (EPI_M, EPI_N, 1, SUB, RestM, RestN)
        bSG_sC, bSG_gC = cpasync.tma_partition(
            tma_atom_c, 0, cute.make_layout(1), cute.group_modes(sC, 0, 2), cute.group_modes(gC_epi, 0, 2)
        )
        c_pipe = pipeline.PipelineTmaStore.create(
            num_stages=self.cfg.epi_stages,
            producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.tile_threads),
        )
        return tRS_sC, tRS_rAcc, tRS_rC, r2s, bSG_sC, bSG_gC, tma_atom_c, c_pipe

    def _epi_role(self, warp_idx):
        """(named barrier, whether this warp issues the TMA stores, its first SMEM buffer) for
        the consumers that store this warp's tile: every consumer warp, the first issuing;
        with ``pingpong`` its warpgroup's, through the warpgroup's own barrier and buffers."""
        cfg = self.cfg
        if cutlass.const_expr(cfg.pingpong):
            wg = warp_idx // 4 - 1
            return (pipeline.NamedBarrier(barrier_id=self.epi_bar_id + wg, num_threads=self.tile_threads),
                    warp_idx % 4 == 0, wg * cfg.epi_stages)
        return pipeline.NamedBarrier(barrier_id=self.epi_bar_id, num_threads=self.tile_threads), warp_idx == 4, 0

    @cute.jit
    def _stage_whole(self, epi, blocks, tm, tn, warp_idx, retile=False):
        """The whole CTA tile staged, then its stores: the accumulators ``blocks`` of tile
        ``tm`` (its row blocks: block w is row tile tm * len(blocks) + w) -> bf16 -> SMEM
        buffers one after the other, then one barrier and all their TMA stores (DeepGEMM's
        epilogue for the 256x128 tile): two barriers per tile instead of two per subtile.
        They come in stmatrix order, or with ``retile`` are put in it here, each just before
        it is staged (where the GPU-tested binaries did it). The buffers' last reader is the
        previous tile's stores, issued a whole mainloop ago: the wait below normally finds
        them done."""
        cfg = self.cfg
        tRS_sC, _, tRS_rC, r2s, bSG_sC, bSG_gC, tma_atom_c, c_pipe = epi
        epi_bar, stores, first = self._epi_role(warp_idx)
        subtiles = cfg.tile_n // cfg.epi_n
        per_sub = cute.size(tRS_rC)
        if stores:
            cute.arch.cp_async_bulk_wait_group(0, read=True)
        epi_bar.arrive_and_wait()
        for w in cutlass.range_constexpr(len(blocks)):
            tRS_rAcc = r2s.retile(blocks[w]) if cutlass.const_expr(retile) else blocks[w]
            for s in cutlass.range_constexpr(subtiles):
                for v in cutlass.range_constexpr(per_sub):
                    tRS_rC[v] = tRS_rAcc[s * per_sub + v].to(self.c_dtype)
                cute.copy(r2s, tRS_rC, tRS_sC[(None, None, None, first + w * subtiles + s)])
        cute.arch.fence_proxy("async.shared", space="cta")
        epi_bar.arrive_and_wait()
        if stores:
            for w in cutlass.range_constexpr(len(blocks)):
                for s in cutlass.range_constexpr(subtiles):
                    cute.copy(tma_atom_c, bSG_sC[(None, first + w * subtiles + s)],
                              bSG_gC[(None, 0, s, tm * len(blocks) + w, tn)])
            c_pipe.producer_commit()

    @cute.jit
    def _tma_epilogue(self, epi, acc, tm, tn, n_done, warp_idx):
        """Scaled accumulator -> bf16 -> SMEM (stmatrix) -> TMA store, one tile_m x epi_n
        subtile at a time through `epi_stages` buffers (TMA clips partial tiles)."""
        cfg = self.cfg
        tRS_sC, tRS_rAcc, tRS_rC, r2s, bSG_sC, bSG_gC, tma_atom_c, c_pipe = epi
        if cutlass.const_expr(cfg.row_blocks > 1):   # each row block stores its own accumulator
            tRS_rAcc = r2s.retile(acc)
        epi_bar, stores, first = self._epi_role(warp_idx)
        subtiles = cfg.tile_n // cfg.epi_n
        per_sub = cute.size(tRS_rC)

        def stage_subtile(s, buf):
            # Subtile s of the accumulator -> bf16 -> SMEM buffer `buf` (stmatrix).
            for v in cutlass.range_constexpr(per_sub):
                tRS_rC[v] = tRS_rAcc[s * per_sub + v].to(self.c_dtype)
            cute.copy(r2s, tRS_rC, tRS_sC[(None, None, None, buf)])

        if cutlass.const_expr(cfg.epi_stages >= subtiles):
            # The buffers hold the whole tile: stage all of it, then one barrier and the stores.
            self._stage_whole(epi, [tRS_rAcc], tm, tn, warp_idx)
        else:
            for s in cutlass.range_constexpr(subtiles):
                buf = first + (n_done * subtiles + s) % cfg.epi_stages
                stage_subtile(s, buf)
                # Make the st.shared visible to the TMA (async proxy) before it reads.
                cute.arch.fence_proxy("async.shared", space="cta")
                epi_bar.arrive_and_wait()
                if stores:
                    cute.copy(tma_atom_c, bSG_sC[(None, buf)], bSG_gC[(None, 0, s, tm, tn)])
                    c_pipe.producer_commit()
                    c_pipe.producer_acquire()
                epi_bar.arrive_and_wait()
