"""``Sm90Config.static_stages``: the row blocks' K loop in passes over the A/B ring, each k-tile's
stage a trace-time index, the producer padding every tile to whole passes with empty stages
(an arrival without bytes; the consumers wait for it and free it).

CPU tier: the config rule; the binary's K loop is one pass unrolled plus the last pass's guarded
k-tiles, and the producer has the padding arrival (PTX op counts against the dynamic loop's).
GPU tier (``gpu`` + ``sm90``): the table's 256x128 blockwise pick (A's scales by cp.async and by
TMA) and the rowwise row-block tile, with K giving 0, 1 and 2 k-tiles past the last whole pass,
fewer k-tiles than stages, several tiles per CTA (the pass parity carried from tile to tile) and
a partial second row block, against the fp64 block reference of `test_scaled_mm_blockwise` (bf16
out: rel. error <= 2e-3) and the rowwise one of `test_scaled_mm_sm90`, outputs poisoned with NaN.
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


def test_static_stages_needs_row_blocks_without_register_look_ahead():
    assert sm90.BLOCK_LARGE.static_stages
    dataclasses.replace(sm90.ROWWISE_WAVES, static_stages=True)   # rowwise: no look-ahead either
    for bad in (dict(row_blocks=1), dict(smem_scales=False)):   # one row block; the look-ahead loads
        with pytest.raises(ValueError, match="static_stages"):
            dataclasses.replace(sm90.BLOCK_LARGE, **bad)


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


#: (M, N, K): 4096x4096 with K = 7168 (56 k-tiles: 2 past the last pass of 3 stages) and 256 (2
#: k-tiles: no whole pass), 4 tiles per CTA; 8192x2048x768 (6 k-tiles: whole passes only, 4 tiles
#: per CTA); 1000x2112x1280 (10: 1 past; a partial second row block, 1-2 tiles per CTA);
#: 300x336x1152 (9; a second row block of 44 rows, partial column tiles).
SHAPES = [(4096, 4096, 7168), (4096, 4096, 256), (8192, 2048, 768), (1000, 2112, 1280), (300, 336, 1152)]


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("scale_a_tma", [False, True])
def test_static_block_pick_matches_fp64_reference(scale_a_tma, m, n, k, has_bias):
    cfg = dataclasses.replace(sm90.BLOCK_LARGE, scale_a_tma=scale_a_tma).resolved()
    assert cfg.stages == 3
    _run_block(cfg, m, n, k, has_bias)


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_static_rowwise_row_blocks_match_reference(m, n, k, has_bias):
    cfg = dataclasses.replace(sm90.ROWWISE_WAVES, static_stages=True, stages=None).resolved()
    _run_and_check(cfg, m, n, k, has_bias)
