"""scaled_mm API: argument checks, the fp32 reference, dispatch table, CPU path, torch.compile;
GPU correctness (marked) against the fp32 reference on random data. The torch._scaled_mm parity
cases (defaults, recipes, dtypes, zero sizes, out=, carveout, routing) are in
test_scaled_mm_parity.py."""
import pytest
import torch

import fastdispatch
from fastdispatch.kernels.scaled_mm import check_args, reference, variant_for

FP8 = torch.float8_e4m3fn
# fp8 inputs are exact in fp32; the kernels accumulate in fp32 and round once to bf16 (8 bits of
# mantissa): 2e-3 relative error (the bound) is ~1 bf16 ulp averaged over the output.
BF16_REL_TOL = 2e-3


def make(m, n, k, device="cpu", seed=0, rowwise=True):
    g = torch.Generator(device=device).manual_seed(seed)
    a = (torch.randn(m, k, generator=g, device=device) * 0.5).to(FP8)
    bt = (torch.randn(n, k, generator=g, device=device) * 0.5).to(FP8)
    if rowwise:
        sa = torch.rand(m, 1, generator=g, device=device) + 0.5
        sb = torch.rand(1, n, generator=g, device=device) + 0.5
    else:
        sa = torch.rand((), generator=g, device=device) + 0.5
        sb = torch.rand((), generator=g, device=device) + 0.5
    return a, bt.t(), sa, sb


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def fp64_reference(a, b, sa, sb, bias=None):
    acc = a.double() @ b.double()
    acc = acc * sa.double().reshape(-1, 1) * sb.double().reshape(1, -1) if sa.numel() > 1 \
        else acc * sa.double() * sb.double()
    return acc + bias.double() if bias is not None else acc


def test_reference_matches_fp64():
    a, b, sa, sb = make(33, 48, 64)
    bias = torch.randn(48).to(torch.bfloat16)
    out = reference(a, b, sa, sb, bias, out_dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, fp64_reference(a, b, sa, sb, bias)) < BF16_REL_TOL


@pytest.mark.parametrize("rowwise", [True, False])
def test_cpu_scaled_mm_is_reference(rowwise):
    a, b, sa, sb = make(7, 32, 48, rowwise=rowwise)
    out = fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)
    assert torch.equal(out, reference(a, b, sa, sb, out_dtype=torch.bfloat16))
    assert rel_err(out, fp64_reference(a, b, sa, sb)) < BF16_REL_TOL


def test_out_argument_is_written():
    a, b, sa, sb = make(4, 16, 32)
    out = torch.full((4, 16), float("nan"), dtype=torch.bfloat16)
    result = fastdispatch.scaled_mm(a, b, sa, sb, out=out)
    assert result is out and torch.isfinite(out).all()


@pytest.mark.parametrize("change, message", [
    (dict(a=lambda a: a.float()), "fp8 or fp4 types"),
    (dict(b=lambda b: b.t().contiguous().t().contiguous()), "mat2 must be col_major"),
    (dict(a=lambda a: a[:, :16]), "shapes cannot be multiplied"),
    (dict(sa=lambda s: s.double()), "float"),
    (dict(sa=lambda s: s[:3]), "Invalid scaling configuration"),
    (dict(a=lambda a: a.t()), "self must be row_major"),
])
def test_bad_arguments_raise_torchs_error(change, message):
    a, b, sa, sb = make(32, 32, 32)
    args = dict(a=a, b=b, sa=sa, sb=sb)
    for name, fn in change.items():
        args[name] = fn(args[name])
    with pytest.raises(RuntimeError, match=message):
        fastdispatch.scaled_mm(args["a"], args["b"], args["sa"], args["sb"])


