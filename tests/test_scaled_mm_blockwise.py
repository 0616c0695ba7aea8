"""Block scales, e5m2 operands, fp16 output and padded leading dimensions on the Hopper
scaled_mm kernel (``sm90`` with ``Sm90Config.scales`` / dtypes; ``sm90.block_scales``).

CPU tier: the blockwise configs compile for sm_90a without a GPU; their PTX promotes with FMAs
(one per accumulator element and k-tile, instead of the rowwise kernel's adds), loads the
expected number of scale factors per k-tile, and spills nothing. GPU tier (``gpu`` +
``sm90``): each config the table can pick, and the edges (partial M/N tiles, a partial last
scale block along N and along K, split-K, the overlapped promotion's tail), against an fp64
reference that dequantizes the fp8 inputs with their block scales; outputs poisoned with NaN.

Error bounds (relative Frobenius error against the fp64 product of the dequantized inputs):
bf16 out 2e-3 (fp32 partial sums, one bf16 rounding: ~1 bf16 ulp averaged), fp16 out 1e-3
(3 more mantissa bits), the same as the rowwise tests.
"""
import dataclasses
import re

import pytest

cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90")
torch = pytest.importorskip("torch")

from fastdispatch.kernels.scaled_mm._ptx import count_ptx_ops, ptxas_resource_usage  # noqa: E402

RECIPES = ("block_1x128_128x128", "block_1x128_1x128")
# One config per path the table picks: small M (64 or 128 rows, 16..128-column tiles; the
# 56-wide ones that span scale blocks are test_scaled_mm_scale_spans'), 128x128 tiles (plain
# promotion) and the 2x1 cluster with overlapped promotions.
TABLE_SHAPES = {"m16": (16, 2112, 7168), "m64": (64, 4096, 7168), "m128": (128, 4096, 7168),
                "medium": (256, 1024, 2048), "large": (4096, 4096, 7168)}


def _config(recipe, m, n, k, **kw):
    return sm90.default_config(m, n, k, scales=recipe, **kw)


