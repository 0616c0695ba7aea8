"""Block scales through SMEM on the sm_90a kernel (device code, traced per compile):
``Sm90Config.smem_scales``, DeepGEMM's way of feeding the promotion its factors.

The consumers' own global loads of the scales (`block_scales.load_raw`, a few k-tiles ahead
into registers) stalled them: on the lent H200 ncu put 10% of the warp samples of the
256x128 tile on one copy of a loaded register, and the same kernels with the loads replaced
by constants ran 15-27% faster (bench/results/blockwise_sweep_2026-12-01.txt). Here warp 1
of the producer warpgroup copies each k-tile's scale values into a slot of the A/B ring's
stage with ``cp.async`` (4 bytes each: any scale strides), as soon as the stage is free, and
the copies' completion arrives on the slot's own full barrier; so the values land with the
stage's tiles, `stages` k-tiles ahead, and a consumer reads its two rows and the block
value from SMEM after that barrier.

A slot holds, per 128-deep scale block of the k-tile (two at tile_k = 256), the CTA tile's
``tile_m * row_blocks`` row values of A's scale, then the one 128x128 block value of B's,
padded to 16 bytes (`slot_floats`). The slot is reused when the A/B stage is: the loader
waits on the stage's empty barrier like the TMA producer does.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
from cutlass.cute.nvgpu import cpasync

Float32 = cutlass.Float32


def slot_rows(cfg) -> int:
    """Row values of A's scale per 128-deep scale block of a stage (the CTA tile's rows)."""
    return cfg.tile_m * cfg.row_blocks


def slot_floats(cfg) -> int:
    """Floats per 128-deep scale block of a slot: the rows, the block value, 16-byte padding."""
    return slot_rows(cfg) + 4


def slot_layout(cfg):
    """(slot floats, scale blocks per k-tile, stages), the rows contiguous."""
    return cute.make_layout((slot_floats(cfg), cfg.tile_k // 128, cfg.stages))


def _one(tensor, coord):
    """The one-element view of ``tensor`` at ``coord`` (a cp.async operand)."""
    return cute.make_tensor(tensor.iterator + cute.crd2idx(coord, tensor.layout), cute.make_layout(1))


class SmemValues:
    """A consumer thread's view of the scale slots (trace-time object): the slots, their
    full barriers and this thread's two row offsets within its row block ``w``."""

    def __init__(self, cfg, sS, full, tCcC, w):
        self.halves = cfg.tile_k // 128
        self.sS = sS
        self.full = full
        self.rows = [tCcC[2 * v1][0] + w * cfg.tile_m for v1 in range(2)]
        self.block_at = slot_rows(cfg)

    def take(self, stage, half):
        """The values of scale block ``half`` of the k-tile in ring slot ``stage`` ((index,
        phase)), once they landed: [row 0, row 1, block], `block_scales.factors`' order."""
        index, phase = stage
        self.full.wait(index, phase)
        return [self.sS[(self.rows[0], half, index)], self.sS[(self.rows[1], half, index)],
                self.sS[(self.block_at, half, index)]]


class SmemScalesMixin:
    """The scale loader of `ScaledMmSm90` (warp 1 of the producer warpgroup; no state of its own)."""

    @cute.jit
    def _scale_loader(self, ab_pipe, scale_pipe, sS, mRowScale, mColScale, tiles_m, tiles_n, num_tiles,
                      cluster_id, num_clusters, cluster_coord, k_begin, k_count, lane):
        """For every k-tile of this CTA's tiles, in the TMA producer's order: wait until its
        ring stage is free, copy its scale values into the stage's slot (lane l: rows l,
        l + 32, ...; lane 0: the block value), then arrive on the slot's full barrier when
        the copies land (``cp.async.mbarrier.arrive.noinc``, one arrival per lane)."""
        cfg = self.cfg
        halves = cfg.tile_k // 128
        rows = slot_rows(cfg)
        atom = cute.make_copy_atom(cpasync.CopyG2SOp(), Float32, num_bits_per_copy=32)
        row_last = mRowScale.shape[0] - 1
        kb_last = mRowScale.shape[1] - 1
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, cfg.stages)
        tile = cluster_id
        while tile < num_tiles:
            tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
            r0 = tm * rows
            nb = tn * cfg.tile_n // 128   # the tile's one 128-column block of N
            for kt in cutlass.range(k_count, unroll=1):
                ab_pipe.sync_object_empty.wait(state.index, state.phase)
                for h in cutlass.range_constexpr(halves):
                    # (Clamped: the second half of a last 256-deep k-tile past K reads a valid value.)
                    kb = cutlass.min((k_begin + kt) * halves + h, kb_last)
                    for i in cutlass.range_constexpr(rows // 32):
                        r = lane + 32 * i
                        cute.copy(atom, _one(mRowScale, (cutlass.min(r0 + r, row_last), kb)),
                                  _one(sS, (r, h, state.index)))
                    if lane == 0:
                        cute.copy(atom, _one(mColScale, (kb, nb)), _one(sS, (rows, h, state.index)))
                scale_pipe.producer_commit(state)
                state.advance()
            tile += num_clusters
        cute.arch.cp_async_commit_group()
        cute.arch.cp_async_wait_group(0)
