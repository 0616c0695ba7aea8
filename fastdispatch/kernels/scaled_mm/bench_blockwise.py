"""Blockwise fp8 GEMM side by side (GPU): our sm_90a kernel with block scales, torch's
blockwise path (``torch._scaled_mm`` with BlockWise1x128 / BlockWise128x128 scales: cuBLAS),
DeepGEMM (the anchor in ``../shared/anchors``, when ``DGANCHOR_DIR`` points at its unpacked
bundle), and the rowwise pair (ours vs cuBLAS) on the same shapes, all in one process.

Inputs follow DeepGEMM's own test recipe: bf16 random data cast to e4m3 per 1x128 (A) and per
128x128 block (B) with fp32 scales; every row is checked against the fp64 product of the
dequantized inputs before it is timed. Timer: ``triton.testing.do_bench`` medians (the
anchor's figures use the same), every implementation once per round, ``rounds`` rounds
interleaved; the table shows the median over rounds and the spread.

The kernel rows call our binaries directly; the user's path, ``fastdispatch.scaled_mm`` with the
same blockwise arguments (key, routing, launch; output allocated per call as torch's is), is
timed beside ``torch._scaled_mm`` the same way (``api_blockwise``) and back to back on the host
(``wall_us``: `bench.wall_us`, 200 calls), where its per-call overhead shows at small M.

``python bench/bench_scaled_mm.py --recipe blockwise [--quick] [--json PATH]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics

import torch

DSV3_NK = [(2112, 7168), (24576, 1536), (7168, 16384), (4096, 7168), (7168, 2048)]
SHAPES = [(m, n, k) for m in (64, 128, 4096) for n, k in DSV3_NK] + [(4096, 4096, 4096), (8192, 8192, 8192)]
QUICK = [(64, 2112, 7168), (128, 4096, 7168), (4096, 4096, 7168)]
#: Where fast accumulation (``use_fast_accum=True``) is timed too: the issue's three squares-ish
#: shapes. The last is timed only in the rowwise modes (`ROWWISE_ONLY`), so the blockwise
#: summaries stay over the 17 shapes above.
FAST_ACCUM_SHAPES = {(4096, 4096, 4096), (8192, 8192, 8192), (16384, 8192, 8192)}
ROWWISE_ONLY = [(16384, 8192, 8192)]


def per_token_cast(x):
    """bf16 [M, K] -> e4m3 [M, K] and fp32 scales [M, ceil(K/128)] in torch's layout
    (stride (1, M): "outer-dim-major", what torch's BlockWise1x128 check asks for)."""
    m, k = x.shape
    view = x.float().view(m, -1, 128)
    amax = view.abs().amax(dim=2).clamp(min=1e-4)
    q = (view * (448.0 / amax.unsqueeze(2))).to(torch.float8_e4m3fn).view(m, k)
    return q, (amax / 448.0).t().contiguous().t()


def per_block_cast(y):
    """bf16 [N, K] -> e4m3 [N, K] and fp32 scales [ceil(N/128), ceil(K/128)] (row-major)."""
    n, k = y.shape
    pn, pk = -(-n // 128) * 128, -(-k // 128) * 128
    padded = torch.zeros(pn, pk, dtype=y.dtype, device=y.device)
    padded[:n, :k] = y
    view = padded.float().view(pn // 128, 128, pk // 128, 128)
    amax = view.abs().amax(dim=(1, 3), keepdim=True).clamp(min=1e-4)
    q = (view * (448.0 / amax)).to(torch.float8_e4m3fn).view(pn, pk)[:n, :k].contiguous()
    return q, (amax / 448.0).view(pn // 128, pk // 128)


def dequantized_product(a, sa, bt, sb_blocks):
    """fp64 (A * scale_a per 1x128) @ (Bt * scale_b per 128x128)^T."""
    m, k = a.shape
    n = bt.shape[0]
    a64 = a.double() * sa.double().repeat_interleave(128, dim=1)[:, :k]
    b64 = bt.double() * sb_blocks.double().repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)[:, :k]
    return a64 @ b64.t()


def block_inputs(m, n, k, reference: bool = True):
    """bf16 random x [M, K], y [N, K] and their blockwise fp8 form: (x, y, a, scale_a, bt,
    scale_b_blocks [ceil(N/128), ceil(K/128)], the fp64 dequantized product, or None without
    ``reference``: an M x N x K fp64 GEMM, skipped where nothing checks against it)."""
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    y = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    a, sa = per_token_cast(x)
    bt, sb_blocks = per_block_cast(y)
    return x, y, a, sa, bt, sb_blocks, dequantized_product(a, sa, bt, sb_blocks) if reference else None


def load_deepgemm():
    """DeepGEMM from the anchor bundle named by ``DGANCHOR_DIR`` (its own runner sets up
    nvcc, the JIT cache and the include path), or None with the reason."""
    bundle = os.environ.get("DGANCHOR_DIR")
    if not bundle:
        return None, "DGANCHOR_DIR not set"
    try:
        spec = importlib.util.spec_from_file_location("dganchor_run", os.path.join(bundle, "run_deepgemm.py"))
        runner = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runner)
        env = runner.setup_env(argparse.Namespace(bundle_dir=bundle, nvcc=None, print_nvcc=False,
                                                  cache_dir=os.environ.get("DG_CACHE_DIR", "/tmp/dg_cache")))
        import deep_gemm
        return (runner, deep_gemm, env), None
    except Exception as exc:   # the torch and fastdispatch rows stand on their own
        return None, f"{type(exc).__name__}: {exc}"


def deepgemm_for(shapes):
    """`load_deepgemm` with its kernels for ``shapes`` compiled: (the deep_gemm module, None)
    or (None, the reason)."""
    dg, reason = load_deepgemm()
    if dg is None:
        return None, reason
    runner, deep_gemm, _ = dg
    runner.dg_precompile(shapes, deep_gemm.get_num_sms(), 16, os.environ["DGANCHOR_DIR"],
                         os.environ.get("DG_CACHE_DIR", "/tmp/dg_cache"))
    return deep_gemm, None


def _median_us(fn):
    import triton.testing
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3


def _rel(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


def main(quick: bool = False, rounds: int = 2) -> dict:
    """Run the table; returns {'rows': [...], 'summary': {...}, 'deepgemm': reason or None}."""
    import fastdispatch
    from fastdispatch.kernels.scaled_mm import sm90
    from fastdispatch.kernels.scaled_mm.bench import wall_us
    from fastdispatch.kernels.scaled_mm.routing import route
    shapes = QUICK if quick else SHAPES + ROWWISE_ONLY
    deep_gemm, dg_reason = deepgemm_for([shape for shape in shapes if shape not in ROWWISE_ONLY])
    dg = deep_gemm is not None
    print(f"DeepGEMM: {'loaded' if dg else 'skipped (' + dg_reason + ')'}", flush=True)
    binaries: dict = {}

    def ours(cfg):
        if cfg not in binaries:
            binaries[cfg] = sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=False))
        return binaries[cfg]

    rows = []
    torch.manual_seed(0)
    for m, n, k in shapes:
        rowwise_only = (m, n, k) in ROWWISE_ONLY
        x, y, a, sa, bt, sb_blocks, ref_block = block_inputs(m, n, k, reference=not rowwise_only)
        sa_row = x.float().abs().amax(1, keepdim=True).clamp(min=1e-4) / 448.0
        sb_row = y.float().abs().amax(1, keepdim=True).clamp(min=1e-4) / 448.0
        a_row, bt_row = (x.float() / sa_row).to(torch.float8_e4m3fn), (y.float() / sb_row).to(torch.float8_e4m3fn)
        sb_row = sb_row.reshape(1, n).contiguous()
        ref_row = (a_row.double() * sa_row.double()) @ (bt_row.double() * sb_row.double().t()).t()
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        block_cfg = sm90.with_scale_a_layout(sm90.default_config(m, n, k, scales="block_1x128_128x128"), sa)
        row_cfg = sm90.default_config(m, n, k)
        blockwise = {
            "ours_blockwise": (lambda: ours(block_cfg)(a, bt.t(), sa, sb_blocks.t(), out) or out, ref_block),
            "torch_blockwise": (lambda: torch._scaled_mm(a, bt.t(), scale_a=sa, scale_b=sb_blocks.t(),
                                                         out_dtype=torch.bfloat16), ref_block),
        }
        impls = {} if rowwise_only else blockwise
        impls |= {
            "ours_rowwise": (lambda: ours(row_cfg)(a_row, bt_row.t(), sa_row, sb_row, out) or out, ref_row),
            "torch_rowwise": (lambda: torch._scaled_mm(a_row, bt_row.t(), scale_a=sa_row, scale_b=sb_row,
                                                       out_dtype=torch.bfloat16), ref_row),
        }
        if not rowwise_only:   # the user's path: fastdispatch.scaled_mm, routed as it routes
            impls["api_blockwise"] = (lambda result=None: fastdispatch.scaled_mm(
                a, bt.t(), sa, sb_blocks.t(), out_dtype=torch.bfloat16, out=result), ref_block)
        if dg and not rowwise_only:
            sa_dg = deep_gemm.get_col_major_tma_aligned_tensor(sa)
            impls["deepgemm"] = (lambda: deep_gemm.gemm_fp8_fp8_bf16_nt((a, sa_dg), (bt, sb_blocks), out) or out,
                                 ref_block)
        if (m, n, k) in FAST_ACCUM_SHAPES:
            fast_cfg = sm90.default_config(m, n, k, fast_accum=True)
            impls["ours_rowwise_fast"] = (lambda: ours(fast_cfg)(a_row, bt_row.t(), sa_row, sb_row, out) or out,
                                          ref_row)
            impls["torch_rowwise_fast"] = (lambda: torch._scaled_mm(a_row, bt_row.t(), scale_a=sa_row,
                                                                    scale_b=sb_row, out_dtype=torch.bfloat16,
                                                                    use_fast_accum=True), ref_row)
        row = {"shape": [m, n, k], "block_config": repr(block_cfg), "us": {}, "rounds": {}, "rel_err": {}}
        for name, (fn, ref) in impls.items():
            out.fill_(float("nan"))
            try:
                # The user's path allocates its output per call when timed; checked into the
                # poisoned `out` instead, so that a block the allocator hands back still holding
                # an earlier row's result cannot hide elements it did not write.
                row["rel_err"][name] = _rel(fn(out) if name == "api_blockwise" else fn(), ref)
            except Exception as exc:   # a row that cannot run says why; the rest still run
                row["rel_err"][name] = f"{type(exc).__name__}: {str(exc)[:160]}"
        runnable = [name for name, e in row["rel_err"].items() if isinstance(e, float)]
        for _ in range(rounds):
            for name in runnable:
                row["rounds"].setdefault(name, []).append(_median_us(impls[name][0]))
        if "api_blockwise" in runnable and "torch_blockwise" in runnable:
            row["wall_us"] = {name: wall_us(impls[name][0]) for name in ("api_blockwise", "torch_blockwise")}
            row["api_variant"] = route(torch.cuda.get_device_capability(), a, bt.t(), sa, sb_blocks.t(), None,
                                       None, torch.bfloat16)[0]
        flops = 2.0 * m * n * k
        for name in runnable:
            times = row["rounds"][name]
            row["us"][name] = statistics.median(times)
            row.setdefault("tflops", {})[name] = flops / row["us"][name] / 1e6
        rows.append(row)
        _print_row(row)
        del x, y, a, bt, ref_block, ref_row, a_row, bt_row
        torch.cuda.empty_cache()
    summary = _summary(rows)
    print(summary, flush=True)
    return {"rows": rows, "summary": summary, "deepgemm": dg_reason,
            "versions": {"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}}


def _ratio(row, ours, theirs):
    us = row["us"]
    return us[theirs] / us[ours] if ours in us and theirs in us else None


def _print_row(row):
    m, n, k = row["shape"]
    us = row["us"]
    cells = " ".join(f"{name}={us[name]:.1f}us(+-{(max(row['rounds'][name]) - min(row['rounds'][name])) / 2:.1f})"
                     for name in us)
    ratios = {"bw/dg": _ratio(row, "ours_blockwise", "deepgemm"),
              "bw/torch_bw": _ratio(row, "ours_blockwise", "torch_blockwise"),
              "row/cublas": _ratio(row, "ours_rowwise", "torch_rowwise"),
              "fast/cublas": _ratio(row, "ours_rowwise_fast", "torch_rowwise_fast"),
              "api/torch_bw": _ratio(row, "api_blockwise", "torch_blockwise")}
    text = " ".join(f"{key}={value:.3f}" for key, value in ratios.items() if value)
    if "wall_us" in row:
        wall = row["wall_us"]
        text += (f"\n    back to back (host wall per call): fastdispatch.scaled_mm ({row['api_variant']}) "
                 f"{wall['api_blockwise']:.1f} us, torch._scaled_mm {wall['torch_blockwise']:.1f} us, "
                 f"torch/api {wall['torch_blockwise'] / wall['api_blockwise']:.3f}")
    errs = " ".join(f"{name}:{e:.1e}" if isinstance(e, float) else f"{name}:{e}" for name, e in row["rel_err"].items())
    print(f"{m}x{n}x{k}: {cells}\n    speedup (theirs/ours time): {text}\n    rel_err {errs}", flush=True)


def _summary(rows):
    def geo(values):
        values = [v for v in values if v]
        return math.exp(sum(map(math.log, values)) / len(values)) if values else None

    out = {}
    for key, ours, theirs in (("blockwise_vs_deepgemm", "ours_blockwise", "deepgemm"),
                              ("blockwise_vs_torch", "ours_blockwise", "torch_blockwise"),
                              ("rowwise_vs_cublas", "ours_rowwise", "torch_rowwise"),
                              ("fast_vs_cublas", "ours_rowwise_fast", "torch_rowwise_fast"),
                              ("api_vs_torch_blockwise", "api_blockwise", "torch_blockwise")):
        ratios = [_ratio(r, ours, theirs) for r in rows]
        ratios = [x for x in ratios if x]
        if ratios:
            out[key] = {"geomean": round(geo(ratios), 3), "min": round(min(ratios), 3)}
    walls = [r["wall_us"]["torch_blockwise"] / r["wall_us"]["api_blockwise"] for r in rows if "wall_us" in r]
    if walls:
        out["api_vs_torch_blockwise_wall"] = {"geomean": round(geo(walls), 3), "min": round(min(walls), 3)}
    return out
