"""``bench server``: the paths an inference server takes, side by side with plain Triton/torch.

Every figure is a median over interleaved repeats in one process (except the cold starts, each
a fresh interpreter), on an axpy kernel (BLOCK 1024, fp32) wrapped as the issue's server does:

- new shapes: the first call for each of N new lengths (one binary), fastdispatch vs Triton's
  ``kernel[grid]`` on the same lengths, then the same lengths again (steady hits); the entries
  the kernel holds after N and after 100k lengths;
- a miss whose binary is known (entries cleared, then one call): what publishing costs;
- torch.compile(fullgraph=True) per call: a function calling the wrapped kernel, the same
  Triton kernel called natively inside torch.compile, eager fastdispatch; ``scaled_mm`` vs
  ``torch._scaled_mm`` inside torch.compile (Hopper with nvidia-cutlass-dsl);
- threads: 1/2/4/8 threads, each on its own stream, aggregate us per call, fastdispatch with the
  GIL released or held around ``cuLaunchKernelEx`` and Triton's ``kernel[grid]``;
- cold start of an autotuned kernel: a fresh process with warm caches, fastdispatch (decision
  and binary on disk) beside Triton's ``cache_results=True`` autotuner.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def axpy(x, y, out, a, n, BLOCK: tl.constexpr):
    """out = a * x + y (n elements)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out + offs, a * tl.load(x + offs, mask=mask) + tl.load(y + offs, mask=mask), mask=mask)


def _server_kernel():
    import fastdispatch
    return fastdispatch.triton_kernel(axpy, grid=lambda x, y, out, a, n: (triton.cdiv(n, BLOCK),),
                                      constexprs={"BLOCK": BLOCK})


