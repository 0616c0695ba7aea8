"""Where the drop-in call's time goes above the plain hit (issue 14), on the GPU.

``bench launch`` measures the autotuned and heuristics ``fast[grid](*args)`` rows at +0.6 to
+0.8 us over the plain hit (paired, 41 rounds), while the hot path's steps timed alone in C
loops add up to 0.1-0.2 us. This times, in the same rotating rounds, variants that each add
one thing to the plain call -- a per-call grid tuple, a per-call META grid, the grid given at
wrap time as a META function, a keyword constexpr, the autotune layer (one config, so the same
binary as the plain row) -- and prints each one's paired difference from the plain hit, then
the C-loop step costs of three of them. Usage: ``python bench/probe_dropin.py [--rounds R]``.
"""
from __future__ import annotations

import argparse
import functools

import torch
import triton

import fastdispatch
from fastdispatch import bench_rounds
from fastdispatch.bench_launch import NUMEL, _time_per_call
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK
from probe_hot_path import step_costs   # bench/ is the script's directory: on sys.path


def variants(n: int) -> tuple[dict, dict]:
    """``({name: fn(iterations)}, {name: (kernel, args, grid) for probe_costs})``."""
    jit_fn = ADD_KERNELS[n]
    inputs = [torch.randn(NUMEL, device="cuda") for _ in range(n)]
    out = torch.empty(NUMEL, device="cuda")
    args = (*inputs, out, NUMEL)
    size = (triton.cdiv(NUMEL, BLOCK),)
    meta = lambda META: (triton.cdiv(META["n"], META["BLOCK"]),)  # noqa: E731  (one object)
    one = triton.autotune(configs=[triton.Config({"BLOCK": BLOCK}, num_warps=4, num_stages=3)],
                          key=["n"])(jit_fn)
    plain = fastdispatch.triton_kernel(jit_fn, grid=size, constexprs={"BLOCK": BLOCK})
    wrap_meta = fastdispatch.triton_kernel(jit_fn, grid=meta, constexprs={"BLOCK": BLOCK})
    fixed = fastdispatch.triton_kernel(jit_fn, constexprs={"BLOCK": BLOCK})
    free = fastdispatch.triton_kernel(jit_fn)
    tuned = fastdispatch.triton_kernel(one)
    tuned_wrap = fastdispatch.triton_kernel(one, grid=meta)
    calls = {
        "plain hit k(*args), static grid": lambda: plain(*args),
        "k(*args), META grid given at wrap time": lambda: wrap_meta(*args),
        "k[tuple](*args), BLOCK fixed": lambda: fixed[size](*args),
        "k[META](*args), BLOCK fixed": lambda: fixed[meta](*args),
        "k[META](*args, BLOCK) positional constexpr": lambda: free[meta](*args, BLOCK),
        "k[META](*args, BLOCK=BLOCK)": lambda: free[meta](*args, BLOCK=BLOCK),
        "autotune (1 config) k[tuple](*args)": lambda: tuned[size](*args),
        "autotune (1 config) k[META](*args)": lambda: tuned[meta](*args),
        "autotune (1 config) k(*args), META at wrap": lambda: tuned_wrap(*args),
    }
    for call in calls.values():   # miss, then a hit, each checked
        for _ in range(2):
            out.fill_(float("nan"))
            call()
            torch.cuda.synchronize()
            torch.testing.assert_close(out, sum(inputs[1:], inputs[0]), rtol=1e-5, atol=1e-5)

    def looped(call, k):
        for _ in range(k):
            call()
    # A loop of a lambda adds the same frame to every variant, so the differences stand.
    paths = {name: functools.partial(looped, call) for name, call in calls.items()}
    probes = {"plain": (plain, args, None), "k[META] BLOCK fixed": (fixed, args, meta),
              "autotune k[META]": (tuned, args, meta)}
    return paths, probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--iterations", type=int, default=2000)
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("probe_dropin: no CUDA GPU; skipped")
        return
    setups = {n: variants(n) for n in (2, 16)}
    measures = {n: {name: functools.partial(_time_per_call, fn, opts.iterations)
                    for name, fn in paths.items()} for n, (paths, _) in setups.items()}
    samples = bench_rounds.interleaved_groups(measures, opts.rounds)
    base = "plain hit k(*args), static grid"
    for n, rows in samples.items():
        print(f"\n{n} inputs, us per call (median of {opts.rounds} rounds) and paired difference "
              f"from the plain hit [quartiles]")
        for name, values in rows.items():
            p = bench_rounds.paired(values, rows[base])
            print(f"  {name:<48} {bench_rounds.summary(values).median:6.2f}  "
                  f"{p.median:+.2f} [{p.q1:+.2f}, {p.q3:+.2f}]")
        for label, (kernel, args, grid) in setups[n][1].items():
            print(f"  C steps, {label}: " + step_costs(kernel, args, grid))


if __name__ == "__main__":
    main()