def test_block_configs_promote_every_128_and_fit_one_scale_block():
    for recipe in RECIPES:
        for m, n, k in TABLE_SHAPES.values():
            cfg = _config(recipe, m, n, k)
            # Promoted every 128 of K: 128-deep k-tiles, or (B per 128x128, up to M = 2048)
            # 256-deep ones promoted in two halves where the width divides 128 (or is the
            # small-M 56, whose SMEM scales serve halves that span blocks) and 3 stages fit.
            deep_ok = m <= sm90.WAVES_UP_TO_M and recipe == "block_1x128_128x128"
            assert cfg.scales == recipe and cfg.promote == 1
            assert cfg.tile_k in ((128, 256) if deep_ok else (128,))
            if cfg.tile_k == 256:
                assert (128 % cfg.tile_n == 0 or cfg.tile_n == sm90.table.NARROW_SPAN and m <= 128) \
                    and cfg.stages >= 3, cfg
            side = cfg.tile_m if cfg.swap_ab else cfg.tile_n
            # One 128-column scale block per tile, but through SMEM scales (B per 128x128).
            assert 128 % side == 0 or cfg.smem_scales
    # Small M is not swapped (swapped, each thread needs tile_n / 4 scales of A per k-tile)
    # and its tiles narrow until they fill the SMs.
    assert not _config(RECIPES[0], 16, 2112, 7168).swap_ab
    assert _config(RECIPES[0], 64, 2112, 7168).tile_n == 16
    # B per 128x128 at M = 65..128: two 64-row tiles where they read much less (N = 2112: 64x32
    # against 128x16, DeepGEMM's choice), 192-wide tiles where 128-wide ones take two rounds
    # (N = 24576), and never the 128x128x256 tile (2 stages: 128-deep k-tiles there).
    assert _small(_config(RECIPES[0], 128, 2112, 7168)) == (64, 32, 256)
    assert _small(_config(RECIPES[0], 128, 4096, 7168)) == (128, 32, 256)
    # N = 7168: DeepGEMM's 56-wide tile (128 of them, one per SM of a wave), 256 deep.
    assert _small(_config(RECIPES[0], 128, 7168, 16384)) == (128, 56, 256)
    assert _small(_config(RECIPES[0], 64, 7168, 2048)) == (64, 56, 256)
    assert _small(_config(RECIPES[0], 128, 24576, 1536)) == (128, 192, 128)
    assert _small(_config(RECIPES[0], 128, 16384, 1536)) == (128, 128, 128)
    assert _small(_config(RECIPES[0], 64, 24576, 1536)) == (64, 192, 128)
    assert _small(_config(RECIPES[1], 128, 2112, 7168)) == (128, 16, 128)   # B per 1x128: 128 rows
    # Large M, B per 128x128: DeepGEMM's 256x128 tile with SMEM scales, but where its coarser
    # waves cost more than it gains (N = 2112: a tile over 3 scale blocks, 192 wide in static
    # passes, 11 per row, where 176 wide makes as many waves); B per 1x128: the overlapped 128x128 tile.
    assert _config(RECIPES[0], 4096, 4096, 7168) == sm90.BLOCK_LARGE.resolved()
    assert _config(RECIPES[0], 4096, 2112, 7168) == sm90.BLOCK_SPAN_WIDE.resolved()
    assert _config(RECIPES[1], 4096, 2112, 7168).overlap_promotion == 4
    assert _config(RECIPES[1], 4096, 4096, 7168).overlap_promotion == 4
    # SMEM scales wherever the kernel has them (B per 128x128), never for B per 1x128.
    for m, n, k in TABLE_SHAPES.values():
        assert _config(RECIPES[0], m, n, k).smem_scales and not _config(RECIPES[1], m, n, k).smem_scales
    # Rowwise picks are unchanged by the new fields.
    assert sm90.default_config(8192, 8192, 8192) == sm90.LARGE_WIDE.resolved()
    assert sm90.default_config(64, 2112, 7168).tile_k == 256


def _small(cfg):
    return cfg.tile_m, cfg.tile_n, cfg.tile_k


@pytest.mark.parametrize("bad", [dict(tile_k=64), dict(promote=0), dict(tile_n=192),
                                 dict(tile_m=256, consumer_wgs=2, swap_ab=True),
                                 dict(tile_k=256, scales="block_1x128_1x128"),
                                 dict(tile_k=256, tile_m=64, consumer_wgs=1, swap_ab=True)])
def test_block_config_errors_name_the_rule(bad):
    with pytest.raises(ValueError, match="block scales"):
        sm90.Sm90Config(**{"scales": "block_1x128_128x128", **bad})


def test_unknown_recipe_and_dtype_are_refused():
    with pytest.raises(ValueError, match="scales must be one of"):
        sm90.Sm90Config(scales="blockwise")
    with pytest.raises(ValueError, match="a_dtype and b_dtype"):
        sm90.Sm90Config(a_dtype="fp8")
    with pytest.raises(ValueError, match="out_dtype"):
        sm90.Sm90Config(out_dtype="fp32")


def test_kernel_supports_names_torch_dtypes():
    e4m3, e5m2 = torch.float8_e4m3fn, torch.float8_e5m2
    assert sm90.kernel_supports(e4m3, e5m2, torch.float16, "block_1x128_128x128")
    assert sm90.kernel_supports(e4m3, e4m3, torch.bfloat16, "tensorwise")
    assert not sm90.kernel_supports(e4m3, e4m3, torch.float32, "rowwise")
    assert not sm90.kernel_supports(e4m3, e4m3, torch.float8_e4m3fn, "rowwise")


