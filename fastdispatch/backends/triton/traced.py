"""torch.compile's view of one ``TritonKernel``: traced methods written for that kernel.

Lifetime: per kernel object (made once, when it is wrapped). Under torch.compile every value the
trace reads off the wrapper becomes a guard that the compiled function checks on every call. The
general traced methods (``OffHotPath.__getitem__`` / ``__call__``) read ``_is_compiling`` and the
``_traced`` tuple (the fixed constexprs, the positional limit, the omitted defaults): ~11 guard
nodes beside the native call's one, and 1.03-1.06x the native call's time per compiled call on the
lent H200 (``bench/compile_probe.py``); on the CPU stand-in (``bench/compile_overhead_cpu.py``) the
tuple and its closure cost ~1.5% and the instance ``__dict__`` another ~0.7%.

So each kernel gets its own subclass whose ``__getitem__`` / ``__call__`` hold the kernel's
constants as literals in their code, where the trace reads no guard: the trace reads only
``self.kernel`` (Triton's object: one ID_MATCH, as the native call's) and, for a wrap-time grid
callable, ``self.grid``. ``TritonKernel`` keeps its state in ``__slots__`` (no ``__dict__`` to
guard). A kernel whose constants are not literals (a dtype as a fixed constexpr, ...), a user's
subclass, and the pure-Python key builder (whose eager calls run these methods) keep the general
methods.
"""
from __future__ import annotations

import itertools
import linecache
import math

from fastdispatch.backends.triton import grids

_LITERAL_TYPES = (bool, int, str, type(None))
_serial = itertools.count()   # one source file name per generated class (linecache, tracebacks)


def _literal(value) -> str | None:
    """The source text that evaluates to ``value``, or None when it has none we trust."""
    if type(value) in _LITERAL_TYPES or (type(value) is float and math.isfinite(value)):
        return repr(value)
    if type(value) is tuple:
        parts = [_literal(v) for v in value]
        if None not in parts:
            return "(" + "".join(p + ", " for p in parts) + ")"
    return None


def _getitem_source(fixed: dict, limit: int, n_params: int, defaults: tuple) -> str | None:
    """``k[grid]`` under torch.compile: Triton's own ``kernel[grid]``, with the fixed constexprs
    added as keywords and the omitted defaults passed (Dynamo's META holds only what a call
    passes, so a META grid reading an omitted default would fail). A call passing more
    positional arguments than the parameters before the first fixed or layer-provided one
    (``limit``) is bound in Python first, as the general method does. With nothing to add it
    is ``kernel[grid]`` itself: too many positional arguments then get Triton's own error."""
    fixed_text = {name: _literal(v) for name, v in fixed.items()}
    default_text = [(position, name, _literal(d)) for position, name, d in defaults]
    if None in fixed_text.values() or any(t is None for _, _, t in default_text):
        return None
    head = "def __getitem__(self, grid, *_not_specialized):"
    if not fixed and not defaults and limit == n_params:
        return f"{head}\n    return self.kernel[grid]\n"
    lines = [head,
             "    launch = self.kernel[grid]",
             "",
             "    def traced(*args, **kwargs):",
             f"        if args[{limit}:]:",
             "            return self._compiled_call(self.bind(args, kwargs), grid)"]
    for position, name, text in default_text:
        # past the limit, the call has returned above unless the argument was omitted
        omitted = f"not args[{position}:] and " if position < limit else ""
        lines += [f"        if {omitted}{name!r} not in kwargs:",
                  f"            kwargs[{name!r}] = {text}"]
    extra = "".join(f", {name}={text}" for name, text in fixed_text.items())
    lines += [f"        return launch(*args, **kwargs{extra})",
              "    return traced"]
    return "\n".join(lines) + "\n"


def _call_source(style: str, grid, call_defaults: tuple, no_default) -> str | None:
    """``k(...)`` under torch.compile with the grid given at wrap time: a grid of the call's
    arguments is called on them (omitted trailing defaults appended), a static grid is a literal;
    keyword calls and anything else are bound in Python first (as the general method does)."""
    head = ["def __call__(self, *args, **kwargs):"]
    bind = "return self._compiled_call(self.bind(args, kwargs), None)"
    if style == grids.STYLE_ARGS:
        count = len(call_defaults)
        required = max((i + 1 for i, d in enumerate(call_defaults) if d is no_default), default=0)
        tail = _literal(call_defaults[required:])
        if tail is None:
            return None
        short = f" or not args[{required - 1}:]" if required else ""
        lines = head + [f"    if kwargs or args[{count}:]{short}:", f"        {bind}"]
        if required < count:   # append the defaults the call omitted (the grid takes every argument)
            lines.append(f"    args = args + {tail}[len(args) - {required}:]")
        lines.append("    return self[tuple(self.grid(*args))](*args)")
    elif style == grids.STYLE_STATIC:
        text = _literal(tuple(grid))
        if text is None:
            return None
        lines = head + [f"    return self[{text}](*args, **kwargs)"]
    elif grid is None:
        lines = head + [f"    {bind}   # the no-grid error"]
    else:
        lines = head + ["    return self[self.grid](*args, **kwargs)"]
    return "\n".join(lines) + "\n"


def _define(source: str, name: str, filename: str):
    """Compile ``source`` (one function definition) under ``filename``, kept in linecache so
    tracebacks and Dynamo's messages show the generated lines."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {}
    exec(compile(source, filename, "exec"), namespace)   # noqa: S102 (our own template, literals only)
    return namespace[name]


def traced_class(base: type, kernel_name: str, fixed: dict, limit: int, n_params: int, defaults: tuple,
                 style: str, grid, call_defaults: tuple, no_default) -> type | None:
    """A subclass of ``base`` (no new state) with this kernel's traced methods, or None when its
    constants have no literal form (the general methods then stay). The arguments are the
    general methods' (``TritonKernel._traced``, ``grid_style``, ``grid``, ``_call_defaults``)."""
    getitem = _getitem_source(fixed, limit, n_params, defaults)
    call = _call_source(style, grid, call_defaults, no_default)
    if getitem is None or call is None:
        return None
    filename = f"<fastdispatch traced {kernel_name} #{next(_serial)}>"
    namespace = {"__slots__": (), "__module__": base.__module__, "__qualname__": base.__qualname__,
                 "__doc__": base.__doc__,
                 "__getitem__": _define(getitem, "__getitem__", filename + "[]"),
                 "__call__": _define(call, "__call__", filename + "()")}
    return type(base.__name__, (base,), namespace)
