"""pytest plugin (entry point ``pytest11``): the ``launch_latency`` fixture.

Any project can keep a launch-latency suite on top of pytest-benchmark::

    def test_my_kernel_launch(launch_latency):
        result = launch_latency(my_kernel, x, y, out)
        # result["wall_ns"], result["issue_ns"]: per call, median over rounds

Each round runs ``iterations`` back-to-back calls: *issue* time is the CPU time until the last
call returned, *wall* time also waits for the device (``torch.cuda.synchronize`` when CUDA is
up, or the ``sync`` given). Warm-up calls run first (compiles and first-touch stay out). Both
figures go into ``--benchmark-json`` under ``extra_info``. The plugin imports nothing heavy
until the fixture is used, and never asserts a time.
"""
from __future__ import annotations

import statistics
import time

import pytest


def _default_sync():
    try:
        import torch
    except ImportError:
        return lambda: None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.synchronize
    return lambda: None


@pytest.fixture
def launch_latency(request):
    """Returns ``measure(fn, *args, iterations=2000, rounds=7, warmup=200, sync=None, batched=False)``;
    with ``batched=True`` ``fn(count)`` makes ``count`` calls itself (e.g. a C loop)."""
    try:
        benchmark = request.getfixturevalue("benchmark")
    except pytest.FixtureLookupError:
        pytest.skip("launch_latency needs pytest-benchmark")

    def measure(fn, *args, iterations: int = 2000, rounds: int = 7, warmup: int = 200, sync=None,
                batched: bool = False):
        sync = sync or _default_sync()
        if batched:
            calls = fn
        else:
            def calls(count):
                for _ in range(count):
                    fn(*args)
        calls(warmup)
        sync()
        issue, wall = [], []

        def one_round():
            sync()
            started = time.perf_counter_ns()
            calls(iterations)
            issued = time.perf_counter_ns()
            sync()
            done = time.perf_counter_ns()
            issue.append((issued - started) / iterations)
            wall.append((done - started) / iterations)

        if getattr(benchmark, "disabled", False):
            one_round()   # --benchmark-disable: run once as a test, record nothing
        else:
            benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
        result = {"wall_ns": statistics.median(wall), "issue_ns": statistics.median(issue),
                  "iterations_per_round": iterations, "rounds": len(wall)}
        if not getattr(benchmark, "disabled", False):
            benchmark.extra_info.update(result)
        return result

    return measure