def _lookahead_config(recipe, name):
    """The table's pick for ``name`` with the scales through the consumers' own look-ahead
    loads (B per 1x128's path; the 128x128 tile where the table picks the 256x128 one)."""
    cfg = _config(recipe, *TABLE_SHAPES[name])
    if cfg.row_blocks > 1:
        cfg = dataclasses.replace(sm90.LARGE, scales=recipe)
    return dataclasses.replace(cfg, smem_scales=False, stages=None).resolved()


@pytest.fixture(scope="module")
def block_ptx():
    return {(recipe, name): sm90.ptx_sm90(_lookahead_config(recipe, name))
            for recipe in RECIPES for name in TABLE_SHAPES}


def _fmas(text):
    return len(re.findall(r"\bfma\.rn\.f32\b", text))


@pytest.mark.parametrize("name", sorted(TABLE_SHAPES))
def test_block_promotion_is_fma_per_element_with_few_loads(block_ptx, name):
    from fastdispatch.kernels.scaled_mm.sm90.block_scales import lookahead
    cfg = _lookahead_config(RECIPES[0], name)
    text = block_ptx[(RECIPES[0], name)]
    per_thread = cfg.tile_m * cfg.tile_n // (128 * cfg.consumer_wgs)   # accumulator elements
    ahead = lookahead(cfg)
    assert ahead == 4   # 3 values per k-tile unswapped: four k-tiles' fit in 12 registers
    # The K loop is unrolled by its group (the overlapped loop's, else the lookahead's worth
    # of k-tiles: `ahead` 128-deep scale blocks) with a guarded tail of group - 1 k-tiles:
    # one FMA per element per 128-deep block at each site (two per 256-deep k-tile).
    halves = cfg.tile_k // 128
    group = cfg.overlap_promotion or ahead // halves
    assert _fmas(text) == (2 * group - 1) * halves * per_thread
    # Loads: the first `ahead` blocks' before the loop, then one block's per unrolled
    # promotion (the tail's look-ahead loads are dead and removed); each time 2 row values
    # and one 128x128 block value. Nothing else reads global memory.
    loads = count_ptx_ops(text, ("ld.global",))["ld.global"]
    assert loads == (ahead + group * halves) * 3, (loads, ahead, group)
    usage = ptxas_resource_usage(text, "sm_90a")
    if usage:
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


