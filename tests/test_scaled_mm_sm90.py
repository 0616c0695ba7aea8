"""Tests of the Hopper scaled_mm kernel (``fastdispatch.kernels.scaled_mm.sm90``).

CPU tier: every shipped config is compiled for sm_90a without a GPU (``--gpu-arch sm_90a``,
~1 s each on this machine, once per module) and its PTX is checked: fp8 WGMMA, TMA loads (and
multicast / TMA stores where the config has them), register reallocation, no local memory,
and no ptxas spills where a ptxas is found. GPU tier (``gpu`` + ``sm90``): results on random
data against an fp32 reference, output poisoned with NaN first.
"""

import dataclasses
import re

import pytest

cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90")

from fastdispatch.kernels.scaled_mm._ptx import count_ptx_ops, ptx_opcodes, ptxas_resource_usage  # noqa: E402

CONFIGS = sm90.shipped_configs()


@pytest.fixture(scope="module")
def ptx():
    """PTX per shipped config (no bias), plus the default config with bias."""
    out = {name: sm90.ptx_sm90(cfg.resolved()) for name, cfg in CONFIGS.items()}
    out["large+bias"] = sm90.ptx_sm90(CONFIGS["large"].resolved(), has_bias=True)
    return out


def _cfg(name):
    return CONFIGS[name.split("+")[0]].resolved()


# --- configuration ------------------------------------------------------------------------


def test_default_config_table():
    assert sm90.default_config(1, 8192, 8192).swap_ab
    assert sm90.default_config(128, 8192, 8192).tile_n == 128
    assert sm90.default_config(16, 4096, 4096).tile_n == 16
    big = sm90.default_config(4096, 4096, 4096)
    assert not big.swap_ab and big.promote == 1 and (big.tile_m, big.tile_n) == (128, 128)
    # 192-wide tiles where their waves come out shorter: 21 instead of 32 at 8192^3, but
    # 6 (the last one two-thirds empty) instead of 8 at 4096^3.
    assert sm90.default_config(8192, 8192, 8192) == sm90.LARGE_WIDE.resolved()
    assert sm90.default_config(16384, 8192, 8192).tile_n == 192
    assert sm90._waves(sm90.LARGE, 4096, 4096) == 8 and sm90._waves(sm90.LARGE_WIDE, 4096, 4096) == 6
    # Waves x (width x K + the per-tile cost): at K = 1536 the 192-wide tile's fewer tiles pay
    # (32 waves against 47 at 4096x24576x1536), at K = 2048 and 16384 not (N = 7168: 10 vs 14).
    # From M = 4096 also the 256x128 tile (`ROWWISE_LARGE`, as two 128-row blocks: 256 columns
    # of 128 rows in the estimate): 24 waves at 4096x24576x1536, 7 at N = 7168 (K = 2048 and
    # 16384), 4 at 4096^3 and 4096x4096x7168; at 8192^3 its 16 waves lose to 21 of 192-wide
    # tiles (width x K), at 4096x2112x7168 its 3 waves of 256 columns to 3 of 192.
    for m, n, k in ((4096, 24576, 1536), (4096, 7168, 2048), (4096, 7168, 16384), (4096, 4096, 4096),
                    (4096, 4096, 7168)):
        assert sm90.default_config(m, n, k) == sm90.ROWWISE_LARGE.resolved(), (m, n, k)
    assert sm90.default_config(4096, 2112, 7168) == sm90.LARGE_WIDE.resolved()
    # Below `ROWWISE_LARGE_FROM_M` (not measured there) the 128- and 192-wide tiles only.
    assert sm90.ROWWISE_LARGE_FROM_M == 4096
    for m, n, k in ((2048, 8192, 8192), (1024, 4096, 4096), (512, 24576, 1536), (256, 16384, 4096)):
        assert sm90.default_config(m, n, k).row_blocks == 1, (m, n, k)
    assert sm90.default_config(2048, 7168, 2048) == sm90.LARGE_EARLY.resolved()
    # Plain promotions with the next stage tested early (``early_wait``) wherever they were
    # measured with it: rowwise large and mid M, every B-per-128x128 blockwise tile; not B per
    # 1x128 without SMEM slots, nor the 128x256 fast-accumulation tile.
    assert sm90.default_config(8192, 8192, 8192).early_wait and sm90.default_config(512, 2112, 7168).early_wait
    for m, n, k in ((64, 2112, 7168), (1024, 2112, 7168), (4096, 2112, 7168), (4096, 4096, 7168)):
        assert sm90.default_config(m, n, k, scales="block_1x128_128x128").early_wait
        assert not sm90.default_config(m, n, k, scales="block_1x128_1x128").early_wait
    # Fast accumulation: the 128x256 tile at every K (the ping-pong 64x256 tiles ran 5-8% slower
    # at the power cap: a trial, not shipped).
    assert not sm90.FAST_LARGE.early_wait
    for m, n, k in ((4096, 4096, 4096), (8192, 8192, 8192), (16384, 8192, 8192)):
        assert sm90.default_config(m, n, k, fast_accum=True) == sm90.FAST_LARGE.resolved()
    assert "fast_pingpong" not in sm90.shipped_configs()
    # Few tiles: no cluster (a 2x1 cluster would idle half the CTAs of a partial wave).
    assert sm90.default_config(1000, 272, 336).cluster_m == 1


