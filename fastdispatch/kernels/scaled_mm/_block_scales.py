"""Block scales on the sm_90a kernel (device code, traced per compile): torch's BlockWise
recipes applied where the fp32 promotion already happens, once per 128-deep k-tile.

    acc[m, n] += partial_kb[m, n] * scale_a[m, kb] * scale_b[kb, n // 128]    (1x128 x 128x128)
    acc[m, n] += partial_kb[m, n] * scale_a[m, kb] * scale_b[kb, n]           (1x128 x 1x128)

So a promoted add (FADD) becomes an FMA with a factor per accumulator element; the factors
are loaded from global memory (L2-resident: the scales are K/128 floats per row) right after
the k-tile's WGMMAs are issued, so their latency hides under the MMAs. The distinct values
per thread come from the WGMMA accumulator layout (CUTLASS's 64xN C layout): thread values
(v0, v1, v2) of shape (2, 2, N/8) sit at row +8*v1 and column +v0 +8*v2 of the thread's
first element, so a thread holds 2 distinct rows and N/4 distinct columns; one 128x128 block
scale covers the whole tile (tiles never straddle a 128-column block: `Sm90Config` checks).
"""
from __future__ import annotations

import cutlass
import cutlass.cute as cute


@cute.jit
def block_factors(cfg, tCcC, tm, tn, kb, mRowScale, mColScale):
    """This thread's scale factor per accumulator element for k-tile ``kb`` of tile
    (tm, tn), as a list (repeated values are the same register). ``mRowScale`` scales the
    MMA's rows and ``mColScale`` its columns: A's and B's scales, swapped with ``swap_ab``.
    Coordinates past the problem are clamped (those elements are never stored)."""
    if cutlass.const_expr(cfg.swap_ab):
        scale_a, scale_b = mColScale, mRowScale
    else:
        scale_a, scale_b = mRowScale, mColScale
    per_block_b = cfg.scales == "block_1x128_128x128"
    a_rows = scale_a.shape[0]
    b_cols = scale_b.shape[1]
    r0 = tm * cfg.tile_m
    c0 = tn * cfg.tile_n
    # The thread's 2 distinct MMA rows (v1) and tile_n / 4 distinct columns (v0, v2).
    rows = []
    for v1 in cutlass.range_constexpr(2):
        rows.append(r0 + tCcC[2 * v1][0])
    cols = []
    for j in cutlass.range_constexpr(cfg.tile_n // 4):
        cols.append(c0 + tCcC[j % 2 + 4 * (j // 2)][1])

    def a_at(i):
        return scale_a[(cutlass.min(i, a_rows - 1), kb)]

    def b_at(j):
        return scale_b[(kb, cutlass.min(j, b_cols - 1))]

    row_f = None
    col_f = None
    if cutlass.const_expr(cfg.swap_ab):
        col_f = _loads(a_at, cols)                     # MMA columns are A's rows
        if cutlass.const_expr(per_block_b):
            col_f = _times(col_f, b_at(r0 // 128))     # the tile's 64 rows of N: one block
        else:
            row_f = _loads(b_at, rows)
    else:
        row_f = _loads(a_at, rows)
        if cutlass.const_expr(per_block_b):
            row_f = _times(row_f, b_at(c0 // 128))
        else:
            col_f = _loads(b_at, cols)
    factors = []
    for i in cutlass.range_constexpr(cute.size(tCcC)):
        r, c = (i // 2) % 2, i % 2 + 2 * (i // 4)
        if cutlass.const_expr(row_f is None):
            factors.append(col_f[c])
        elif cutlass.const_expr(col_f is None):
            factors.append(row_f[r])
        else:
            factors.append(row_f[r] * col_f[c])
    return factors


def _loads(at, coords):
    out = []
    for c in coords:
        out.append(at(c))
    return out


def _times(values, factor):
    out = []
    for v in values:
        out.append(v * factor)
    return out


@cute.jit
def promote(acc, partial, factors):
    """acc += partial (rowwise: the scales come in the epilogue) or += partial * factor."""
    for i in cutlass.range_constexpr(cute.size(acc)):
        if cutlass.const_expr(factors is None):
            acc[i] = acc[i] + partial[i]
        else:
            acc[i] = acc[i] + partial[i] * factors[i]
