"""Where the per-call time goes under torch.compile and on the drop-in ``fast[grid]`` path (GPU).

Diagnostics for issues 13 and 14, printed as tables (one process, interleaved medians):

- torch.compile(fullgraph=True): each compiled function's guard check alone (Dynamo's guard
  manager, timed in a loop) beside its whole call, for the fastdispatch Triton wrapper vs the
  same Triton kernel called natively, and ``fastdispatch.scaled_mm`` vs ``torch._scaled_mm``;
  the guard trees and Inductor's generated code go to ``$OUT`` (or ``--out``) for reading.
- the op boundary of ``scaled_mm``: eager ``torch.ops.fastdispatch.scaled_mm`` vs the Python
  function behind it vs ``torch._scaled_mm`` / ``torch.ops.aten._scaled_mm``.
- ``_keys.probe_costs`` (each hot-path step in a C loop) for the plain hit and for ``fast[grid]``
  with a META grid on a jit, an autotuned and a heuristics kernel.
"""
from __future__ import annotations

import argparse
import functools
import operator
import os
import statistics
import time

import torch
import triton

import fastdispatch
from fastdispatch import bench_rounds
from fastdispatch.bench_server import BLOCK, axpy   # the kernel `bench server` times


FAST = BY_ARGS = TUNED = TUNED_FAST = None   # compile_paths' kernels (module globals, see there)


def _per_call_us(fn, iterations=2000, repeats=5):
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) / iterations * 1e6)
    return statistics.median(samples)