def test_small_m_rowwise_picks():
    # ``early_wait`` on the swap-AB tiles from M = 33 (measured at 64 and 128).
    assert not sm90.default_config(32, 7168, 2048).early_wait
    assert sm90.default_config(64, 7168, 2048).early_wait and sm90.default_config(128, 7168, 2048).early_wait
    # M = 65..128: one row of 128x192 tiles where the swap-AB tiles take more rounds (N = 24576:
    # 128 tiles on 128 SMs); swap-AB elsewhere.
    wide = sm90.default_config(128, 24576, 1536)
    assert wide == dataclasses.replace(sm90.SMALL_M_WIDE, num_sms=128).resolved() and not wide.swap_ab
    assert wide.cluster_m == 1 and wide.early_wait and sm90.default_config(96, 24576, 1536) == wide
    for n in (12288, 16384, 19200):   # (one round of 64-100 wide tiles: still fewer bytes)
        assert not sm90.default_config(128, n, 1536).swap_ab, n
    for n in (2112, 4096, 7168, 8192):   # (the swap-AB tiles make one round)
        assert sm90.default_config(128, n, 1536).swap_ab, n
    assert sm90.default_config(64, 24576, 1536).swap_ab   # (not measured for 64 rows)


def test_small_m_configs_split_k_only_where_tiles_are_few():
    decode = sm90.default_config(1, 4096, 4096)
    assert decode.swap_ab and decode.split_k == 2 and decode.tile_k == 256 and decode.pdl
    assert sm90.default_config(16, 4224, 4096).split_k == 2      # 66 tiles of 64 rows: 132 CTAs
    assert sm90.default_config(16, 4288, 4096).split_k == 1      # 67 tiles: would be 134
    assert sm90.default_config(1, 4096, 512).split_k == 1        # two 256-deep k-tiles only
    assert sm90.default_config(32, 4096, 4096).split_k == 1      # measured for M <= 16 only
    assert not sm90.default_config(4096, 4096, 4096).pdl


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shipped_configs_fit_smem(name):
    cfg = CONFIGS[name].resolved()
    assert 2 <= cfg.stages == sm90.max_stages(cfg)
    assert sm90.smem_bytes(cfg) <= sm90.SMEM_CAPACITY
    with pytest.raises(ValueError, match="does not fit"):
        dataclasses.replace(cfg, stages=cfg.stages + 1).resolved()


@pytest.mark.parametrize(
    "bad",
    [dict(tile_m=96), dict(tile_n=260), dict(tile_n=12), dict(tile_k=32), dict(consumer_wgs=3),
     dict(cluster_m=3), dict(cluster_m=4, cluster_n=2), dict(epi_n=48), dict(stages=1),
     dict(promote=-1), dict(tile_n=256, promote=1), dict(tile_m=256, consumer_wgs=2), dict(tile_k=512),
     dict(split_k=3), dict(split_k=2),  # split-K needs swap_ab
     dict(tile_n=208),  # promote=1: two 104-register accumulators per thread do not fit
     dict(tile_m=64, consumer_wgs=1, swap_ab=True, split_k=2, cluster_m=2),
     # overlapped promotion: groups of >= 2 k-tiles, promote=1, three <= 64-register accumulators
     dict(overlap_promotion=1), dict(promote=0, overlap_promotion=4), dict(tile_n=192, overlap_promotion=4)],
)
def test_invalid_configs_rejected(bad):
    with pytest.raises(ValueError):
        sm90.Sm90Config(**{"promote": 1, **bad})


