"""Block scales through SMEM on the sm_90a kernel (device code, traced per compile):
``Sm90Config.smem_scales``, DeepGEMM's way of feeding the promotion its factors.

The consumers' own global loads of the scales (`block_scales.load_raw`, a few k-tiles ahead
into registers) stalled them: on the lent H200 ncu put 10% of the warp samples of the
256x128 tile on one copy of a loaded register, and the same kernels with the loads replaced
by constants ran 15-27% faster (bench/results/blockwise_sweep_2026-12-01.txt). Here warp 1
of the producer warpgroup copies each k-tile's scale values into a slot of a ring of its own
with ``cp.async`` (4 bytes each: any scale strides; `producer._scale_loader`), and the
copies' completion arrives on the slot's full barrier; a consumer issues the k-tile's WGMMAs,
then waits for that barrier and reads its two rows and the block value from SMEM while they
run, and frees the slot once its promotion has used them.

The ring has `smem_budget.scale_ring_slots` slots, twice the A/B stages or more, so the loader
runs that many k-tiles ahead, and the consumers' wait for a slot is off the path to the
k-tile's first WGMMA. (Before it, each A/B stage held one slot, freed with the stage, and the
copies arrived on the stage's full barrier; the two designs ran within the runs' spread of
each other on the lent H200: bench/results/blockwise_sweep_2026-12-01.txt, trial 9.)

A slot holds, per 128-deep scale block of the k-tile (two at tile_k = 256), the CTA tile's
``tile_m * row_blocks`` row values of A's scale, then the 128x128 block values of B's that
the tile's columns touch (one, or up to 3 for tiles that do not divide 128 columns:
`smem_budget.scale_b_blocks`), padded to 16 bytes (`smem_budget.scale_slot_floats`). With
``scale_a_tma`` the row values come as one TMA copy per scale block, whose destination must be 128-byte aligned: the ring's row
values are then one region (`tma_views`: each block's rows 128-byte aligned, as 32 rows are)
and the block values, padded to 16 bytes each, a second one after it (the same bytes).
"""

from __future__ import annotations

import copy

import cutlass
import cutlass.cute as cute

from fastdispatch.kernels.scaled_mm.sm90.block_scales import tile_classes, traced_classes
from fastdispatch.kernels.scaled_mm.sm90.smem_budget import (scale_b_blocks, scale_ring_slots, scale_slot_floats,
                                                             scale_slot_rows)

Float32 = cutlass.Float32


def slot_layout(cfg):
    """(slot floats, scale blocks per k-tile, ring slots), the rows contiguous (sized as
    `smem_budget._scale_ring_bytes` counts them); with ``scale_a_tma`` as many floats in one mode
    (`tma_views` divides them)."""
    shape = (scale_slot_floats(cfg), cfg.tile_k // 128, scale_ring_slots(cfg, cfg.stages))
    if cfg.scale_a_tma:
        return cute.make_layout(shape[0] * shape[1] * shape[2])
    return cute.make_layout(shape)


def tma_views(cfg, sS):
    """``scale_a_tma``: the ring's (row values [rows, block, slot], block values [4, block,
    slot]) in the allocation ``sS`` (`slot_layout`)."""
    rows, blocks, slots = scale_slot_rows(cfg), cfg.tile_k // 128, scale_ring_slots(cfg, cfg.stages)
    row_values = cute.make_tensor(sS.iterator, cute.make_layout((rows, blocks, slots)))
    block_values = cute.make_tensor(sS.iterator + rows * blocks * slots, cute.make_layout((4, blocks, slots)))
    return row_values, block_values


class SmemValues:
    """A consumer thread's view of the scale ring (trace-time object): the slots, their
    pipeline and this thread's two row offsets within its row block ``w``. The view of row
    block 0 waits for a slot and frees it; the others read the same slot after it."""

    def __init__(self, cfg, sS, scale_pipe, tCcC, w):
        self.cfg = cfg
        self.halves = cfg.tile_k // 128
        self.sS = sS
        self.pipe = scale_pipe
        self.owner = w == 0
        self.rows = [tCcC[2 * v1][0] + w * cfg.tile_m for v1 in range(2)]
        self.block_at = scale_slot_rows(cfg)
        self.spans = scale_b_blocks(cfg)
        self.span_values = []   # where the tile spans blocks: its class, or its bounds (`at_tile`)
        self.slots = scale_ring_slots(cfg, cfg.stages)
        self.views = tma_views(cfg, sS) if cfg.scale_a_tma else None

    def at_tile(self, tn):
        """This view for the CTA tile of column ``tn`` (traced in its loop body): where its
        tile spans several of B's scale blocks (`scale_b_blocks`), its class: where in its
        first block it starts (`block_scales.tile_classes`; the promotion has one per class),
        or past `block_scales.MAX_TRACED_CLASSES` the tile columns where its 2nd and 3rd
        blocks begin (the promotion selects per group)."""
        view = copy.copy(self)
        into = tn * self.cfg.tile_n % 128   # columns of its first block before the tile
        if traced_classes(self.cfg):
            view.span_values = [into // (128 // tile_classes(self.cfg))]
        elif self.spans > 1:   # (selects: where its 2nd and 3rd blocks begin)
            view.span_values = [128 * j - into for j in range(1, self.spans)]
        return view

    def _slot(self, pos):
        # Ring position `pos` (the k-tile's, counted like the A/B ring's) -> (slot, phase).
        return pos & (self.slots - 1), (pos >> (self.slots.bit_length() - 1)) & 1

    def take(self, pos, half):
        """The values of scale block ``half`` of the k-tile at ring position ``pos``, once
        they landed: [row 0, row 1, block values..., its class or bounds], `block_scales.factors_for`'
        order (one block value and neither unless the tile spans blocks: `at_tile`)."""
        index, phase = self._slot(pos)
        if self.owner and half == 0:
            self.pipe.sync_object_full.wait(index, phase)
        if self.views is not None:
            row_values, block_values = self.views
            rows = [row_values[(self.rows[0], half, index)], row_values[(self.rows[1], half, index)]]
            blocks = [block_values[(b, half, index)] for b in range(self.spans)]
        else:
            rows = [self.sS[(self.rows[0], half, index)], self.sS[(self.rows[1], half, index)]]
            blocks = [self.sS[(self.block_at + b, half, index)] for b in range(self.spans)]
        return rows + blocks + self.span_values

    def release(self, pos):
        """The k-tile at ``pos`` has been promoted: its slot may be refilled (every consumer
        thread arrives after its own reads; its values were used, so they have landed)."""
        if self.owner:
            self.pipe.sync_object_empty.arrive(self._slot(pos)[0], None)
