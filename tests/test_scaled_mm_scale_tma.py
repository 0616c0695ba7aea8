"""A's block scales by TMA on the Hopper kernel (``Sm90Config.scale_a_tma``, with
``smem_scales``): the loader warp copies a CTA tile's scale rows of each 128-deep scale block
as one TMA box into the scale ring instead of 4-byte ``cp.async`` copies, where scale_a has
torch's layout (unit stride along M) with a 16-byte column stride and pointer.

CPU tier: which tensors get the variant (`sm90.with_scale_a_layout`: above M = 128), what the loader's PTX
holds (one TMA per scale block, the block values' cp.async, two arrivals per slot). GPU tier
(``gpu`` + ``sm90``): the variant on the table's picks and the other SMEM-scale tiles against
the fp64 reference of `test_scaled_mm_blockwise` (bf16 out: rel. error <= 2e-3), with partial
tiles along M and N, a K whose last 256-deep k-tile has one scale block past K (its box
reads zeros), outputs poisoned with NaN; and the API routing torch's layout to it.
"""
import dataclasses

import pytest

cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90")
torch = pytest.importorskip("torch")

from fastdispatch.kernels.scaled_mm._ptx import count_ptx_ops  # noqa: E402
# (pytest puts tests/ on sys.path: the blockwise tests' reference and runner)
from test_scaled_mm_blockwise import (TABLE_SHAPES, _mbarrier_init_counts, _run_block, block_reference,  # noqa: E402
                                      block_scales)

RECIPE = "block_1x128_128x128"


def _pick(m, n, k):
    return sm90.default_config(m, n, k, scales=RECIPE)


def _scale_a(m, kb, layout="torch", offset=0):
    """A CPU fp32 [m, kb] scale_a: torch's layout (stride (1, m)) or row-major, ``offset``
    floats into its storage."""
    if layout == "torch":
        base = torch.empty(kb * m + offset)[offset:]
        return base.as_strided((m, kb), (1, m))
    return torch.empty(m * kb + offset)[offset:].view(m, kb)


@pytest.mark.parametrize("m,layout,offset,source,expected", [
    (4096, "torch", 0, True, True), (300, "torch", 0, True, True),
    (64, "torch", 0, True, False),      # M <= 128: the 4-byte copies were as fast or faster
    (301, "torch", 0, False, False),    # column stride 301 floats: not 16 bytes
    (4096, "rowmajor", 0, False, False),  # stride 1 along K, not along M
    (4096, "torch", 1, False, False),   # pointer 4 bytes past 16-byte alignment
])
def test_with_scale_a_layout_takes_tma_only_where_the_tensor_is_a_tma_source(m, layout, offset, source, expected):
    pick = _pick(m, 4096, 7168)
    scale_a = _scale_a(m, 56, layout, offset)
    assert sm90.scale_a_tma_ok(scale_a) is source
    cfg = sm90.with_scale_a_layout(pick, scale_a)
    assert cfg.scale_a_tma is expected
    assert dataclasses.replace(cfg, scale_a_tma=False) == pick   # nothing else changes
    assert sm90.smem_bytes(cfg) == sm90.smem_bytes(pick)


def test_with_scale_a_layout_leaves_configs_without_smem_scales():
    cfg = sm90.default_config(64, 2112, 7168, scales="block_1x128_1x128")
    assert not cfg.smem_scales
    assert sm90.with_scale_a_layout(cfg, _scale_a(4096, 56)) is cfg
    with pytest.raises(ValueError, match="scale_a_tma .* needs smem_scales"):
        dataclasses.replace(cfg, scale_a_tma=True)