def test_config_is_hashable_key():
    assert hash(sm90.Sm90Config()) == hash(sm90.Sm90Config())
    assert len({sm90.default_config(m, 8192, 8192) for m in (1, 2, 16, 17, 200, 4096)}) == 4


# --- PTX structure ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS) + ["large+bias"])
def test_ptx_is_sm90a_wgmma_tma_kernel(ptx, name):
    text = ptx[name]
    cfg = _cfg(name)
    assert re.search(r"^\.target sm_90a", text, re.M)
    ops = list(ptx_opcodes(text))
    mma = [o for o in ops if o.startswith("wgmma.mma_async")]
    # One rolled K-loop body per accumulation mode: tile_k / 32 fp8 WGMMAs, m64 x tile_n;
    # overlapped promotion: a group of `overlap_promotion` k-tiles plus a one-k-tile tail;
    # static passes: a pass of ``stages`` k-tiles plus the last pass's ``stages - 1`` guarded
    # ones; each of them once per row block.
    sites = (2 * cfg.stages - 1 if cfg.static_stages
             else cfg.overlap_promotion + 1 if cfg.overlap_promotion else 1)
    assert len(mma) == cfg.tile_k // 32 * sites * cfg.row_blocks
    assert all(o.endswith(f"m64n{cfg.tile_n}k32.f32.e4m3.e4m3") for o in mma), mma
    loads = [o for o in ops if o.startswith("cp.async.bulk.tensor") and ".global.tile.mbarrier" in o]
    # A (per row block) and B per stage, one 128-byte-wide box each per 128 of tile_k.
    assert len(loads) == (cfg.row_blocks + 1) * max(1, cfg.tile_k // 128), loads
    multicast = [o for o in loads if ".multicast::cluster" in o]
    assert bool(multicast) == (cfg.cluster_m * cfg.cluster_n > 1)
    stores = [o for o in ops if o.startswith("cp.async.bulk.tensor") and ".global.shared::cta" in o]
    if cfg.swap_ab:
        assert not stores and count_ptx_ops(text, ("st.global",))["st.global"] > 0
    else:
        assert len(stores) == cfg.tile_n // cfg.epi_n * cfg.row_blocks
        assert count_ptx_ops(text, ("stmatrix",))["stmatrix"] > 0
    # Split-K partials travel through distributed SMEM; nothing else uses it.
    dsmem = count_ptx_ops(text, ("st.async", "mapa"))
    assert (dsmem["st.async"] > 0 and dsmem["mapa"] > 0) == (cfg.split_k > 1), dsmem
    # Programmatic dependent launch: wait for the previous grid once, let the next one start.
    pdl = count_ptx_ops(text, ("griddepcontrol.wait", "griddepcontrol.launch_dependents"))
    assert pdl == {"griddepcontrol.wait": int(cfg.pdl), "griddepcontrol.launch_dependents": int(cfg.pdl)}
    # Producer warpgroup gives registers to the consumers.
    assert count_ptx_ops(text, ("setmaxnreg.dec", "setmaxnreg.inc")) == {"setmaxnreg.dec": 1, "setmaxnreg.inc": 1}
    assert count_ptx_ops(text, ("ld.local", "st.local")) == {"ld.local": 0, "st.local": 0}


# rowwise_large: its static passes spilled ~1300 registers until the promotions' adds were
# pinned before the next row block's WGMMAs (`block_scales.pin`).
@pytest.mark.parametrize("name", ["fast_large", "large", "large_wide", "rowwise_large", "small_m128",
                                  "small_m16_split_k2"])
def test_no_register_spills(ptx, name):
    usage = ptxas_resource_usage(ptx[name], "sm_90a")
    if usage is None:
        pytest.skip("no ptxas for sm_90a found")
    assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


# Split-K over two consumer warpgroups (128-row swap-AB tiles): not shipped (measured slower
# than the one-warpgroup 64-row tiles at M = 64..128), but a valid config, so it must compile
# to a correct kernel: 256 threads' partials per slot, scales loaded after the K loop.
SPLIT_TWO_WGS = sm90.Sm90Config(tile_m=128, tile_n=64, tile_k=128, consumer_wgs=2, swap_ab=True, split_k=2)


@pytest.mark.parametrize("has_bias", [False, True])
def test_rowwise_row_blocks_compile_with_plain_promotions(has_bias):
    """ROWWISE_WAVES (256x128 tiles as two 128-row blocks, the dynamic K loop; the table's form
    is `ROWWISE_LARGE`, in static passes): per k-tile each block's 4 WGMMAs and its own wait,
    plain adds for the promotions (no FMA but the bias's), each block's 2 row scales and the
    shared 32 column scales (and bias) loaded once, two A copies per stage, no spills."""
    cfg = sm90.ROWWISE_WAVES.resolved()
    assert cfg.stages == 4 and not any(sm90.default_config(*s).row_blocks > 1
                                       for s in ((8192, 8192, 8192), (2048, 8192, 8192), (64, 2112, 7168)))
    text = sm90.ptx_sm90(cfg, has_bias=has_bias)
    ops = count_ptx_ops(text, ("wgmma.mma_async", "wgmma.commit_group", "ld.global", "cp.async.bulk.tensor"))
    assert ops["wgmma.mma_async"] == cfg.row_blocks * 4 and ops["wgmma.commit_group"] == cfg.row_blocks
    assert len(re.findall(r"\bfma\.rn\.f32\b", text)) == (cfg.row_blocks * 64 if has_bias else 0)
    assert ops["ld.global"] == 2 * cfg.row_blocks + cfg.tile_n // 4 * (2 if has_bias else 1)
    assert ops["cp.async.bulk.tensor"] == 3 + 4 * cfg.row_blocks
    usage = ptxas_resource_usage(text, "sm_90a")
    if usage:
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


def test_split_k_over_two_warpgroups_compiles_without_spills():
    text = sm90.ptx_sm90(SPLIT_TWO_WGS.resolved(), has_bias=True)
    assert count_ptx_ops(text, ("st.async",))["st.async"] > 0
    assert count_ptx_ops(text, ("ld.local", "st.local")) == {"ld.local": 0, "st.local": 0}
    usage = ptxas_resource_usage(text, "sm_90a")
    if usage is not None:
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


@pytest.mark.parametrize("has_bias", [False, True])
def test_scales_before_loop_loads_them_ahead_of_the_first_wgmma(has_bias):
    """``scales_before_loop`` on the fast-accumulation 128x256 tile (a trial knob): every scale
    (and bias) load comes before the first WGMMA in the PTX, where the default issues them all
    after the K loop; the same loads (2 row values, 64 column values, 64 bias values), WGMMAs
    and stores either way. Without bias nothing spills; with it the 130 values held through
    the loop spill (204 bytes, ptxas for sm_90a), which a pick would have to weigh."""
    base = sm90.FAST_LARGE.resolved()
    early = dataclasses.replace(base, scales_before_loop=True)
    loads = 2 + 64 * (2 if has_bias else 1)
    ops = ("ld.global", "wgmma.mma_async", "cp.async.bulk.tensor", "stmatrix")
    texts = {cfg: sm90.ptx_sm90(cfg, has_bias=has_bias) for cfg in (base, early)}
    for cfg, before in ((base, 0), (early, loads)):
        text = texts[cfg]
        lines = [line.strip() for line in text.splitlines()]
        first_mma = next(i for i, line in enumerate(lines) if line.startswith("wgmma.mma_async"))
        assert sum(line.startswith("ld.global") for line in lines[:first_mma]) == before, cfg
        assert count_ptx_ops(text, ops) == count_ptx_ops(texts[base], ops)
        usage = ptxas_resource_usage(text, "sm_90a")
        if usage and not (before and has_bias):
            assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage
    with pytest.raises(ValueError, match="scales_before_loop"):
        sm90.Sm90Config(scales="block_1x128_128x128", scales_before_loop=True)


# --- GPU: correctness on random data -----------------------------------------------------

torch = pytest.importorskip("torch")
FP8 = torch.float8_e4m3fn


def _fn(cfg, has_bias):
    """The positional binary of ``cfg`` (api's process-wide compile memo: each once per run)."""
    from fastdispatch.kernels.scaled_mm.api import _compiled
    return _compiled("sm90", cfg, has_bias)


def _run_and_check(cfg, m, n, k, has_bias, tol=2e-3):
    g = torch.Generator(device="cuda").manual_seed(m * 131 + n * 7 + k)
    a = (torch.randn(m, k, device="cuda", generator=g) * 2).to(FP8)
    bt = (torch.randn(n, k, device="cuda", generator=g) * 2).to(FP8)
    sa = torch.rand(m, device="cuda", generator=g) + 0.5
    sb = torch.rand(n, device="cuda", generator=g) + 0.5
    bias = torch.randn(n, device="cuda", generator=g).to(torch.bfloat16) if has_bias else None
    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    # The binary takes torch._scaled_mm's layouts: b [K, N] column-major, scales [M,1] / [1,N].
    args = (a, bt.t(), sa[:, None], sb[None, :], out) + ((bias,) if has_bias else ())
    _fn(cfg, has_bias)(*args)
    torch.cuda.synchronize()
    ref = (a.float() @ bt.float().t()) * sa[:, None] * sb[None, :]
    if has_bias:
        ref = ref + bias.float()
    assert not out.isnan().any(), f"{int(out.isnan().sum())} elements not written"
    err = float((out.float() - ref).norm() / ref.norm())
    assert err <= tol, f"rel. error {err:.2e} > {tol:.0e} ({cfg})"
    return out


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(m, 272, 336) for m in (1, 7, 16, 100, 128, 1000, 4096)]
                         + [(256, 256, 256), (1024, 1024, 1024), (2048, 2048, 8192), (64, 8192, 8192)])