def _guard_manager(fn):
    """The first cache entry's guard manager of a torch.compile'd function (torch 2.11+)."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list, innermost_fn
    entries = _debug_get_cache_entry_list(innermost_fn(fn).__code__)
    return entries[0].guard_manager if entries else None


def _compiled_graph(fn):
    """The ``__compiled_fn_*`` Dynamo's transformed bytecode of ``fn`` calls (its first cache
    entry), written with the bytecode into the guard file for reading; None if not found."""
    import dis
    import io

    from torch._dynamo.eval_frame import _debug_get_cache_entry_list, innermost_fn
    entries = _debug_get_cache_entry_list(innermost_fn(fn).__code__)
    if not entries:
        return None
    code = entries[0].code
    text = io.StringIO()
    dis.dis(code, file=text)
    with open(os.path.join(os.environ.get("OUT", "/tmp"), "guards.txt"), "a") as f:
        f.write(f"== bytecode of {fn.__name__} ({len(entries)} cache entries)\n{text.getvalue()}\n")
    names = [n for n in code.co_names if n.startswith("__compiled_fn")]
    return fn.__globals__.get(names[0]) if names else None


def _interleaved(paths: dict, rounds=31, iterations=500) -> dict:
    """{name: [us per call per round]}: every path once per round, many short rounds, so the
    host's drift (the H200 host's wall times move +-10% within a minute) spreads evenly; the
    order rotates by one each round, so no path always runs first (``bench_rounds``)."""
    return bench_rounds.interleaved(
        {name: functools.partial(_per_call_us, fn, iterations, 1) for name, fn in paths.items()}, rounds)


PAIRS = (("compiled: native Triton kernel, a second copy", "compiled: native Triton kernel"),   # the null pair
         # the same generated code called directly: what the measurement resolves without guards
         ("graph only: fastdispatch Triton wrapper", "graph only: native Triton kernel"),
         ("compiled: fastdispatch Triton wrapper", "compiled: native Triton kernel"),
         ("compiled: fastdispatch wrapper, wrap-time grid of the arguments", "compiled: native Triton kernel"),
         ("compiled: fastdispatch autotuned wrapper, META grid", "compiled: native autotuned Triton kernel, META grid"),
         ("compiled: fastdispatch.scaled_mm 16x4096x4096", "compiled: torch._scaled_mm 16x4096x4096"))


def _functional_scaled_mm_op():
    """The functional op scaled_mm was traced to before its out= op (for the comparison)."""
    from fastdispatch.kernels.scaled_mm import api

    lib = torch.library.Library("fdprobe", "FRAGMENT")
    lib.define("scaled_mm(Tensor a, Tensor b, Tensor scale_a, Tensor scale_b, Tensor? bias=None, "
               "Tensor? scale_result=None, ScalarType? out_dtype=None, bool use_fast_accum=False) -> Tensor")

    def impl(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None, use_fast_accum=False):
        out = torch.empty((a.shape[0], b.shape[1]), dtype=out_dtype or a.dtype, device=a.device)
        return api.dispatcher()(a, b, scale_a, scale_b, out, bias, scale_result, bool(use_fast_accum),
                                torch._C._get_sm_carveout_experimental())

    lib.impl("scaled_mm", impl, "CompositeExplicitAutograd")
    torch.library.register_fake("fdprobe::scaled_mm", lambda a, b, *rest, out_dtype=None, **kw: a.new_empty(
        (a.shape[0], b.shape[1]), dtype=torch.bfloat16), lib=lib)
    _functional_scaled_mm_op.lib = lib   # keep the registration alive
    return torch.ops.fdprobe.scaled_mm.default


def compile_paths(out_dir: str, rounds: int = 31, with_scaled_mm: bool = True) -> None:
    global FAST, BY_ARGS, TUNED, TUNED_FAST
    # Module globals, as a user's wrapper made at import (and as ``axpy`` is), so both sides
    # read their kernel object the same way (a closure cell, measured before the traced
    # methods were trimmed, gave the same ratio within its quartiles).
    FAST = fastdispatch.triton_kernel(axpy)
    BY_ARGS = fastdispatch.triton_kernel(axpy, grid=lambda x, y, out, a, n: (triton.cdiv(n, BLOCK),),
                                         constexprs={"BLOCK": BLOCK})
    TUNED = triton.autotune(configs=[triton.Config({"BLOCK": 512}), triton.Config({"BLOCK": 1024})],
                            key=["n"])(axpy)
    TUNED_FAST = fastdispatch.triton_kernel(TUNED)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = torch.empty_like(x)

    def with_fd(x, y, out):
        n = x.numel()
        FAST[(triton.cdiv(n, BLOCK),)](x, y, out, 2.0, n, BLOCK=BLOCK)
        return out

    def with_triton(x, y, out):
        n = x.numel()
        axpy[(triton.cdiv(n, BLOCK),)](x, y, out, 2.0, n, BLOCK=BLOCK)
        return out

    def with_triton_copy(x, y, out):   # the same function again: what "no difference" measures
        n = x.numel()
        axpy[(triton.cdiv(n, BLOCK),)](x, y, out, 2.0, n, BLOCK=BLOCK)
        return out

    def with_fd_tuned(x, y, out):
        n = x.numel()
        TUNED_FAST[lambda META: (triton.cdiv(n, META["BLOCK"]),)](x, y, out, 2.0, n)
        return out

    def with_triton_tuned(x, y, out):
        n = x.numel()
        TUNED[lambda META: (triton.cdiv(n, META["BLOCK"]),)](x, y, out, 2.0, n)
        return out

    def wrapper_call(x, y, out):
        BY_ARGS(x, y, out, 2.0, x.numel())
        return out

    compiled = {"fastdispatch Triton wrapper": (with_fd, (x, y, out)),
                "fastdispatch wrapper, wrap-time grid of the arguments": (wrapper_call, (x, y, out)),
                "native Triton kernel": (with_triton, (x, y, out)),
                "native Triton kernel, a second copy": (with_triton_copy, (x, y, out)),
                "fastdispatch autotuned wrapper, META grid": (with_fd_tuned, (x, y, out)),
                "native autotuned Triton kernel, META grid": (with_triton_tuned, (x, y, out))}
    from fastdispatch.kernels.scaled_mm.api import variant_for
    if with_scaled_mm and variant_for(torch.cuda.get_device_capability()) == "sm90":
        m, n, k = 16, 4096, 4096
        a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn).t()
        sa, sb = torch.rand(m, 1, device="cuda"), torch.rand(1, n, device="cuda")

        def ours(a, b, sa, sb):
            return fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)

        def theirs(a, b, sa, sb):
            return torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)

        functional = _functional_scaled_mm_op()
        result = torch.empty((m, n), dtype=torch.bfloat16, device="cuda")

        def ours_functional(a, b, sa, sb):
            return functional(a, b, sa, sb, None, None, torch.bfloat16, False)

        compiled["fastdispatch.scaled_mm 16x4096x4096"] = (ours, (a, b, sa, sb))
        compiled["functional op (before the out= op) 16x4096x4096"] = (ours_functional, (a, b, sa, sb))
        compiled["torch._scaled_mm 16x4096x4096"] = (theirs, (a, b, sa, sb))
        from fastdispatch.kernels.scaled_mm import api
        eager = {
            "eager torch.ops.fastdispatch.scaled_mm_out.default": lambda: torch.ops.fastdispatch.scaled_mm_out.default(
                a, b, sa, sb, None, None, False, result),
            "eager api._scaled_mm_out_op (the op's Python impl)": lambda: api._scaled_mm_out_op(
                a, b, sa, sb, None, None, False, result),
            "eager functional op (before)": lambda: functional(a, b, sa, sb, None, None, torch.bfloat16, False),
            "eager fastdispatch.scaled_mm": lambda: fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16),
            "eager torch._scaled_mm": lambda: torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16),
            "eager torch.ops.aten._scaled_mm.default": lambda: torch.ops.aten._scaled_mm.default(
                a, b, sa, sb, None, None, torch.bfloat16, False),
            "eager torch.empty(16, 4096, bf16)": lambda: torch.empty((16, 4096), dtype=torch.bfloat16, device="cuda"),
        }
    else:
        eager = {}
    paths, guards = {}, {}
    for name, (fn, args) in compiled.items():
        c = torch.compile(fn, fullgraph=True)
        c(*args)
        c(*args)
        paths[f"compiled: {name}"] = lambda c=c, args=args: c(*args)
        gm = _guard_manager(c)
        if gm is not None:
            local = dict(zip(fn.__code__.co_varnames, args))
            if fn.__closure__:   # free variables are frame locals to the guards (3.12)
                local.update(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__)))
            guards[f"guard check only: {name}"] = lambda gm=gm, local=local: gm.check(local)
        graph = _compiled_graph(fn)
        try:
            graph(*args) if graph is not None else None
        except Exception as exc:  # noqa: BLE001  (its inputs are not the function's arguments)
            print(f"{name}: graph not callable on the arguments ({type(exc).__name__}: {exc})")
            graph = None
        if graph is not None:   # Dynamo's graph callable alone: AOT wrappers + Inductor's call
            paths[f"graph only: {name}"] = lambda graph=graph, args=args: graph(*args)
            text = str(gm)
            with open(os.path.join(out_dir, "guards.txt"), "a") as f:
                f.write(f"== {name}\n{text}\n")
            print(f"{name}: guard tree {len(text.splitlines())} lines, check -> {gm.check(local)}")
    samples = _interleaved({**paths, **eager}, rounds=rounds)
    samples.update(_interleaved(guards, rounds=9, iterations=20000))
    print("\n== torch.compile and the op boundary (us per call: median, [min, max] of the rounds)")
    for name, v in samples.items():
        print(f"  {name:<66} {statistics.median(v):8.2f}  [{min(v):.2f}, {max(v):.2f}]")
    print("\n== paired ratios (each round's ratio, then their median and quartiles)")
    for ours, theirs in PAIRS:
        if ours in samples and theirs in samples:
            p = bench_rounds.paired(samples[ours], samples[theirs], operator.truediv)
            print(f"  {ours.split(': ', 1)[1]} / {theirs.split(': ', 1)[1]}: {p.median:.3f} "
                  f"[{p.q1:.3f}, {p.q3:.3f}]")


def hot_path_steps() -> None:
    import fastdispatch
    from fastdispatch import _keys
    from fastdispatch.kernels.add import ADD_KERNELS, add_grid

    grid = lambda META: (triton.cdiv(META["n"], META["BLOCK"]),)  # noqa: E731
    print("\n== hot-path steps, ns each (C loops; _keys.probe_costs)")
    for n_in, jit_fn in ADD_KERNELS.items():
        inputs = [torch.randn(4096, device="cuda") for _ in range(n_in)]
        out = torch.empty(4096, device="cuda")
        args = (*inputs, out, 4096)
        autotuned = triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in (256, 512, 1024, 2048)],
                                    key=["n"])(jit_fn)
        heuristic = triton.heuristics({"BLOCK": lambda a: 1024 if a["n"] >= 4096 else 256})(jit_fn)
        cases = {"plain (wrap-time grid, BLOCK fixed)":
                 (fastdispatch.triton_kernel(jit_fn, grid=add_grid(4096), constexprs={"BLOCK": BLOCK}), args, None),
                 "jit fast[grid] META, BLOCK= by keyword":
                 (fastdispatch.triton_kernel(jit_fn), args + (BLOCK,), grid),
                 "autotune fast[grid]": (fastdispatch.triton_kernel(autotuned), args, grid),
                 "heuristics fast[grid]": (fastdispatch.triton_kernel(heuristic), args, grid)}
        for label, (kernel, call_args, g) in cases.items():
            if g is None:
                kernel(*call_args)
            else:
                kernel[g](*call_args)
                kernel[g](*call_args)
            torch.cuda.synchronize()
            _keys.probe_costs(kernel, call_args, 5000, g)
            torch.cuda.synchronize()
            costs = _keys.probe_costs(kernel, call_args, 20000, g)
            torch.cuda.synchronize()
            print(f"  {n_in:>2} inputs, {label}: " + ", ".join(f"{k} {v:.0f}" for k, v in costs.items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    parser.add_argument("--only", choices=("compile", "steps"))
    parser.add_argument("--rounds", type=int, default=31, help="rounds of the compiled paths (each path once per round)")
    parser.add_argument("--triton-only", action="store_true", help="leave out scaled_mm and the eager op paths")
    options = parser.parse_args()
    if not torch.cuda.is_available():
        print("compile_probe: no CUDA GPU; skipped")
        return
    if options.only != "steps":
        compile_paths(options.out, options.rounds, not options.triton_only)
    if options.only != "compile":
        hot_path_steps()


if __name__ == "__main__":
    main()
