"""``python -m fastdispatch`` commands and ``FASTDISPATCH_NO_EXTENSIONS``, each in a fresh process."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastdispatch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastdispatch.__file__)))


def run(args, tmp_path, extra_env=None, code=None):
    env = dict(os.environ, FASTDISPATCH_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env.update(extra_env or {})
    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "fastdispatch", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_info_names_key_builder(tmp_path):
    """`info` runs and names the live key builder and the private cache dir."""
    out = run(["info"], tmp_path)
    lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip() and not line.startswith(" "))
    assert lines["key_builder"].strip() == fastdispatch.keys.IMPLEMENTATION
    assert "key_builder_reason" in lines
    assert lines["cache_dir"].strip() == str(tmp_path / "cache")
    if not torch.cuda.is_available():
        assert "no CUDA GPU here" in out


def test_bench_keys_prints_json_last_line(tmp_path):
    """`bench keys` ends with one JSON line: {"2"|"8"|"16": {"hit_ns", "python_attrs_ns"}}."""
    out = run(["bench", "keys", "--repeats", "1", "--iterations", "200"], tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert list(result) == ["2", "8", "16"]
    for row in result.values():
        assert set(row) == {"hit_ns", "python_attrs_ns"}
        assert all(isinstance(v, (int, float)) and v > 0 for v in row.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_bench_launch_without_gpu_skips(tmp_path):
    """`bench launch` on a machine without a GPU exits 0 and says it skipped."""
    out = run(["bench", "launch", "--repeats", "1", "--iterations", "10"], tmp_path)
    assert "skipped" in out and "no CUDA GPU" in out


def test_unknown_command_fails(tmp_path):
    """A bad subcommand exits non-zero with argparse's usage message."""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "fastdispatch", "frobnicate"], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "usage" in proc.stderr


NO_EXT_SCRIPT = textwrap.dedent("""
    import json, torch, fastdispatch
    from fastdispatch import keys
    from fastdispatch.backends.reference import reference_kernel
    k = reference_kernel(lambda x, y, out, s: out.copy_(x * s + y), ["x", "y", "out", "s"])
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(33, generator=g), torch.randn(33, generator=g)
    results = []
    for s in (2.0, 3.0):
        out = torch.full((33,), float("nan"))
        k(x, y, out, s)
        results.append(torch.equal(out, x * s + y))
    print(json.dumps({"key_builder": fastdispatch.info()["key_builder"], "impl": keys.impl.__name__,
                      "reason": keys.reason, "results": results, "entries": k.num_entries,
                      "hits": k.entries()[0].hits}))
""")


def test_no_extensions_env_uses_python_twin(tmp_path):
    """FASTDISPATCH_NO_EXTENSIONS=1: the Python twin is live and a reference kernel still works."""
    out = run(None, tmp_path, {"FASTDISPATCH_NO_EXTENSIONS": "1"}, code=NO_EXT_SCRIPT)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["key_builder"] == "python" and report["impl"] == "fastdispatch._keys_py"
    assert report["reason"] == "FASTDISPATCH_NO_EXTENSIONS=1"
    assert report["results"] == [True, True] and report["entries"] == 1 and report["hits"] == 1


@pytest.mark.parametrize("arch,shape,recipe,expect", [
    # Decode shape on Hopper: WGMMA + TMA, split-K partials through distributed SMEM, PDL.
    ("sm_90a", "1,4096,4096", "rowwise", {"wgmma.mma_async": True, "tcgen05.mma": False, "st.async": True,
                                          "griddepcontrol": True}),
    # Large square on Hopper: WGMMA + TMA, no split-K, no PDL.
    ("sm_90a", "4096,4096,4096", "rowwise", {"wgmma.mma_async": True, "tcgen05.mma": False, "st.async": False,
                                             "griddepcontrol": False}),
    # DeepSeek-style block scales (BlockWise1x128 x BlockWise128x128) on Hopper.
    ("sm_90a", "4096,4096,4096", "blockwise", {"wgmma.mma_async": True, "tcgen05.mma": False}),
    # Blackwell (compiled only): tcgen05 MMA + TMA, no WGMMA.
    ("sm_100a", "4096,4096,4096", "rowwise", {"tcgen05.mma": True, "wgmma.mma_async": False}),
])
def test_inspect_scaled_mm_reports_ptx_counts_without_a_gpu(tmp_path, arch, shape, recipe, expect):
    """`inspect scaled_mm` compiles for the arch and recipe with no GPU, lists the path of each
    recipe / dtype case, and ends with JSON opcode counts."""
    pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
    out = run(["inspect", "scaled_mm", "--arch", arch, "--shape", shape, "--recipe", recipe], tmp_path,
              extra_env={"CUDA_VISIBLE_DEVICES": ""})
    counts = json.loads(out.strip().splitlines()[-1])
    assert counts["cp.async.bulk.tensor"] > 0, counts          # TMA
    assert counts["ld.local"] == counts["st.local"] == 0, counts  # no local memory (spills)
    for opcode, present in expect.items():
        assert (counts[opcode] > 0) == present, (opcode, counts)
    assert f"scaled_mm {shape.replace(',', 'x')} {recipe} for {arch}" in out
    assert f"paths on {arch}" in out and "torch._scaled_mm" in out


@pytest.mark.parametrize("arch", ["sm_90a", "sm_100a"])
def test_inspect_path_table(arch):
    """The path table is routing.route on meta tensors: each row says our kernel or
    torch._scaled_mm (with the reason); sm_100 keeps rowwise/tensorwise e4m3 -> bf16 only."""
    pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
    from fastdispatch.kernels.scaled_mm import inspect as sm_inspect, sm90

    rows = sm_inspect.path_table(arch, 256, 256, 384)
    assert len(rows) == 5 * 3 * 4
    for row in rows:
        assert (row["path"] == "our kernel") == (row["reason"] is None), row
        dtypes = [getattr(torch, row[x]) for x in ("a", "b", "out")]
        if arch == "sm_90a":
            expect = sm90.kernel_supports(*dtypes, row["recipe"])
        else:
            expect = row["recipe"] in ("tensorwise", "rowwise") and row["a"] == row["b"] == "float8_e4m3fn" \
                and row["out"] == "bfloat16"
        assert (row["path"] == "our kernel") == expect, row
