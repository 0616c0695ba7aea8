"""``Sm90Config.pingpong`` on the sm_90a kernel (device code, traced per compile):
`PingpongMixin`, methods of `kernel.ScaledMmSm90` for two consumer warpgroups that take turns
at whole tiles (CUTLASS's ping-pong kernel) instead of sharing each one.

Warpgroup w computes the CTA's tiles 2i + w and reads their k-tiles from the one A/B ring,
where the producer put them in tile order, so the other warpgroup's k-tiles lie between its
own. Its K loop starts only once the other one's K loop has waited for every stage of its
tile (`_pingpong_turn`, then `_pingpong_pass`: a named barrier each way). That order is what
makes the ring's parity waits sound: a wait on a stage tells two consecutive fills apart, not
three, so no warpgroup may wait a stage's fill while an earlier one is still outstanding. It
also keeps the two K loops apart, so one warpgroup's epilogue runs under the other's WGMMAs.
"""

from __future__ import annotations

import cutlass.cute as cute


class PingpongMixin:
    """The turn-taking of `ScaledMmSm90`'s ``pingpong`` consumer warpgroups (a mixin)."""

    #: Named barriers: "warpgroup 0's K loop is done" and "warpgroup 1's" (1 and 2 are the
    #: warpgroups' epilogue barriers).
    pingpong_bar_ids = (3, 4)

    def _pingpong_start(self, wg, cluster_id, num_clusters, k_count):
        """Warpgroup ``wg`` (0 or 1)'s first tile and its first k-tile's ring position."""
        return cluster_id + wg * num_clusters, wg * k_count

    @cute.jit
    def _pingpong_turn(self, wg, n_done):
        """Before warpgroup ``wg``'s K loop of its tile ``n_done``: wait until the other
        warpgroup's K loop of the tile before it is done (none before warpgroup 0's first)."""
        if wg == 1 or n_done > 0:
            cute.arch.barrier(barrier_id=self.pingpong_bar_ids[0] + 1 - wg, number_of_threads=256)

    @cute.jit
    def _pingpong_pass(self, wg, next_tile, num_tiles):
        """After warpgroup ``wg``'s K loop: let the other warpgroup start its next tile
        (``next_tile``, the CTA's tile after this one), if there is one to start: every arrival
        has its wait, none is left pending at exit."""
        if next_tile < num_tiles:
            cute.arch.barrier_arrive(barrier_id=self.pingpong_bar_ids[0] + wg, number_of_threads=256)
