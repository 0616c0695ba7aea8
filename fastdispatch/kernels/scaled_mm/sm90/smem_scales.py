"""Block scales through SMEM on the sm_90a kernel (device code, traced per compile):
``Sm90Config.smem_scales``, DeepGEMM's way of feeding the promotion its factors.

The consumers' own global loads of the scales (`block_scales.load_raw`, a few k-tiles ahead
into registers) stalled them: on the lent H200 ncu put 10% of the warp samples of the
256x128 tile on one copy of a loaded register, and the same kernels with the loads replaced
by constants ran 15-27% faster (bench/results/blockwise_sweep_2026-12-01.txt). Here warp 1
of the producer warpgroup copies each k-tile's scale values into a slot of the A/B ring's
stage with ``cp.async`` (4 bytes each: any scale strides; `producer._scale_loader`), as soon
as the stage is free, and the copies' completion arrives on the stage's full barrier (which
counts the loader's 32 lanes besides the TMA producer); so the values land with the stage's
tiles, `stages` k-tiles ahead, and a consumer reads its two rows and the block value from
SMEM after the one wait it makes for the tiles anyway. (A barrier of the slots' own cost
two more waits per k-tile in the 256x128 tile's loop, serialized before its first WGMMA.)

A slot holds, per 128-deep scale block of the k-tile (two at tile_k = 256), the CTA tile's
``tile_m * row_blocks`` row values of A's scale, then the one 128x128 block value of B's,
padded to 16 bytes (`config.scale_slot_floats`). The slot is reused when the A/B stage is: the
loader waits on the stage's empty barrier like the TMA producer does.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute

from fastdispatch.kernels.scaled_mm.sm90.config import scale_slot_floats, scale_slot_rows

Float32 = cutlass.Float32


def slot_layout(cfg):
    """(slot floats, scale blocks per k-tile, stages), the rows contiguous (sized as
    `config._stage_bytes` counts them)."""
    return cute.make_layout((scale_slot_floats(cfg), cfg.tile_k // 128, cfg.stages))


class SmemValues:
    """A consumer thread's view of the scale slots (trace-time object): the slots and this
    thread's two row offsets within its row block ``w``."""

    def __init__(self, cfg, sS, tCcC, w):
        self.halves = cfg.tile_k // 128
        self.sS = sS
        self.rows = [tCcC[2 * v1][0] + w * cfg.tile_m for v1 in range(2)]
        self.block_at = scale_slot_rows(cfg)

    def take(self, stage, half):
        """The values of scale block ``half`` of the k-tile in ring slot ``stage`` ((index,
        phase)): [row 0, row 1, block], `block_scales.factors`' order. The caller has waited
        for the stage's full barrier."""
        index, _ = stage
        return [self.sS[(self.rows[0], half, index)], self.sS[(self.rows[1], half, index)],
                self.sS[(self.block_at, half, index)]]
