"""CTA tiles of several A row blocks on the sm_90a kernel (device code, traced per compile):
`RowBlocksMixin`, methods of `kernel.ScaledMmSm90` for ``Sm90Config.row_blocks`` > 1.

DeepGEMM's large-M blockwise tile is 256x128: each k-stage holds two 128-row blocks of A and one
B tile, and each consumer warpgroup issues, waits for and promotes its 64 rows of one block after
the other into one temporary accumulator (its own block scales applied at each promotion), so
each B tile in SMEM feeds twice the MMAs and the grid has half the tiles (rowwise scales: the same
loop with plain promotions, the scales in each block's epilogue). Row block ``w`` of CTA
tile ``tm`` is the 128-row tile ``tm * row_blocks + w`` everywhere else: its scale rows, its
epilogue (TMA stores clip a block past M) and A's TMA tile. Registers per consumer thread: one
64-value accumulator per block plus the temporary (192 at 128x128 blocks; the scale look-ahead is
halved to fit: `block_scales.lookahead`; with ``smem_scales`` there is none). The table picks it
for B per 128x128 at large M (`table.BLOCK_LARGE`: 5-16% faster than two 128x128 tiles on the
lent H200, bench/results/blockwise_sweep_2026-12-01.txt).
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass.cute.nvgpu import warpgroup

from fastdispatch.kernels.scaled_mm.sm90 import block_scales
from fastdispatch.kernels.scaled_mm.sm90.smem_scales import SmemValues

Float32 = cutlass.Float32


class RowBlocksMixin:
    """The K loop and per-tile flow of `ScaledMmSm90` for several row blocks (no state of its own)."""

    def _row_blocks_setup(self, tiled_mma, thr_mma, sA_more, tCcC, tCrA, acc, rings, sS, scale_pipe):
        """Per consumer thread, once: every row block's A fragments, accumulator and scale
        look-ahead registers (block 0's are the kernel's own ``tCrA``, ``acc``, ``rings``),
        or with ``smem_scales`` its view of the scale slots."""
        tCrAs = (tCrA, *(tiled_mma.make_fragment_A(thr_mma.partition_A(s)) for s in sA_more))
        accs = (acc, *(cute.make_rmem_tensor(tCcC.shape, self.acc_dtype) for _ in sA_more))
        block_rings = (None,) * len(accs)   # rowwise: the scales come in each block's epilogue
        if self.cfg.smem_scales:
            block_rings = tuple(SmemValues(self.cfg, sS, scale_pipe, tCcC, w)
                                for w in range(len(accs)))
        elif self.blockwise:
            block_rings = (rings, *(tuple(cute.make_rmem_tensor((block_scales.raw_count(self.cfg),), Float32)
                                          for _ in rings) for _ in sA_more))
        return tCrAs, accs, block_rings

    @cute.jit
    def _row_blocks_tile(self, ab_pipe, row_state, tmp, tCrB, tCcC, tm, tn, consumed, k_count, k_begin,
                         mRowScale, mColScale, mBias, epi, n_done, warp_idx):
        """One CTA tile: each row block's first scale values, the K loop, then each block's bias
        and epilogue (its stores and SMEM buffers in block order)."""
        cfg = self.cfg
        tCrAs, accs, block_rings = row_state
        scales = [None] * cfg.row_blocks
        if cutlass.const_expr(cfg.smem_scales):
            scales = [(view.at_tile(tn), None) for view in block_rings]
        elif cutlass.const_expr(self.blockwise):
            for w in cutlass.range_constexpr(cfg.row_blocks):
                ctx = block_scales.tile_context(cfg, tCcC, tm * cfg.row_blocks + w, tn, k_begin, mRowScale, mColScale)
                for d in cutlass.range_constexpr(len(block_rings[w])):
                    block_scales.load_raw(cfg, ctx, d, block_rings[w][d])
                scales[w] = (ctx, block_rings[w])
        self._mainloop_row_blocks(ab_pipe, accs, tmp, tCrAs, tCrB, consumed, k_count, scales, warp_idx // 4 - 1,
                                  n_done)
        shared = None   # the blocks' column scales and bias: the same columns, loaded once
        whole_tile = cfg.epi_stages * cfg.epi_n >= cfg.row_blocks * cfg.tile_n
        for w in cutlass.range_constexpr(cfg.row_blocks):
            row_tile = tm * cfg.row_blocks + w
            row_scale, col_scale, bias = self._load_scales(tCcC, row_tile, tn, mRowScale, mColScale, mBias)
            if cutlass.const_expr(w == 0):
                shared = (col_scale, bias)
            else:   # (this block's own loads of them are dead and removed: rowwise with bias spilled 196)
                col_scale, bias = shared
            self._scale(accs[w], (row_scale, col_scale, bias))
            if cutlass.const_expr(not whole_tile):
                self._tma_epilogue(epi, accs[w], row_tile, tn, n_done * cfg.row_blocks + w, warp_idx)
        if cutlass.const_expr(whole_tile):
            self._stage_whole(epi, accs, tm, tn, warp_idx, retile=True)

    @cute.jit
    def _mainloop_row_blocks(self, ab_pipe, accs, tmp, tCrAs, tCrB, consumed, k_count, scales, consumer_wg, n_done):
        """`_mainloop_blocks` for several row blocks: per k-tile, each block's WGMMAs go into
        the one temporary ``tmp``, are waited for and promoted into its accumulator
        ``accs[w]`` with its factors; the stage is freed once the last block's WGMMAs have
        retired. ``scales``: each block's (context, look-ahead registers), None for rowwise.
        The loop is unrolled by the look-ahead (rowwise: not unrolled); the k-tiles left over
        run under a guard each (`ring_walks._grouped_k_loop`). With ``static_stages`` it runs in
        passes over the ring instead (`ring_walks._static_passes`; ``n_done``: the CTA's tiles
        before this one). ``consumer_wg``: this thread's consumer warpgroup (0 or 1; read by
        ``stagger_wgs`` only)."""
        mmas = self._k_tile_mmas()
        for w in cutlass.range_constexpr(len(accs)):
            accs[w].fill(0.0)
        if cutlass.const_expr(self.cfg.stagger_wgs):
            if consumer_wg == 1:   # until the first consumer warpgroup's first WGMMAs retired
                cute.arch.barrier(barrier_id=self.stagger_bar_id, number_of_threads=self.consumer_threads)
        k_tile = (ab_pipe, mmas, tCrAs, tCrB, accs, tmp, scales, consumer_wg)
        if cutlass.const_expr(self.cfg.static_stages):
            self._static_passes(self._row_blocks_k_tile, k_tile, consumed, k_count, n_done)
        else:
            self._grouped_k_loop(self._row_blocks_k_tile, k_tile, consumed, k_count, self._unroll(scales[0]))

    @cute.jit
    def _row_blocks_k_tile(self, k_tile, stage, pos, t, g, landed=None, after=None):
        """One k-tile, every row block in turn: wait for its A/B ``stage`` (unless ``landed``)
        and free it after the last block's WGMMAs (the caller advances the state); ``pos``: its
        scale ring position; ``t``, ``g``: its index in the tile's K loop and its place in an
        unrolled group. With ``after`` (``early_wait``), returns whether that stage has landed,
        tested once this one is freed, before the last block's promotion."""
        ab_pipe, mmas, tCrAs, tCrB, accs, tmp, scales, consumer_wg = k_tile
        values = [None] * len(accs)
        if cutlass.const_expr(not self._scales_late):
            values = [self._take_values(scales[w], t, g, pos) for w in range(len(accs))]
        ab_pipe.consumer_wait(stage, landed)
        next_landed = None
        for w in cutlass.range_constexpr(len(accs)):
            self._commit_mmas(mmas[0], mmas[1], tCrAs[w], tCrB, tmp, stage.index)
            if cutlass.const_expr(w == 0 and self._scales_late):   # (all blocks': one slot)
                values = [self._take_values(scales[v], t, g, pos) for v in range(len(accs))]
            warpgroup.wait_group(0)
            if cutlass.const_expr(self.cfg.stagger_wgs and w == 0):
                if t == 0 and consumer_wg == 0:   # the second consumer warpgroup may start
                    cute.arch.barrier_arrive(barrier_id=self.stagger_bar_id, number_of_threads=self.consumer_threads)
            if cutlass.const_expr(w == len(accs) - 1):   # the stage's last reader has retired
                ab_pipe.consumer_release(stage)
                next_landed = self._test_landed(ab_pipe, after)
            block_scales.promote(accs[w], tmp, self._factors(values[w]))
            if cutlass.const_expr(values[w] is None and w < len(accs) - 1):
                # Rowwise: the adds done before the next block's WGMMAs overwrite ``tmp``. Sunk
                # past them, as the compiler did in the static passes, the old partial sums
                # needed a second set of registers: ~1300 spills, 2.5x slower on the GPU.
                # (Pinned after the last block too, before the next k-tile's WGMMAs, the
                # static loop without ``early_wait`` or with 4 stages loses its last 112-864
                # spills as well; that binary has not run on a GPU, so it is not shipped.)
                block_scales.pin(accs[w])
            self._refill_values(scales[w], t, g)
        self._release_values(scales[0], pos)
        return next_landed
