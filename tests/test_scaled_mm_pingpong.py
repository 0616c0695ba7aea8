"""``Sm90Config.pingpong``: two consumer warpgroups taking turns at whole 64-row tiles (fast
accumulation's candidate tile, `sm90.FAST_PINGPONG`).

CPU tier: the config rule, and in the PTX the turn-taking (one wait and one arrival on a
256-thread named barrier), the epilogue's per-warpgroup 128-thread barrier and the same
WGMMAs per k-tile as one warpgroup's 64-row tile. GPU tier (``gpu`` + ``sm90``): against the
fp32 rowwise reference of `test_scaled_mm_sm90` (fast accumulation: rel. error <= 4e-3, as
cuBLAS's use_fast_accum=True), outputs NaN-poisoned, at shapes giving each warpgroup 0, 1 or
several tiles, an odd number of tiles per CTA, fewer k-tiles than stages, one k-tile, and
partial tiles along M and N; with a 2x1 cluster and without, with ``early_wait``, with bias.
"""
import dataclasses

import pytest

cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90")
torch = pytest.importorskip("torch")

from fastdispatch.kernels.scaled_mm._ptx import count_ptx_ops, ptx_opcodes  # noqa: E402
# (pytest puts tests/ on sys.path: the rowwise runner)
from test_scaled_mm_sm90 import _run_and_check  # noqa: E402

VARIANTS = {"c2x1": {}, "c1x1": dict(cluster_m=1), "early": dict(early_wait=True)}


def _pingpong(variant):
    return dataclasses.replace(sm90.FAST_PINGPONG, **VARIANTS[variant], stages=None).resolved()


def test_pingpong_needs_two_warpgroups_of_64_rows_rowwise():
    cfg = sm90.FAST_PINGPONG.resolved()
    assert cfg.pingpong and cfg.tile_m == 64 and cfg.consumer_wgs == 2 and cfg.promote == 0
    for bad in (dict(tile_m=128), dict(consumer_wgs=1), dict(scales="block_1x128_128x128", promote=1),
                dict(swap_ab=True), dict(overlap_promotion=2, promote=1, tile_n=128)):
        with pytest.raises(ValueError, match="pingpong"):
            dataclasses.replace(sm90.FAST_PINGPONG, **bad)


def test_pingpong_takes_turns_on_named_barriers():
    """One 256-thread wait (the K loop's turn) and one arrival (the pass), the epilogue's
    barriers at 128 threads (a warpgroup's own); the K loop issues one warpgroup's 64-row tile
    (4 k32 WGMMAs per k-tile) and the SMEM buffers are two sets of ``epi_stages``."""
    cfg = _pingpong("c2x1")
    ptx = sm90.ptx_sm90(cfg)
    ops = list(ptx_opcodes(ptx))
    syncs = [line.split()[-1] for line in ptx.splitlines() if line.strip().startswith("bar.sync")]
    arrives = [line.split()[-1] for line in ptx.splitlines() if line.strip().startswith("bar.arrive")]
    assert syncs.count("256;") == 1 and arrives == ["256;"], (syncs, arrives)
    assert syncs.count("128;") >= 2 * (cfg.tile_n // cfg.epi_n), syncs
    assert count_ptx_ops(ptx, ("wgmma.mma_async",))["wgmma.mma_async"] == 4
    assert sum(op.startswith("wgmma.mma_async.sp") for op in ops) == 0
    assert sm90.smem_bytes(cfg) <= sm90.SMEM_CAPACITY
    assert sm90._epilogue_bytes(cfg) == 2 * cfg.epi_stages * 64 * cfg.epi_n * 2


#: (M, N, K): 4096^2 x 1024 (16 tiles per CTA pair), 1000x272x336 (partial tiles, 3 k-tiles
#: < stages), 64x256x128 (one tile: the second warpgroup gets none), 192x512x2048 (6 tiles:
#: odd per CTA with the cluster), 2100x2600x4096 (partial tiles, several each).
SHAPES = [(4096, 4096, 1024), (1000, 272, 336), (64, 256, 128), (192, 512, 2048), (2100, 2600, 4096)]


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pingpong_matches_reference(variant, m, n, k, has_bias):
    _run_and_check(_pingpong(variant), m, n, k, has_bias, tol=4e-3)
