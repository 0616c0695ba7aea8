"""``Sm90Config.static_stages``: the row blocks' K loop in passes over the A/B ring, each k-tile's
stage a trace-time index, the producer padding every tile to whole passes with empty stages
(an arrival without bytes; the consumers wait for it and free it).

CPU tier: the config rule; the binary's K loop is one pass unrolled plus the last pass's guarded
k-tiles, and the producer has the padding arrival (PTX op counts against the dynamic loop's).
GPU tier (``gpu`` + ``sm90``): the table's 256x128 blockwise pick (A's scales by cp.async and by
TMA), the 128x176 tile over 3 scale blocks, the small-M 64x64 tile with 256-deep k-tiles, and
the rowwise row-block tile, with K giving 0 to stages - 1 k-tiles past the last whole pass,
fewer k-tiles than stages, several tiles per CTA (the pass parity carried from tile to tile) and
a partial second row block, against the fp64 block reference of `test_scaled_mm_blockwise` (bf16
out: rel. error <= 2e-3) and the rowwise one of `test_scaled_mm_sm90`, outputs poisoned with NaN.
The same with ``early_wait`` (the next stage tested before each promotion), which also runs on
the dynamic K loops.
"""
import dataclasses

import pytest

cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90")
torch = pytest.importorskip("torch")

from fastdispatch.kernels.scaled_mm._ptx import count_ptx_ops  # noqa: E402
# (pytest puts tests/ on sys.path: the blockwise and rowwise runners)
from test_scaled_mm_blockwise import _run_block  # noqa: E402
from test_scaled_mm_sm90 import _run_and_check  # noqa: E402

OPS = ("wgmma.mma_async", "mbarrier.arrive.shared.b64", "mbarrier.arrive.expect_tx")


def test_static_stages_needs_smem_scales_or_rowwise_row_blocks():
    assert sm90.BLOCK_LARGE.static_stages
    dataclasses.replace(sm90.ROWWISE_WAVES, static_stages=True)   # rowwise: no look-ahead either
    dataclasses.replace(sm90.BLOCK_SPAN, static_stages=True)   # one row block, SMEM scales
    # The consumers' own look-ahead loads; the overlapped loop; rowwise with one row block.
    for base, bad in ((sm90.BLOCK_LARGE, dict(smem_scales=False)), (sm90.BLOCK_SPAN, dict(overlap_promotion=4)),
                      (sm90.ROWWISE_WAVES, dict(row_blocks=1))):
        with pytest.raises(ValueError, match="static_stages"):
            dataclasses.replace(base, static_stages=True, **bad)


@pytest.mark.parametrize("scale_a_tma", [False, True])
def test_static_loop_unrolls_one_pass_and_pads_in_the_producer(scale_a_tma):
    """Per row block, 4 WGMMAs (k32 x 4) per k-tile site: the dynamic loop has one site, the
    static one a pass (``stages`` sites) and the last pass's guarded k-tiles (``stages`` - 1:
    its last stage is always an empty one). Plain arrivals: the scale slot's release per site,
    and with static stages the producer's arrival on an empty stage."""
    static = dataclasses.replace(sm90.BLOCK_LARGE, scale_a_tma=scale_a_tma).resolved()
    dynamic = dataclasses.replace(static, static_stages=False)
    sites = 2 * static.stages - 1
    ops_static = count_ptx_ops(sm90.ptx_sm90(static), OPS)
    ops_dynamic = count_ptx_ops(sm90.ptx_sm90(dynamic), OPS)
    assert ops_dynamic["wgmma.mma_async"] == static.row_blocks * 4, ops_dynamic
    assert ops_static["wgmma.mma_async"] == sites * static.row_blocks * 4, ops_static
    assert ops_dynamic["mbarrier.arrive.shared.b64"] == 1, ops_dynamic
    assert ops_static["mbarrier.arrive.shared.b64"] == sites + 1, ops_static
    assert ops_static["mbarrier.arrive.expect_tx"] == ops_dynamic["mbarrier.arrive.expect_tx"]


