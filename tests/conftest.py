"""Test tiers: CPU tests run everywhere; tests marked ``gpu`` (and ``sm90``, ``sm100``,
``multi_gpu``) skip cleanly when the hardware is missing. Every test session uses a private
on-disk cache directory, so tests never read or write the user's cache."""
import pytest
import torch

import fastdispatch
from fastdispatch.knobs import knobs


def _capability():
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def pytest_collection_modifyitems(config, items):
    cap = _capability()
    reasons = {
        "gpu": None if cap else "needs a CUDA GPU",
        "sm90": None if cap == (9, 0) else "needs a Hopper GPU (sm_90)",
        "sm100": None if cap and cap[0] == 10 else "needs a Blackwell GPU (sm_100/103); none here",
        "multi_gpu": None if torch.cuda.device_count() > 1 else "needs two or more CUDA GPUs",
    }
    for item in items:
        for marker, reason in reasons.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))
                break


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    """Point the disk cache at a fresh directory for the whole session."""
    saved = knobs.cache_dir
    knobs.cache_dir = str(tmp_path_factory.mktemp("fastdispatch-cache"))
    yield knobs.cache_dir
    knobs.cache_dir = saved
