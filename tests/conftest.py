"""Test tiers: CPU tests run everywhere; tests marked ``gpu`` (and ``sm90``, ``sm100``,
``multi_gpu``) skip cleanly when the hardware is missing. Every test session uses a private
on-disk cache directory, so tests never read or write the user's cache."""
import threading

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


# -- key builders ---------------------------------------------------------------------------------
# Every key test runs against both implementations (STYLE §5). `keys` configures both at import.
from fastdispatch import keys as _keys_select  # noqa: E402,F401  (configures both builders)
from fastdispatch import _keys_py  # noqa: E402

try:
    from fastdispatch import _keys as _keys_c
except ImportError:  # the extension is not built: its half of the parametrization skips
    _keys_c = None

KEY_IMPLS = {"cython": _keys_c, "python": _keys_py}


@pytest.fixture(params=sorted(KEY_IMPLS))
def keys_impl(request):
    """The key builder module under test: ``fastdispatch._keys`` or ``fastdispatch._keys_py``."""
    module = KEY_IMPLS[request.param]
    if module is None:
        pytest.skip("fastdispatch._keys is not built (python setup.py build_ext --inplace)")
    return module


@pytest.fixture
def fresh_cache_dir(tmp_path, monkeypatch):
    """A cache directory of this test's own (on top of the session's private one)."""
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setattr(knobs, "cache_dir", str(path))
    return path


class _StatsDelta:
    """Growth of ``fastdispatch.stats()`` counters since creation (or the last ``reset()``)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.before = fastdispatch.stats()

    def __call__(self, name):
        return fastdispatch.stats().get(name, 0) - self.before.get(name, 0)


@pytest.fixture
def stats_delta():
    """``stats_delta("compiles")``: how much a counter grew during this test."""
    return _StatsDelta()


def _run_threads(n_threads, body):
    """Start ``n_threads`` threads released together by a barrier, each running ``body(i)``;
    join them and return the exceptions they raised (an empty list when all succeeded)."""
    barrier = threading.Barrier(n_threads)
    errors = []

    def worker(i):
        try:
            barrier.wait()
            body(i)
        except Exception as exc:  # collected and asserted on by the caller
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.fixture
def run_threads():
    """``run_threads(n, body)``: n threads start ``body(i)`` at once; returns their errors."""
    return _run_threads
