"""The sm_90a kernel's host side (per compile: traced once by cute.compile through
`TorchLayoutEntries`): `LaunchMixin`, methods of `kernel.ScaledMmSm90` that build the WGMMA,
the SMEM layouts, the TMA atoms (A, B, the output and with ``scale_a_tma`` A's scales) and the
persistent grid, then launch `ScaledMmSm90.kernel` (device code).
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass.cute.nvgpu import cpasync, warpgroup

from fastdispatch.kernels.scaled_mm._schedule import persistent_grid
from fastdispatch.kernels.scaled_mm.sm90.smem_budget import (_epilogue_bytes, _scale_ring_bytes, _stage_bytes,
                                                            epi_buffers, scale_slot_rows, unswizzled_epilogue)
from fastdispatch.kernels.scaled_mm.sm90.smem_scales import slot_layout

Float32 = cutlass.Float32


class LaunchMixin:
    """The host side of `ScaledMmSm90` (no state of its own): `_launch` and its layouts."""

    def _tiled_mma(self):
        cfg = self.cfg
        op = warpgroup.MmaF8Op(
            self.a_dtype,
            self.b_dtype,
            self.acc_dtype,
            (64, cfg.tile_n, 32),
            warpgroup.OperandSource.SMEM,
            warpgroup.OperandMajorMode.K,
            warpgroup.OperandMajorMode.K,
        )
        # Consumer warpgroups stacked along M (``pingpong``: one warpgroup per tile); a
        # warpgroup with 128 rows runs 2 m64 atoms.
        return cute.make_tiled_mma(cute.make_mma_atom(op), (1 if cfg.pingpong else cfg.consumer_wgs, 1, 1))

    def _ab_smem_layout(self, rows: int):
        # 128-byte swizzle atoms (64-byte at tile_k=64), repeated along K for tile_k=256.
        kind = (
            warpgroup.SmemLayoutAtomKind.K_SW128 if self.cfg.tile_k >= 128 else warpgroup.SmemLayoutAtomKind.K_SW64
        )
        atom = warpgroup.make_smem_layout_atom(kind, self.a_dtype)  # both operands: 1 byte
        return cute.tile_to_shape(atom, (rows, self.cfg.tile_k, self.cfg.stages), order=(0, 1, 2))

    def _c_smem_layout(self):
        # bf16 row-major subtile: epi_n * 2 bytes per row picks the swizzle (64 -> 128 B, 32 ->
        # 64 B, 16 -> 32 B); otherwise none (`unswizzled_epilogue`): plain rows, the layout a
        # TMA box of any width takes (8 columns: each 8x8 stmatrix matrix is 128 contiguous
        # bytes; 88 columns: 176-byte rows, one store per tile and row block).
        shape = (*self.epi_tile, epi_buffers(self.cfg))
        if unswizzled_epilogue(self.cfg):
            rows, cols = self.epi_tile
            plain = cute.make_layout(shape, stride=(cols, 1, rows * cols))
            return cute.make_composed_layout(cute.make_swizzle(0, 4, 3), 0, plain)
        kind = {
            16: warpgroup.SmemLayoutAtomKind.K_SW32,
            32: warpgroup.SmemLayoutAtomKind.K_SW64,
            64: warpgroup.SmemLayoutAtomKind.K_SW128,
        }[self.cfg.epi_n]
        atom = warpgroup.make_smem_layout_atom(kind, self.c_dtype)
        return cute.tile_to_shape(atom, shape, order=(0, 1, 2))

    @cute.jit
    def _launch(self, a, bt, scale_a, scale_b, out, bias, stream):
        cfg = self.cfg
        m, n = out.shape
        if cutlass.const_expr(cfg.swap_ab):
            # out^T = Bt @ A^T: the MMA's rows are out's columns. The transposed view of out
            # is written with plain stores; scale_b scales its rows, scale_a its columns.
            mP, mQ, row_scale, col_scale = bt, a, scale_b, scale_a
            mC = cute.make_tensor(out.iterator, cute.make_layout((n, m), stride=(1, n)))
        else:
            mP, mQ, row_scale, col_scale = a, bt, scale_a, scale_b
            mC = out
        tiled_mma = self._tiled_mma()
        cta_layout_mnk = cute.make_layout((*self.cluster_mn, 1))
        a_smem = self._ab_smem_layout(cfg.tile_m)
        b_smem = self._ab_smem_layout(cfg.tile_n)
        a_smem_one = cute.slice_(a_smem, (None, None, 0))
        b_smem_one = cute.slice_(b_smem, (None, None, 0))
        # A stage holds `row_blocks` A row blocks (each its own TMA copy) and one B tile.
        tx_bytes = cute.size_in_bytes(self.a_dtype, a_smem_one) * cfg.row_blocks + cute.size_in_bytes(self.b_dtype, b_smem_one)
        # max_stages() sized the rings in plain Python; hold it to the real layouts.
        assert tx_bytes == _stage_bytes(cfg), tx_bytes
        if cutlass.const_expr(cfg.smem_scales):
            assert cute.size_in_bytes(Float32, slot_layout(cfg)) == _scale_ring_bytes(cfg, cfg.stages)

        # A tiles are shared by the cluster's CTAs along N, B tiles by those along M: each CTA
        # loads its 1/cluster slice and multicasts it (``a_from_leader``: the first CTA along N
        # loads all of A's tile).
        def g2s(mcast):
            return cpasync.CopyBulkTensorTileG2SMulticastOp() if mcast > 1 else cpasync.CopyBulkTensorTileG2SOp()

        tma_atom_a, tma_a = cpasync.make_tiled_tma_atom(
            g2s(cfg.cluster_n), mP, a_smem_one, (cfg.tile_m, cfg.tile_k),
            num_multicast=1 if cfg.a_from_leader else cfg.cluster_n
        )
        tma_atom_b, tma_b = cpasync.make_tiled_tma_atom(
            g2s(cfg.cluster_m), mQ, b_smem_one, (cfg.tile_n, cfg.tile_k), num_multicast=cfg.cluster_m
        )
        # scale_a_tma: A's scale rows of a CTA tile and 128-deep scale block, one box per slot.
        tma_atom_s, tma_s = None, None
        if cutlass.const_expr(cfg.scale_a_tma):
            rows = scale_slot_rows(cfg)
            tma_atom_s, tma_s = cpasync.make_tiled_tma_atom(
                cpasync.CopyBulkTensorTileG2SOp(), row_scale, cute.make_layout((rows, 1)), (rows, 1))
        tma_atom_c, tma_c, c_smem = None, mC, None
        if cutlass.const_expr(not cfg.swap_ab):
            c_smem = self._c_smem_layout()
            assert cute.size_in_bytes(self.c_dtype, c_smem) == _epilogue_bytes(cfg)
            tma_atom_c, tma_c = cpasync.make_tiled_tma_atom(
                cpasync.CopyBulkTensorTileS2GOp(), mC, cute.slice_(c_smem, (None, None, 0)), self.epi_tile
            )

        rows, cols = mC.shape
        tiles_m, tiles_n, num_clusters = persistent_grid(
            rows, cols, cfg.tile_m * cfg.row_blocks * cfg.cluster_m, cfg.tile_n * cfg.cluster_n, self.max_clusters)

        self.kernel(
            tiled_mma, tma_atom_a, tma_a, tma_atom_b, tma_b, tma_atom_c, tma_c,
            row_scale, col_scale, bias, cta_layout_mnk, a_smem, b_smem, c_smem,
            tiles_m, tiles_n, tx_bytes, tma_atom_s, tma_s,
        ).launch(
            grid=(*self.launch_cluster, num_clusters),
            block=[self.threads, 1, 1],
            cluster=(*self.launch_cluster, 1),
            min_blocks_per_mp=1,
            stream=stream,
            use_pdl=cfg.pdl,
        )
