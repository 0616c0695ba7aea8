"""The sm_90a kernel's K loops (device code, traced per compile): `MainloopMixin`, methods of
`kernel.ScaledMmSm90` called from its consumer warpgroups once per tile.

`_mainloop` (fast accumulation, or promotion every ``promote`` k-tiles), `_mainloop_blocks`
(block scales: the loop unrolled by the scale look-ahead), `_mainloop_overlapped` (each
promotion under the next k-tile's WGMMAs) and their k-tile steps (`_issue_k_tile`,
`_block_k_tile`, `_retire_k_tile`, `_take_values`, `_factors`). They read the kernel's ``cfg``
and ``_tiled_mma``; how the block loops walk the ring (grouped, or ``static_stages``' passes)
is `ring_walks.RingWalksMixin`'s, the split-K sum `split_k.SplitKMixin`'s.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass.cute.nvgpu import warpgroup

from fastdispatch.kernels.scaled_mm.sm90 import block_scales
from fastdispatch.kernels.scaled_mm.sm90.ring_walks import RingWalksMixin, _advanced, _ring_state


class MainloopMixin(RingWalksMixin):
    """The K loops of `ScaledMmSm90` (a mixin: no state of its own)."""

    @cute.jit
    def _mainloop(self, ab_pipe, tiled_mma, acc, acc_tmp, tCrA, tCrB, consumed, k_count):
        """One tile's K loop: the CTA's `k_count` k-tiles, at ring positions ``consumed``
        onwards (the producer loads them in that order). Leaves the (partial, with split_k)
        sum in `acc`; returns `tiled_mma` (its accumulate flag is traced state)."""
        cfg = self.cfg
        num_kblocks = cute.size(tCrA, mode=[2])
        # Advanced per k-tile, not recomputed from the position: a div/mod by `stages` per
        # k-tile would sit on the loop's critical path.
        read = _ring_state(cfg.stages, consumed)
        release = _ring_state(cfg.stages, consumed)

        acc.fill(0.0)
        if cutlass.const_expr(cfg.promote == 0):
            # Fast accumulation: WGMMA accumulates all of K itself (its fp8 accumulation
            # keeps fewer bits than fp32: rel. error 2.6e-3 at K=8192, measured, against
            # 1.7e-3 from the bf16 rounding alone).
            tiled_mma.set(warpgroup.Field.ACCUMULATE, True)
            warpgroup.fence()
            landed = cutlass.Boolean(False)   # ``early_wait``: whether the next k-tile's stage had landed
            for j in cutlass.range(k_count, unroll=1):
                ab_pipe.consumer_wait(read, landed if cfg.early_wait else None)
                for kb in cutlass.range_constexpr(num_kblocks):
                    crd = (None, None, kb, read.index)
                    cute.gemm(tiled_mma, acc, tCrA[crd], tCrB[crd], acc)
                warpgroup.commit_group()
                # One k-tile of WGMMAs stays in flight; the one before it has retired,
                # so its stage can go back to the producer.
                warpgroup.wait_group(1)
                if j > 0:
                    ab_pipe.consumer_release(release)
                    release.advance()
                if cutlass.const_expr(cfg.early_wait):
                    # (No promotion to run under: the test only takes the wait's retry loop
                    # off the path to the next WGMMAs.)
                    landed = self._test_landed(ab_pipe, _advanced(read.clone()))
                read.advance()
            warpgroup.wait_group(0)
        else:
            # Two-level accumulation (torch._scaled_mm's default, use_fast_accum=False):
            # WGMMA accumulates `promote` k-tiles into acc_tmp, then acc += acc_tmp in
            # fp32. The add needs the k-tile's WGMMAs retired: another consumer warpgroup
            # keeps the tensor cores busy meanwhile.
            landed = cutlass.Boolean(False)   # ``early_wait``: whether the next k-tile's stage had landed
            for j in cutlass.range(k_count, unroll=1):
                ab_pipe.consumer_wait(read, landed if cfg.early_wait else None)
                # The first k-block of a promotion period overwrites acc_tmp.
                tiled_mma.set(warpgroup.Field.ACCUMULATE, j % cfg.promote != 0)
                warpgroup.fence()
                for kb in cutlass.range_constexpr(num_kblocks):
                    crd = (None, None, kb, read.index)
                    cute.gemm(tiled_mma, acc_tmp, tCrA[crd], tCrB[crd], acc_tmp)
                    tiled_mma.set(warpgroup.Field.ACCUMULATE, True)
                warpgroup.commit_group()
                if cutlass.const_expr(cfg.promote == 1):
                    # Every k-tile is promoted, so its WGMMAs have all retired here: its
                    # stage goes back to the producer at once, not one k-tile later as
                    # below. One more stage of loads in flight: 8192^3 (128x192 tiles, 5
                    # stages) 988 -> 909 us on the lent H100; small M unchanged.
                    warpgroup.wait_group(0)
                    ab_pipe.consumer_release(read)
                    if cutlass.const_expr(cfg.early_wait):
                        landed = self._test_landed(ab_pipe, _advanced(read.clone()))
                    block_scales.promote(acc, acc_tmp, None)
                else:
                    if j % cfg.promote == cfg.promote - 1 or j == k_count - 1:
                        warpgroup.wait_group(0)
                        for i in cutlass.range_constexpr(cute.size(acc)):
                            acc[i] = acc[i] + acc_tmp[i]
                    else:
                        warpgroup.wait_group(1)
                    if j > 0:
                        ab_pipe.consumer_release(release)
                        release.advance()
                read.advance()
        if cutlass.const_expr(cfg.promote != 1):
            if k_count > 0:
                ab_pipe.consumer_release(release)
        return tiled_mma

    @cute.jit
    def _issue_k_tile(self, ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, tmp):
        """Wait for the k-tile at ``read`` and issue its WGMMAs into ``tmp`` as one commit
        group: ``mma_first`` (ACCUMULATE off: overwrites) for its first k-block, ``mma_rest``
        after (two fixed MMA objects: a field set inside a dynamic branch cannot leave it).
        Returns ``read`` advanced (callers assign it, so a dynamic branch carries it out)."""
        ab_pipe.consumer_wait(read)
        self._commit_mmas(mma_first, mma_rest, tCrA, tCrB, tmp, read.index)
        read.advance()
        return read

    @cute.jit
    def _commit_mmas(self, mma_first, mma_rest, tCrA, tCrB, tmp, stage):
        """The WGMMAs of ring slot ``stage`` (already landed) into ``tmp`` as one commit group:
        ``mma_first`` for its first k-block, ``mma_rest`` after (see `_issue_k_tile`)."""
        warpgroup.fence()
        for kb in cutlass.range_constexpr(cute.size(tCrA, mode=[2])):
            crd = (None, None, kb, stage)
            cute.gemm(mma_first if kb == 0 else mma_rest, tmp, tCrA[crd], tCrB[crd], tmp)
        warpgroup.commit_group()

    @cute.jit
    def _retire_k_tile(self, ab_pipe, release, acc, tmp, factors):
        """The k-tile in ``tmp`` has retired (the caller waited): free its stage, acc += tmp
        (times its block-scale ``factors``, if any). Returns ``release`` advanced."""
        ab_pipe.consumer_release(release)
        release.advance()
        block_scales.promote(acc, tmp, factors)
        return release

    @cute.jit
    def _take_values(self, blocks, t, g, pos):
        """Block scales: the scale values of the CTA's k-tile ``t`` (loaded `lookahead`
        k-tiles ago, in registers ``g % lookahead``: ``g`` is t's place in an unrolled
        group, t's residue known at trace time), and start loading those of k-tile
        t + lookahead into the same registers (with ``late_scale_loads``: `_refill_values`).
        With ``smem_scales`` (``blocks`` = (`smem_scales.SmemValues`, None)) they are read
        from the scale ring's slot for ring position ``pos`` (t's, as the A/B ring counts),
        once it is full: callers take them after issuing t's WGMMAs (`_scales_late`), so the
        wait and the reads run under them. None for rowwise scales."""
        if cutlass.const_expr(blocks is None):
            return None
        ctx, rings = blocks
        if cutlass.const_expr(rings is None):   # smem_scales: from the scale ring's slot for ``pos``
            return ctx.take(pos, g % ctx.halves)
        ring = rings[g % len(rings)]
        values = block_scales.snapshot(ring)
        if cutlass.const_expr(not self.cfg.late_scale_loads):
            block_scales.load_raw(self.cfg, ctx, t + len(rings), ring)
        return values

    @property
    def _scales_late(self) -> bool:
        """Whether a k-tile's scale values are taken after its WGMMAs are issued (SMEM slots:
        the wait for them and their reads run under the WGMMAs) rather than before the wait
        for its stage (the register look-ahead: its next loads go out first)."""
        return self.cfg.smem_scales

    def _release_values(self, blocks, pos):
        """With ``smem_scales``: the k-tile at ring position ``pos`` has been promoted, so its
        scale slot may be refilled."""
        if cutlass.const_expr(blocks is not None and blocks[1] is None):
            blocks[0].release(pos)

    def _refill_values(self, blocks, t, g):
        """With ``late_scale_loads``: once k-tile ``t``'s values were used (its promotion),
        load those of k-tile t + lookahead into its registers. Loaded at `_take_values`
        instead, the new values need other registers while the old ones live, and the copy
        back that ptxas adds waits for the load one k-tile later (the long-scoreboard stall
        ncu showed on the lent H200)."""
        if cutlass.const_expr(blocks is not None and blocks[1] is not None and self.cfg.late_scale_loads):
            ctx, rings = blocks
            block_scales.load_raw(self.cfg, ctx, t + len(rings), rings[g % len(rings)])

    @staticmethod
    def _unroll(blocks):
        """K-loop unroll for block scales: the look-ahead's k-tiles (its registers are then
        known at trace time); 1 for SMEM slots or no block scales."""
        return 1 if blocks is None or blocks[1] is None else len(blocks[1])

    def _factors(self, values):
        """Per accumulator element its factor from `_take_values` (None: rowwise)."""
        if values is None:
            return None
        per_thread = self.cfg.tile_m // self.cfg.consumer_wgs * self.cfg.tile_n // 128
        return block_scales.factors_for(self.cfg, values, per_thread)

    @cute.jit
    def _k_loop_start(self, consumed):
        """The read and release states at ring position ``consumed`` and the two fixed MMA
        objects (`_k_tile_mmas`) of the overlapped K loop, whose releases lag its reads."""
        return _ring_state(self.cfg.stages, consumed), _ring_state(self.cfg.stages, consumed), self._k_tile_mmas()

    @cute.jit
    def _k_tile_mmas(self):
        """The two fixed MMA objects of a k-tile's WGMMAs: ACCUMULATE off for its first k-block
        (overwrites the temporary), on after."""
        mma_first = self._tiled_mma()
        mma_first.set(warpgroup.Field.ACCUMULATE, False)
        mma_rest = self._tiled_mma()
        mma_rest.set(warpgroup.Field.ACCUMULATE, True)
        return mma_first, mma_rest

    @cute.jit
    def _mainloop_blocks(self, ab_pipe, acc, tmp, tmp2, tCrA, tCrB, consumed, k_count, blocks, n_done):
        """`_mainloop` with block scales (promote=1): the K loop unrolled so that the scale
        values' registers are indexed at trace time (by the lookahead, in 128-deep scale
        blocks), each k-tile issued, waited for and promoted with its factors; the k-tiles
        left over run under a guard each. A 256-deep k-tile is two scale blocks: its halves
        go into ``tmp`` and ``tmp2`` as two commit groups, and the first half is promoted
        while the second one's WGMMAs run (half the pipeline hand-offs per K of 128-deep
        k-tiles). With ``static_stages`` it runs in passes over the ring instead
        (`_static_passes`; ``n_done``: the CTA's tiles before this one)."""
        cfg = self.cfg
        halves = cfg.tile_k // 128
        ahead = max(1, self._unroll(blocks) // halves)   # k-tiles per unrolled group
        acc.fill(0.0)
        k_tile = (ab_pipe, self._k_tile_mmas(), tCrA, tCrB, acc, (tmp, tmp2), blocks)
        if cutlass.const_expr(cfg.static_stages):
            self._static_passes(self._block_k_tile, k_tile, consumed, k_count, n_done)
        else:
            self._grouped_k_loop(self._block_k_tile, k_tile, consumed, k_count, ahead)

    @cute.jit
    def _block_k_tile(self, k_tile, stage, pos, t, g, landed=None, after=None):
        """One k-tile on its own with block scales, on A/B ``stage`` (freed here; the caller
        advances the state) at scale ring position ``pos``: take its values (``g``: its place
        in the unrolled group), issue it, wait, promote. ``k_tile``: (ab_pipe, the two MMA
        objects, tCrA, tCrB, acc, (tmp, tmp2), blocks), tmp2 only for 256-deep k-tiles.
        ``landed``, ``after``: as in `row_blocks.RowBlocksMixin._row_blocks_k_tile`."""
        ab_pipe, mmas, tCrA, tCrB, acc, temps, blocks = k_tile
        next_landed = None
        if cutlass.const_expr(self.cfg.tile_k == 128):
            values = None
            if cutlass.const_expr(not self._scales_late):
                values = self._take_values(blocks, t, g, pos)
            ab_pipe.consumer_wait(stage, landed)
            self._commit_mmas(mmas[0], mmas[1], tCrA, tCrB, temps[0], stage.index)
            if cutlass.const_expr(self._scales_late):
                values = self._take_values(blocks, t, g, pos)
            warpgroup.wait_group(0)
            ab_pipe.consumer_release(stage)
            next_landed = self._test_landed(ab_pipe, after)
            block_scales.promote(acc, temps[0], self._factors(values))
            self._release_values(blocks, pos)
            self._refill_values(blocks, t, g)
        else:
            halves = ((2 * t, 2 * g), (2 * t + 1, 2 * g + 1))
            first, second = None, None
            if cutlass.const_expr(not self._scales_late):
                first, second = (self._take_values(blocks, j, h, pos) for j, h in halves)
            ab_pipe.consumer_wait(stage, landed)
            warpgroup.fence()
            for kb in cutlass.range_constexpr(8):   # 8 k32 blocks: two 128-deep halves
                half = temps[kb // 4]
                crd = (None, None, kb, stage.index)
                cute.gemm(mmas[0] if kb % 4 == 0 else mmas[1], half, tCrA[crd], tCrB[crd], half)
                if cutlass.const_expr(kb % 4 == 3):
                    warpgroup.commit_group()
            if cutlass.const_expr(self._scales_late):
                first, second = (self._take_values(blocks, j, h, pos) for j, h in halves)
            warpgroup.wait_group(1)
            block_scales.promote(acc, temps[0], self._factors(first))
            self._refill_values(blocks, 2 * t, 2 * g)
            warpgroup.wait_group(0)
            ab_pipe.consumer_release(stage)
            next_landed = self._test_landed(ab_pipe, after)
            block_scales.promote(acc, temps[1], self._factors(second))
            self._release_values(blocks, pos)
            self._refill_values(blocks, 2 * t + 1, 2 * g + 1)
        return next_landed

    @cute.jit
    def _mainloop_overlapped(self, ab_pipe, acc, tmp0, tmp1, tCrA, tCrB, consumed, k_count, blocks):
        """`_mainloop` with promote=1, the promotions overlapped with WGMMAs
        (``overlap_promotion`` = U): the K loop runs in groups of U k-tiles, alternating
        between two temporaries; after issuing k-tile j, ``wait_group(1)`` retires k-tile j-1,
        which is promoted while j runs. Only the group's last k-tile is waited for alone.
        Nothing is in flight across the loop's back edge: an accumulator register carried
        through a loop or branch merge while its WGMMAs run makes ptxas serialize every WGMMA
        (warnings C7514/C7517, measured in the SASS). The k_count % U k-tiles left over run
        as in `_mainloop`."""
        cfg = self.cfg
        group = cfg.overlap_promotion
        read, release, (mma_first, mma_rest) = self._k_loop_start(consumed)
        temps = (tmp0, tmp1)
        acc.fill(0.0)
        # Block scales: a k-tile's values are taken when it is issued (loaded `lookahead`
        # k-tiles earlier; the lookahead divides the group, so which registers is known at
        # trace time) and turned into factors when it retires.
        for it in cutlass.range(k_count // group, unroll=1):
            pos = read.count
            read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, temps[0])
            pending = self._take_values(blocks, it * group, 0, pos)
            for g in cutlass.range_constexpr(1, group):
                issued_pos = read.count
                read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, temps[g % 2])
                issued = self._take_values(blocks, it * group + g, g, issued_pos)
                warpgroup.wait_group(1)
                release = self._retire_k_tile(ab_pipe, release, acc, temps[(g - 1) % 2], self._factors(pending))
                self._release_values(blocks, pos)
                self._refill_values(blocks, it * group + g - 1, g - 1)
                pending, pos = issued, issued_pos
            warpgroup.wait_group(0)
            release = self._retire_k_tile(ab_pipe, release, acc, temps[(group - 1) % 2], self._factors(pending))
            self._release_values(blocks, pos)
            self._refill_values(blocks, it * group + group - 1, group - 1)
        if cutlass.const_expr(blocks is None):
            for it in cutlass.range(k_count % group, unroll=1):
                read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, tmp0)
                warpgroup.wait_group(0)
                release = self._retire_k_tile(ab_pipe, release, acc, tmp0, None)
        else:
            # (Every issued k-tile has retired: read and release are at the same position.)
            self._guarded_tail(self._block_k_tile, (ab_pipe, (mma_first, mma_rest), tCrA, tCrB, acc, (tmp0, None),
                                                    blocks), read, k_count, group)
