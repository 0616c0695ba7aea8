"""Kernel-level view of scaled_mm vs torch._scaled_mm on a GPU (not a test).

    python bench/profile_kernels.py [--shapes M,N,K;...] [--reps 30]

Runs fastdispatch.scaled_mm, torch._scaled_mm (both accumulation modes) and torch.sum over as
many bytes as B under torch.profiler (CUPTI), each call after a clean L2 flush, and prints per
call path: the kernel(s) it launched (so cuBLAS's choice of kernel, tile and cluster is named)
and the median kernel duration. CUPTI durations are the kernels' own time on the GPU, without
the event-timing overhead the clean-flush timer includes (one-element kernel: ~3.6 us there).
"""
from __future__ import annotations

import argparse
import statistics

import torch

from fastdispatch.kernels.scaled_mm.bench import CleanFlushTimer, kernel_times_us, make_inputs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="1,4096,4096;16,8192,8192;128,8192,8192;"
                                        "4096,4096,4096;8192,8192,8192;16384,8192,8192")
    p.add_argument("--reps", type=int, default=30)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("profile_kernels: no CUDA GPU; skipped")
        return
    import fastdispatch

    flush = CleanFlushTimer().flush
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}; CUPTI kernel durations, median "
          f"of {args.reps} calls, clean-flushed L2 before each")
    for shape in filter(None, args.shapes.split(";")):
        m, n, k = (int(x) for x in shape.split(","))
        a, b, sa, sb = make_inputs(m, n, k)
        out = torch.empty(m, n, dtype=torch.bfloat16, device="cuda")
        buf = torch.ones(n * k // 4, device="cuda")
        paths = {
            "fastdispatch": lambda: fastdispatch.scaled_mm(a, b, sa, sb, out=out),
            "fastdispatch fast": lambda: fastdispatch.scaled_mm(a, b, sa, sb, out=out, use_fast_accum=True),
            "torch._scaled_mm": lambda: torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16, out=out),
            "torch._scaled_mm fast": lambda: torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16,
                                                              use_fast_accum=True, out=out),
            "torch.sum over B's bytes": lambda: torch.sum(buf),
        }
        print(f"== {m}x{n}x{k}")
        for label, fn in paths.items():
            for name, durs in kernel_times_us([fn], flush, args.reps)[0].items():
                med = statistics.median(durs)
                tflops = 2 * m * n * k / med / 1e6
                print(f"  {label:26s} {med:9.1f} us {tflops:7.0f} TFLOP/s  x{len(durs):<3d} {name[:150]}")


if __name__ == "__main__":
    main()
