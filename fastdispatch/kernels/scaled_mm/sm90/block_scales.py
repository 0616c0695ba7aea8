"""Block scales on the sm_90a kernel (device code, traced per compile): torch's BlockWise
recipes applied where the fp32 promotion already happens, once per 128-deep k-tile.

    acc[m, n] += partial_kb[m, n] * scale_a[m, kb] * scale_b[kb, n // 128]    (1x128 x 128x128)
    acc[m, n] += partial_kb[m, n] * scale_a[m, kb] * scale_b[kb, n]           (1x128 x 1x128)

So a promoted add (FADD) becomes an FMA with a factor per accumulator element. With B per
128x128 the values behind the factors come from SMEM slots a producer warp fills
(`smem_scales`, the table's choice). Otherwise (B per 1x128, or ``smem_scales`` off) each
thread loads them from global memory (L2-resident: K/128 floats per row) a few k-tiles ahead,
into a few registers (`load_raw`), so their latency hides under the k-tiles in between (loaded
after the same k-tile's WGMMAs were issued, they cost 0.35-0.75x of DeepGEMM's speed on the
lent H200: the latency showed in every k-tile; even ahead they cost 17-20%, measured by
replacing them with constants). The distinct values
per thread come from the WGMMA accumulator layout (CUTLASS's 64xN C layout): thread values
(v0, v1, v2) of shape (2, 2, N/8) sit at row +8*v1 and column +v0 +8*v2 of the thread's
first element, so a thread holds 2 distinct rows and N/4 distinct columns; one 128x128 block
scale covers the whole tile (tiles never straddle a 128-column block: `Sm90Config` checks),
except with ``smem_scales``, where a tile may span up to 3 (`SpanningFactors`).
"""
from __future__ import annotations

import math

import cutlass
import cutlass.cute as cute
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T

from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_b_blocks


def _sides(cfg):
    """Which distinct values a thread loads per 128-deep scale block: its 2 MMA rows, its
    tile_n / 4 MMA columns, one 128x128 block value (each True/False)."""
    per_block_b = cfg.scales == "block_1x128_128x128"
    # A's scales follow A's rows: the MMA's rows, or its columns with swap_ab; B's follow
    # B's rows (per 1x128) or are one value per tile (per 128x128).
    rows = not cfg.swap_ab or not per_block_b
    cols = cfg.swap_ab or not per_block_b
    return rows, cols, per_block_b


def raw_count(cfg) -> int:
    """Registers one scale block's loaded values take (`load_raw`)."""
    rows, cols, block = _sides(cfg)
    return 2 * rows + cfg.tile_n // 4 * cols + block


#: Registers the look-ahead may hold per thread (scale values of the blocks in flight).
LOOKAHEAD_REGISTERS = 24


def lookahead(cfg) -> int:
    """128-deep scale blocks whose values are loaded ahead: 4 where they fit in
    `LOOKAHEAD_REGISTERS` (3 values per block for 1x128 x 128x128 unswapped), fewer for wide
    per-column recipes and for two row blocks (``row_blocks``: each has its own look-ahead). A
    divisor of 4 (the overlapped loop's group)."""
    # Two row blocks keep 2 x 64 accumulator registers besides the temporary: their look-ahead
    # gets half the budget (4 k-tiles of both blocks' values spilled 16 registers at a 1x2
    # cluster, ptxas for sm_90a).
    budget = LOOKAHEAD_REGISTERS // cfg.row_blocks
    return next(d for d in (4, 2, 1) if d * raw_count(cfg) * cfg.row_blocks <= budget or d == 1)


