"""Hardware counters of the blockwise kernels beside DeepGEMM's, for one shape (GPU, under
Nsight Compute; not a test):

    ncu --clock-control none --profile-from-start off --section SpeedOfLight \\
        --section WarpStateStats python bench/ncu_probe.py --shape 4096x4096x7168 [--trials a,b]

Each kernel is compiled and run three times first; only the one call per kernel between
cudaProfilerStart/Stop is profiled, in the order printed. Trial names are those of
`bench/blockwise_probe.py`; DeepGEMM comes last when ``DGANCHOR_DIR`` is set.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blockwise_probe import trials  # noqa: E402

from fastdispatch.kernels.scaled_mm import sm90  # noqa: E402
from fastdispatch.kernels.scaled_mm.bench_blockwise import block_inputs, deepgemm_for  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="4096x4096x7168")
    parser.add_argument("--trials", default="pick,rows2,rows2_wt")
    args = parser.parse_args()
    m, n, k = (int(v) for v in args.shape.split("x"))
    _, _, a, sa, bt, sb, _ = block_inputs(m, n, k)
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    table = trials(m, n, k)
    calls = []
    for name in args.trials.split(","):
        fn = sm90.raw_callable(sm90.compile_sm90(table[name], has_bias=False))
        calls.append((name, lambda fn=fn: fn(a, bt.t(), sa, sb.t(), out)))
    deep_gemm, reason = deepgemm_for([(m, n, k)])
    if deep_gemm is not None:
        sa_dg = deep_gemm.get_col_major_tma_aligned_tensor(sa)
        calls.append(("deepgemm", lambda: deep_gemm.gemm_fp8_fp8_bf16_nt((a, sa_dg), (bt, sb), out)))
    else:
        print("DeepGEMM skipped:", reason)
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


if __name__ == "__main__":
    main()
