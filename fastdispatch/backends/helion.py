"""Helion backend: a ``@helion.kernel`` behind the fastdispatch hot path (issue 15).

Lifetime: per key (a miss). A hit never comes here: the C hot path builds the key, finds a
MODE_CALL entry and calls its ``fn``, which runs the bound kernel's compiled host function
(Helion's generated Python: output allocation, grid, ``_launcher(...)``) with fastdispatch's
launcher in place of Helion's default one -- or, on Helion 1.4, a replay of its one launch
(``helion_replay``), or a MODE_DRIVER entry that launches the inner Triton binary straight from
C, returning the call's ``out`` (``helion_direct``). Helion's own ``Kernel.__call__`` (its
argument normalization, ``_fast_dispatch_key`` / prepared-call guards, ``bound._run``) is what a
hit skips.

A miss calls the Helion kernel itself, so config selection, autotuning, compilation, its caches
and its errors are Helion's (a bad argument raises Helion's error; nothing is published). Then
the entry is built from the bound kernel Helion used for those arguments:

* **fast**: ``bound._run(*args, _launcher=launcher)``, when every specialization Helion keys
  that bound kernel on is a function of our key. Our key holds per tensor dtype, exact shape
  and strides (``ROLE_EXACT``), device index and 16-byte alignment;
  per int its class (==1, %16, i32/i64), floats and bools by type, str and ``hl.constexpr``
  parameters by exact value (role 1). Helion's bound-kernel key (1.4.0 and 1.5.x,
  ``Kernel._base_specialization_key`` plus ``_specialize_extra``) holds dtypes, shapes (exact
  with ``static_shapes``, else buckets and an int64-index bit), ``_dynamo_static_indices``,
  numeric types, constexpr and str values, device type and capability, a distributed bit, a
  user ``key=`` result, and (1.5.x) input aliasing, plus extractors found while compiling:
  tensor sizes/strides (``hl.specialize`` on a size) and descriptor layouts (covered), device
  SM counts (covered: device index), argument values (covered only for role-1 parameters),
  pointer alignment / storage offsets / runtime classifiers (not covered).
* **passthrough**: ``fn`` is the Helion kernel itself, for everything not covered (a ``key=``
  function, distributed kernels, a scalar argument that ``hl.specialize`` reads, unknown
  extractors, ref mode, ...): correct at Helion's own speed, said once per reason in the log.
* **replay** / **direct** (Helion 1.4, Triton backend, fast): the host function's one launch
  replayed on the inner wrapper (``info["replay"]``); when every kernel parameter of the
  inner wrapper's entry reads one of the call's tensors, the entry launches that entry's binary
  directly, returning the call's ``out`` (``info["direct"]`` is True, or why not). The key then
  also holds Triton's knob word, as the inner wrappers' keys do.

Calls whose arguments our key cannot name exactly (lists, dicts, tensor subclasses, ...) run
Helion's call and publish nothing.

Invalidation: ``Kernel.reset`` is wrapped to clear every wrapper's table. On Helion 1.4 the
only other way a bound kernel's host function changes is ``BoundKernel.set_config``
(``autotune`` included), also wrapped, so a fast ``fn`` is a ``functools.partial`` of the host
function. On Helion >= 1.5 (late ``hl.specialize`` discovery, bounds retired inside Helion) a
fast ``fn`` checks ``bound._run is run`` and the kernel's reset and specialization generations
per call; a stale entry clears the table and the call misses again.

Launcher: each Triton ``JITFunction`` the host code launches gets one cached
``fastdispatch.triton_kernel(jit_fn)`` wrapper, called ``wrapper[grid](*args, num_warps=...,
num_stages=...)`` (the drop-in calling convention), when the installed fastdispatch has it;
until then, and for launches with Helion-private options (``_remote_*``, ``_persistent_*``,
...), Helion's own ``default_launcher``. Under ``torch.compile`` a call is the Helion kernel's
own call (Helion's Dynamo support), so ``fullgraph=True`` works.
"""
from __future__ import annotations

import functools
import inspect
import logging
import threading
import weakref

import torch

