"""The Hopper table's wave rule for blockwise 1x128 x 128x128 from M = 129 to 2048
(`sm90.block_tile_by_waves`, DeepGEMM's tile choice in our tiles) and the routing of its
SM-filling tiles to our kernel.

CPU tier: the rule takes the fewest waves, then the fullest last wave, over its candidates
(checked against a brute force); the grid takes the SMs its waves need; the picks the H200
runs measured; M > 2048 keeps its estimate; the routing. GPU tier (``gpu`` + ``sm90``): the
table's picks at mid M (64-row tiles with one consumer warpgroup, 256-deep k-tiles, tiles
spanning 2 scale blocks, the 2x1 cluster from two waves), A's scales by cp.async and by
TMA, against the fp64 reference of `test_scaled_mm_blockwise` (bf16 out: rel. error <= 2e-3,
outputs poisoned with NaN); and `fastdispatch.scaled_mm` routing 256x2112x7168 to them.
"""
import dataclasses
import random

import pytest

cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90")
torch = pytest.importorskip("torch")

from fastdispatch.kernels.scaled_mm import routing  # noqa: E402
from fastdispatch.kernels.scaled_mm.sm90.table import WAVE_WIDTHS  # noqa: E402
# (pytest puts tests/ on sys.path: the blockwise tests' reference and runner)
from test_scaled_mm_blockwise import _run_block  # noqa: E402
from test_scaled_mm_scale_tma import run_api_blockwise  # noqa: E402

RECIPE = "block_1x128_128x128"
SMS = sm90.H100_SMS


def _pick(m, n, k=7168):
    return sm90.default_config(m, n, k, scales=RECIPE)


def _waves_of(rows, width, m, n):
    count = -(-m // rows) * -(-n // width)
    return -(-count // SMS), count % SMS or SMS


def test_the_rule_takes_the_fewest_waves_then_the_fullest_last_wave():
    rng = random.Random(0)
    candidates = [(rows, width) for rows in (64, 128) for width in WAVE_WIDTHS] + [(256, 128)]
    for _ in range(300):
        m, n = rng.randint(129, 2048), rng.randrange(128, 24577, 16)
        cfg = sm90.block_tile_by_waves(m, n)
        rows = cfg.tile_m * cfg.row_blocks
        best = min(_waves_of(r, w, m, n)[0] for r, w in candidates)
        waves, fill = _waves_of(rows, cfg.tile_n, m, n)
        assert waves == best, (m, n, cfg)
        assert fill == max(_waves_of(r, w, m, n)[1] for r, w in candidates if _waves_of(r, w, m, n)[0] == best)
        # The grid: the SMs the waves need (a whole number of clusters), never more than the part's.
        cluster = cfg.cluster_m * cfg.cluster_n
        tiles = -(-m // rows) * -(-n // cfg.tile_n)
        assert cfg.num_sms % cluster == 0 and -(-tiles // waves) <= cfg.num_sms <= SMS
        assert cfg.num_sms - cluster < -(-tiles // waves) or cfg.num_sms == SMS
        # One wave: no multicast cluster; 256-deep k-tiles only where the width divides 128.
        if waves == 1 and cfg.row_blocks == 1:
            assert cfg.cluster_m == cfg.cluster_n == 1
        assert cfg.tile_k == 128 or 128 % cfg.tile_n == 0
        cfg.resolved()   # fits SMEM


@pytest.mark.parametrize("m,n,k,tile,tile_k,cluster_m,sms", [
    (256, 2112, 7168, (64, 64), 256, 1, 132),     # 132 tiles: one full wave (was 34 128x128 tiles)
    (512, 2112, 7168, (128, 64), 256, 1, 132),
    (1024, 2112, 7168, (128, 160), 128, 1, 112),  # 14 x 8 tiles over 3 scale blocks at most
    (2048, 2112, 7168, (128, 160), 128, 2, 112),  # two waves: B multicast over 2x1
    (256, 4096, 7168, (64, 128), 256, 1, 128),
    (512, 4096, 7168, (128, 128), 128, 1, 128),   # the table's one-wave 128x128 tile (MEDIUM)
    (2048, 7168, 16384, (256, 128), 128, 1, 112),
])
def test_the_rule_picks_what_the_h200_runs_measured(m, n, k, tile, tile_k, cluster_m, sms):
    cfg = _pick(m, n, k)
    assert (cfg.tile_m * cfg.row_blocks, cfg.tile_n) == tile and cfg.tile_k == tile_k
    assert cfg.cluster_m == cluster_m and cfg.num_sms == sms and cfg.smem_scales


def test_above_2048_the_table_keeps_its_estimate():
    assert _pick(4096, 2112) == sm90.BLOCK_SPAN_WIDE.resolved()
    assert _pick(4096, 4096) == sm90.BLOCK_LARGE.resolved()
    # B per 1x128 never takes the rule (its scales are no SMEM slots).
    assert not sm90.default_config(512, 2112, 7168, scales="block_1x128_1x128").smem_scales


def _blockwise_args(m, n, k):
    a = torch.randn(m, k).to(torch.float8_e4m3fn)
    b = torch.randn(n, k).to(torch.float8_e4m3fn).t()
    blocks = -(-k // 128)
    return a, b, torch.ones(blocks, m).t(), torch.ones(-(-n // 128), blocks).t()


@pytest.mark.parametrize("m,n,ours", [(256, 2112, True), (512, 2112, True), (1024, 2112, True), (256, 4096, True),
                                      (512, 4096, False), (256, 24576, False), (1024, 4096, False),
                                      (2048, 7168, False), (1024, 24576, True), (4096, 7168, True)])
def test_routing_takes_the_tiles_that_fill_the_sms(m, n, ours):
    variant, why = routing.route((9, 0), *_blockwise_args(m, n, 7168), None, None, torch.bfloat16)
    assert (variant == "sm90") is ours, (m, n, variant, why)
    if not ours:
        assert "faster" in why and f"{_pick(m, n).tile_m * _pick(m, n).row_blocks}x{_pick(m, n).tile_n}" in why


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(132, 4096, 1040), (132, 7168, 640), (200, 2112, 1040), (512, 2112, 1024),
                                   (1000, 2112, 1040), (2048, 2112, 1040), (300, 336, 1040), (2048, 1024, 2048)])
def test_wave_picks_match_fp64_reference(tma, has_bias, m, n, k):
    # 132x4096: 64x96 (spans 2 blocks, one consumer warpgroup); 132x7168: 64x192; 200x2112:
    # 64x64x256; 512x2112: 128x64x256; 1000 / 2048 x 2112: 128x160 (the latter 2x1 cluster);
    # K = 1040: a partial last scale block (and a 256-deep k-tile's second half past K).
    cfg = _pick(m, n, k)
    if tma:
        cfg = dataclasses.replace(cfg, scale_a_tma=True)
    _run_block(cfg.resolved(), m, n, k, has_bias)


@pytest.mark.gpu
@pytest.mark.sm90
def test_api_routes_a_mid_m_problem_to_the_wave_tile():
    cfg = run_api_blockwise(256, 2112, 7168, seed=7)
    assert (cfg.tile_m, cfg.tile_n, cfg.scale_a_tma) == (64, 64, True)
