"""Hopper tiles that span several of B's 128x128 scale blocks along N (``smem_scales``,
`sm90.scale_b_blocks`): a tile of 56, 88, 176 or 192 columns (or 88 / 96 in the 256-row tile) starts
inside a block and reaches into the next one or two. The loader copies every block value the
tile touches into the slot; the promotion is traced once per place a tile can start within a
block (its class), each 8-column group's block fixed (DeepGEMM's K loop per bound), or past
`block_scales.MAX_TRACED_CLASSES` classes picks each group's block by a select.

CPU tier: how many blocks a tile can touch, which configs may span, the loader's PTX (one
cp.async per block value). GPU tier (``gpu`` + ``sm90``): spanning tiles against the fp64
reference of `test_scaled_mm_blockwise` (bf16 out: rel. error <= 2e-3; a wrong block for a
column group shows as an error of the order of the scales' spread, ~1), outputs poisoned
with NaN, the last tile past N (its clamped block values unused) and partial tiles along M.
"""
import dataclasses
import types

import pytest

cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90")

from fastdispatch.kernels.scaled_mm._ptx import count_ptx_ops  # noqa: E402
from fastdispatch.kernels.scaled_mm.sm90.block_scales import MAX_TRACED_CLASSES, tile_classes  # noqa: E402
from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_b_blocks  # noqa: E402
# (pytest puts tests/ on sys.path: the blockwise tests' runner)
from test_scaled_mm_blockwise import _run_block  # noqa: E402

RECIPE = "block_1x128_128x128"
#: The spanning tiles: 128x176 and 128x192 (2 consumer warpgroups of 64 rows), and DeepGEMM's
#: 256-row tile 96 wide; A's scales by cp.async and by TMA.
SPAN_176 = sm90.Sm90Config(tile_m=128, tile_n=176, tile_k=128, consumer_wgs=2, cluster_m=2, promote=1, epi_n=16,
                           epi_stages=4, scales=RECIPE, smem_scales=True)
SPANNING = {
    "176": SPAN_176,
    "176_tma": dataclasses.replace(SPAN_176, scale_a_tma=True),
    "192": dataclasses.replace(SPAN_176, tile_n=192, epi_n=64, epi_stages=3),
    "rows2_96_tma": dataclasses.replace(sm90.BLOCK_LARGE, tile_n=96, epi_n=32, epi_stages=6, scale_a_tma=True),
    # DeepGEMM's widths through the 8-column epilogue: 256x88 staged whole (22 buffers), 128x88
    # through 4 buffers (subtile by subtile), the small-M 64x56 tile with 256-deep k-tiles.
    "rows2_88": dataclasses.replace(sm90.BLOCK_LARGE, tile_n=88, epi_n=8, epi_stages=22),
    "88_e4": dataclasses.replace(SPAN_176, tile_n=88, epi_n=8, epi_stages=4),
    "64x56_k256": sm90.Sm90Config(tile_m=64, tile_n=56, tile_k=256, consumer_wgs=1, promote=1, pdl=True, epi_n=8,
                                  epi_stages=7, scales=RECIPE, smem_scales=True, early_wait=True),
}
# ... and through whole-width unswizzled buffers (DeepGEMM's epilogue): one TMA store per tile
# and row block (the table's small-M 56-wide tiles: 64 and 128 rows).
SPANNING["rows2_88_w"] = dataclasses.replace(SPANNING["rows2_88"], epi_n=88, epi_stages=2)
SPANNING["64x56_k256_w"] = dataclasses.replace(SPANNING["64x56_k256"], epi_n=56, epi_stages=1)
SPANNING["128x56_k256_w"] = dataclasses.replace(SPANNING["64x56_k256_w"], tile_m=128, consumer_wgs=2)


