"""Every launch path in one process (GPU): the Triton table of ``bench launch`` (floor,
fastdispatch, Triton's launchers, torch eager, CUDA graphs) and then CuTe DSL's own TVM-FFI call
vs fastdispatch's CuTe path (``bench_cute_call``). ``python bench/launch_all.py [--json PATH]``."""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("launch_all: no CUDA GPU; skipped")
        sys.exit(0)
    from fastdispatch.bench_launch import run_launch_bench

    results = {"triton": run_launch_bench(args.iterations, args.repeats)}
    try:
        import bench_cute_call
    except ImportError as exc:
        print(f"CuTe paths skipped: {exc}")
    else:
        cute = bench_cute_call.measure(args.iterations, args.repeats)
        results["cute"] = cute
        print("\nCuTe DSL add (3 tensors), us per call, median of interleaved repeats:")
        for name, row in cute.items():
            if isinstance(row, dict):
                print(f"  {name:<28} {row['median_us']:7.2f}  (min {row['min_us']:.2f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