@pytest.mark.parametrize("name", sorted(TABLE_SHAPES))
def test_smem_scale_picks_read_the_slots_and_no_global_scales(name):
    """The table's picks with SMEM scales: the consumers read each 128-deep scale block's 2 row
    values per row block and its one block value from the k-tile's slot of the scale ring
    (the rows' ld.shared per promotion site, the block value's once for all row blocks: the
    slot's one barrier wait comes before them all; one FMA per accumulator element each), the
    loader warp copies the CTA tile's rows (one cp.async per 32 rows and lane) and the block
    value, arriving on the slot's full barrier; no consumer loads a scale from global memory."""
    cfg = _config(RECIPES[0], *TABLE_SHAPES[name])
    assert cfg.smem_scales
    text = sm90.ptx_sm90(cfg)
    halves = cfg.tile_k // 128
    sites = cfg.overlap_promotion * 2 - 1 if cfg.overlap_promotion else 1   # its loop and guarded tail
    if cfg.static_stages:   # a pass over the ring unrolled, and the last pass's guarded k-tiles (its
        sites = 2 * cfg.stages - 1   # last stage is always an empty one)
    per_thread = cfg.tile_m * cfg.tile_n // (128 * cfg.consumer_wgs)
    ops = count_ptx_ops(text, ("ld.global", "ld.shared.b32", "cp.async.ca.shared.global",
                               "cp.async.mbarrier.arrive.noinc"))
    assert ops["ld.global"] == 0, ops
    assert ops["ld.shared.b32"] == sites * halves * (cfg.row_blocks * 2 + 1), ops
    assert _fmas(text) == sites * halves * cfg.row_blocks * per_thread
    assert ops["cp.async.ca.shared.global"] == halves * (cfg.tile_m * cfg.row_blocks // 32 + 1), ops
    assert ops["cp.async.mbarrier.arrive.noinc"] == 1, ops
    usage = ptxas_resource_usage(text, "sm_90a")
    if usage:
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


def _mbarrier_init_counts(text):
    """Arrival count of every ``mbarrier.init`` in ``text`` (counts come as immediates or
    through a ``mov`` into a register), as a Counter."""
    from collections import Counter
    movs = dict(re.findall(r"mov\.b32\s+(%r\d+),\s*(\d+);", text))
    counts = [int(movs.get(v, v)) for v in re.findall(r"mbarrier\.init\.shared\.b64\s+\[[^\]]+\],\s*([%\w]+);", text)]
    return Counter(counts)


@pytest.mark.parametrize("name", ["large", "m64"])
def test_scale_ring_barriers_count_their_arrivals(name):
    """The scale ring of ``smem_scales``: each slot's full barrier counts the loader warp's 32
    cp.async arrivals and its empty barrier every consumer thread (each arrives after its own
    reads). A count that does not match the arrivals is a launch failure on the GPU (the
    empty barriers once counted one arrival per warp)."""
    from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_ring_slots
    cfg = _config(RECIPES[0], *TABLE_SHAPES[name])
    assert cfg.smem_scales
    slots = scale_ring_slots(cfg, cfg.stages)
    assert slots >= 2 * cfg.stages and slots & (slots - 1) == 0
    counts = _mbarrier_init_counts(sm90.ptx_sm90(cfg))
    consumers = 128 * cfg.consumer_wgs
    assert counts[32] == slots and counts[consumers] == slots, (counts, slots)
    assert sum(counts.values()) == 2 * slots + 2 * cfg.stages, counts   # + the A/B ring's
    assert sm90.smem_bytes(cfg) <= sm90.SMEM_CAPACITY


def test_rowwise_kernel_keeps_plain_adds():
    text = sm90.ptx_sm90(sm90.default_config(4096, 4096, 4096))
    assert _fmas(text) == 0


def test_row_blocks_config_rules():
    """row_blocks=2 (DeepGEMM's 256x128 tile as two 128-row blocks) is a block-scale config with
    a 48 KB stage (two A blocks, one B tile); anything it cannot compute is refused by name;
    the table picks it for B per 128x128 at large M only, where its waves pay."""
    cfg = sm90.BLOCK_WAVES.resolved()
    assert cfg.row_blocks == 2 and sm90._stage_bytes(cfg) == (2 * 128 + 128) * 128 and cfg.stages == 4
    for bad in (dict(scales="block_1x128_1x128"), dict(overlap_promotion=4), dict(tile_k=256),
                dict(row_blocks=3), dict(scales="rowwise", promote=0)):
        with pytest.raises(ValueError, match="row_blocks"):
            dataclasses.replace(sm90.BLOCK_WAVES, **bad)
    picked = {shape: _config(RECIPES[0], *shape).row_blocks
              for shape in (*TABLE_SHAPES.values(), (8192, 8192, 8192), (4096, 24576, 1536), (4096, 2112, 7168))}
    assert [shape for shape, rows in picked.items() if rows == 2] == [(4096, 4096, 7168), (8192, 8192, 8192),
                                                                      (4096, 24576, 1536)]
    for shape in picked:
        assert _config(RECIPES[1], *shape).row_blocks == 1


@pytest.mark.parametrize("has_bias", [False, True])
def test_row_blocks_promote_each_block_with_its_own_scales(has_bias):
    """Per k-tile each row block has its own WGMMAs (4 x k32), its own wait and one FMA per
    accumulator element; A lands as two TMA copies per stage; each block loads its own 2 row
    values per scale block and the one 128x128 block value is shared; nothing spills."""
    from fastdispatch.kernels.scaled_mm.sm90.block_scales import lookahead
    cfg = sm90.BLOCK_WAVES.resolved()
    text = sm90.ptx_sm90(cfg, has_bias=has_bias)
    ahead = lookahead(cfg)
    assert ahead == 2   # half the look-ahead budget per block: 4 spilled at the 1x2 cluster
    sites = 2 * ahead - 1   # the unrolled group and its guarded tail
    ops = count_ptx_ops(text, ("wgmma.mma_async", "wgmma.commit_group", "ld.global", "cp.async.bulk.tensor"))
    assert ops["wgmma.mma_async"] == sites * cfg.row_blocks * 4
    assert ops["wgmma.commit_group"] == sites * cfg.row_blocks
    assert _fmas(text) == sites * cfg.row_blocks * 64
    # with bias, this thread's tile_n / 4 columns' values, loaded once for both blocks
    bias_loads = cfg.tile_n // 4 if has_bias else 0
    assert ops["ld.global"] == 2 * ahead * (2 * cfg.row_blocks + 1) + bias_loads
    # producer: two A copies and one B copy per stage; epilogue: 4 subtile stores per block
    assert ops["cp.async.bulk.tensor"] == 3 + 4 * cfg.row_blocks
    usage = ptxas_resource_usage(text, "sm_90a")
    if usage:
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


@pytest.mark.parametrize("recipe", ["block_1x128_128x128", "rowwise"])
def test_row_blocks_whole_tile_epilogue_stages_both_blocks_then_stores(recipe):
    """With buffers for the whole 256x128 tile the epilogue stages both blocks, then one
    barrier and all their TMA stores: 2 barriers per tile instead of 2 per subtile (16), the
    SMEM of the fourth stage given to it (3 stages, DeepGEMM's split), nothing spilled."""
    per_block = dataclasses.replace(sm90.BLOCK_WAVES, scales=recipe).resolved()
    whole = dataclasses.replace(per_block, epi_n=64, epi_stages=4, stages=None).resolved()
    assert (per_block.stages, whole.stages) == (4, 3)
    for cfg, bars, stores in ((per_block, 16, 8), (whole, 2, 4)):
        text = sm90.ptx_sm90(cfg, has_bias=False)
        assert len(re.findall(r"\bbar\.sync", text)) == bars
        assert count_ptx_ops(text, ("cp.async.bulk.tensor",))["cp.async.bulk.tensor"] == 3 + stores
    usage = ptxas_resource_usage(sm90.ptx_sm90(whole, has_bias=True), "sm_90a")
    if usage:
        assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage


def test_e5m2_and_fp16_compile_to_the_right_wgmma_and_stores():
    cfg = dataclasses.replace(sm90.MEDIUM, a_dtype="e5m2", out_dtype="fp16").resolved()
    text = sm90.ptx_sm90(cfg)
    assert re.search(r"wgmma\.mma_async\.sp?\S*\.f32\.e5m2\.e4m3", text), "expected e5m2 x e4m3 WGMMA"
    assert ".f16" in text
    # Swap-AB computes Bt @ A^T: the WGMMA's first operand is B's type.
    swapped = dataclasses.replace(sm90.default_config(16, 2112, 1536), a_dtype="e5m2").resolved()
    assert re.search(r"wgmma\.mma_async\.sp?\S*\.f32\.e4m3\.e5m2", sm90.ptx_sm90(swapped))


# --- GPU: correctness on random data -----------------------------------------------------

FP8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
OUT = {"bf16": torch.bfloat16, "fp16": torch.float16}
TOL = {"bf16": 2e-3, "fp16": 1e-3}


def _fn(cfg, has_bias):
    """The positional binary of ``cfg`` (api's process-wide compile memo: each once per run)."""
    from fastdispatch.kernels.scaled_mm.api import _compiled
    return _compiled("sm90", cfg, has_bias)


def block_scales(recipe, m, n, k, device, g, layout="torch"):
    """Random positive scales in torch's BlockWise shapes. ``layout='torch'`` gives torch's
    outer-dim-major strides (scale_a [M, KB] stride (1, M); scale_b [KB, NB] stride (1, KB));
    'rowmajor' contiguous tensors (the binary takes any strides)."""
    kb = -(-k // 128)
    b_cols = -(-n // 128) if recipe == "block_1x128_128x128" else n
    sa = torch.rand(kb, m, device=device, generator=g) * 2 + 0.25
    sb = torch.rand(b_cols, kb, device=device, generator=g) * 2 + 0.25
    sa, sb = sa.t(), sb.t()
    if layout == "rowmajor":
        sa, sb = sa.contiguous(), sb.contiguous()
    return sa, sb


def block_reference(a, b, sa, sb, recipe, bias=None):
    """fp64 (A * scale_a per 1x128) @ (B * scale_b per 128x128 or per 1x128)."""
    m, k = a.shape
    n = b.shape[1]
    sa_full = sa.double().repeat_interleave(128, dim=1)[:, :k]                      # [M, K]
    if recipe == "block_1x128_128x128":
        sb_full = sb.double().repeat_interleave(128, dim=0)[:k].repeat_interleave(128, dim=1)[:, :n]
    else:
        sb_full = sb.double().repeat_interleave(128, dim=0)[:k]                      # [K, N]
    ref = (a.double() * sa_full) @ (b.double() * sb_full)
    return ref + bias.double() if bias is not None else ref


def _run_block(cfg, m, n, k, has_bias, layout="torch"):
    g = torch.Generator(device="cuda").manual_seed(m * 131 + n * 7 + k)
    a = (torch.randn(m, k, device="cuda", generator=g) * 2).to(FP8[cfg.a_dtype])
    bt = (torch.randn(n, k, device="cuda", generator=g) * 2).to(FP8[cfg.b_dtype])
    sa, sb = block_scales(cfg.scales, m, n, k, "cuda", g, layout)
    out_dtype = OUT[cfg.out_dtype]
    bias = torch.randn(n, device="cuda", generator=g).to(out_dtype) if has_bias else None
    out = torch.full((m, n), float("nan"), device="cuda", dtype=out_dtype)
    _fn(cfg, has_bias)(a, bt.t(), sa, sb, out, *((bias,) if has_bias else ()))
    torch.cuda.synchronize()
    assert not out.isnan().any(), f"{int(out.isnan().sum())} elements not written"
    ref = block_reference(a, bt.t(), sa, sb, cfg.scales, bias)
    err = float((out.double() - ref).norm() / ref.norm())
    assert err <= TOL[cfg.out_dtype], f"rel. error {err:.2e} > {TOL[cfg.out_dtype]:.0e} ({cfg})"
    return out


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (16, 2112, 7168), (37, 336, 1040), (37, 7168, 1040), (64, 7168, 2048),
                                   (100, 4096, 1536), (128, 4096, 7168), (129, 336, 1040),
                                   (256, 1024, 2048), (1000, 2112, 1040), (4096, 4096, 7168)])
def test_block_scales_match_fp64_reference(recipe, has_bias, m, n, k):
    # N = 336: a partial last 128-column scale block; K = 1040: a partial last k-block (TMA
    # zero-fills it) and 9 k-tiles (two overlapped groups of 4 and a tail of 1 at M = 1000).
    # M = 37 / 64 at N = 7168: the 56-wide tile, 27 rows past M at 37.
    _run_block(_config(recipe, m, n, k), m, n, k, has_bias)


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(256, 256, 512), (300, 336, 1040), (1000, 2112, 1040), (4096, 4096, 7168)])
@pytest.mark.parametrize("epilogue", ["per_block", "whole_tile", "n64"])
def test_row_blocks_match_fp64_reference(has_bias, m, n, k, epilogue):
    # M = 300 / 1000: a CTA tile whose second row block is partial (300: 44 rows) or past M;
    # N = 336 and K = 1040: partial last scale blocks; 9 k-tiles: the guarded tail.
    # whole_tile: both blocks staged in SMEM, then all their stores (DeepGEMM's epilogue).
    _run_block(dataclasses.replace(sm90.BLOCK_WAVES, stages=None, **ROW_BLOCK_EPILOGUES[epilogue]).resolved(),
               m, n, k, has_bias)


