"""bench/: pytest-benchmark suites (``pytest bench/ --benchmark-only``); GPU-only, skipped cleanly
without CUDA. Timings are recorded, never asserted."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="launch-latency benchmarks need a CUDA GPU")
    for item in items:
        item.add_marker(skip)
