"""Process-wide counters of the slow path (misses, compiles, disk cache, fallbacks).

Lifetime: per process. Nothing here runs on a hit: hits are counted per entry in C and summed
on demand by ``fastdispatch.stats()``.
"""
from __future__ import annotations

import collections
import threading

_lock = threading.Lock()
_counters: collections.Counter = collections.Counter()
_fallbacks: collections.Counter = collections.Counter()


def record(name: str, amount: float = 1) -> None:
    """Add ``amount`` to counter ``name``."""
    with _lock:
        _counters[name] += amount


def record_fallback(reason: str) -> None:
    """Count one entry that launches through the slow path, by reason."""
    with _lock:
        _fallbacks[reason] += 1


def snapshot() -> dict:
    """A copy of every counter, with ``fallbacks`` as {reason: count}."""
    with _lock:
        out = dict(_counters)
        out["fallbacks"] = dict(_fallbacks)
    return out


def reset() -> None:
    """Zero every counter (tests)."""
    with _lock:
        _counters.clear()
        _fallbacks.clear()