def _wall_us(fn, count: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter_ns()
    fn()
    torch.cuda.synchronize()
    return (time.perf_counter_ns() - start) / count / 1000.0


def new_shapes(n_sizes: int = 3000, repeats: int = 3) -> dict:
    """First call per new length vs Triton's kernel[grid] on the same lengths; steady hits."""
    import fastdispatch

    total = 16 * (n_sizes + 64) + 4096
    x, y = torch.randn(total, device="cuda"), torch.randn(total, device="cuda")
    out = torch.empty_like(x)
    rows = {"fastdispatch first call per new size": [], "Triton kernel[grid], same sizes": [],
            "fastdispatch same sizes again (hits)": []}
    entries = []
    for r in range(repeats):
        fast = _server_kernel()
        fast(x[:4096], y[:4096], out[:4096], 2.0, 4096)     # the one binary's miss
        lengths = [4096 + 16 * (i + 1 + r * n_sizes) % (total - 4096) for i in range(n_sizes)]
        lengths = [n - n % 16 for n in lengths]
        views = [(x[:n], y[:n], out[:n], 2.0, n) for n in lengths]

        def first():
            for v in views:
                fast(*v)

        def triton_native():
            for v in views:
                axpy[(triton.cdiv(v[4], BLOCK),)](*v, BLOCK=BLOCK)

        rows["fastdispatch first call per new size"].append(_wall_us(first, n_sizes))
        rows["Triton kernel[grid], same sizes"].append(_wall_us(triton_native, n_sizes))
        rows["fastdispatch same sizes again (hits)"].append(_wall_us(first, n_sizes))
        entries.append(fast.num_entries)
        n = lengths[-1]
        torch.testing.assert_close(out[:n], 2.0 * x[:n] + y[:n])
    fast = _server_kernel()
    for i in range(100_000):     # 100k distinct lengths: the table stays at its one entry
        n = 16 + 16 * (i % (total // 16 - 1))
        fast(x[:n], y[:n], out[:n], 2.0, n)
    torch.cuda.synchronize()
    result = {name: statistics.median(v) for name, v in rows.items()}
    result["entries after N sizes"] = max(entries)
    result["entries after 100k sizes"] = fast.num_entries
    result["evictions after 100k sizes"] = fast.evictions
    return result


def known_binary_miss(repeats: int = 2000) -> dict:
    """Cost of a miss whose binary exists: clear the entries, call once (publishes), vs a hit."""
    fast = _server_kernel()
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = torch.empty_like(x)
    args = (x, y, out, 2.0, 4096)
    fast(*args)

    def miss():
        for _ in range(repeats):
            fast.clear_entries()
            fast(*args)

    def hit():
        for _ in range(repeats):
            fast(*args)

    samples = {"miss, known binary (clear + call)": [], "hit": []}
    for _ in range(5):
        samples["miss, known binary (clear + call)"].append(_wall_us(miss, repeats))
        samples["hit"].append(_wall_us(hit, repeats))
    return {k: statistics.median(v) for k, v in samples.items()}


FAST_AXPY = None   # compiled_calls' wrapper of axpy


def compiled_calls(iterations: int = 2000) -> dict:
    """torch.compile(fullgraph=True) per call: wrapped kernel, native Triton, eager."""
    import fastdispatch

    global FAST_AXPY
    # A module global, as a user's ``fast = fastdispatch.triton_kernel(kernel)`` at import (and
    # as ``axpy`` is), so both compiled functions read their kernel object the same way.
    FAST_AXPY = fastdispatch.triton_kernel(axpy)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = torch.empty_like(x)

    def with_fd(x, y, out):
        n = x.numel()
        FAST_AXPY[(triton.cdiv(n, BLOCK),)](x, y, out, 2.0, n, BLOCK=BLOCK)
        return out

    def with_triton(x, y, out):
        n = x.numel()
        axpy[(triton.cdiv(n, BLOCK),)](x, y, out, 2.0, n, BLOCK=BLOCK)
        return out

    paths = {"torch.compile: fastdispatch kernel": torch.compile(with_fd, fullgraph=True),
             "torch.compile: native Triton kernel": torch.compile(with_triton, fullgraph=True),
             "eager: fastdispatch kernel": with_fd,
             "eager: Triton kernel[grid]": with_triton}
    scaled = _scaled_mm_paths()
    paths.update(scaled)
    for name, fn in paths.items():
        if name in scaled:
            fn()
            continue
        out.fill_(float("nan"))
        fn(x, y, out)
        torch.cuda.synchronize()
        torch.testing.assert_close(out, 2.0 * x + y, msg=name)
    samples = {name: [] for name in paths}
    for _ in range(5):
        for name, fn in paths.items():
            if name in scaled:
                samples[name].append(_wall_us(lambda fn=fn: [fn() for _ in range(iterations)], iterations))
            else:
                samples[name].append(_wall_us(lambda fn=fn: [fn(x, y, out) for _ in range(iterations)],
                                              iterations))
    return {k: statistics.median(v) for k, v in samples.items()}


def _scaled_mm_paths() -> dict:
    """scaled_mm vs torch._scaled_mm inside torch.compile (16x4096x4096 rowwise), when our
    kernel runs here (Hopper + nvidia-cutlass-dsl)."""
    import fastdispatch
    from fastdispatch.kernels.scaled_mm.api import variant_for

    if variant_for(torch.cuda.get_device_capability()) != "sm90":
        return {}
    m, n, k = 16, 4096, 4096
    a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn).t()
    sa, sb = torch.rand(m, 1, device="cuda"), torch.rand(1, n, device="cuda")

    def ours(a, b, sa, sb):
        return fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)

    def theirs(a, b, sa, sb):
        return torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)

    c_ours, c_theirs = torch.compile(ours, fullgraph=True), torch.compile(theirs, fullgraph=True)
    got, want = c_ours(a, b, sa, sb).float(), theirs(a, b, sa, sb).float()
    error = ((got - want).norm() / want.norm()).item()
    if not error < 1e-2:   # bf16 outputs of two fp32-accumulating kernels: ~1e-3 apart
        raise AssertionError(f"scaled_mm under torch.compile: relative error {error:.2e}")
    return {"torch.compile: fastdispatch.scaled_mm 16x4096x4096": lambda: c_ours(a, b, sa, sb),
            "torch.compile: torch._scaled_mm 16x4096x4096": lambda: c_theirs(a, b, sa, sb)}


