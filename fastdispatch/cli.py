"""``python -m fastdispatch``: info, benchmarks (keys, launch) and kernel inspection.

Benchmarks measure every path side by side in one process, interleaved, and report medians of
the repeats (``bench launch``: of many short rounds, its targets on per-round paired
differences); they never assert a time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

ARITIES = (2, 8, 16)
NUMEL = 4096


def cmd_info(args) -> int:
    import fastdispatch

    facts = fastdispatch.info()
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    if not facts["gpus"]:
        print("\nno CUDA GPU here: GPU launches are unavailable (key building, caches and AOT "
              "compilation work)")
    return 0


def _median_ns(fn, iterations: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        fn(iterations)
        samples.append((time.perf_counter_ns() - started) / iterations)
    return statistics.median(samples)


def bench_keys(repeats: int = 7, iterations: int = 20000) -> dict:
    """Hit-path cost (key + lookup, null launcher) vs reading tensor attributes in Python."""
    import torch

    from fastdispatch.backends.reference import null_kernel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {}
    for n in ARITIES:
        tensors = tuple(torch.randn(NUMEL, device=device) for _ in range(n))
        kernel = null_kernel(n)
        kernel(*tensors)  # the miss: publishes the entry

        def hits(count, kernel=kernel, tensors=tensors):
            for _ in range(count):
                kernel(*tensors)

        def attrs(count, tensors=tensors):
            for _ in range(count):
                for t in tensors:
                    t.data_ptr(); t.shape; t.stride(); t.dtype; t.device

        hit = _median_ns(hits, iterations, repeats)
        python_attrs = _median_ns(attrs, iterations // 4, repeats)
        results[str(n)] = {"hit_ns": round(hit, 1), "python_attrs_ns": round(python_attrs, 1)}
    return results


def cmd_bench_keys(args) -> int:
    from fastdispatch import keys

    results = bench_keys(args.repeats, args.iterations)
    print(f"key builder: {keys.IMPLEMENTATION} ({keys.reason}); exchange API: {keys.exchange_api_status()}")
    print(f"{'tensors':>8} {'hit ns':>10} {'py attrs ns':>12} {'ratio':>7}")
    for n, row in results.items():
        print(f"{n:>8} {row['hit_ns']:>10.0f} {row['python_attrs_ns']:>12.0f} "
              f"{row['hit_ns'] / row['python_attrs_ns']:>7.3f}")
    print(json.dumps(results))
    return 0


def cmd_bench_launch(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench launch: no CUDA GPU on this machine; skipped (run `bench keys` for the "
              "CPU-side hit path)")
        return 0
    from fastdispatch.bench_launch import run_launch_bench

    table = run_launch_bench(iterations=args.iterations, repeats=args.repeats)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)
    return 0


def cmd_bench_server(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench server: no CUDA GPU on this machine; skipped")
        return 0
    from fastdispatch.bench_server import run_server_bench

    result = run_server_bench()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


def cmd_demo(args) -> int:
    """The main job: info, the key benchmark, and on a GPU the launch and scaled_mm benchmarks."""
    import torch

    print("== fastdispatch info")
    cmd_info(args)
    print("\n== bench keys (hit path vs Python attribute reads)")
    cmd_bench_keys(argparse.Namespace(repeats=5, iterations=10000))
    if not torch.cuda.is_available():
        print("\n== skipped: bench launch and the scaled_mm benchmark need a CUDA GPU (none here)")
        return 0
    print("\n== bench launch")
    cmd_bench_launch(argparse.Namespace(repeats=21, iterations=2000, json=None))
    print("\n== scaled_mm vs torch._scaled_mm")
    from fastdispatch.kernels.scaled_mm.bench import main as scaled_mm_bench
    scaled_mm_bench(quick=True)
    return 0


def cmd_precompile(args) -> int:
    from fastdispatch import cache
    from fastdispatch.precompile import precompile

    rows = precompile(args.targets, arch=args.arch, shapes_file=args.shapes,
                      decisions_file=args.decisions, gpu=args.gpu)
    for row in rows:
        print(f"{row['kernel']:<24} {row['arch']:<8} {'compiled' if row['compiled'] else 'cached':<9} "
              f"{', '.join(row['files'])}")
    print(f"{len(rows)} binaries in {cache.cache_root()}")
    return 0


def cmd_bench_coldstart(args) -> int:
    from fastdispatch.coldstart import run_coldstart

    run_coldstart(profile=args.profile)
    return 0


def cmd_inspect(args) -> int:
    from fastdispatch.kernels.scaled_mm.inspect import inspect_main

    return inspect_main(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdispatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, key builder, exchange API, GPUs, cache").set_defaults(func=cmd_info)
    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="what", required=True)
    keys_p = bench.add_parser("keys", help="hit-path cost vs Python attribute reads (any machine)")
    keys_p.add_argument("--repeats", type=int, default=7)
    keys_p.add_argument("--iterations", type=int, default=20000)
    keys_p.set_defaults(func=cmd_bench_keys)
    launch_p = bench.add_parser("launch", help="launch paths side by side (GPU)")
    # Many short rounds: the drop-in targets are decided on per-round paired differences.
    launch_p.add_argument("--repeats", type=int, default=41, help="interleaved rounds (default 41)")
    launch_p.add_argument("--iterations", type=int, default=2000,
                          help="calls per (arity, path) cell in each round (default 2000)")
    launch_p.add_argument("--json", metavar="PATH")
    launch_p.set_defaults(func=cmd_bench_launch)
    server_p = bench.add_parser("server", help="new shapes, known-binary misses, torch.compile, "
                                "threads, autotune cold start, beside Triton (GPU)")
    server_p.add_argument("--json", metavar="PATH")
    server_p.set_defaults(func=cmd_bench_server)
    sub.add_parser("demo", help="the main job: info + benchmarks (skips GPU parts without a GPU)"
                   ).set_defaults(func=cmd_demo)
    pre = sub.add_parser("precompile", help="fill the on-disk binary cache ahead of time")
    pre.add_argument("targets", nargs="+", metavar="MODULE:ATTR")
    pre.add_argument("--arch", help="e.g. sm_90 (default: this machine's GPU)")
    pre.add_argument("--shapes", help="JSON list of argument lists (tensors as {dtype, shape, aligned})")
    pre.add_argument("--decisions", help="autotune decisions exported on the serving GPU (JSON)")
    pre.add_argument("--gpu", help="the serving GPU's name (torch.cuda.get_device_name), for --decisions")
    pre.set_defaults(func=cmd_precompile)
    cold = bench.add_parser("coldstart", help="fresh process to first result, cold vs warm cache (GPU)")
    cold.add_argument("--profile", action="store_true", help="cProfile the warm first call")
    cold.set_defaults(func=cmd_bench_coldstart)
    insp = sub.add_parser("inspect", help="compile a kernel without a GPU and report on it")
    insp.add_argument("kernel", choices=["scaled_mm"])
    insp.add_argument("--arch", default="sm_90a", choices=["sm_90a", "sm_100a"])
    insp.add_argument("--shape", default="4096,4096,4096", help="M,N,K")
    insp.add_argument("--recipe", default="rowwise", choices=["rowwise", "blockwise"],
                      help="scale recipe (blockwise: torch's BlockWise1x128 x BlockWise128x128)")
    insp.set_defaults(func=cmd_inspect)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