from fastdispatch import _stats as stats, keys
from fastdispatch.backends.helion_coverage import uncovered_reason
from fastdispatch.backends.helion_direct import direct_recipe
from fastdispatch.backends.helion_replay import Replay, build_replay
from fastdispatch.dispatcher import (MODE_CALL, MODE_DRIVER, ROLE_CONSTEXPR, Dispatcher,
                                     _refuse_during_capture)

log = logging.getLogger("fastdispatch")

ROLE_CLASS = getattr(keys, "ROLE_CLASS", keys.ROLE_RUNTIME)
#: Tensor (and unannotated) parameters: exact shape and strides in the key (Helion's static
#: shapes specialize on them; buckets and ``hl.specialize`` of sizes are functions of them).
#: Scalars under ROLE_EXACT are keyed as under ROLE_CLASS (keys.py).
ROLE_TENSOR = getattr(keys, "ROLE_EXACT", ROLE_CLASS)

_PLAIN = frozenset({torch.Tensor, torch.nn.Parameter, int, float, bool, type(None), str})
_SCALAR_ANNOTATIONS = {int: ROLE_CLASS, float: ROLE_CLASS, bool: ROLE_CLASS,
                       "int": ROLE_CLASS, "float": ROLE_CLASS, "bool": ROLE_CLASS,
                       str: ROLE_CONSTEXPR, "str": ROLE_CONSTEXPR}
_said: set = set()


def helion_version() -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version("helion")
    except importlib.metadata.PackageNotFoundError:
        return "?"


# -- the launcher ---------------------------------------------------------------------------------
_wrappers: dict = {}            # JITFunction -> fastdispatch wrapper (drop-in convention)
_wrappers_lock = threading.Lock()
_FAST_OPTIONS = frozenset({"num_warps", "num_stages"})


def dropin_available() -> bool:
    """Whether ``fastdispatch.triton_kernel(fn)`` takes no grid (then ``k[grid](...)``)."""
    import fastdispatch
    grid = inspect.signature(fastdispatch.triton_kernel).parameters.get("grid")
    return grid is not None and grid.default is not inspect.Parameter.empty


def _wrapper_for(jit_fn):
    wrapper = _wrappers.get(jit_fn)
    if wrapper is None:
        from fastdispatch import triton_kernel
        with _wrappers_lock:
            wrapper = _wrappers.get(jit_fn)
            if wrapper is None:
                wrapper = _wrappers[jit_fn] = triton_kernel(jit_fn)
    return wrapper


def make_launcher():
    """The ``_launcher`` passed to Helion's generated host functions (see the module docstring)."""
    from helion.runtime import default_launcher

    if not dropin_available():
        # Temporary: until the drop-in convention lands, Helion's own launcher (Triton's
        # JITFunction.run, ~15-19 us on the lent H100); the hit still skips Helion's dispatch.
        return default_launcher
    wrappers_get = _wrappers.get
    fast_options = _FAST_OPTIONS

    def fastdispatch_launcher(triton_kernel, grid, *args, **options):
        if options.keys() <= fast_options:
            wrapper = wrappers_get(triton_kernel)
            if wrapper is None:
                wrapper = _wrapper_for(triton_kernel)
            return wrapper[grid](*args, **options)
        return default_launcher(triton_kernel, grid, *args, **options)

    return fastdispatch_launcher


def _annotation_role(annotation) -> int:
    from helion.language.constexpr import ConstExpr

    if annotation is ConstExpr:
        return ROLE_CONSTEXPR
    try:
        return _SCALAR_ANNOTATIONS.get(annotation, ROLE_TENSOR)
    except TypeError:   # unhashable annotation object
        return ROLE_TENSOR