@pytest.mark.parametrize("tile_n", [8, 16, 64, 88, 96, 112, 128, 144, 176, 192, 248, 256])
def test_scale_b_blocks_is_the_most_blocks_any_tile_touches(tile_n):
    # Tile n covers columns [n * tile_n, (n + 1) * tile_n); the pattern repeats every 128 tiles.
    touched = max(len({(n * tile_n + c) // 128 for c in range(tile_n)}) for n in range(128))
    assert scale_b_blocks(types.SimpleNamespace(tile_n=tile_n)) == touched   # (it reads tile_n only)
    assert touched <= 3   # the slot keeps 4 floats for the block values


def test_only_smem_scales_let_a_tile_span_blocks():
    sm90.Sm90Config(**{**dataclasses.asdict(SPAN_176)})   # accepted
    with pytest.raises(ValueError, match="divide 128 .* unless they come through SMEM"):
        dataclasses.replace(SPAN_176, smem_scales=False)
    assert scale_b_blocks(sm90.BLOCK_LARGE) == 1 and scale_b_blocks(sm90.LARGE) == 1


@pytest.mark.parametrize("name", ["176", "176_tma", "rows2_96_tma"])
def test_loader_copies_every_block_value_the_tile_touches(name):
    """Per 128-deep scale block of a k-tile, lane 0 issues one cp.async per block value
    (`scale_b_blocks` of them) besides the rows' copies (32 lanes x rows / 32) or box; the
    promotion is traced once per tile class (`block_scales.tile_classes`), each with its
    groups' blocks fixed: no select (``selp.f32``) among the values."""
    cfg = SPANNING[name].resolved()
    spans = scale_b_blocks(cfg)
    rows = cfg.tile_m * cfg.row_blocks
    text = sm90.ptx_sm90(cfg)
    ops = count_ptx_ops(text, ("cp.async.ca.shared.global", "selp.f32"))
    row_copies = 0 if cfg.scale_a_tma else rows // 32
    assert ops["cp.async.ca.shared.global"] == row_copies + spans, (ops, spans)
    assert ops["selp.f32"] == 0
    fmas = count_ptx_ops(text, ("fma.rn.f32",))["fma.rn.f32"]
    per_class = cfg.tile_m * cfg.tile_n // (128 * cfg.consumer_wgs) * cfg.row_blocks * cfg.tile_k // 128
    assert fmas % (tile_classes(cfg) * per_class) == 0 and fmas > 0, (fmas, per_class)
    one_block = dataclasses.replace(cfg, tile_n=128, epi_n=32 if cfg.row_blocks == 1 else 64,
                                    epi_stages=4, stages=None).resolved()
    base = count_ptx_ops(sm90.ptx_sm90(one_block), ("cp.async.ca.shared.global", "selp.f32"))
    assert base["cp.async.ca.shared.global"] == row_copies + 1 and base["selp.f32"] == 0, base


@pytest.mark.parametrize("name", ["rows2_88", "88_e4", "64x56_k256"])
def test_eight_column_epilogue_stores_16_byte_rows(name):
    """``epi_n`` 8: two-matrix stmatrix (the four-matrix one covers 16 columns) into unswizzled
    16-byte rows, one TMA store per 8-column subtile and row block: 22 in the 256x88 tile."""
    cfg = SPANNING[name].resolved()
    text = sm90.ptx_sm90(cfg)
    subtiles = cfg.tile_n // 8 * cfg.row_blocks
    stm = [line for line in text.splitlines() if line.strip().startswith("stmatrix")]
    assert len(stm) == subtiles and not any(".x4" in line for line in stm), stm[:2]
    assert count_ptx_ops(text, ("cp.async.bulk.tensor.2d.global.shared",))[
        "cp.async.bulk.tensor.2d.global.shared"] == subtiles
    assert count_ptx_ops(text, ("ld.local", "st.local")) == {"ld.local": 0, "st.local": 0}
    with pytest.raises(ValueError, match="epi_n must be 8, 16, 32 or 64"):
        dataclasses.replace(cfg, epi_n=24)


def test_many_class_tiles_select_per_group():
    """Past `MAX_TRACED_CLASSES` (56 or 88 columns: 16 places to start in a block) the
    promotion is traced once and picks each group's block by a select."""
    cfg = SPANNING["64x56_k256_w"].resolved()
    assert tile_classes(cfg) == 16 > MAX_TRACED_CLASSES
    text = sm90.ptx_sm90(cfg)
    ops = count_ptx_ops(text, ("selp.f32", "fma.rn.f32"))
    per_site = cfg.tile_m * cfg.tile_n // (128 * cfg.consumer_wgs) * cfg.tile_k // 128
    assert ops["selp.f32"] > 0 and ops["fma.rn.f32"] % per_site == 0, ops
    assert ops["fma.rn.f32"] < tile_classes(cfg) * per_site, ops


@pytest.mark.parametrize("name", ["rows2_88_w", "64x56_k256_w", "128x56_k256_w"])
def test_whole_width_epilogue_stores_each_row_block_once(name):
    """``epi_n == tile_n`` (56, 88): the same two-matrix stmatrix per 8 columns, into one
    unswizzled buffer per row block, then one TMA store each (2 in the 256x88 tile, not 22)."""
    cfg = SPANNING[name].resolved()
    text = sm90.ptx_sm90(cfg)
    stm = [line for line in text.splitlines() if line.strip().startswith("stmatrix")]
    assert len(stm) == cfg.tile_n // 8 * cfg.row_blocks and not any(".x4" in line for line in stm), stm[:2]
    ops = count_ptx_ops(text, ("cp.async.bulk.tensor.2d.global.shared", "ld.local", "st.local"))
    assert ops == {"cp.async.bulk.tensor.2d.global.shared": cfg.row_blocks, "ld.local": 0, "st.local": 0}, ops


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(64, 7168, 2048), (37, 400, 1040), (300, 2112, 1040), (128, 400, 1024),
                                   (4096, 2112, 7168), (1000, 4224, 640)])
@pytest.mark.parametrize("name", list(SPANNING))
def test_spanning_tiles_match_fp64_reference(has_bias, m, n, k, name):
    # 64x7168x2048: the 64x56 tile's shape (128 tiles, every other one over two blocks); M = 37:
    # a partial 64-row tile;
    # N = 2112: twelve 176-wide tiles (the 2nd .. 11th start inside a block, some touch 3);
    # N = 400: the last tile mostly past N (its second and third block values clamped);
    # M = 300 / 1000: partial row tiles; K = 1040: 9 scale blocks, the last partial.
    cfg = SPANNING[name].resolved()
    if cfg.scale_a_tma and m % 4:
        # torch's scale_a layout at M % 4 != 0 is no TMA source: the binary refuses it (the
        # API feeds A's scales by cp.async there: `sm90.with_scale_a_layout`).
        with pytest.raises(ValueError, match="divisible by 4"):
            _run_block(cfg, m, n, k, has_bias)
        return
    _run_block(cfg, m, n, k, has_bias)