@pytest.mark.parametrize("name", ["m64", "m128", "large"])
def test_loader_copies_scale_rows_as_one_tma_box_per_scale_block(name):
    """Against the same config with cp.async rows: one more TMA load per scale block of a
    k-tile, cp.async only for the block values (one per scale block, lane 0), one cp.async
    arrival; each slot's full barrier counts two arrivals (the expect-tx one and lane 0's
    cp.async one) instead of 32, its empty barrier every consumer thread."""
    from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_ring_slots
    copies = _pick(*TABLE_SHAPES[name])
    tma = dataclasses.replace(copies, scale_a_tma=True)
    halves = tma.tile_k // 128
    prefixes = ("cp.async.bulk.tensor.2d.shared::cta.global", "cp.async.ca.shared.global",
                "cp.async.mbarrier.arrive.noinc", "mbarrier.arrive.expect_tx", "ld.global")
    text = sm90.ptx_sm90(tma)
    ops, base = count_ptx_ops(text, prefixes), count_ptx_ops(sm90.ptx_sm90(copies), prefixes)
    assert ops[prefixes[0]] == base[prefixes[0]] + halves, (ops, base)
    assert ops["cp.async.ca.shared.global"] == halves, ops
    assert ops["cp.async.mbarrier.arrive.noinc"] == 1 and ops["ld.global"] == 0, ops
    assert ops["mbarrier.arrive.expect_tx"] == base["mbarrier.arrive.expect_tx"] + 1, (ops, base)
    slots = scale_ring_slots(tma, tma.stages)
    counts = _mbarrier_init_counts(text)
    assert counts[2] == slots and counts[128 * tma.consumer_wgs] == slots, counts
    assert counts[32] == 0, counts


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(4, 2112, 7168), (16, 2112, 7168), (64, 7168, 2048), (128, 336, 1040),
                                   (300, 336, 1040), (1000, 2112, 1040), (4096, 4096, 7168)])
@pytest.mark.parametrize("tile", ["pick", "overlapped", "rows2"])
def test_scale_a_tma_matches_fp64_reference(has_bias, m, n, k, tile):
    # M = 4 / 16: one tile of 64 rows, most of its box past M; M = 300: a partial second
    # row block; N = 336: a partial 128-column scale block; K = 1040: 9 scale blocks, so a
    # 256-deep last k-tile's second box lies past K.
    base = {"pick": _pick(m, n, k), "overlapped": dataclasses.replace(sm90.LARGE, scales=RECIPE),
            "rows2": sm90.BLOCK_WAVES}[tile]
    cfg = dataclasses.replace(base, smem_scales=True, scale_a_tma=True, stages=None).resolved()
    _run_block(cfg, m, n, k, has_bias)


def run_api_blockwise(m, n, k, seed):
    """fastdispatch.scaled_mm on random e4m3 operands with torch's BlockWise1x128 / 128x128
    scales, checked against the fp64 reference (bf16 out: rel. error <= 2e-3). Returns the
    config the API keys for them, asserting that the call ran it (not torch's fallback)."""
    import fastdispatch
    from fastdispatch.kernels.scaled_mm import api
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = (torch.randn(m, k, device="cuda", generator=g) * 2).to(torch.float8_e4m3fn)
    bt = (torch.randn(n, k, device="cuda", generator=g) * 2).to(torch.float8_e4m3fn)
    sa, sb = block_scales(RECIPE, m, n, k, "cuda", g, "torch")
    out = fastdispatch.scaled_mm(a, bt.t(), sa, sb, out_dtype=torch.bfloat16)
    torch.cuda.synchronize()
    ref = block_reference(a, bt.t(), sa, sb, RECIPE)
    assert float((out.double() - ref).norm() / ref.norm()) <= 2e-3
    cfg = api.config_for("sm90", m, n, k, recipe=RECIPE, scale_a=sa)
    assert any(e.info.get("config") == cfg for e in api.dispatcher().entries()), "the call did not run cfg"
    return cfg


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("m,expected", [(4096, True), (64, False), (37, False)])
def test_api_routes_torchs_scale_layout_to_the_tma_loader(m, expected):
    """fastdispatch.scaled_mm with torch's BlockWise1x128 / 128x128 scales: the key's binary
    takes A's scales by TMA above M = 128 (M % 4 == 0), by cp.async at small M; all match
    the fp64 reference."""
    assert run_api_blockwise(m, 4096, 7168, seed=m).scale_a_tma is expected
