"""Launch grids of Triton entries: META, styles, and programs traced for the C hot path.

Lifetime: per key (a program is traced when an entry is built or first called with a new grid
function) and per call only on the Python fallback. A grid is one of:

- a tuple/list of 1-3 ints (static, or given per call as ``k[(x, y)]``: read in C);
- a callable of META (Triton's convention, always the case for ``k[grid]``): META is every
  kernel parameter by name, the constexprs and the config's/heuristics' values, the dict
  ``JITFunction.run`` passes;
- at wrap time also a callable of the call's arguments (fastdispatch's original convention),
  recognised by its signature: ``*args`` or as many positional parameters as the call has
  (Triton's convention decides a one-parameter callable: META).

Each callable is traced once per entry into a ``GridProgram`` (``fastdispatch.grid_program``)
that C evaluates on the call's ints, sizes and strides; the trace is checked against the real
grid on the call that made it, and a grid that cannot be traced is called in Python.
"""
from __future__ import annotations

import inspect

from fastdispatch import keys
from fastdispatch import grid_program as gp

STYLE_STATIC, STYLE_META, STYLE_ARGS = "static", "meta", "args"


def normalize(grid, n_call: int):
    """(style, grid) of a wrap-time ``grid``; raises TypeError/ValueError naming the problem."""
    if grid is None:
        return None, None
    if isinstance(grid, int) and not isinstance(grid, bool):
        grid = (grid,)
    if isinstance(grid, (tuple, list)):
        grid = tuple(grid)
        if not 1 <= len(grid) <= 3 or not all(type(g) is int and g >= 0 for g in grid):
            raise ValueError(f"triton_kernel: grid must have 1-3 non-negative ints, got {grid}")
        return STYLE_STATIC, grid
    if not callable(grid):
        raise TypeError("triton_kernel: grid must be a tuple of 1-3 ints or a callable (of META, "
                        f"or of the call's arguments) returning one, got {type(grid).__name__}")
    return style_of(grid, n_call), grid


def style_of(grid, n_call: int) -> str:
    """META or ARGS for a wrap-time grid callable (see the module docstring)."""
    try:
        params = list(inspect.signature(grid).parameters.values())
    except (TypeError, ValueError):
        return STYLE_META
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return STYLE_ARGS
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 1 and len(positional) == n_call:
        return STYLE_ARGS
    return STYLE_META


def grid_key(grid):
    """What per-call grid programs are filed under: the code object of a function (a fresh
    lambda per call shares it), else the callable itself (the same key ``_keys.pyx`` uses)."""
    code = getattr(grid, "__code__", None)
    return code if code is not None and inspect.isfunction(grid) else grid


def sizes(result) -> tuple:
    """A grid result as three ints (Triton pads with 1)."""
    if isinstance(result, int):
        result = (result,)
    result = tuple(int(x) for x in result)
    if not 1 <= len(result) <= 3:
        raise ValueError(f"fastdispatch: a grid must have 1-3 sizes, got {result!r}")
    return result + (1,) * (3 - len(result))


def trace_program(style: str, grid, call_args: tuple, meta_of, constexpr_positions):
    """A ``keys.GridProgram`` for ``grid`` on this call's argument classes, checked against
    the real grid on ``call_args``; None when the grid must be called in Python."""
    stand_ins = gp.arg_stand_ins(call_args, constexpr_positions=constexpr_positions)
    try:
        if style == STYLE_ARGS:
            program, guards = gp.trace(grid, lambda fn: fn(*stand_ins))
        else:
            program, guards = gp.trace(grid, lambda fn: fn(meta_of(stand_ins)))
    except gp.NotTraceable:
        return None
    real = grid(*call_args) if style == STYLE_ARGS else grid(meta_of(call_args))
    if gp.evaluate(program, call_args, grid.__closure__, grid.__defaults__, guards,
                   grid.__globals__) != sizes(real):
        return None
    return keys.GridProgram(program, guards)