def thread_sweep(calls: int = 4000, repeats: int = 5) -> dict:
    """Aggregate us per call with 1/2/4/8 threads on own streams (interleaved repeats)."""
    import fastdispatch
    from fastdispatch import keys

    fast = _server_kernel()
    data = [(torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda"),
             torch.empty(4096, device="cuda")) for _ in range(8)]
    for x, y, out in data:
        fast(x, y, out, 2.0, 4096)
    grid = (triton.cdiv(4096, BLOCK),)

    def run(n_threads, body):
        barrier = threading.Barrier(n_threads + 1)
        streams = [torch.cuda.Stream() for _ in range(n_threads)]

        def worker(i):
            with torch.cuda.stream(streams[i]):
                x, y, out = data[i]
                barrier.wait()
                body(x, y, out)
                streams[i].synchronize()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter_ns()
        for t in threads:
            t.join()
        return (time.perf_counter_ns() - start) / (n_threads * calls) / 1000.0

    def fd_body(x, y, out):
        for _ in range(calls):
            fast(x, y, out, 2.0, 4096)

    def triton_body(x, y, out):
        for _ in range(calls):
            axpy[grid](x, y, out, 2.0, 4096, BLOCK=BLOCK)

    samples: dict = {}
    saved = fastdispatch.knobs.knobs.release_gil
    try:
        for _ in range(repeats):
            for n_threads in (1, 2, 4, 8):
                for name, body, release in (("fastdispatch, GIL released", fd_body, True),
                                            ("fastdispatch, GIL held", fd_body, False),
                                            ("Triton kernel[grid]", triton_body, None)):
                    if release is not None:
                        keys.set_release_gil(release)
                    samples.setdefault((name, n_threads), []).append(run(n_threads, body))
    finally:
        keys.set_release_gil(saved)
    for x, y, out in data:
        torch.testing.assert_close(out, 2.0 * x + y)
    return {f"{name} x{n}": statistics.median(v) for (name, n), v in samples.items()}


_COLD_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, triton, triton.language as tl
import fastdispatch
from fastdispatch.bench_server import axpy
tuned = triton.autotune(configs=[triton.Config({"BLOCK": b}) for b in (256, 512, 1024, 2048)],
                        key=["n"], cache_results=True)(axpy)
x = torch.randn(1 << 20, device="cuda"); y = torch.randn_like(x); out = torch.empty_like(x)
torch.cuda.synchronize()
t1 = time.perf_counter()
grid = lambda META: (triton.cdiv(META["n"], META["BLOCK"]),)
if sys.argv[1] == "fastdispatch":
    fastdispatch.triton_kernel(tuned)[grid](x, y, out, 2.0, x.numel())
else:
    tuned[grid](x, y, out, 2.0, x.numel())
torch.cuda.synchronize()
t2 = time.perf_counter()
assert torch.allclose(out, 2.0 * x + y)
print(json.dumps({"imports_s": t1 - t0, "first_call_s": t2 - t1, "stats": fastdispatch.stats()}))
"""


def autotune_coldstart() -> dict:
    """Fresh processes: autotuned kernel's first call, cold then warm caches, both libraries."""
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, FASTDISPATCH_CACHE_DIR=os.path.join(tmp, "fd"),
                   TRITON_CACHE_DIR=os.path.join(tmp, "triton"), TRITON_DEFAULT_FP_FUSION="1")
        for who in ("fastdispatch", "triton"):
            for state in ("cold", "warm"):
                proc = subprocess.run([sys.executable, "-c", _COLD_CHILD, who], env=env,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise RuntimeError(f"autotune coldstart child failed:\n{proc.stderr[-2000:]}")
                rows[f"{who}, {state} caches"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rows


def run_server_bench() -> dict:
    """Run every section, print the tables, return the figures."""
    import fastdispatch

    facts = fastdispatch.info()
    print(f"bench server: {facts['gpus'][0]['name'] if facts['gpus'] else '?'}, torch {facts['torch']}, "
          f"triton {facts['triton']}, key builder {facts['key_builder']}")
    out = {}
    for title, fn in (("new shapes (us per call)", new_shapes), ("miss for a known binary (us)", known_binary_miss),
                      ("torch.compile (us per call)", compiled_calls), ("threads, own streams (aggregate us per call)", thread_sweep)):
        result = fn()
        out[title] = result
        print(f"\n== {title}")
        for name, value in result.items():
            print(f"  {name:<58} {value:10.2f}" if isinstance(value, float) else f"  {name:<58} {value:>10}")
    cold = autotune_coldstart()
    out["autotune cold start"] = {k: {"first_call_ms": v["first_call_s"] * 1e3,
                                      "tunes": v["stats"].get("tunes", 0),
                                      "compiles": v["stats"].get("compiles", 0)} for k, v in cold.items()}
    print("\n== autotuned kernel, fresh process, first call (ms); fastdispatch tunes/compiles")
    for name, row in out["autotune cold start"].items():
        counts = (f"tunes {row['tunes']} compiles {row['compiles']}" if name.startswith("fastdispatch")
                  else "(Triton's own cache_results=True autotuner)")
        print(f"  {name:<40} {row['first_call_ms']:10.1f}   {counts}")
    print(json.dumps(out))
    return out
