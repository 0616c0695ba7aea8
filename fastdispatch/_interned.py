"""Process-wide table that gives hashable objects (constexpr values, knob strings) small ids.

Shared by the Cython key builder and its pure-Python twin so both produce identical key words.
Equal values share an id only when their types match too, recursively through tuples: Python
says ``(1,) == (True,) == (1.0,)``, but Triton compiles those constexprs apart. Plain ``str``
values are their own table key, so the C hot path can look them up without building a key;
every other value goes in under a typed key that no user value can equal.
Lifetime: per process; only grows (a handful of entries per kernel in practice).
"""
from __future__ import annotations

import threading

INTERNED: dict = {}
_lock = threading.Lock()
_TYPED = object()   # marks typed keys: no user value contains it


def _typed(value):
    if type(value) is tuple:
        return (_TYPED, tuple, tuple(_typed(v) for v in value))
    return (_TYPED, type(value), value)


def intern_id(value) -> int:
    """The id of ``value`` (equal values of equal types share an id); TypeError if unhashable."""
    key = value if type(value) is str else _typed(value)
    found = INTERNED.get(key)
    if found is not None:
        return found
    with _lock:
        return INTERNED.setdefault(key, len(INTERNED) + 1)
