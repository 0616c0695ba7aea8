"""The static persistent tile order shared by the scaled_mm kernels (traced into device code).

Persistent CTAs (or clusters) walk the output tiles with a stride of the grid size; this maps a
linear cluster-tile index to (cluster row, cluster column) in L2-friendly groups of ``group_m``
cluster rows, walked column by column inside a group, so concurrently running clusters share
rows of A and columns of B in L2. Every warp role of a kernel calls it and so agrees on the order.
"""
import cutlass


def grouped_cluster_tile(tile, tiles_m, tiles_n, group_m: int):
    """Linear cluster-tile index -> (cluster-tile row, cluster-tile column)."""
    group = group_m * tiles_n
    first_m = (tile // group) * group_m
    rows = cutlass.min(tiles_m - first_m, group_m)
    in_group = tile % group
    return first_m + in_group % rows, in_group // rows
