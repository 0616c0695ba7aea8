"""The slow path shared by every backend: bind, validate, compile once, publish.

Lifetime: per miss. :class:`Dispatcher` subclasses the live key builder's ``FastKernel`` (numba's
shape): calling a dispatcher runs ``FastKernel.__call__`` in C (key -> table -> launch) and only a
miss comes back to Python, into :meth:`Dispatcher._handle_miss`. That method binds keyword and
default arguments, lets the backend validate (clear ``TypeError``/``ValueError``, nothing
cached), then builds the entry under a per-key lock with a double check, so N threads missing on
one key compile it once and nobody sees a half-built entry.

A backend subclasses :class:`Dispatcher` and implements ``param_names``, ``validate`` and
``make_entry``.
"""
from __future__ import annotations

import logging
import time

from fastdispatch import _stats as stats, keys
from fastdispatch.cache import SingleFlight

log = logging.getLogger("fastdispatch")

MODE_NULL, MODE_DRIVER, MODE_CALL, MODE_SLOW = keys.MODE_NULL, keys.MODE_DRIVER, keys.MODE_CALL, keys.MODE_SLOW
ROLE_RUNTIME, ROLE_CONSTEXPR = keys.ROLE_RUNTIME, keys.ROLE_CONSTEXPR


class Dispatcher(keys.FastKernel):
    """A callable kernel: ``d(*args)`` launches the specialization for ``args``.

    ``param_names`` are the call's positional parameters; ``roles`` marks constexpr ones
    (their values are part of the key); ``defaults`` fills trailing parameters left out.
    Subclasses implement :meth:`validate` and :meth:`make_entry`.

    Example (a CPU reference backend, runnable anywhere)::

        >>> from fastdispatch.backends.reference import reference_kernel
        >>> import torch
        >>> add = reference_kernel(lambda x, y, out: out.copy_(x + y), ["x", "y", "out"])
        >>> out = torch.empty(3); _ = add(torch.ones(3), torch.ones(3), out); out.tolist()
        [2.0, 2.0, 2.0]
    """

    def __init__(self, name: str, param_names, roles: bytes | None = None, defaults: dict | None = None,
                 knobs=None):
        param_names = tuple(param_names)
        roles = roles if roles is not None else bytes(len(param_names))
        if len(roles) != len(param_names):
            raise ValueError(f"roles has {len(roles)} entries for {len(param_names)} parameters")
        super().__init__(roles, type(self)._handle_miss, knobs)
        self.name = name
        self.param_names = param_names
        self.defaults = dict(defaults or {})
        self._flight = SingleFlight()

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}({', '.join(self.param_names)})>"

    # -- slow path -------------------------------------------------------------------------
    def bind(self, args: tuple, kwargs: dict | None) -> tuple:
        """Positional arguments for ``args``/``kwargs``, with defaults; TypeError names the problem."""
        kwargs = dict(kwargs or {})
        n = len(self.param_names)
        if len(args) > n:
            raise TypeError(f"{self.name}() takes {n} arguments ({', '.join(self.param_names)}) "
                            f"but {len(args)} were given")
        bound = list(args)
        for name in self.param_names[len(args):]:
            if name in kwargs:
                bound.append(kwargs.pop(name))
            elif name in self.defaults:
                bound.append(self.defaults[name])
            else:
                raise TypeError(f"{self.name}() missing argument '{name}' "
                                f"(expected {n}: {', '.join(self.param_names)})")
        for name in kwargs:
            if name in self.param_names:
                raise TypeError(f"{self.name}() got multiple values for argument '{name}'")
            raise TypeError(f"{self.name}() got an unexpected keyword argument '{name}' "
                            f"(parameters: {', '.join(self.param_names)})")
        return tuple(bound)

    def _handle_miss(self, args: tuple, kwargs: dict | None):
        if kwargs or len(args) != len(self.param_names):
            return self(*self.bind(args, kwargs))  # positional now: a hit, or a positional miss
        self.validate(args)
        words = self.key_of(*args)
        with self._flight.lock(words):
            entry = self.lookup(words)
            if entry is None:
                stats.record("misses")
                started = time.perf_counter()
                entry = self.make_entry(args, words)
                stats.record("entry_seconds", time.perf_counter() - started)
                self.publish(entry)
        return self.launch_once(entry, args)

    @staticmethod
    def launch_once(entry, args: tuple):
        """Launch ``entry`` from Python (the miss's own call), without the hot path."""
        if entry.mode == MODE_NULL:
            return None
        if entry.mode == MODE_CALL:
            return entry.fn(*args)
        return entry.slow(args)

    # -- backend hooks ---------------------------------------------------------------------
    def validate(self, args: tuple) -> None:
        """Raise TypeError/ValueError for bad arguments (names the argument and what was expected)."""

    def make_entry(self, args: tuple, words: tuple):
        """Build the ``keys.Entry`` for a call's key ``words`` (compile or load as needed)."""
        raise NotImplementedError

    # -- introspection ---------------------------------------------------------------------
    def entries(self) -> list:
        """The published entries (a snapshot)."""
        return self.published()

    def clear_entries(self) -> None:
        """Forget every published entry; the next calls miss (and re-specialize)."""
        self.clear()