# -- the wrapper ----------------------------------------------------------------------------------
class HelionKernel(Dispatcher):
    """A ``@helion.kernel`` behind the fastdispatch hot path (see :func:`helion_kernel`)."""

    def __init__(self, kernel, *, name=None):
        import helion

        if not isinstance(kernel, helion.Kernel):
            raise TypeError(f"helion_kernel: expected a @helion.kernel object, got "
                            f"{type(kernel).__name__}")
        self.kernel = kernel
        params = list(kernel.signature.parameters.values())
        roles = bytes(_annotation_role(a) for a in kernel._annotations)
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        generations = hasattr(kernel, "_specialization_generation")
        # Helion 1.4 + Triton: Triton's knob word in our key too, as in the inner wrappers' keys
        # (a debug / instrumentation change re-specializes), so a direct entry may launch the
        # inner binary (helion_direct; ~25 ns per call: two dict probes).
        self._knobs_keyed = not generations and kernel.settings.backend == "triton"
        knobs = None
        if self._knobs_keyed:
            import triton.knobs as triton_knobs
            knobs = (triton_knobs.runtime, triton_knobs.compilation)
        super().__init__(name or kernel.name, [p.name for p in params], roles, defaults, knobs)
        self.launcher = make_launcher()
        self._generations = generations
        _watch_reset(kernel, self)

    def __call__(self, *args, **kwargs):
        # Eager calls run FastKernel's C tp_call, not this (dispatcher.py). Dynamo sees this:
        # tracing goes through Helion's own torch.compile support.
        if torch.compiler.is_compiling():
            return self.kernel(*args, **kwargs)
        return Dispatcher.__call__(self, *args, **kwargs)

    # -- slow path -------------------------------------------------------------------------
    def _handle_miss(self, args: tuple, kwargs: dict | None, grid=None):
        if grid is not None:
            raise TypeError(f"{self.name}[grid]: a Helion kernel computes its own grid; call it "
                            f"without one")
        if kwargs or len(args) != len(self.param_names):
            # The C binder handles keywords and defaults; what comes here is what it could not
            # bind: Helion's own call raises Helion's error (or runs what Helion accepts).
            try:
                args = self.bind(args, kwargs)
            except TypeError:
                return self.kernel(*args, **(kwargs or {}))
            return self._positional(*args)
        _refuse_during_capture(self.name)
        if not self._keyable(args):
            stats.record_fallback("helion: arguments the key cannot name")
            return self.kernel(*args)
        words = self.key_of(*args)
        with self._flight.lock(words):
            entry = self.lookup(words)
            if entry is not None:
                return self.launch_once(entry, args)
            result = self.kernel(*args)   # Helion: bind, config/autotune, compile, run once
            stats.record("misses")
            entry = self.make_entry(args, words)
            self.publish(entry)
        return result

    def _keyable(self, args: tuple) -> bool:
        roles = self.roles
        for value, role in zip(args, roles):
            if type(value) not in _PLAIN and role != ROLE_CONSTEXPR:
                return False
        return True

    def make_entry(self, args: tuple, words: tuple):
        kernel = self.kernel
        try:
            bound = kernel.bind(args)
            reason = uncovered_reason(kernel, bound, self.roles, args)
        except Exception as exc:  # noqa: BLE001  (Helion ran the call; only the fast path is lost)
            bound, reason = None, f"inspecting the bound kernel failed: {type(exc).__name__}: {exc}"
        if reason is not None:
            stats.record_fallback("helion: " + reason.split(" (")[0])
            if (self.name, reason) not in _said:
                _said.add((self.name, reason))
                log.info("fastdispatch: %s runs through Helion's own call for this key: %s",
                         self.name, reason)
            fn = kernel
            info = {"path": "helion", "reason": reason}
        else:
            fn = self._fast_fn(bound, args)
            replay = fn if isinstance(fn, Replay) else None
            info = {"path": "fast", "config": bound._config, "launcher": self.launcher.__name__,
                    "backend": kernel.settings.backend, "replay": replay is not None}
            if replay is not None:
                fn = replay.fn
                direct, why = direct_recipe(replay, args, info, name=self.name,
                                            knobs_keyed=self._knobs_keyed)
                if direct is not None:
                    return keys.Entry(words, MODE_DRIVER, **direct)
                info["direct"] = why
        return keys.Entry(words, MODE_CALL, fn=fn, slow=lambda a: fn(*a), info=info)

    def _fast_fn(self, bound, args: tuple):
        run = bound._run
        kernel = self.kernel
        stale = self._stale
        launch_kw = {}
        if kernel.settings.backend == "triton" and "_launcher" in inspect.signature(run).parameters:
            launch_kw = {"_launcher": self.launcher}
        if not launch_kw:   # another backend (CuTe, ...): its host code with Helion's launcher
            if self._generations:
                reset, spec = kernel._reset_generation, kernel._specialization_generation

                def fast(*args):
                    if (bound._run is run and kernel._specialization_generation == spec
                            and kernel._reset_generation == reset):
                        return run(*args)
                    return stale(args)
                return fast

            def fast(*args):
                if bound._run is run:
                    return run(*args)
                return stale(args)
            return fast
        launcher = launch_kw["_launcher"]
        if not self._generations:
            # Helion 1.4: only set_config (autotune included) re-points bound._run, and it is
            # watched: no per-call guard, a C partial (~0.2-0.7 us less than a guard closure at
            # 2-16 inputs on the CPU host of the tests).
            _watch_set_config(bound, self)
            if launcher.__name__ == "fastdispatch_launcher":
                # The host function's one launch, replayed on the inner Triton wrapper when it
                # launches only the call's own tensors and key-fixed constants (helion_replay):
                # a Replay, which make_entry turns into a direct launch where it can.
                replay = build_replay(run, args, self.roles, _wrapper_for, ROLE_CLASS)
                if replay is not None:
                    return replay
            return functools.partial(run, _launcher=launcher)
        if self._generations:
            reset, spec = kernel._reset_generation, kernel._specialization_generation

            def fast(*args):
                if (bound._run is run and kernel._specialization_generation == spec
                        and kernel._reset_generation == reset):
                    return run(*args, _launcher=launcher)
                return stale(args)
            return fast

        def fast(*args):
            if bound._run is run:
                return run(*args, _launcher=launcher)
            return stale(args)
        return fast

    def _stale(self, args: tuple):
        """Helion re-configured or re-specialized the bound kernel: forget every entry, miss."""
        stats.record_fallback("helion: stale entry")
        self.clear_entries()
        return self(*args)


