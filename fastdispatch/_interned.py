"""Process-wide table that gives hashable objects (constexpr values, knob strings) small ids.

Shared by the Cython key builder and its pure-Python twin so both produce identical key words.
Lifetime: per process; only grows (a handful of entries per kernel in practice).
"""
from __future__ import annotations

import threading

INTERNED: dict = {}
_lock = threading.Lock()


def intern_id(value) -> int:
    """The id of ``value`` (equal values share an id); raises TypeError if it is unhashable."""
    found = INTERNED.get(value)
    if found is not None:
        return found
    with _lock:
        return INTERNED.setdefault(value, len(INTERNED) + 1)