@pytest.mark.parametrize("has_bias", [False, True])
def test_static_rowwise_row_blocks_compile_without_spills(has_bias):
    """The table's rowwise row blocks in static passes (`ROWWISE_LARGE`): each block's
    promotion but the last is pinned before the next block's WGMMAs (`block_scales.pin`);
    unpinned, the compiler sank the adds past them and spilled ~1300 registers (2.5x slower
    on the lent H200)."""
    from fastdispatch.kernels.scaled_mm._ptx import ptxas_resource_usage
    cfg = sm90.ROWWISE_LARGE.resolved()
    assert cfg.static_stages and cfg.early_wait and cfg.row_blocks == 2
    usage = ptxas_resource_usage(sm90.ptx_sm90(cfg, has_bias=has_bias), "sm_90a")
    if usage is None:
        pytest.skip("no ptxas for sm_90a found")
    assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


@pytest.mark.parametrize("tile", ["large", "small"])
def test_early_wait_tests_the_next_stage_once_per_pass_site(tile):
    """``early_wait``: one non-blocking test per k-tile site of the unrolled pass (the guarded
    last pass's k-tiles test nothing), and the same WGMMAs and arrivals as without it."""
    early = _static(f"{tile}_early")
    plain = dataclasses.replace(early, early_wait=False)
    ops_early = count_ptx_ops(sm90.ptx_sm90(early), OPS + ("mbarrier.test_wait",))
    ops_plain = count_ptx_ops(sm90.ptx_sm90(plain), OPS + ("mbarrier.test_wait",))
    assert ops_plain["mbarrier.test_wait"] == 0, ops_plain
    assert ops_early["mbarrier.test_wait"] == early.stages, ops_early
    assert {op: ops_early[op] for op in OPS} == {op: ops_plain[op] for op in OPS}
    with pytest.raises(ValueError, match="early_wait"):
        dataclasses.replace(sm90.LARGE, early_wait=True)   # overlapped promotions


#: (M, N, K): 4096x4096 with K = 7168 (56 k-tiles: 2 past the last pass of 3 stages) and 256 (2
#: k-tiles: no whole pass), 4 tiles per CTA; 8192x2048x768 (6 k-tiles: whole passes only, 4 tiles
#: per CTA); 1000x2112x1280 (10: 1 past; a partial second row block, 1-2 tiles per CTA);
#: 300x336x1152 (9; a second row block of 44 rows, partial column tiles).
SHAPES = [(4096, 4096, 7168), (4096, 4096, 256), (8192, 2048, 768), (1000, 2112, 1280), (300, 336, 1152)]


def _static(tile):
    """The static-stage configs the GPU tests run: the 256x128 pick (A's scales by cp.async /
    TMA), the 128x176 tile spanning 3 of B's scale blocks (5 stages), the 192-wide span tile
    (`sm90.BLOCK_SPAN_WIDE`, a trial: 4 stages, A's scales by TMA as the API would feed them;
    with ``_early`` the binary bench/blockwise_probe.py timed), and the small-M 64x64 tile with
    256-deep k-tiles (two promotions each, 6 stages); ``_early``: with ``early_wait``."""
    tile, early = tile.removesuffix("_early"), tile.endswith("_early")
    base = {"large": sm90.BLOCK_LARGE, "large_tma": dataclasses.replace(sm90.BLOCK_LARGE, scale_a_tma=True),
            "span": sm90.BLOCK_SPAN, "span_wide": dataclasses.replace(sm90.BLOCK_SPAN_WIDE, scale_a_tma=True),
            # (N = 8192: the 64x64 tile; at N = 7168 the table now takes the 56-wide one)
            "small": sm90.default_config(64, 8192, 2048, scales="block_1x128_128x128")}[tile]
    return dataclasses.replace(base, static_stages=True, early_wait=early, stages=None).resolved()


#: Per tile, shapes with 0, 1, ... k-tiles past the last whole pass and fewer k-tiles than stages.
#: span (5 stages): 56 k-tiles (1 past), 10 (0), 9 (4), with partial column tiles at N = 336;
#: small (6 stages of 256-deep k-tiles): 8 (2), 28 (4), 5 (no whole pass; K = 1040 ends in a
#: partial scale block).
BLOCK_CASES = ([(tile, *shape) for tile in ("large", "large_tma") for shape in SHAPES]
               + [("span", 4096, 2112, 7168), ("span", 1000, 2112, 1280), ("span", 300, 336, 1152)]
               + [("small", 64, 7168, 2048), ("small", 256, 2112, 7168), ("small", 37, 336, 1040)])
