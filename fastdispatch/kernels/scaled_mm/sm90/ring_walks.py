"""How a tile's K loop walks the A/B ring on the sm_90a kernel (device code, traced per
compile): `RingWalksMixin`, the drivers that the block-scale and row-block loops hand their
k-tile step (``run_k_tile``) to. `_grouped_k_loop` runs it in dynamic groups of k-tiles unrolled
(the scale look-ahead's), `_static_passes` in passes over the ring from stage 0
(``static_stages``), `_guarded_tail` runs the k-tiles a group leaves over, and `_test_landed`
is ``early_wait``'s test of the next stage. The steps themselves are `mainloop`'s and
`row_blocks`'s.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline


def _ring_state(stages: int, pos):
    """The consumer's pipeline state at ring position `pos` (slot pos % stages; the consumer's
    phase bit starts at 0 and flips every pass over the ring)."""
    return pipeline.PipelineState(stages, pos, pos % stages, pos // stages % 2)


def _advanced(state):
    """``state`` advanced by one ring position, returned: callers assign it, so a dynamic loop
    or branch carries it out."""
    state.advance()
    return state


class RingWalksMixin:
    """The ring walks of `ScaledMmSm90`'s K loops (a mixin: no state of its own)."""

    @cute.jit
    def _grouped_k_loop(self, run_k_tile, k_tile, consumed, k_count, group):
        """The tile's K loop in groups of ``group`` k-tiles unrolled (so a k-tile's place in
        its group, ``g``, is known at trace time), the rest under a guard each (`_guarded_tail`).
        Each k-tile retires before the next is issued, so one ring state from position
        ``consumed`` both waits for a stage and frees it. ``run_k_tile``, ``k_tile``: as for
        `_static_passes`."""
        stage = _ring_state(self.cfg.stages, consumed)
        landed = cutlass.Boolean(False)   # ``early_wait``: whether the next k-tile's stage had landed
        for it in cutlass.range(k_count // group, unroll=1):
            for g in cutlass.range_constexpr(group):
                if cutlass.const_expr(self.cfg.early_wait):
                    landed = run_k_tile(k_tile, stage, stage.count, it * group + g, g, landed,
                                        _advanced(stage.clone()))
                else:
                    run_k_tile(k_tile, stage, stage.count, it * group + g, g)
                stage = _advanced(stage)
        self._guarded_tail(run_k_tile, k_tile, stage, k_count, group, landed if self.cfg.early_wait else None)

    @cute.jit
    def _static_passes(self, run_k_tile, k_tile, consumed, k_count, n_done):
        """``static_stages``: the tile's K loop in passes over the A/B ring from stage 0, each
        pass unrolled by ``stages`` (pass p waits with phase p's parity: every earlier tile
        made whole passes), so each k-tile's stage is a trace-time index; in the last pass
        the stages past the tile's k-tiles are the producer's empty ones, waited for and freed.
        ``run_k_tile(k_tile, stage, pos, t, g, landed, after)`` runs k-tile ``t`` on ``stage``
        (``k_tile``: its loop's operands, ``ab_pipe`` first; with ``early_wait``, ``landed``:
        whether its stage was seen full, and it returns the same for ``after``, the next
        k-tile's); ``consumed``: the scale ring's position (its slots count k-tiles only)."""
        stages = self.cfg.stages
        ab_pipe = k_tile[0]
        early = self.cfg.early_wait
        passes_before = n_done * ((k_count + stages - 1) // stages)
        landed = cutlass.Boolean(False)   # ``early_wait``: whether the next k-tile's stage had landed
        for it in cutlass.range(k_count // stages, unroll=1):
            phase = (passes_before + it) % 2
            for s in cutlass.range_constexpr(stages):
                t = it * stages + s
                stage = pipeline.PipelineState(stages, t, s, phase)
                if cutlass.const_expr(early):
                    # (The last k-tile of the last pass tests the next tile's first stage: the
                    # test does not wait, so one that never lands costs nothing.)
                    after = pipeline.PipelineState(stages, t + 1, (s + 1) % stages,
                                                   phase if s + 1 < stages else 1 - phase)
                    landed = run_k_tile(k_tile, stage, consumed + t, t, 0, landed, after)
                else:
                    run_k_tile(k_tile, stage, consumed + t, t, 0)
        rest = k_count % stages
        if rest > 0:
            it = k_count // stages
            phase = (passes_before + it) % 2
            for s in cutlass.range_constexpr(stages):
                t = it * stages + s
                stage = pipeline.PipelineState(stages, t, s, phase)
                if s < rest:   # (never for the last stage, rest < stages: the compiler drops it)
                    # (Its first k-tile takes the last full pass's test; the rest wait.)
                    run_k_tile(k_tile, stage, consumed + t, t, 0, landed if early and s == 0 else None)
                else:
                    ab_pipe.consumer_wait(stage)
                    ab_pipe.consumer_release(stage)

    @cute.jit
    def _guarded_tail(self, run_k_tile, k_tile, stage, k_count, group, landed=None):
        """The k_count % group k-tiles after a K loop unrolled by ``group`` (a multiple of the
        lookahead), each under a guard, so their scale registers are known at trace time; each
        retires before the next, so the one ring ``stage`` waits and frees (returned advanced).
        ``landed`` (``early_wait``): the loop's test of the first one's stage."""
        base = k_count - k_count % group
        for g in cutlass.range_constexpr(group - 1):
            if g < k_count % group:
                run_k_tile(k_tile, stage, stage.count, base + g, g, landed if g == 0 else None)
                stage = _advanced(stage)
        return stage

    @staticmethod
    def _test_landed(ab_pipe, after):
        """``early_wait``: whether stage ``after`` has landed, tested without waiting (None
        without ``after``)."""
        if cutlass.const_expr(after is None):
            return None
        return ab_pipe.sync_object_full.test_wait(after.index, after.phase)
