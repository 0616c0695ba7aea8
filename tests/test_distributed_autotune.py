"""Autotune under torch.distributed (issue 14): rank 0 tunes, every rank runs rank 0's config, the
other ranks never benchmark. Two CPU processes, the gloo backend on loopback, Triton's
interpreter (``TRITON_INTERPRET=1``) with a ``do_bench`` that counts its calls and makes the
configs' timings differ by rank (so ranks that tuned alone would pick different configs)."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numpy")   # Triton's interpreter

CHILD = textwrap.dedent(r'''
    import json, os, sys
    import torch, torch.distributed as dist
    import triton, triton.language as tl
    import fastdispatch

    rank = int(os.environ["RANK"])
    bench_calls = []

    def do_bench(fn, quantiles=None, **_):
        fn()
        bench_calls.append(1)
        # rank 0 favours the small block, rank 1 would favour the large one
        t = float(len(bench_calls)) if rank == 0 else float(10 - len(bench_calls))
        return [t, t, t]

    @triton.autotune(configs=[triton.Config({"BLOCK": 32}), triton.Config({"BLOCK": 64}),
                              triton.Config({"BLOCK": 128})], key=["n"], do_bench=do_bench)
    @triton.jit
    def scale(x, out, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out + offs, tl.load(x + offs, mask=offs < n) * 2.0, mask=offs < n)

    dist.init_process_group("gloo", rank=rank, world_size=2)
    fast = fastdispatch.triton_kernel(scale)
    x = torch.randn(1000)
    out = torch.full_like(x, float("nan"))
    fast[lambda META: (triton.cdiv(1000, META["BLOCK"]),)](x, out, 1000)
    torch.testing.assert_close(out, 2 * x)
    entry = fast.published()[0]
    print(json.dumps({"rank": rank, "bench_calls": len(bench_calls),
                      "block": entry.info["values"]["BLOCK"],
                      "tunes": fastdispatch.stats().get("tunes", 0)}))
    dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rank0_tunes_and_broadcasts(tmp_path):
    """Both ranks run rank 0's config; only rank 0 benchmarked; each rank's result is correct."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, TRITON_INTERPRET="1", RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   FASTDISPATCH_CACHE_DIR=str(tmp_path / f"cache{rank}"),
                   TRITON_CACHE_DIR=str(tmp_path / f"triton{rank}"))
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    rows = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        rows.append(json.loads(out.strip().splitlines()[-1]))
    by_rank = {row["rank"]: row for row in rows}
    assert by_rank[0]["bench_calls"] == 3 and by_rank[0]["tunes"] == 1
    assert by_rank[1]["bench_calls"] == 0 and by_rank[1]["tunes"] == 0
    assert by_rank[0]["block"] == by_rank[1]["block"] == 32   # rank 0's pick (rank 1 alone: 128)