def test_default_config_matches_reference(m, n, k, has_bias):
    _run_and_check(sm90.default_config(m, n, k), m, n, k, has_bias)


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("m,n,k", [(1000, 272, 336), (100, 1040, 2064), (5, 4096, 1024)])
def test_every_config_on_partial_tiles(name, m, n, k):
    _run_and_check(CONFIGS[name].resolved(), m, n, k, has_bias=True)


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
# Several tiles per cluster (the partial-slot hand-off reused), one k-tile (rank 1 gets none),
# a K range that does not split evenly.
@pytest.mark.parametrize("m,n,k", [(100, 1040, 2064), (5, 520, 256), (1, 4096, 4096), (16, 2056, 1296)])
@pytest.mark.parametrize("cfg", [CONFIGS["small_m16_split_k2"], SPLIT_TWO_WGS], ids=["one_wg", "two_wgs"])
def test_split_k_matches_reference_and_repeats_bit_for_bit(m, n, k, has_bias, cfg):
    cfg = cfg.resolved()
    first = _run_and_check(cfg, m, n, k, has_bias)
    assert torch.equal(first.view(torch.int16), _run_and_check(cfg, m, n, k, has_bias).view(torch.int16))


# Promotions overlapped with the next k-tile's WGMMAs add the same partial sums in the same
# order as the plain promote=1 loop: the results must be the same bits. K = 128, 336, 1024,
# 2064: 1, 3, 8, 17 k-tiles (no full group, a tail only, groups only, groups and a tail).
OVERLAPPED = sm90.LARGE


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(300, 272, 336), (1000, 1040, 2064), (4096, 4096, 4096)])
@pytest.mark.parametrize("whole_tile", [False, True])
def test_rowwise_row_blocks_match_reference(m, n, k, has_bias, whole_tile):
    # M = 300 / 1000: a partial second row block; N = 272 / 1040: partial column tiles.
    # whole_tile: both blocks staged in SMEM before their stores.
    epilogue = dict(epi_n=64, epi_stages=4) if whole_tile else {}
    _run_and_check(dataclasses.replace(sm90.ROWWISE_WAVES, stages=None, **epilogue).resolved(), m, n, k, has_bias)


def test_shipped_overlap_group_is_the_one_the_k_cases_cover():
    # The K values of the bit-identity test are chosen for groups of 4 k-tiles.
    assert OVERLAPPED.overlap_promotion == 4


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("m,n,k", [(300, 272, 128), (1000, 272, 336), (256, 1040, 1024), (100, 1040, 2064)])
def test_overlapped_promotion_is_bit_identical_to_plain(m, n, k):
    plain = dataclasses.replace(OVERLAPPED, overlap_promotion=0).resolved()
    first = _run_and_check(OVERLAPPED.resolved(), m, n, k, has_bias=True)
    assert torch.equal(first.view(torch.int16), _run_and_check(plain, m, n, k, has_bias=True).view(torch.int16))


@pytest.mark.gpu
@pytest.mark.sm90
def test_fast_accum_error_grows_with_k_like_cublas():
    # WGMMA's own fp8 accumulation (promote=0) loses bits at large K, as cuBLAS's
    # use_fast_accum=True does (both ~2.6e-3 at K=8192, measured); still within 4e-3.
    _run_and_check(sm90.FAST_LARGE.resolved(), 512, 512, 8192, has_bias=False, tol=4e-3)