#: Epilogue variants of the row-block tile: per-block subtile stores (2 buffers of 32
#: columns), the whole 256x128 tile staged at once, a 256x64 tile (staged whole).
ROW_BLOCK_EPILOGUES = {"per_block": {}, "whole_tile": dict(epi_n=64, epi_stages=4),
                       "n64": dict(tile_n=64, epi_n=64, epi_stages=2)}


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("layout", ["torch", "rowmajor"])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 2112, 7168), (37, 336, 1040), (64, 7168, 2048), (129, 336, 1040),
                                   (1000, 2112, 1040), (4096, 4096, 7168)])
@pytest.mark.parametrize("tile", ["pick", "overlapped", "rows2"])
def test_smem_scales_match_fp64_reference(layout, has_bias, m, n, k, tile):
    """``smem_scales``: the scales copied into the scale ring's slots by the loader warp, on the
    table's pick (256-deep k-tiles at small M, 128x128 or 256x128 above), the overlapped
    128x128 loop and the 256x128 row-block tile with per-block stores; partial scale blocks
    along N and K, partial and past-M row blocks, any scale strides."""
    pick = {"pick": _config(RECIPES[0], m, n, k), "overlapped": dataclasses.replace(sm90.LARGE, scales=RECIPES[0]),
            "rows2": sm90.BLOCK_WAVES}[tile]
    cfg = dataclasses.replace(pick, smem_scales=True, stages=None).resolved()
    _run_block(cfg, m, n, k, has_bias, layout=layout)


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("m,n,k", [(16, 2112, 7168), (300, 1024, 1040)])
def test_block_scales_take_any_scale_strides(m, n, k):
    _run_block(_config(RECIPES[0], m, n, k), m, n, k, False, layout="rowmajor")


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("a_dtype,b_dtype", [("e5m2", "e4m3"), ("e4m3", "e5m2")])
@pytest.mark.parametrize("out_dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("m,n,k,swap", [(16, 2112, 1536, False), (16, 2112, 1536, True), (1000, 2112, 1040, False)])
def test_e5m2_operands_and_fp16_out(a_dtype, b_dtype, out_dtype, m, n, k, swap):
    cfg = _config(RECIPES[0], m, n, k, a_dtype=a_dtype, b_dtype=b_dtype, out_dtype=out_dtype)
    if swap:   # swap-AB (the rowwise small-M path) reads B's type as the MMA's first operand
        cfg = dataclasses.replace(sm90._small_m_config(m), tile_k=128, scales=cfg.scales, a_dtype=a_dtype,
                                  b_dtype=b_dtype, out_dtype=out_dtype, stages=None).resolved()
    _run_block(cfg, m, n, k, has_bias=True)


@pytest.mark.gpu
@pytest.mark.sm90
@pytest.mark.parametrize("m,n,k", [(16, 1024, 2048), (1000, 2112, 1040)])
def test_padded_leading_dimensions(m, n, k):
    # A a view into rows of K + 64 elements, B into columns of K + 32: TMA strides.
    g = torch.Generator(device="cuda").manual_seed(7)
    a = (torch.randn(m, k + 64, device="cuda", generator=g) * 2).to(torch.float8_e4m3fn)[:, :k]
    bt = (torch.randn(n, k + 32, device="cuda", generator=g) * 2).to(torch.float8_e4m3fn)[:, :k]
    sa = torch.rand(m, 1, device="cuda", generator=g) + 0.5
    sb = torch.rand(1, n, device="cuda", generator=g) + 0.5
    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    _fn(sm90.default_config(m, n, k), False)(a, bt.t(), sa, sb, out)
    torch.cuda.synchronize()
    ref = (a.double() @ bt.double().t()) * sa.double() * sb.double()
    assert float((out.double() - ref).norm() / ref.norm()) <= TOL["bf16"]
