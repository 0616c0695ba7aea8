"""CPU reference backend: a Python callable per key, so the dispatcher runs without a GPU.

Lifetime: per key. ``make`` is called once per key (the "compile"); its result is called on
every hit through the same C hot path as GPU kernels (MODE_CALL), or not at all in ``null``
mode, which measures the key + lookup alone (``python -m fastdispatch bench keys``).
"""
from __future__ import annotations

import threading

from fastdispatch.dispatcher import MODE_CALL, MODE_NULL, Dispatcher
from fastdispatch import keys


class ReferenceKernel(Dispatcher):
    """Dispatch to ``make(args)``'s result, built once per key (see :func:`reference_kernel`)."""

    def __init__(self, make, param_names, *, roles=None, defaults=None, null=False, name=None,
                 validate=None, max_entries=None):
        super().__init__(name or getattr(make, "__name__", "reference"), param_names, roles, defaults,
                         max_entries=max_entries)
        self._make = make
        self._null = null
        self._validate = validate
        self.builds = 0
        self._count_lock = threading.Lock()

    def validate(self, args):
        if self._validate is not None:
            self._validate(args)

    def make_entry(self, args, words):
        fn = self._make(args)
        with self._count_lock:
            self.builds += 1
        if self._null:
            return keys.Entry(words, MODE_NULL)
        return keys.Entry(words, MODE_CALL, fn=fn, slow=lambda a: fn(*a))


def reference_kernel(fn, param_names, **kwargs) -> ReferenceKernel:
    """A dispatcher that calls ``fn(*args)`` on every call (one entry per key)."""
    return ReferenceKernel(lambda args: fn, param_names, name=getattr(fn, "__name__", None), **kwargs)


def null_kernel(n_args: int) -> ReferenceKernel:
    """A dispatcher whose hits do nothing: the cost of key + lookup alone."""
    return ReferenceKernel(lambda args: None, [f"a{i}" for i in range(n_args)], null=True, name="null")