#: ``early_wait``: the same shapes for the 256x128 pick's feeds, one per other tile.
EARLY_CASES = ([(f"{tile}_early", *shape) for tile in ("large", "large_tma") for shape in SHAPES]
               + [("span_early", 1000, 2112, 1280), ("small_early", 37, 336, 1040)]
               # the 192-wide span tile as probed (``early_wait``): 56 k-tiles (0 past
               # a pass of 4), 10 (2), 9 (1), partial column tiles at N = 336
               + [("span_wide_early", 4096, 2112, 7168), ("span_wide_early", 1000, 2112, 1280),
                  ("span_wide_early", 300, 336, 1152)])


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("tile,m,n,k", BLOCK_CASES + EARLY_CASES)
def test_static_block_tiles_match_fp64_reference(tile, m, n, k, has_bias):
    cfg = _static(tile)
    _check_tile(tile, cfg)
    _run_block(cfg, m, n, k, has_bias)


@pytest.mark.parametrize("tile", ["large", "large_tma", "span", "span_wide_early", "small", "small_early"])
def test_static_tiles_are_the_ones_the_cases_describe(tile):
    """On CPU, what the GPU cases above assume of their tiles (ring depth, width, k depth), so
    that a table change which moves them fails here rather than only on a GPU."""
    _check_tile(tile, _static(tile))


#: What each `_static` tile is, as the cases' comments count their k-tiles: (tile_m, tile_n,
#: tile_k, stages).
STATIC_TILES = {"large": (128, 128, 128, 3), "large_tma": (128, 128, 128, 3), "span": (128, 176, 128, 5),
                "span_wide": (128, 192, 128, 4), "small": (64, 64, 256, 6)}


def _check_tile(tile, cfg):
    shape = STATIC_TILES[tile.removesuffix("_early")]
    assert (cfg.tile_m, cfg.tile_n, cfg.tile_k, cfg.stages) == shape, cfg
    assert cfg.static_stages and cfg.early_wait == tile.endswith("_early"), cfg


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("early", [False, True])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_static_rowwise_row_blocks_match_reference(m, n, k, has_bias, early):
    cfg = dataclasses.replace(sm90.ROWWISE_WAVES, static_stages=True, early_wait=early, stages=None).resolved()
    _run_and_check(cfg, m, n, k, has_bias)


def _early_dynamic(loop):
    """``early_wait`` on the dynamic K loops: rowwise one-block promotions (`_mainloop`, the
    table's rowwise large-M 128x128 pick), fast accumulation (`_mainloop` without promotions,
    the 128x256 tile), rowwise and blockwise row blocks, and one SMEM-scale block
    (`_grouped_k_loop`, the 128x176 tile)."""
    base = {"rowwise": sm90.LARGE_EARLY, "fast": sm90.FAST_LARGE,
            "rowwise_rows": sm90.ROWWISE_WAVES,
            "block_rows": dataclasses.replace(sm90.BLOCK_LARGE, static_stages=False),
            "span": sm90.BLOCK_SPAN}[loop]
    return dataclasses.replace(base, early_wait=True, stages=None).resolved()


def test_early_wait_on_fast_accumulation_tests_once_per_k_tile():
    """Fast accumulation (promote=0): one non-blocking test in the K loop, the same WGMMAs and
    arrivals as the plain wait's loop."""
    early = _early_dynamic("fast")
    plain = dataclasses.replace(early, early_wait=False)
    ops_early = count_ptx_ops(sm90.ptx_sm90(early), OPS + ("mbarrier.test_wait",))
    ops_plain = count_ptx_ops(sm90.ptx_sm90(plain), OPS + ("mbarrier.test_wait",))
    assert (ops_plain["mbarrier.test_wait"], ops_early["mbarrier.test_wait"]) == (0, 1), (ops_plain, ops_early)
    assert {op: ops_early[op] for op in OPS} == {op: ops_plain[op] for op in OPS}


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("m,n,k", [(4096, 4096, 7168), (1000, 2112, 1280), (300, 336, 1152)])
@pytest.mark.parametrize("loop", ["rowwise", "fast", "rowwise_rows", "block_rows", "span"])
def test_early_wait_dynamic_loops_match_reference(loop, m, n, k):
    cfg = _early_dynamic(loop)
    if cfg.scales == "rowwise":
        # Fast accumulation keeps fewer bits (2.6e-3 at K = 8192, as cuBLAS's): its bound is 4e-3.
        _run_and_check(cfg, m, n, k, True, tol=4e-3 if cfg.promote == 0 else 2e-3)
    else:
        _run_block(cfg, m, n, k, True)
