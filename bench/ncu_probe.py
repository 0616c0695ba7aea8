"""Hardware counters of the blockwise kernels beside DeepGEMM's, or of rowwise configs beside
cuBLAS, for one shape (GPU, under Nsight Compute; not a test):

    ncu --clock-control none --profile-from-start off --section SpeedOfLight \\
        --section WarpStateStats python bench/ncu_probe.py --shape 4096x4096x7168 [--trials a,b]
    ncu ... python bench/ncu_probe.py --shape 4096x4096x4096 --rowwise [--config NAME=k:v,...]

Each kernel is compiled and run three times first; only the one call per kernel between
cudaProfilerStart/Stop is profiled, in the order printed. Trial names are those of
`bench/blockwise_probe.py`; DeepGEMM comes last when ``DGANCHOR_DIR`` is set. ``--rowwise``
profiles torch._scaled_mm (cuBLASLt, both accumulation modes) and then each ``--config``
(`bench/sm90_probe.py`'s syntax) on rowwise inputs.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockwise_probe import trials  # noqa: E402
from sm90_probe import kernel_fn, make, parse_config  # noqa: E402

from fastdispatch.kernels.scaled_mm import sm90  # noqa: E402
from fastdispatch.kernels.scaled_mm.bench_blockwise import block_inputs, deepgemm_for  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="4096x4096x7168")
    parser.add_argument("--trials", default="pick,rows2,rows2_wt")
    parser.add_argument("--rowwise", action="store_true", help="cuBLAS and --config rowwise configs instead")
    parser.add_argument("--config", action="append", default=[], help="NAME=key:val,... (with --rowwise)")
    args = parser.parse_args()
    m, n, k = (int(v) for v in args.shape.split("x"))
    calls = rowwise_calls(m, n, k, args.config) if args.rowwise else blockwise_calls(m, n, k, args.trials)
    for _, call in calls:
        for _ in range(3):
            call()
    torch.cuda.synchronize()
    print("profiled, in order:", [name for name, _ in calls], flush=True)
    torch.cuda.cudart().cudaProfilerStart()
    for _, call in calls:
        call()
    torch.cuda.synchronize()
    torch.cuda.cudart().cudaProfilerStop()


def rowwise_calls(m, n, k, configs):
    """(name, call) of torch._scaled_mm in both modes, then of each rowwise config."""
    a, bt, sa, sb, _ = make(m, n, k)
    b, sa2, sb2 = bt.t(), sa[:, None], sb[None, :]   # torch._scaled_mm's layouts
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    calls = [(f"torch fast={fast}", lambda fast=fast: torch._scaled_mm(a, b, sa2, sb2, out_dtype=torch.bfloat16,
                                                                          use_fast_accum=fast))
             for fast in (False, True)]
    for text in configs:
        fn = kernel_fn(parse_config(text), False)
        calls.append((text, lambda fn=fn: fn(a, b, sa2, sb2, out)))
    return calls


def blockwise_calls(m, n, k, trial_names):
    """(name, call) of the blockwise probe's trials, then DeepGEMM's kernel where it is staged."""
    _, _, a, sa, bt, sb, _ = block_inputs(m, n, k, reference=False)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    table = trials(m, n, k)
    calls = []
    for name in trial_names.split(","):
        fn = sm90.raw_callable(sm90.compile_sm90(table[name], has_bias=False))
        calls.append((name, lambda fn=fn: fn(a, bt.t(), sa, sb.t(), out)))
    deep_gemm, reason = deepgemm_for([(m, n, k)])
    if deep_gemm is not None:
        sa_dg = deep_gemm.get_col_major_tma_aligned_tensor(sa)
        calls.append(("deepgemm", lambda: deep_gemm.gemm_fp8_fp8_bf16_nt((a, sa_dg), (bt, sb), out)))
    else:
        print("DeepGEMM skipped:", reason)
    return calls


if __name__ == "__main__":
    main()
