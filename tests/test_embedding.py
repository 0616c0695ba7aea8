"""Embedding features: torch.compile routing, precompile (AOT for another arch), stats,
the pytest plugin, capture refusal (GPU)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastdispatch
from fastdispatch.backends.reference import null_kernel, reference_kernel
from fastdispatch.dispatcher import Dispatcher
from fastdispatch.precompile import TensorSpec, parse_arch, precompile


def _axpy():
    return reference_kernel(lambda x, y, out, s, n: out.copy_(x * s + y + n), ["x", "y", "out", "s", "n"])


def test_torch_compile_fullgraph_routes_through_custom_op():
    k = _axpy()

    def f(x, y):
        out = torch.empty_like(x)
        k(x, y, out, 2.0, 3)
        return out + 1

    compiled = torch.compile(f, fullgraph=True)
    x, y = torch.randn(16), torch.randn(16)
    torch.testing.assert_close(compiled(x, y), x * 2 + y + 4)
    torch.testing.assert_close(compiled(x + 1, y), (x + 1) * 2 + y + 4)


def test_eager_calls_bypass_the_python_call(monkeypatch):
    """Eager calls run the C tp_call, not Dispatcher.__call__ (which only tracing uses)."""
    from fastdispatch import keys
    if keys.IMPLEMENTATION != "cython":
        pytest.skip("the pure-Python key builder has no C tp_call")
    def fail(self, *args, **kwargs):
        raise AssertionError("eager call went through the Python __call__")

    monkeypatch.setattr(Dispatcher, "__call__", fail)
    k = _axpy()                       # a new instance re-installs the C slot on its type
    out = torch.empty(4)
    k(torch.ones(4), torch.ones(4), out, 2.0, 0)
    assert out.tolist() == [3.0] * 4


def test_stats_count_hits_and_misses():
    k = null_kernel(2)
    args = (torch.randn(4), torch.randn(4))
    before = fastdispatch.stats()
    for _ in range(5):
        k(*args)
    after = fastdispatch.stats()
    assert after["misses"] - before.get("misses", 0) == 1
    assert after["hits"] - before.get("hits", 0) == 4


def test_tensorspec_alignment():
    assert TensorSpec("float32", (8,), True).materialize().data_ptr() % 16 == 0
    assert TensorSpec("float32", (8,), False).materialize().data_ptr() % 16 != 0
    assert TensorSpec("float16", (2, 3)).materialize().shape == (2, 3)


@pytest.mark.parametrize("text, cc", [("sm_90", 90), ("sm_90a", 90), ("100", 100), ("sm_100a", 100)])
def test_parse_arch(text, cc):
    assert parse_arch(text) == cc


def test_precompile_for_another_arch_then_cached():
    rows = precompile(["fastdispatch.kernels.add:precompile_specs"], arch="sm_90")
    assert len(rows) == 6 and all(r["arch"] == "sm_90" for r in rows)
    assert all(any(f.endswith(".cubin") for f in r["files"]) for r in rows)
    from fastdispatch.backends import triton as tb
    tb.binaries._files_by_key.clear()          # a new process: only the disk cache is left
    again = precompile(["fastdispatch.kernels.add:precompile_specs"], arch="sm_90")
    assert not any(r["compiled"] for r in again)


def test_precompile_errors():
    with pytest.raises(ValueError, match="MODULE:ATTR"):
        precompile(["fastdispatch.kernels.add"], arch="sm_90")
    with pytest.raises(AttributeError):
        precompile(["fastdispatch.kernels.add:no_such_thing"], arch="sm_90")
    with pytest.raises(ValueError, match="arch"):
        parse_arch("hopper")


def test_precompile_cli(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(fastdispatch.__file__)))
    env = dict(os.environ, FASTDISPATCH_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "fastdispatch", "precompile",
                           "fastdispatch.kernels.add:precompile_specs", "--arch", "sm_90"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "6 binaries" in proc.stdout
    assert len([p for p in (tmp_path / "triton").iterdir() if not p.name.startswith(".")]) == 6


def test_launch_latency_plugin_records_extra_info(tmp_path):
    test_file = tmp_path / "test_lat.py"
    test_file.write_text(textwrap.dedent("""
        def test_latency(launch_latency):
            result = launch_latency(lambda: sum(range(10)), iterations=100, rounds=3, warmup=10)
            assert result["wall_ns"] > 0 and result["issue_ns"] > 0
    """))
    out_json = tmp_path / "bench.json"
    import importlib.metadata
    installed = any(ep.name == "fastdispatch" for ep in importlib.metadata.entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "fastdispatch.pytest_plugin"]   # else: source checkout
    repo = os.path.dirname(os.path.dirname(os.path.abspath(fastdispatch.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", *plugin, str(test_file),
                           f"--benchmark-json={out_json}", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    extra = json.loads(out_json.read_text())["benchmarks"][0]["extra_info"]
    assert extra["iterations_per_round"] == 100 and extra["wall_ns"] >= extra["issue_ns"] > 0


@pytest.mark.gpu
def test_miss_during_graph_capture_is_refused():
    k = _axpy()
    x = torch.randn(16, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="Warm up first"):
        with torch.cuda.graph(graph):
            k(x, x, torch.empty_like(x), 1.0, 0)


@pytest.mark.gpu
def test_triton_kernel_and_scaled_mm_under_torch_compile_gpu():
    """A wrapped Triton kernel and scaled_mm inside torch.compile(fullgraph=True) on CUDA."""
    from fastdispatch.kernels.add import BLOCK, add2, add_grid
    from fastdispatch.kernels.scaled_mm import reference

    k = fastdispatch.triton_kernel(add2, grid=add_grid, constexprs={"BLOCK": BLOCK})

    def f(x, y, a, b, sa, sb):
        out = torch.empty_like(x)
        k(x, y, out, x.numel())
        return out * 2, fastdispatch.scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16)

    x, y = torch.randn(5000, device="cuda"), torch.randn(5000, device="cuda")
    a = (torch.randn(64, 128, device="cuda") * 0.5).to(torch.float8_e4m3fn)
    b = (torch.randn(256, 128, device="cuda") * 0.5).to(torch.float8_e4m3fn).t()
    sa, sb = torch.rand(64, 1, device="cuda") + 0.5, torch.rand(1, 256, device="cuda") + 0.5
    added, mm = torch.compile(f, fullgraph=True)(x, y, a, b, sa, sb)
    torch.testing.assert_close(added, (x + y) * 2)
    ref = reference(a, b, sa, sb, out_dtype=torch.bfloat16).float()
    assert ((mm.float() - ref).norm() / ref.norm()).item() < 2e-3
