"""``bench coldstart``: a fresh process's time to its first result, cold vs warm caches, side by
side with Triton's own cache (GPU). Each scenario is a new interpreter; "after imports" starts
once torch, triton and fastdispatch are imported, which is what a server pays per kernel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, triton
import fastdispatch
import fastdispatch.backends.triton  # a server imports its backends at startup
from fastdispatch.kernels.add import add2, add_grid, BLOCK
x = torch.randn(4096, device="cuda"); y = torch.randn_like(x); out = torch.empty_like(x)
torch.cuda.synchronize()
t1 = time.perf_counter()
if len(sys.argv) > 2:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
if sys.argv[1] == "fastdispatch":
    k = fastdispatch.triton_kernel(add2, grid=add_grid, constexprs={"BLOCK": BLOCK})
    k(x, y, out, 4096)
else:
    add2[add_grid(4096)](x, y, out, 4096, BLOCK=BLOCK)
torch.cuda.synchronize()
t2 = time.perf_counter()
if len(sys.argv) > 2:
    import pstats
    profiler.disable()
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumtime").print_stats(25)
assert torch.allclose(out, x + y)
print(json.dumps({"imports_s": t1 - t0, "first_call_s": t2 - t1,
                  "stats": fastdispatch.stats()}))
"""


def _run(path: str, fd_cache: str, triton_cache: str, profile: bool = False) -> dict:
    env = dict(os.environ, FASTDISPATCH_CACHE_DIR=fd_cache, TRITON_CACHE_DIR=triton_cache,
               TRITON_DEFAULT_FP_FUSION="1")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, path] + (["profile"] if profile else []),
                          env=env, capture_output=True, text=True)
    if profile:
        print(proc.stderr[-6000:])
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"coldstart child failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = total
    return result


def run_coldstart(profile: bool = False) -> dict:
    """Print and return the cold/warm table (``profile``: cProfile of the warm first call)."""
    import torch

    if not torch.cuda.is_available():
        print("bench coldstart: no CUDA GPU on this machine; skipped")
        return {}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        fd_cache, fd_triton = os.path.join(tmp, "fd"), os.path.join(tmp, "fd-triton")
        tr_cache = os.path.join(tmp, "triton")
        rows["fastdispatch, cold caches"] = _run("fastdispatch", fd_cache, fd_triton)
        # warm: our disk cache only; Triton's own cache emptied, so nothing is compiled anywhere
        rows["fastdispatch, warm disk cache"] = _run("fastdispatch", fd_cache, os.path.join(tmp, "empty"),
                                                     profile=profile)
        rows["Triton kernel[grid], cold cache"] = _run("triton", os.path.join(tmp, "unused"), tr_cache)
        rows["Triton kernel[grid], warm cache"] = _run("triton", os.path.join(tmp, "unused"), tr_cache)
    print(f"{'scenario':<34} {'imports ms':>11} {'first call ms':>14} {'process ms':>11}  compiles")
    for name, r in rows.items():
        print(f"{name:<34} {r['imports_s'] * 1e3:>11.0f} {r['first_call_s'] * 1e3:>14.1f} "
              f"{r['process_s'] * 1e3:>11.0f}  {r['stats'].get('compiles', 0)}")
    return rows
