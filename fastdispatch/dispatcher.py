"""The slow path shared by every backend: bind, validate, compile once, publish.

Lifetime: per miss. :class:`Dispatcher` subclasses the live key builder's ``FastKernel`` (numba's
shape): calling a dispatcher runs ``FastKernel.__call__`` in C (key -> table -> launch) and only a
miss comes back to Python, into :meth:`Dispatcher._handle_miss`. That method binds keyword and
default arguments, lets the backend validate (clear ``TypeError``/``ValueError``, nothing
cached), then builds the entry under a per-key lock with a double check, so N threads missing on
one key compile it once and nobody sees a half-built entry.

A backend subclasses :class:`Dispatcher`, passes its ``param_names`` (and constexpr roles), and
implements ``validate`` and ``make_entry``.
"""
from __future__ import annotations

import logging
import time
import weakref

import torch

from fastdispatch import _stats as stats, keys
from fastdispatch.cache import SingleFlight
from fastdispatch.knobs import knobs as fd_knobs

log = logging.getLogger("fastdispatch")

MODE_NULL, MODE_DRIVER, MODE_CALL, MODE_SLOW = keys.MODE_NULL, keys.MODE_DRIVER, keys.MODE_CALL, keys.MODE_SLOW
ROLE_CLASS, ROLE_CONSTEXPR, ROLE_EXACT, ROLE_LAYOUT, ROLE_VALUE = (
    keys.ROLE_CLASS, keys.ROLE_CONSTEXPR, keys.ROLE_EXACT, keys.ROLE_LAYOUT, keys.ROLE_VALUE)
ROLE_RUNTIME = ROLE_CLASS
NO_DEFAULT = keys.NO_DEFAULT


_is_compiling = torch.compiler.is_compiling

_live: "weakref.WeakSet" = weakref.WeakSet()   # for fastdispatch.stats() hit counts


def live_dispatchers() -> list:
    """Every dispatcher still alive in this process."""
    return list(_live)


def _refuse_during_capture(name: str) -> None:
    # Compiling, loading a module or syncing inside CUDA graph capture corrupts or invalidates
    # the capture (triton#10596): a miss there is refused before anything happens.
    if torch.cuda.is_available() and torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            f"fastdispatch: {name}() missed its cache during CUDA graph capture; compiling or "
            f"loading a kernel now would break the capture. Warm up first: call it once with "
            f"the same argument types (dtype, alignment, shapes) before capturing.")


# Argument packing for the generic op schema: layout holds (code, payload) per argument.
_TENSOR, _INT, _FLOAT, _BOOL, _NONE, _CONST_INT = range(6)


def _pack(args, roles):
    tensors, ints, floats, layout = [], [], [], []
    for value, role in zip(args, roles):
        if isinstance(value, torch.Tensor):
            layout += (_TENSOR, len(tensors)); tensors.append(value)
        elif value is None:
            layout += (_NONE, 0)
        elif isinstance(value, bool):
            layout += (_BOOL, int(value))
        elif isinstance(value, int) and role == ROLE_CONSTEXPR:
            layout += (_CONST_INT, value)
        elif isinstance(value, (int, torch.SymInt)):
            layout += (_INT, len(ints)); ints.append(value)
        elif isinstance(value, float):
            layout += (_FLOAT, len(floats)); floats.append(value)
        else:
            raise TypeError(f"torch.compile: argument of type {type(value).__name__} cannot pass "
                            f"through the fastdispatch op (tensors, ints, floats, bools, None)")
    return tensors, ints, floats, layout


def _unpack(tensors, ints, floats, layout):
    out = []
    for code, payload in zip(layout[0::2], layout[1::2]):
        out.append(tensors[payload] if code == _TENSOR else ints[payload] if code == _INT
                   else floats[payload] if code == _FLOAT else bool(payload) if code == _BOOL
                   else None if code == _NONE else payload)
    return tuple(out)


def _op_ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name) or "kernel"