@cute.jit
def tile_context(cfg, tCcC, tm, tn, k_begin, mRowScale, mColScale):
    """Per tile (tm, tn): this thread's clamped scale coordinates (rows, columns, the 128x128
    block) and the scale tensors as (A's, B's), for `load_raw`. ``mRowScale`` / ``mColScale``
    are the scales of the MMA's rows / columns (A's and B's, swapped with ``swap_ab``)."""
    if cutlass.const_expr(cfg.swap_ab):
        scale_a, scale_b = mColScale, mRowScale
    else:
        scale_a, scale_b = mRowScale, mColScale
    # Extents along the coordinate each side is indexed by: A [M, KB] by its rows, B [KB, ...]
    # by its columns (the MMA's rows are B's with swap_ab).
    row_last = (mRowScale.shape[1] if cutlass.const_expr(cfg.swap_ab) else mRowScale.shape[0]) - 1
    col_last = (mColScale.shape[0] if cutlass.const_expr(cfg.swap_ab) else mColScale.shape[1]) - 1
    r0 = tm * cfg.tile_m
    c0 = tn * cfg.tile_n
    rows = []
    for v1 in cutlass.range_constexpr(2):
        rows.append(cutlass.min(r0 + tCcC[2 * v1][0], row_last))
    cols = []
    for j in cutlass.range_constexpr(cfg.tile_n // 4):
        cols.append(cutlass.min(c0 + tCcC[j % 2 + 4 * (j // 2)][1], col_last))
    # The tile's one 128-column block of N (64 rows of N with swap_ab): tiles never straddle.
    block = (r0 if cutlass.const_expr(cfg.swap_ab) else c0) // 128
    return rows, cols, block, k_begin, scale_a, scale_b


@cute.jit
def load_raw(cfg, ctx, j, dst):
    """Load the scale values of the CTA's 128-deep scale block ``j`` (its k-tile ``j``, or
    half of one at tile_k = 256) into the register tensor ``dst`` (`raw_count` values: rows,
    then columns, then the block value)."""
    rows, cols, block, k_begin, scale_a, scale_b = ctx
    # Clamped: the look-ahead load after a tile's last block reads a valid (unused) value.
    kb = cutlass.min(k_begin + j, scale_a.shape[1] - 1)
    has_rows, has_cols, has_block = _sides(cfg)
    at = 0
    if cutlass.const_expr(has_rows):
        for r in cutlass.range_constexpr(2):
            # swap_ab: the MMA's rows are N (B per 1x128); otherwise A's rows.
            dst[at + r] = scale_b[(kb, rows[r])] if cutlass.const_expr(cfg.swap_ab) else scale_a[(rows[r], kb)]
        at += 2
    if cutlass.const_expr(has_cols):
        for c in cutlass.range_constexpr(cfg.tile_n // 4):
            dst[at + c] = scale_a[(cols[c], kb)] if cutlass.const_expr(cfg.swap_ab) else scale_b[(kb, cols[c])]
        at += cfg.tile_n // 4
    if cutlass.const_expr(has_block):
        dst[at] = scale_b[(kb, block)]


def snapshot(raw):
    """The values of the register tensor ``raw`` now (a later `load_raw` into it leaves these)."""
    return [raw[i] for i in range(cute.size(raw))]


def factors(cfg, vals, count):
    """Per accumulator element (``count`` of them) its scale factor from one block's loaded
    values, as a list (repeated values are the same register): row x column x block; a tile
    within one of B's 128-column blocks (one that spans several: `factors_for`)."""
    has_rows, has_cols, has_block = _sides(cfg)
    n_cols = cfg.tile_n // 4
    rows = vals[:2] if has_rows else None
    cols = vals[2 * has_rows:2 * has_rows + n_cols] if has_cols else None
    if has_block:   # fold the one block value into the side that has per-thread values
        block = vals[-1]
        if rows is not None:
            rows = [v * block for v in rows]
        else:
            cols = [v * block for v in cols]
    out = []
    for i in range(count):
        r, c = (i // 2) % 2, i % 2 + 2 * (i // 4)
        if rows is None:
            out.append(cols[c])
        elif cols is None:
            out.append(rows[r])
        else:
            out.append(rows[r] * cols[c])
    return out


def tile_classes(cfg) -> int:
    """Where a tile can start within one of B's 128-column scale blocks: tile n starts
    ``n * tile_n % 128`` columns in, a multiple of gcd(tile_n, 128), so 128 / gcd places
    (8 for 176 columns, 16 for 56 or 88); the tile's class is that place's index."""
    return 128 // math.gcd(cfg.tile_n, 128)


class SpanningFactors:
    """`factors` for a tile over ``spans`` = `scale_b_blocks` of B's blocks (trace-time object):
    ``vals`` = [row 0, row 1, the blocks' values, the tile's class (`tile_classes`)]
    (`SmemValues.take`). An accumulator element's columns come in groups of 8 (value i is in
    group i // 4), each within one block; which block depends on the tile's class only, so
    `promote` traces one promotion per class, each with its groups' blocks fixed, and runs the
    tile's (DeepGEMM compiles one K loop per such bound). A select per group and row instead
    cost 13% at 4096x2112x7168 (128x176 tiles: 52 selp.f32 beside 88 FMAs per promotion;
    121-123 vs 106-109 us on the lent H200, bench/results/h200_2026-12-06/probe_nosel.log)."""

    def __init__(self, cfg, vals, count):
        spans = scale_b_blocks(cfg)
        rows, blocks = vals[:2], vals[2:2 + spans]
        self.tile_class = vals[2 + spans]
        self.classes = tile_classes(cfg)
        self.step = 128 // self.classes
        self.count = count
        self.products = [[r * b for b in blocks] for r in rows]   # [row][block]: 2 x spans FMULs

    def for_class(self, c):
        """Per accumulator element its factor for a tile of class ``c`` (starting ``c * step``
        columns into its first block): group g's block is (c * step + 8 g) // 128."""
        into = c * self.step
        return [self.products[(i // 2) % 2][(into + 8 * (i // 4)) // 128] for i in range(self.count)]


#: Tiles with at most this many classes trace a promotion per class (`SpanningFactors`);
#: tiles with more select per group (`_spanning_factors`). On the lent H200 (2026-12-03,
#: bench/results/h200_2026-12-06/blockwise_run18.log) the 8 classes of 128x176 ran 112.1 us at
#: 4096x2112x7168 against 121-124 with selects; the 16 of the 56-wide small-M tile (28 FMAs per
#: promotion) ran 1.3-1.6x slower than with selects (64x7168x16384 61.9 vs 42.2 us,
#: 128x7168x16384 73.8 vs 45.4): 16 branches per promotion, 240 registers.
MAX_TRACED_CLASSES = 8


def factors_for(cfg, vals, count):
    """`factors`, or for a tile over several of B's blocks its `SpanningFactors` (up to
    `MAX_TRACED_CLASSES` classes) or its factors by a select per group."""
    if traced_classes(cfg):
        return SpanningFactors(cfg, vals, count)
    if cfg.smem_scales and scale_b_blocks(cfg) > 1:
        return _spanning_factors(cfg, vals, count)
    return factors(cfg, vals, count)


def traced_classes(cfg) -> bool:
    """Whether ``cfg``'s promotion is traced per tile class (`SpanningFactors`): the tile spans
    B's blocks in at most `MAX_TRACED_CLASSES` classes. The tile then carries its class, else
    the columns where its 2nd and 3rd blocks begin (`SmemValues.at_tile`)."""
    return cfg.smem_scales and scale_b_blocks(cfg) > 1 and tile_classes(cfg) <= MAX_TRACED_CLASSES


def _spanning_factors(cfg, vals, count):
    """`factors` by selects for a tile over ``spans`` = `scale_b_blocks` of B's blocks with more
    than `MAX_TRACED_CLASSES` classes: ``vals`` = [row 0, row 1, the blocks' values, the tile
    columns where blocks 2.. begin]. Group g takes block j's value where bound j - 1 <= 8 g;
    the bounds are the tile's, so the selects are warp-uniform."""
    spans = scale_b_blocks(cfg)
    rows, blocks, bounds = vals[:2], vals[2:2 + spans], vals[2 + spans:]
    products = [[r * b for b in blocks] for r in rows]   # [row][block]
    chosen = {}
    out = []
    for i in range(count):
        r, g = (i // 2) % 2, i // 4
        if (r, g) not in chosen:
            f = products[r][0]
            for j in range(1, spans):
                f = cutlass.select_(bounds[j - 1] <= 8 * g, products[r][j], f)
            chosen[(r, g)] = f
        out.append(chosen[(r, g)])
    return out


@cute.jit
def promote(acc, partial, factors):
    """acc += partial (rowwise: the scales come in the epilogue) or += partial * factor;
    `SpanningFactors`: the promotion of the tile's class (one warp-uniform branch per class)."""
    if cutlass.const_expr(isinstance(factors, SpanningFactors)):
        tile_class = factors.tile_class
        for c in cutlass.range_constexpr(factors.classes):
            _promote_if(tile_class == c, acc, partial, factors.for_class(c))
    else:
        _promote(acc, partial, factors)


@cute.jit
def _promote_if(hit, acc, partial, factors):
    if hit:
        _promote(acc, partial, factors)


@cute.jit
def _promote(acc, partial, factors):
    for i in cutlass.range_constexpr(cute.size(acc)):
        if cutlass.const_expr(factors is None):
            acc[i] = acc[i] + partial[i]
        else:
            acc[i] = acc[i] + partial[i] * factors[i]


@cute.jit
def pin(acc):
    """Each element of ``acc`` computed here, before what follows (CUTLASS's
    ``warpgroup_fence_operand``: an empty volatile asm per register). After a promotion it
    keeps the compiler from sinking the adds past the next WGMMAs, which would hold the
    old partial sums in a second set of registers while those WGMMAs overwrite them."""
    for i in cutlass.range_constexpr(cute.size(acc)):
        acc[i] = cutlass.Float32(llvm.inline_asm(T.f32(), [acc[i].ir_value()], "", "=f,0", has_side_effects=True))