def test_checks_run_on_misses_only(monkeypatch):
    """The dispatcher key covers every checked property: a repeat call is not re-checked, and a
    call that differs in anything checked (here B's layout, and out's dtype) is checked again."""
    from fastdispatch.kernels.scaled_mm import api

    calls = []
    real = api.check_args
    monkeypatch.setattr(api, "check_args", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, b, sa, sb = make(8, 32, 64, seed=3)
    out = torch.empty(8, 32, dtype=torch.bfloat16)
    for _ in range(3):
        fastdispatch.scaled_mm(a, b, sa, sb, out=out)
    assert len(calls) <= 1
    with pytest.raises(RuntimeError, match="col_major"):
        fastdispatch.scaled_mm(a, b.contiguous(), sa, sb, out=out)
    with pytest.raises(RuntimeError, match="out_dtype must match output matrix type"):
        fastdispatch.scaled_mm(a, b, sa, sb, out=out, out_dtype=torch.float16)


def test_n_and_k_must_be_multiples_of_16():
    a, b, sa, sb = make(4, 24, 32)
    with pytest.raises(RuntimeError, match="divisible by 16"):
        check_args(a, b, sa, sb)


def test_bias_checks():
    a, b, sa, sb = make(4, 32, 32)
    with pytest.raises(RuntimeError, match="Bias must be BFloat16 or Half, but got Float"):
        fastdispatch.scaled_mm(a, b, sa, sb, bias=torch.zeros(32), out_dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="Bias must be size 32 but got 31"):
        fastdispatch.scaled_mm(a, b, sa, sb, bias=torch.zeros(31, dtype=torch.bfloat16), out_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="scale_b"):
        fastdispatch.scaled_mm(a, b, sa, 1.0)


@pytest.mark.parametrize("capability, variant", [
    (None, "reference"), ((9, 0), "sm90"), ((10, 0), "sm100"), ((10, 3), "sm100"),
    ((8, 9), "torch"), ((12, 0), "torch"), ((8, 0), "torch"),
])
def test_dispatch_table(capability, variant):
    assert variant_for(capability) == variant


@pytest.mark.parametrize("rowwise", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_kernel_call_passes_torch_layouts(rowwise, with_bias):
    """A CuTe entry calls the binary with torch._scaled_mm's layouts: rowwise tensors exactly
    as given (no per-call views or copies), tensorwise scales expanded to contiguous [M, 1] /
    [1, N] holding the scale; bias only when present. A recording stand-in for the binary."""
    from fastdispatch.kernels.scaled_mm.api import _kernel_call

    m, n, k = 5, 32, 48
    a, b, sa, sb = make(m, n, k, rowwise=rowwise)
    out = torch.empty(m, n, dtype=torch.bfloat16)
    bias = torch.randn(n).to(torch.bfloat16) if with_bias else None
    seen = []
    call = _kernel_call(lambda *args: seen.append(args), expand_scales=not rowwise, has_bias=with_bias)
    assert call(a, b, sa, sb, out, bias, None, False, None) is out
    (args,) = seen
    assert len(args) == (6 if with_bias else 5)
    assert args[0] is a and args[1] is b and args[4] is out
    if with_bias:
        assert args[5] is bias
    if rowwise:
        assert args[2] is sa and args[3] is sb
    else:
        assert args[2].shape == (m, 1) and args[2].is_contiguous() and bool((args[2] == sa).all())
        assert args[3].shape == (1, n) and args[3].is_contiguous() and bool((args[3] == sb).all())


def test_torch_compile_fullgraph_cpu():
    a, b, sa, sb = make(8, 32, 64)
    compiled = torch.compile(lambda a, b, sa, sb: fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16) * 2,
                             fullgraph=True)
    torch.testing.assert_close(compiled(a, b, sa, sb), reference(a, b, sa, sb, out_dtype=torch.bfloat16) * 2)


# -- GPU (H100 runs the sm90 kernel; other GPUs torch._scaled_mm) ------------------------------
SHAPES = [(m, 4096, 4096) for m in (1, 7, 16, 100, 128, 1000)] + [
    (256, 272, 336), (1000, 272, 336), (4096, 4096, 4096), (128, 8192, 8192)]


@pytest.mark.gpu
@pytest.mark.parametrize("m, n, k", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("rowwise", [True, False], ids=["rowwise", "tensorwise"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["nobias", "bias"])
def test_gpu_correct(m, n, k, rowwise, with_bias):
    a, b, sa, sb = make(m, n, k, device="cuda", seed=m + n + k, rowwise=rowwise)
    bias = (torch.randn(n, device="cuda")).to(torch.bfloat16) if with_bias else None
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    fastdispatch.scaled_mm(a, b, sa, sb, bias=bias, out=out)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all(), "unwritten or non-finite outputs"
    assert rel_err(out, fp64_reference(a, b, sa, sb, bias)) < BF16_REL_TOL


@pytest.mark.gpu
def test_gpu_graph_capture_replays():
    a, b, sa, sb = make(128, 1024, 1024, device="cuda")
    out = torch.empty(128, 1024, dtype=torch.bfloat16, device="cuda")
    fastdispatch.scaled_mm(a, b, sa, sb, out=out)   # warm up: compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fastdispatch.scaled_mm(a, b, sa, sb, out=out)
    expected = out.clone()
    out.fill_(float("nan"))
    a.copy_((torch.randn(128, 1024, device="cuda") * 0.5).to(FP8))
    graph.replay()
    torch.cuda.synchronize()
    assert rel_err(out, fp64_reference(a, b, sa, sb)) < BF16_REL_TOL
    assert not torch.equal(out, expected)  # it really recomputed from the new A
    eager = fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)
    torch.cuda.synchronize()
    assert torch.equal(out, eager), "graph replay is not bit-exact with the eager call"


@pytest.mark.gpu
def test_gpu_torch_compile_reduce_overhead():
    """torch.compile(mode="reduce-overhead"): the function is captured as a CUDA graph (no
    cudagraph skip) and each replay computes from the call's new inputs, against the fp64
    reference; the output is allocated by Inductor and written by our op in place."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(lambda a, b, sa, sb: fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16),
                             mode="reduce-overhead", fullgraph=True)
    for seed in range(4):   # warm-up, record, then replays
        a, b, sa, sb = make(64, 1024, 1024, device="cuda", seed=seed)
        out = compiled(a, b, sa, sb).clone()   # the graph's output buffer is reused by the next replay
        torch.cuda.synchronize()
        assert torch.isfinite(out).all()
        assert rel_err(out, fp64_reference(a, b, sa, sb)) < BF16_REL_TOL, seed
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])


@pytest.mark.gpu
@pytest.mark.parametrize("m, n, k", [(4096, 4096, 4096), (1000, 272, 336), (16, 8192, 8192), (2048, 4096, 8192)],
                         ids=str)
def test_gpu_fast_accum(m, n, k):
    """use_fast_accum=True (tensor cores accumulate all of K, as cuBLAS's fast mode): a looser
    bound, 4e-3, since fp32 partial sums are not promoted per k-tile (cuBLAS measures ~2-3e-3).
    4096^3 and 2048x4096x8192 take the 128x256 tile; the other two the below-one-wave and
    small-M tiles."""
    a, b, sa, sb = make(m, n, k, device="cuda", seed=7)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    fastdispatch.scaled_mm(a, b, sa, sb, out=out, use_fast_accum=True)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
    assert rel_err(out, fp64_reference(a, b, sa, sb)) < 4e-3


@pytest.mark.gpu
@pytest.mark.parametrize("m, n, k, picked", [(128, 24576, 1536, "wide"), (96, 12288, 1536, "wide"),
                                             (100, 7168, 2048, "swap_ab")], ids=str)
def test_gpu_small_m_rowwise_picks(m, n, k, picked):
    """The table's M = 65..128 rowwise picks through the public call: one row of 128x192 tiles
    (a grid only as large as the tiles: N / 192 CTAs) or the swap-AB tile, against fp64."""
    from fastdispatch.kernels.scaled_mm import sm90
    assert sm90.default_config(m, n, k).swap_ab == (picked == "swap_ab")
    a, b, sa, sb = make(m, n, k, device="cuda", seed=11)
    out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    fastdispatch.scaled_mm(a, b, sa, sb, out=out, out_dtype=torch.bfloat16)
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
    assert rel_err(out, fp64_reference(a, b, sa, sb)) < BF16_REL_TOL