def _watch(obj, method: str, wrapper) -> None:
    """Make ``obj.<method>(...)`` (``BoundKernel.set_config``, ``Kernel.reset``) also clear the
    tables of the fastdispatch wrappers using ``obj``."""
    attr = f"_fastdispatch_watchers_{method}"
    watchers = obj.__dict__.get(attr)
    if watchers is None:
        watchers = weakref.WeakSet()
        original = getattr(obj, method)

        def call(*a, **kw):
            result = original(*a, **kw)
            for w in list(watchers):
                w.clear_entries()
            return result

        call.__doc__ = original.__doc__
        setattr(obj, attr, watchers)
        setattr(obj, method, call)
    watchers.add(wrapper)


def _watch_set_config(bound, wrapper) -> None:
    """``bound.set_config(...)`` (autotune included) clears ``wrapper``'s table."""
    _watch(bound, "set_config", wrapper)


def _watch_reset(kernel, wrapper) -> None:
    """``kernel.reset()`` clears ``wrapper``'s table."""
    _watch(kernel, "reset", wrapper)


def helion_kernel(kernel=None, /, **helion_options):
    """Wrap a ``@helion.kernel`` so its calls run on fastdispatch's hot path.

    ``helion_kernel(k)`` wraps a Helion kernel object; ``helion_kernel(fn, **options)`` and
    ``@helion_kernel(**options)`` first make one with ``helion.kernel(fn, **options)``
    (``config=``, ``static_shapes=``, ...); ``@helion_kernel`` on a plain function uses
    Helion's defaults. Calls take the Helion kernel's arguments and return its results::

        @fastdispatch.helion_kernel
        @helion.kernel(config=helion.Config(block_sizes=[1024]), static_shapes=True)
        def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = torch.empty_like(x)
            for tile in hl.tile(out.size(0)):
                out[tile] = x[tile] + y[tile]
            return out

        out = add(x, y)     # first call: Helion's own; then the hot path
    """
    import helion

    def wrap(target):
        if isinstance(target, helion.Kernel):
            if helion_options:
                raise TypeError("helion_kernel: options are for a plain function; this is "
                                "already a @helion.kernel")
            return HelionKernel(target)
        if callable(target):
            return HelionKernel(helion.kernel(target, **helion_options))
        raise TypeError(f"helion_kernel: expected a @helion.kernel or a function, got "
                        f"{type(target).__name__}")

    return wrap if kernel is None else wrap(kernel)
