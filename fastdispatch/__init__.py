"""fastdispatch: GPU kernel calls that cost what the hardware costs.

Lifetimes (one module each): per call ``_keys`` (Cython, twin ``_keys_py``) and ``launchers``;
per miss ``dispatcher``; per key ``backends``; per process / on disk ``cache``; knobs in
``knobs``. Public API: :func:`triton_kernel`, :func:`cute_kernel`, :func:`helion_kernel`,
:class:`Dispatcher`, :func:`scaled_mm` (and :mod:`fastdispatch.functional`'s recipe-API twin of
``torch.nn.functional.scaled_mm``), :func:`info`, :func:`stats`, :func:`clear_caches`.
"""
from __future__ import annotations

from fastdispatch import knobs as _knobs_module
from fastdispatch._log import configure_logging as _configure_logging
from fastdispatch.dispatcher import Dispatcher

__version__ = "0.1.0"
__all__ = ["Dispatcher", "triton_kernel", "cute_kernel", "helion_kernel", "scaled_mm", "functional",
           "info", "stats", "clear_caches", "knobs"]

knobs = _knobs_module
_configure_logging()


def triton_kernel(kernel, *, grid=None, constexprs=None, **options):
    """Wrap a Triton kernel object (``@triton.jit``, ``@triton.autotune``, ``@triton.heuristics``,
    nested); see :func:`fastdispatch.backends.triton.triton_kernel`."""
    from fastdispatch.backends.triton import triton_kernel as make
    return make(kernel, grid=grid, constexprs=constexprs, **options)


def cute_kernel(jit_fn, *args, **kwargs):
    """Wrap a ``@cute.jit`` host function; see :func:`fastdispatch.backends.cute.cute_kernel`."""
    from fastdispatch.backends.cute import cute_kernel as make
    return make(jit_fn, *args, **kwargs)


def helion_kernel(kernel=None, /, **helion_options):
    """Wrap a ``@helion.kernel`` (or decorate a function); see
    :func:`fastdispatch.backends.helion.helion_kernel`."""
    from fastdispatch.backends.helion import helion_kernel as make
    return make(kernel, **helion_options)


def info() -> dict:
    """Versions, which key builder is live and why, the exchange API, GPUs, the cache dir."""
    from fastdispatch._info import collect
    return collect()


def stats() -> dict:
    """Counters: hits (summed over live kernels' entries), misses, compiles, compile seconds,
    disk hits/writes/rejects, fallbacks by reason."""
    from fastdispatch import _stats
    from fastdispatch.dispatcher import live_dispatchers

    out = _stats.snapshot()
    out["hits"] = sum(e.hits for d in live_dispatchers() for e in d.published()) + sum(
        getattr(d, "evicted_hits", 0) for d in live_dispatchers())
    out["entries"] = sum(d.num_entries for d in live_dispatchers())
    return out


def clear_caches() -> None:
    """Forget in-memory binaries (not the disk cache); wrapped kernels keep their entries
    until their own ``clear_entries()``."""
    import sys
    mod = sys.modules.get("fastdispatch.backends.triton.binaries")
    if mod is not None:
        mod.clear_memory()
        from fastdispatch.dispatcher import live_dispatchers
        for kernel in live_dispatchers():
            getattr(kernel, "_recipes", {}).clear()   # they hold loaded binaries
    cute = sys.modules.get("fastdispatch.backends.cute")
    if cute is not None:
        cute.clear_memory_cache()


def __getattr__(name):
    # Imported on first use (they load the scaled_mm op registration), then module globals:
    # ``fastdispatch.scaled_mm`` is :func:`fastdispatch.kernels.scaled_mm.api.scaled_mm` itself
    # (torch._scaled_mm's signature), not a wrapper: a wrapper's per-call import and argument
    # forwarding cost ~1.8 us per call (timeit, CI CPU), more than the dispatcher hit itself.
    if name == "scaled_mm":
        from fastdispatch.kernels.scaled_mm.api import scaled_mm as value
    elif name == "functional":
        import importlib
        value = importlib.import_module("fastdispatch.functional")
    else:
        raise AttributeError(f"module 'fastdispatch' has no attribute {name!r}")
    globals()[name] = value
    return value