class Dispatcher(keys.FastKernel):
    """A callable kernel: ``d(*args)`` launches the specialization for ``args``.

    ``param_names`` are the call's parameters; ``roles`` says what of each argument the key
    holds (``keys.ROLE_*``; default ROLE_EXACT: exact shapes, safe for any backend);
    ``defaults`` fills parameters left out; ``options``: trailing keyword-only parameters
    (default None) such as per-call launch options. Keyword calls and omitted defaults are
    bound in C. ``max_entries`` bounds the key table (default ``knobs.max_entries``).
    Subclasses implement :meth:`validate` and :meth:`make_entry`.

    Example (a CPU reference backend, runnable anywhere)::

        >>> from fastdispatch.backends.reference import reference_kernel
        >>> import torch
        >>> add = reference_kernel(lambda x, y, out: out.copy_(x + y), ["x", "y", "out"])
        >>> out = torch.empty(3); _ = add(torch.ones(3), torch.ones(3), out); out.tolist()
        [2.0, 2.0, 2.0]
    """

    # State in slots, not a __dict__: under torch.compile Dynamo guards an instance dict on
    # every call (backends/triton/traced.py). Subclasses without __slots__ get a dict as usual.
    __slots__ = ("name", "param_names", "option_names", "defaults", "_flight", "_role_list", "_op", "_op_def")

    def __init__(self, name: str, param_names, roles: bytes | None = None, defaults: dict | None = None,
                 knobs=None, *, options=(), max_entries: int | None = None):
        param_names = tuple(param_names)
        options = tuple(options)
        roles = roles if roles is not None else bytes([ROLE_EXACT] * len(param_names))
        if len(roles) != len(param_names):
            raise ValueError(f"roles has {len(roles)} entries for {len(param_names)} parameters")
        defaults = dict(defaults or {})
        names = param_names + options
        table = tuple(defaults.get(n, NO_DEFAULT) for n in param_names) + (None,) * len(options)
        super().__init__(roles + bytes([ROLE_CONSTEXPR] * len(options)), type(self)._handle_miss,
                         knobs, names=names, defaults=table, n_positional=len(param_names),
                         max_entries=max_entries or fd_knobs.max_entries)
        self.name = name
        self.param_names = param_names
        self.option_names = options
        self.defaults = defaults
        self._flight = SingleFlight()
        self._role_list = list(self.roles)   # Dynamo (torch 2.11) cannot iterate bytes while tracing
        self._register_op()
        _live.add(self)

    # -- torch.compile ------------------------------------------------------------------------
    # Eager calls never come here: FastKernel's C tp_call is (re)installed on every subclass
    # when its first instance is made, so `k(*args)` runs C. This Python `__call__` is what
    # TorchDynamo finds when it looks the method up on the type while tracing: it routes the
    # call through this dispatcher's torch.library custom op, so `torch.compile(fullgraph=True)`
    # records an opaque op instead of breaking the graph, and eager calls never pay the op
    # boundary (~6-10 us, pytorch#177109). The op's schema is generic (arguments packed by
    # type, with a static layout list), so it is registered once, eagerly, at construction.
    # Every attribute the trace reads becomes a guard that the compiled function checks on
    # each call (~25 ns per guard line on the H200 host, ``bench/compile_probe.py``), hence
    # ``_is_compiling`` bound at module level (one code guard, not torch -> compiler ->
    # is_compiling). The Triton backend overrides both methods with Triton's own call.
    def __call__(self, *args, **kwargs):
        if _is_compiling():
            return self._compiled_call(self.bind(args, kwargs), None)
        # Eager calls reach this only with the pure-Python key builder: its table call counts
        # hits per entry (as the C one does) and comes back to _handle_miss on a miss.
        return keys.FastKernel.__call__(self, *args, **kwargs)

    def __getitem__(self, grid, *_not_specialized):
        # As __call__: eager ``k[grid]`` runs C (mp_subscript); TorchDynamo traces this. The
        # unused ``*_`` keeps CPython (3.11+) from specializing ``k[grid]`` to a direct call of
        # this Python function (BINARY_SUBSCR_GETITEM takes only plain two-argument functions),
        # which would bypass the C slot: +0.5 us per subscript on the CI host, +0.8 us per
        # ``fast[grid](...)`` call on the lent H200 (bench/probe_dropin.py).
        if _is_compiling():
            return lambda *args, **kwargs: self._compiled_call(self.bind(args, kwargs), grid)
        return keys.FastKernel.__getitem__(self, grid)

    def _compiled_call(self, args: tuple, grid):
        """What torch.compile records for a call: this dispatcher's custom op (a backend may
        give Dynamo its kernel itself instead, e.g. Triton's)."""
        if grid is not None:
            raise TypeError(f"{self.name}[grid]: this kernel takes no launch grid")
        tensors, ints, floats, layout = _pack(args, self._role_list)
        return self._op(tensors, ints, floats, layout)

    def _register_op(self):
        """Register this dispatcher's op ``fastdispatch::<name>_<id>`` (all tensors may be written)."""
        op_name = f"fastdispatch::{_op_ident(self.name)}_{id(self):x}"
        eager = weakref.ref(self)

        def impl(tensors, ints, floats, layout):
            eager()(*_unpack(tensors, ints, floats, layout))

        op = torch.library.custom_op(op_name, impl, mutates_args=["tensors"],
                                     schema="(Tensor(a!)[] tensors, SymInt[] ints, float[] floats, "
                                            "int[] layout) -> ()")
        op.register_fake(lambda tensors, ints, floats, layout: None)
        self._op_def = op   # keeps the registration alive with the dispatcher
        namespace, name = op_name.split("::")
        self._op = getattr(getattr(torch.ops, namespace), name).default


    def __repr__(self):
        return f"<{type(self).__name__} {self.name}({', '.join(self.param_names)})>"

    # -- slow path -------------------------------------------------------------------------
    def bind(self, args: tuple, kwargs: dict | None) -> tuple:
        """All arguments (parameters, then options) for ``args``/``kwargs``, with defaults;
        TypeError names the problem. The C hot path binds the same way (``_keys._bind``)."""
        kwargs = dict(kwargs or {})
        n = len(self.param_names)
        if len(args) > n:
            raise TypeError(f"{self.name}() takes {n} arguments "
                            f"({', '.join(self.param_names)}) but {len(args)} were given")
        bound = list(args)
        for name in self.param_names[len(args):]:
            if name in kwargs:
                bound.append(kwargs.pop(name))
            elif name in self.defaults:
                bound.append(self.defaults[name])
            else:
                raise TypeError(f"{self.name}() missing argument '{name}' "
                                f"(expected {n}: {', '.join(self.param_names)})")
        for name in self.option_names:
            bound.append(kwargs.pop(name, None))
        for name in kwargs:
            if name in self.param_names:
                raise TypeError(f"{self.name}() got multiple values for argument '{name}'")
            known = ", ".join(self.param_names + self.option_names)
            raise TypeError(f"{self.name}() got an unexpected keyword argument '{name}' "
                            f"(parameters: {known})")
        return tuple(bound)

    def _handle_miss(self, args: tuple, kwargs: dict | None, grid=None):
        if kwargs or len(args) != len(self.param_names) + len(self.option_names):
            # Only Python could bind this call (C's binder defers errors here): bind (raising
            # the clear error, if any), then run the positional call: a hit, or a plain miss.
            args = self.bind(args, kwargs)
            call = keys.FastKernel.__getitem__(self, grid) if grid is not None else self._positional
            return call(*args)
        self.validate(args)
        _refuse_during_capture(self.name)
        words = self.key_of(*args)
        with self._flight.lock(words):
            entry = self.lookup(words)
            if entry is None:
                stats.record("misses")
                started = time.perf_counter()
                entry = self.make_entry(args, words)
                stats.record("entry_seconds", time.perf_counter() - started)
                self.publish(entry)
        return self.launch_once(entry, args, grid)

    def _positional(self, *args):
        return keys.FastKernel.__call__(self, *args)

    def launch_once(self, entry, args: tuple, grid=None):
        """Launch ``entry`` for the call that published it, through the same launcher a hit
        uses (a first call must not build Triton's launcher, ~0.5 s on a cold Triton cache).
        Not counted as a hit."""
        return entry.launch(self, args, grid)

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
