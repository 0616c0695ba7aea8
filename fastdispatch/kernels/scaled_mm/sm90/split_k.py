"""The split-K sum of the sm_90a kernel (device code, traced per compile): `SplitKMixin`, the
method of `kernel.ScaledMmSm90` by which the CTAs of a cluster that split one tile's K range
(``Sm90Config.split_k``) add their fp32 partials through distributed SMEM."""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass._mlir.dialects.nvvm import MemScopeKind

from fastdispatch.kernels.scaled_mm.sm90.smem_budget import _reduce_bytes

Int32 = cutlass.Int32
# Cluster-scope arrivals: the DSMEM hand-off of partial sums needs cross-CTA ordering. (The
# enum has no public alias in 4.8.1; cute.arch's own wrappers import it from here too.)
_CLUSTER_SCOPE = MemScopeKind.CLUSTER


class SplitKMixin:
    """The split-K reduction of `ScaledMmSm90` (a mixin: no state of its own)."""

    @cute.jit
    def _reduce_partials(self, acc, sRed, red_full, red_empty, k_rank, thread, n_done):
        """Sum the split-K parts of one tile into the `acc` of the cluster's CTA of rank 0, in
        rank order (so the result does not depend on timing). Every other CTA waits until
        its slot in rank 0's SMEM is free (rank 0 has read the previous tile's), then writes
        its accumulator there with ``st.async`` (distributed SMEM; the bytes complete rank 0's
        `red_full` barrier). All CTAs hold their fragments in the same order, so thread t's
        value i goes to (i % 4, t, i // 4) of the slot and rank 0's thread t reads it back."""
        cfg = self.cfg
        vecs = cute.size(acc) // 4
        if k_rank == 0:
            if thread == 0:
                cute.arch.mbarrier_arrive_and_expect_tx(red_full, _reduce_bytes(cfg))
            cute.arch.mbarrier_wait(red_full, n_done % 2)
            for s in cutlass.range_constexpr(cfg.split_k - 1):
                for i in cutlass.range_constexpr(cute.size(acc)):
                    acc[i] = acc[i] + sRed[(i % 4, thread, i // 4, s)]
            # Slots read: the other CTAs may write the next tile's partials.
            for r in cutlass.range_constexpr(1, cfg.split_k):
                cute.arch.mbarrier_arrive(red_empty, r, scope=_CLUSTER_SCOPE)
        else:
            cute.arch.mbarrier_wait(red_empty, (n_done + 1) % 2)
            bits = cute.recast_tensor(acc, Int32)
            for v in cutlass.range_constexpr(vecs):
                dst = sRed[(None, thread, v, k_rank - 1)].iterator
                value = (bits[4 * v], bits[4 * v + 1], bits[4 * v + 2], bits[4 * v + 3])
                cute.arch.store_async_dsmem(dst, value, red_full, 0)
