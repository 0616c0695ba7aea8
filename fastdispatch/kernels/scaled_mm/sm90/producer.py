"""The producer warpgroup's roles on the sm_90a kernel (device code, traced per compile):
`ProducerMixin`, methods of `kernel.ScaledMmSm90`. Warp 0 issues every TMA load of the A/B
ring; with ``smem_scales`` warp 1 copies each k-tile's block-scale values into the scale
ring (`smem_scales`; A's rows by TMA with ``scale_a_tma``). Both walk this CTA's tiles in the consumers' order, each on its own
ring; the other two warps only give their registers back.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
from cutlass.cute.nvgpu import cpasync

from fastdispatch.kernels.scaled_mm._schedule import load_k_tiles
from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_b_blocks, scale_ring_slots, scale_slot_rows
from fastdispatch.kernels.scaled_mm.sm90.smem_scales import tma_views

Float32, Int32 = cutlass.Float32, cutlass.Int32


def _one(tensor, coord):
    """The one-element view of ``tensor`` at ``coord`` (a cp.async operand)."""
    return cute.make_tensor(tensor.iterator + cute.crd2idx(coord, tensor.layout), cute.make_layout(1))


class ProducerMixin:
    """The TMA producer and the scale loader of `ScaledMmSm90` (no state of their own)."""

    @cute.jit
    def _tma_producer(self, ab_pipe, cta_layout_mnk, cluster_coord, cluster_id, num_clusters, num_tiles, tiles_m,
                      tiles_n, k_begin, k_count, tma_atom_a, tAgA, tAsA_blocks, tma_atom_b, tBgB, tBsB):
        """Every k-tile of this CTA's tiles: A's row blocks (``tAsA_blocks``: one SMEM ring
        each) and B's tile onto the stage's full barrier, multicast to the cluster peers that
        share them (``a_from_leader``: the first CTA along N multicasts all of A's); then wait
        until the peers freed every stage (so no arrival lands after exit)."""
        cfg = self.cfg
        a_mcast = Int32(0)
        b_mcast = Int32(0)
        if cutlass.const_expr(cfg.cluster_n > 1):
            a_mcast = cute.make_layout_image_mask(cta_layout_mnk, cluster_coord, mode=1)
        if cutlass.const_expr(cfg.cluster_m > 1):
            b_mcast = cute.make_layout_image_mask(cta_layout_mnk, cluster_coord, mode=0)
        loads_a = None
        if cutlass.const_expr(cfg.a_from_leader):
            loads_a = cluster_coord[1] == 0
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, cfg.stages)
        tile = cluster_id
        while tile < num_tiles:
            tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
            if cutlass.const_expr(cfg.row_blocks == 1):
                tAgA_t, tAsA_t = tAgA[(None, tm, None)], tAsA_blocks[0]
            else:   # row block w of CTA tile tm is A's tile tm * row_blocks + w
                tAgA_t = tuple(tAgA[(None, tm * cfg.row_blocks + w, None)] for w in range(cfg.row_blocks))
                tAsA_t = tAsA_blocks
            tBgB_t = tBgB[(None, tn, None)]
            state = load_k_tiles(ab_pipe, state, k_begin, k_count, tma_atom_a, tAgA_t, tAsA_t, a_mcast,
                                 tma_atom_b, tBgB_t, tBsB, b_mcast, loads_a, pad_to_stages=cfg.static_stages)
            tile += num_clusters
        ab_pipe.producer_tail(state)

    @cute.jit
    def _scale_loader(self, scale_pipe, sS, mRowScale, mColScale, tiles_m, tiles_n, num_tiles,
                      cluster_id, num_clusters, cluster_coord, k_begin, k_count, lane, scale_tma=None):
        """For every k-tile of this CTA's tiles, in the consumers' order: wait until the
        next slot of the scale ring is free, copy the k-tile's scale values into it (lane l:
        rows l, l + 32, ...; lane 0: the tile's `scale_b_blocks` block values), then arrive
        on the slot's full barrier when the copies land (``cp.async.mbarrier.arrive.noinc``,
        one arrival per lane). With ``scale_a_tma`` (``scale_tma``: the TMA atom and
        partitions of A's scales) the rows come as one TMA copy per scale block instead
        (`_scale_loader_tma`)."""
        if cutlass.const_expr(scale_tma is not None):
            self._scale_loader_tma(scale_pipe, sS, mColScale, tiles_m, tiles_n, num_tiles, cluster_id, num_clusters,
                                   cluster_coord, k_begin, k_count, lane, scale_tma)
        else:
            self._scale_loader_copies(scale_pipe, sS, mRowScale, mColScale, tiles_m, tiles_n, num_tiles,
                                      cluster_id, num_clusters, cluster_coord, k_begin, k_count, lane)

    @staticmethod
    def _block_of(nb, b, mColScale):
        """B's scale block column of the tile's ``b``-th block (its first is ``nb``): past the
        last one (the last tile's, beyond N) clamped to a valid, unused value."""
        return nb if b == 0 else cutlass.min(nb + b, mColScale.shape[1] - 1)

    @cute.jit
    def _scale_loader_tma(self, scale_pipe, sS, mColScale, tiles_m, tiles_n, num_tiles, cluster_id, num_clusters,
                          cluster_coord, k_begin, k_count, lane, scale_tma):
        """`_scale_loader` with A's scale rows by TMA (DeepGEMM's feed: the 4-byte copies of
        the rows ran 3-7% slower than a loader copying nothing on the lent H200). Per slot:
        one expect-tx arrival for the rows' bytes, one box per scale block (rows past M or
        blocks past K read as zeros: their products are not stored, or multiply zero-filled
        k-tiles), and lane 0's cp.async of the block values with its arrival: two arrivals."""
        cfg = self.cfg
        halves = cfg.tile_k // 128
        rows = scale_slot_rows(cfg)
        atom_s, tSgS, tSsS = scale_tma
        spans = scale_b_blocks(cfg)
        _, block_values = tma_views(cfg, sS)
        atom = cute.make_copy_atom(cpasync.CopyG2SOp(), Float32, num_bits_per_copy=32)
        kb_last = mColScale.shape[0] - 1
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, scale_ring_slots(cfg, cfg.stages))
        tile = cluster_id
        while tile < num_tiles:
            tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
            nb = tn * cfg.tile_n // 128   # the tile's first 128-column block of N
            for kt in cutlass.range(k_count, unroll=1):
                scale_pipe.sync_object_empty.wait(state.index, state.phase)
                full = scale_pipe.sync_object_full.get_barrier(state.index)
                with cute.arch.elect_one():
                    cute.arch.mbarrier_arrive_and_expect_tx(full, rows * 4 * halves)
                for h in cutlass.range_constexpr(halves):
                    cute.copy(atom_s, tSgS[(None, tm, (k_begin + kt) * halves + h)],
                              tSsS[(None, h + halves * state.index)], tma_bar_ptr=full)
                if lane == 0:
                    for h in cutlass.range_constexpr(halves):
                        kb = cutlass.min((k_begin + kt) * halves + h, kb_last)
                        for b in cutlass.range_constexpr(spans):
                            cute.copy(atom, _one(mColScale, (kb, self._block_of(nb, b, mColScale))),
                                      _one(block_values, (b, h, state.index)))
                    scale_pipe.producer_commit(state)
                state.advance()
            tile += num_clusters
        cute.arch.cp_async_commit_group()
        cute.arch.cp_async_wait_group(0)

    @cute.jit
    def _scale_loader_copies(self, scale_pipe, sS, mRowScale, mColScale, tiles_m, tiles_n, num_tiles,
                             cluster_id, num_clusters, cluster_coord, k_begin, k_count, lane):
        """`_scale_loader` with every value a 4-byte cp.async (any scale strides)."""
        cfg = self.cfg
        halves = cfg.tile_k // 128
        rows = scale_slot_rows(cfg)
        atom = cute.make_copy_atom(cpasync.CopyG2SOp(), Float32, num_bits_per_copy=32)
        spans = scale_b_blocks(cfg)
        row_last = mRowScale.shape[0] - 1
        kb_last = mRowScale.shape[1] - 1
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, scale_ring_slots(cfg, cfg.stages))
        tile = cluster_id
        while tile < num_tiles:
            tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
            r0 = tm * rows
            nb = tn * cfg.tile_n // 128   # the tile's first 128-column block of N
            for kt in cutlass.range(k_count, unroll=1):
                scale_pipe.sync_object_empty.wait(state.index, state.phase)
                for h in cutlass.range_constexpr(halves):
                    # (Clamped: the second half of a last 256-deep k-tile past K reads a valid value.)
                    kb = cutlass.min((k_begin + kt) * halves + h, kb_last)
                    for i in cutlass.range_constexpr(rows // 32):
                        r = lane + 32 * i
                        cute.copy(atom, _one(mRowScale, (cutlass.min(r0 + r, row_last), kb)),
                                  _one(sS, (r, h, state.index)))
                    if lane == 0:
                        for b in cutlass.range_constexpr(spans):
                            cute.copy(atom, _one(mColScale, (kb, self._block_of(nb, b, mColScale))),
                                      _one(sS, (rows + b, h, state.index)))
                scale_pipe.producer_commit(state)
                state.advance()
            tile += num_clusters
        cute.arch.cp_async_commit_group()
        cute.arch.cp_async_wait_group(0)
