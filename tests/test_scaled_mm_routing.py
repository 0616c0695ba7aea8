"""scaled_mm routing (which implementation serves each torch._scaled_mm case, on a faked
capability: ``routing.route`` is pure), the SM carveout in the key and the config, and the
``torch.nn.functional.scaled_mm`` twin. CPU only: routing reads shapes, strides, dtypes and
pointers, and the sm90 / sm100 configs compile without a GPU."""
import dataclasses
import inspect

import pytest
import torch

import fastdispatch
from fastdispatch.kernels.scaled_mm import api, args as sm_args, routing

sm90 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm90", reason="nvidia-cutlass-dsl not installed")

E4M3, E5M2, BF16, FP16, FP32 = torch.float8_e4m3fn, torch.float8_e5m2, torch.bfloat16, torch.float16, torch.float32
M, N, K = 64, 256, 384


def problem(recipe="rowwise", a_dtype=E4M3, b_dtype=E4M3, a_pad=0, b_pad=0, m=M):
    a = torch.randn(m, K + a_pad).to(a_dtype)[:, :K]
    b = torch.randn(N, K + b_pad).to(b_dtype)[:, :K].t()
    L = -(-K // 128)
    sa, sb = {"tensorwise": lambda: (torch.tensor(1.0), torch.tensor(1.0)),
              "rowwise": lambda: (torch.ones(m, 1), torch.ones(1, N)),
              "block_1x128_128x128": lambda: (torch.ones(L, m).t(), torch.ones(N // 128, L).t()),
              "block_1x128_1x128": lambda: (torch.ones(L, m).t(), torch.ones(L, N))}[recipe]()
    return a, b, sa, sb


@pytest.fixture
def kernel_implements_everything(monkeypatch):
    """sm90.kernel_supports -> True and padded strides on: what routing itself refuses shows."""
    monkeypatch.setattr(sm90, "kernel_supports", lambda *a: True)
    monkeypatch.setattr(sm90, "PADDED_STRIDES", True, raising=False)


def test_route_follows_kernel_supports():
    """With the kernel as it is today: each case goes where sm90.kernel_supports says."""
    for recipe, at, bt, ot in [("rowwise", E4M3, E4M3, BF16), ("tensorwise", E4M3, E4M3, BF16),
                               ("rowwise", E4M3, E4M3, FP16), ("rowwise", E4M3, E4M3, FP32),
                               ("tensorwise", E4M3, E4M3, E4M3), ("rowwise", E4M3, E5M2, BF16),
                               ("block_1x128_128x128", E4M3, E4M3, BF16), ("block_1x128_1x128", E4M3, E4M3, BF16)]:
        a, b, sa, sb = problem(recipe, at, bt)
        variant, why = routing.route((9, 0), a, b, sa, sb, None, None, ot)
        expected = "sm90" if sm90.kernel_supports(at, bt, ot, recipe) else "torch"
        assert variant == expected, (recipe, at, bt, ot, why)
        assert (why is None) == (expected == "sm90")


@pytest.mark.usefixtures("kernel_implements_everything")
def test_route_table_on_sm90():
    a, b, sa, sb = problem()
    bias = torch.randn(N).to(BF16)
    route = lambda *args, **kw: routing.route((9, 0), *args, **kw)   # noqa: E731
    assert route(a, b, sa, sb, None, None, BF16) == ("sm90", None)
    assert route(a, b, sa, sb, bias, None, BF16) == ("sm90", None)
    assert route(a, b, sa, sb, torch.randn(N).to(FP16), None, E4M3)[0] == "torch"      # fp8 out + bias
    assert "scale_result" in route(a, b, sa, sb, None, torch.tensor(2.0), E4M3)[1]
    assert route(a, b, sa, sb, None, torch.tensor(2.0), BF16) == ("sm90", None)          # ignored for bf16
    assert route(*problem(a_pad=32), None, None, BF16) == ("sm90", None)                 # padded, kernel takes it
    assert "leading dimension" in route(*problem(a_pad=8), None, None, BF16)[1]          # stride 392: not % 16
    assert "out stride" in route(a, b, sa, sb, None, None, BF16, out=torch.empty(N, M, dtype=BF16).t())[1]
    misaligned = torch.empty(M * K + 1, dtype=torch.uint8)[1:].view(E4M3).view(M, K)
    assert "aligned" in route(misaligned, b, sa, sb, None, None, BF16)[1]
    empty_a = torch.empty(0, K, dtype=E4M3)
    assert route(empty_a, b, torch.ones(0, 1), sb, None, None, BF16) == ("empty", None)


def test_route_padded_operands_without_padded_kernel(monkeypatch):
    monkeypatch.setattr(sm90, "kernel_supports", lambda *a: True)
    monkeypatch.setattr(sm90, "PADDED_STRIDES", False, raising=False)
    variant, why = routing.route((9, 0), *problem(b_pad=48), None, None, BF16)
    assert variant == "torch" and "padded" in why


@pytest.mark.parametrize("capability, variant", [
    (None, "reference"), ((8, 9), "torch"), ((12, 0), "torch"), ((10, 0), "sm100"), ((10, 3), "sm100")])
def test_route_by_capability(capability, variant):
    assert routing.route(capability, *problem(), None, None, BF16) == (variant, None)


def test_route_sm100_is_rowwise_e4m3_bf16_only():
    assert routing.route((10, 0), *problem(b_dtype=E5M2), None, None, BF16)[0] == "torch"
    assert routing.route((10, 0), *problem("block_1x128_1x128"), None, None, BF16)[0] == "torch"
    assert routing.route((10, 0), *problem(), None, None, FP16)[0] == "torch"
    assert routing.route((10, 0), *problem(a_pad=32), None, None, BF16)[0] == "torch"


def test_carveout_sizes_the_persistent_grid():
    """The config (the compile cache key) holds the SM count: one binary per carveout value."""
    plain = api.config_for("sm90", 4096, 4096, 4096)
    carved = api.config_for("sm90", 4096, 4096, 4096, carveout=20)
    assert carved.num_sms == plain.num_sms - 20 and plain.num_sms in (128, 132)
    assert dataclasses.replace(carved, num_sms=plain.num_sms) == plain and carved != plain
    with pytest.raises(ValueError):   # fewer SMs than one cluster: make_entry sends it to torch
        api.config_for("sm90", 4096, 4096, 4096, carveout=plain.num_sms)


def test_carveout_is_in_the_key():
    a, b, sa, sb = problem()
    out = torch.empty(M, N, dtype=BF16)
    d = api.dispatcher()
    d.clear_entries()
    fastdispatch.scaled_mm(a, b, sa, sb, out=out)
    torch._C._set_sm_carveout_experimental(8)
    try:
        fastdispatch.scaled_mm(a, b, sa, sb, out=out)
        fastdispatch.scaled_mm(a, b, sa, sb, out=out)
    finally:
        torch._C._set_sm_carveout_experimental(None)
    fastdispatch.scaled_mm(a, b, sa, sb, out=out)
    assert len(d.entries()) == 2 and sorted(e.hits for e in d.entries()) == [1, 1]


# -- torch.nn.functional.scaled_mm twin --------------------------------------------------------
F = torch.nn.functional


def test_functional_twin_signature():
    from fastdispatch import functional
    ours = inspect.signature(functional.scaled_mm).parameters
    if hasattr(F, "scaled_mm"):
        theirs = inspect.signature(F.scaled_mm).parameters
        assert [(p.name, p.default, p.kind) for p in ours.values()] == \
            [(p.name, p.default, p.kind) for p in theirs.values()]
        assert functional.ScalingType is F.ScalingType
    assert fastdispatch.functional is functional


def _v2_scales(recipe_a, recipe_b, m, n, k):
    """Scales in the recipe API's layouts (torch's test_scaled_matmul_cuda): 1x128 [MN, L] with
    stride (1, MN); 128x128 [round_up(L, 4), MN / 128] with stride (1, round_up(L, 4))."""
    L, L4 = -(-k // 128), -(-(-(-k // 128)) // 4) * 4

    def one(recipe, mn):
        if recipe == "1x128":
            return (torch.rand(L, mn) + 0.5).t()
        return (torch.rand(-(-mn // 128), L4) + 0.5).t()
    return one(recipe_a, m), one(recipe_b, n)


@pytest.mark.parametrize("ra, rb", [("1x128", "128x128"), ("1x128", "1x128"), ("128x128", "1x128")])
def test_functional_blockwise_matches_reference(ra, rb):
    from fastdispatch import functional
    ST = functional.ScalingType
    m, n, k = 200, 256, 384
    a = (torch.randn(m, k) * 0.5).to(E4M3)
    b = (torch.randn(n, k) * 0.5).to(E4M3).t()
    sa, sb = _v2_scales(ra, rb, m, n, k)
    recipe = {"1x128": ST.BlockWise1x128, "128x128": ST.BlockWise128x128}
    got = functional.scaled_mm(a, b, sa, recipe[ra], sb, recipe[rb])
    assert got.dtype == BF16
    # The same problem in _scaled_mm's layouts, through the reference.
    L = -(-k // 128)
    sa1 = sa if ra == "1x128" else sa[:L].t().contiguous()
    sb1 = sb.t() if rb == "1x128" else sb[:L].t().contiguous().t()
    ref = sm_args.reference(a, b, sa1, sb1, out_dtype=FP32).double()
    assert ((got.double() - ref).norm() / ref.norm()).item() < 2e-3


@pytest.mark.parametrize("recipe", ["TensorWise", "RowWise"])
def test_functional_tensorwise_rowwise(recipe):
    from fastdispatch import functional
    a, b, sa, sb = problem(recipe.lower())
    st = getattr(functional.ScalingType, recipe)
    got = functional.scaled_mm(a, b, sa, st, sb, st, output_dtype=FP16)
    assert torch.equal(got, fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=FP16))


def test_blockwise_routes_to_the_faster_kernel():
    # Ours at M <= 128 (faster than cuBLAS's blockwise there) and where torch's blockwise was
    # not checked correct (K not a multiple of 512); cuBLAS above M = 128 otherwise.
    def blockwise(m, k, recipe="block_1x128_128x128", n=N):
        a = torch.randn(m, k).to(E4M3)
        b = torch.randn(n, k).to(E4M3).t()
        L = -(-k // 128)
        sb = torch.ones(-(-n // 128), L).t() if recipe == "block_1x128_128x128" else torch.ones(L, n)
        return a, b, torch.ones(L, m).t(), sb

    assert routing.route((9, 0), *blockwise(128, 1024), None, None, BF16) == ("sm90", None)
    variant, why = routing.route((9, 0), *blockwise(129, 1024), None, None, BF16)
    assert variant == "torch" and "faster" in why
    assert routing.route((9, 0), *blockwise(4096, 384), None, None, BF16) == ("sm90", None)
    assert routing.route((9, 0), *blockwise(4096, 1024, "block_1x128_1x128"), None, None, BF16) == ("sm90", None)
    # Above M = 128: ours where the table picks the 256x128 tile and A's scales can come by TMA
    # (from M = 129 to 2048 also its SM-filling tiles, at N >= 16384 only the 256x128: test_scaled_mm_waves).
    # The span tile at N = 2112 too (128x192 in static passes, its promotion traced per tile
    # class), but neither where A's scales cannot come by TMA (M % 4 != 0).
    assert routing.route((9, 0), *blockwise(4096, 7168, n=4096), None, None, BF16) == ("sm90", None)
    assert routing.route((9, 0), *blockwise(4096, 7168, n=2112), None, None, BF16) == ("sm90", None)
    # The same 128x192 width as a mid-M wave tile (the dynamic loop: 0.95-0.97x torch) is not ours.
    variant, why = routing.route((9, 0), *blockwise(1536, 7168, n=2112), None, None, BF16)
    assert variant == "torch" and "128x192" in why, why
    for m, n in ((4098, 4096), (4098, 2112)):
        variant, why = routing.route((9, 0), *blockwise(m, 7168, n=n), None, None, BF16)
        assert variant == "torch" and "faster" in why and "not a TMA source" in why, (m, n, why)
    # The 128x128x128 small-M tile (128 rows, N = 8.5k-16.9k) lost to cuBLAS; 128x192 tiles
    # serve N = 24576, and the 256x128 tile (128 rows per block, 128-deep k-tiles) large M.
    variant, why = routing.route((9, 0), *blockwise(128, 1536, n=12288), None, None, BF16)
    assert variant == "torch" and "128x128x128" in why
    assert routing.route((9, 0), *blockwise(4096, 7168, n=7168), None, None, BF16) == ("sm90", None)
    for m, n in ((64, 24576), (128, 24576), (128, 7168), (128, 4096)):
        assert routing.route((9, 0), *blockwise(m, 1536, n=n), None, None, BF16) == ("sm90", None), (m, n)
