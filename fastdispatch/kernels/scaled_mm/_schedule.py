"""The static persistent tile order shared by the scaled_mm kernels (traced into device code).

Persistent CTAs (or clusters) walk the output tiles with a stride of the grid size; this maps a
linear cluster-tile index to (cluster row, cluster column) in L2-friendly groups of ``group_m``
cluster rows, walked column by column inside a group, so concurrently running clusters share
rows of A and columns of B in L2. Every warp role of a kernel calls it and so agrees on the order.
"""
import cutlass
import cutlass.cute as cute

#: The L2 cache policy of the TMA loads (an opaque ``createpolicy`` value), read at trace time;
#: None leaves the DSL's (0). A trial knob: bench/blockwise_probe.py's ``_evn`` twins set
#: CUTLASS's EVICT_NORMAL (0x1000000000000000), the hint DeepGEMM's loads carry.
TMA_LOAD_POLICY = None


def _policy():
    return {} if TMA_LOAD_POLICY is None else {"cache_policy": cutlass.Int64(TMA_LOAD_POLICY)}


def persistent_grid(rows, cols, tile_rows, tile_cols, max_clusters):
    """(tiles_m, tiles_n, clusters to launch) of a persistent grid over a rows x cols output in
    cluster tiles of tile_rows x tile_cols: one cluster per tile, at most ``max_clusters``."""
    tiles_m = (rows + tile_rows - 1) // tile_rows
    tiles_n = (cols + tile_cols - 1) // tile_cols
    return tiles_m, tiles_n, cutlass.min(tiles_m * tiles_n, max_clusters)


def grouped_cluster_tile(tile, tiles_m, tiles_n, group_m: int):
    """Linear cluster-tile index -> (cluster-tile row, cluster-tile column)."""
    group = group_m * tiles_n
    first_m = (tile // group) * group_m
    rows = cutlass.min(tiles_m - first_m, group_m)
    in_group = tile % group
    return first_m + in_group % rows, in_group // rows


@cute.jit
def load_k_tiles(ab_pipe, state, k_begin, k_count, tma_atom_a, tAgA, tAsA, a_mcast, tma_atom_b, tBgB, tBsB,
                 b_mcast, loads_a=None, pad_to_stages=False):
    """The TMA producer's rolled K-loop for one output tile, k-tiles ``k_begin ..
    k_begin + k_count - 1``: each iteration's blocking acquire waits for a free ring slot (the
    first `stages` iterations fill the ring, no unrolled prologue), then A's and B's k-tile land
    on that slot's barrier. ``tAgA`` / ``tAsA`` may be tuples of partitions: row blocks of one
    CTA tile (sm90 ``row_blocks``), each its own TMA copy onto the same barrier. ``loads_a``:
    None (this CTA loads its part of A), or a flag of whether it loads A's tile for the whole
    cluster (sm90 ``a_from_leader``; the others only expect its bytes). ``pad_to_stages`` (sm90
    ``static_stages``): then fill the ring up to the end of its pass with empty stages, an
    arrival without bytes each, so the next tile starts at stage 0. Returns the advanced state."""
    a_parts = tuple(zip(tAgA, tAsA)) if isinstance(tAsA, tuple) else ((tAgA, tAsA),)
    for k in cutlass.range(k_count, unroll=1):
        ab_pipe.producer_acquire(state)
        bar = ab_pipe.producer_get_barrier(state)
        kk = k_begin + k
        if cutlass.const_expr(loads_a is None):
            _load_a(tma_atom_a, a_parts, kk, state, bar, a_mcast)
        elif loads_a:
            _load_a(tma_atom_a, a_parts, kk, state, bar, a_mcast)
        cute.copy(tma_atom_b, tBgB[(None, kk)], tBsB[(None, state.index)], tma_bar_ptr=bar, mcast_mask=b_mcast,
                  **_policy())
        state.advance()
    if cutlass.const_expr(pad_to_stages):
        stages = state.stages
        for _ in cutlass.range((stages - k_count % stages) % stages, unroll=1):
            ab_pipe.sync_object_empty.wait(state.index, state.phase)
            with cute.arch.elect_one():
                cute.arch.mbarrier_arrive(ab_pipe.producer_get_barrier(state))
            state.advance()
    return state


@cute.jit
def _load_a(tma_atom_a, a_parts, kk, state, bar, a_mcast):
    for w in cutlass.range_constexpr(len(a_parts)):
        gA, sA = a_parts[w]
        cute.copy(tma_atom_a, gA[(None, kk)], sA[(None, state.index)], tma_bar_ptr=bar, mcast_mask=a_mcast,
                  **_policy())
