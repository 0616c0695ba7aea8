"""Grid programs: a launch grid learned once per entry, evaluated in C on every call.

Lifetime: per miss (tracing) and per call (evaluation, in ``_keys.pyx``; :func:`evaluate` here is
its pure-Python twin, used by ``_keys_py`` and the property tests).

A grid callable (``lambda META: (triton.cdiv(n, META["BLOCK"]),)`` or a callable of the call's
arguments) is run once on symbolic stand-ins: ints become :class:`Sym` leaves, tensors
:class:`SymTensor` (``.shape[i]``, ``.size(i)``, ``.stride(i)``, ``.numel()``), ints held in the
grid function's closure cells become leaves too, and everything the entry's key holds exactly
(constexprs, dtypes, ranks, None) stays concrete. ``+ - * // %``, unary ``-``, ``min``/``max``
(and so ``triton.cdiv``, which is ``(x + y - 1) // y``) build an expression; anything else
(a comparison, ``int()``, true division, a bit operation, an attribute the key does not pin)
raises :class:`NotTraceable`, and the grid is then called in Python on every call instead.
Ints in closure cells, positional defaults (``lambda META, n=n: ...``) and module globals
(``BLOCK = 1024``) are read per call; other cells and defaults must be immutable (checked by
identity per call), and other globals the grid names must be modules, functions or classes:
a grid that reads a mutable global, a list or an object's attribute is called in Python, never
frozen into a program. (An int attribute of an imported module, ``cfg.BLOCK``, is read once.)

The program is a flat int64 list for a stack machine (opcodes below), ending with one ``OUT``
per grid dimension. Evaluation follows Python's integer semantics (floor division and modulo
towards negative infinity); a division by zero or a result outside ``[0, 2**32)`` makes the
evaluator give up for that call, and the caller then runs the grid in Python (so the error,
if any, is Python's own).
"""
from __future__ import annotations

import builtins
import types

# Opcodes (kept equal to _keys.pyx's G_* enum; tested).
CONST, ARG, SHAPE, STRIDE, NUMEL, CELL, ADD, SUB, MUL, FLOORDIV, MOD, MIN, MAX, NEG, OUT, DEFAULT, GLOBAL = range(17)
_ARITY = {CONST: 1, ARG: 1, SHAPE: 2, STRIDE: 2, NUMEL: 1, CELL: 1, DEFAULT: 1, GLOBAL: 1}
MAX_STACK = 32


class Program:
    """A traced grid for the pure-Python key builder (the C one is ``_grid.GridProgram``)."""

    __slots__ = ("program", "guards")

    def __init__(self, program, guards=()):
        self.program, self.guards = tuple(program), tuple(guards)

    def __repr__(self):
        return f"Program({self.program}, guards={len(self.guards)})"


class NotTraceable(Exception):
    """The grid does something a program cannot express; it is called in Python instead."""


def _refuse(*_args, **_kwargs):
    raise NotTraceable("operation not expressible as a grid program")


class Sym:
    """A symbolic int64: an expression tree flattened to postfix ops."""

    __slots__ = ("ops",)

    def __init__(self, ops: tuple):
        self.ops = ops

    @staticmethod
    def lift(value) -> "Sym":
        if isinstance(value, Sym):
            return value
        if type(value) is int and -(1 << 63) <= value < (1 << 63):
            return Sym((CONST, value))
        raise NotTraceable(f"value of type {type(value).__name__} in grid arithmetic")

    def _bin(self, other, op, reverse=False):
        other = Sym.lift(other)
        a, b = (other, self) if reverse else (self, other)
        return Sym(a.ops + b.ops + (op,))

    def __add__(self, o): return self._bin(o, ADD)
    def __radd__(self, o): return self._bin(o, ADD, True)
    def __sub__(self, o): return self._bin(o, SUB)
    def __rsub__(self, o): return self._bin(o, SUB, True)
    def __mul__(self, o): return self._bin(o, MUL)
    def __rmul__(self, o): return self._bin(o, MUL, True)
    def __floordiv__(self, o): return self._bin(o, FLOORDIV)
    def __rfloordiv__(self, o): return self._bin(o, FLOORDIV, True)
    def __mod__(self, o): return self._bin(o, MOD)
    def __rmod__(self, o): return self._bin(o, MOD, True)
    def __neg__(self): return Sym(self.ops + (NEG,))
    def __pos__(self): return self

    # Everything that would need the value: refuse (a branch on it must not be baked in).
    __bool__ = __int__ = __index__ = __float__ = __hash__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = _refuse
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = _refuse
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = __invert__ = __abs__ = _refuse


class _Opaque:
    """An argument whose value the key does not hold (a float, a bool): any use refuses."""

    __slots__ = ()
    __getattr__ = __bool__ = __int__ = __index__ = __float__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __floordiv__ = __rfloordiv__ = __truediv__ = __rtruediv__ = __mod__ = __rmod__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = __hash__ = _refuse


OPAQUE = _Opaque()


class _SymShape(tuple):
    """``tensor.shape`` of a :class:`SymTensor`: its length (the rank) is in the key."""


class SymTensor:
    """A tensor argument: dtype, device and rank are concrete (the key holds them); sizes and
    strides are symbolic."""

    def __init__(self, index: int, tensor):
        self._index = index
        self._tensor = tensor
        self.dtype = tensor.dtype
        self.device = tensor.device
        self.ndim = tensor.dim()
        self.shape = _SymShape(Sym((SHAPE, index, d)) for d in range(self.ndim))

    def dim(self):
        return self.ndim

    def _axis(self, d):
        if type(d) is not int:
            raise NotTraceable("dimension index must be a plain int")
        if not -self.ndim <= d < self.ndim:
            raise IndexError(f"dimension {d} out of range for a {self.ndim}-d tensor")
        return d % self.ndim

    def size(self, d=None):
        return self.shape if d is None else self.shape[self._axis(d)]

    def stride(self, d=None):
        if d is None:
            return tuple(Sym((STRIDE, self._index, i)) for i in range(self.ndim))
        return Sym((STRIDE, self._index, self._axis(d)))

    def numel(self):
        return Sym((NUMEL, self._index))

    def element_size(self):
        return self._tensor.element_size()

    def __getattr__(self, name):
        raise NotTraceable(f"tensor attribute {name!r} in a grid")


def _sym_min(*args, **kwargs):
    return _fold(args, kwargs, MIN, builtins.min)


def _sym_max(*args, **kwargs):
    return _fold(args, kwargs, MAX, builtins.max)


def _fold(args, kwargs, op, concrete):
    items = args[0] if len(args) == 1 else args
    items = list(items)
    if kwargs or not items:
        raise NotTraceable("min/max with keywords or no arguments")
    if not any(isinstance(x, Sym) for x in items):
        return concrete(items)
    acc = Sym.lift(items[0])
    for x in items[1:]:
        acc = acc._bin(x, op)
    return acc


_BUILTINS = dict(vars(builtins), min=_sym_min, max=_sym_max)


_CONSTANT_KINDS = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
                   types.MethodType, types.BuiltinMethodType)


def _immutable(value) -> bool:
    """Values a program may hold as constants (their identity is checked per call)."""
    if value is None or isinstance(value, (bool, float, str, bytes, int)):
        return True
    if type(value) is tuple:
        return all(_immutable(v) for v in value)
    return False


def _global_leaves(code, scope, names: list) -> dict:
    """Stand-ins for the globals the grid (or a function nested in it) names: ints become
    GLOBAL leaves (read per call from the function's globals, by name: ``names``); modules,
    functions and classes stay; anything else refuses (it would be frozen at trace time)."""
    leaves = {}
    for name in code.co_names:
        if name not in scope or name in leaves:
            continue
        value = scope[name]
        if type(value) is int and -(1 << 63) <= value < (1 << 63):
            if name not in names:
                names.append(name)
            leaves[name] = Sym((GLOBAL, names.index(name)))
        elif not isinstance(value, _CONSTANT_KINDS):
            raise NotTraceable(f"grid reads the global {name!r} ({type(value).__name__})")
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            leaves.update(_global_leaves(const, scope, names))
    return leaves


def _leaf_or_guard(value, op, index, guards):
    if type(value) is int and -(1 << 63) <= value < (1 << 63):
        return Sym((op, index))
    if not _immutable(value):
        raise NotTraceable(f"grid captures a {type(value).__name__} (mutable)")
    guards.append((op, index, value))
    return value


def _traced_copy(fn):
    """``fn`` rebuilt with symbolic ints in its closure cells and positional defaults, and
    min/max that accept Syms.

    Returns (function, guards): guards are (CELL or DEFAULT, index, object) for the immutable
    non-int ones, which the program assumes unchanged (checked by identity on every call), and
    (GLOBAL, index, name) for each int global the program reads by name."""
    if not isinstance(fn, types.FunctionType):
        raise NotTraceable(f"grid of type {type(fn).__name__} (not a plain function)")
    if fn.__kwdefaults__:
        raise NotTraceable("grid function with keyword-only defaults")
    global_names: list = []
    leaves = _global_leaves(fn.__code__, fn.__globals__, global_names)
    cells, guards = [], []
    for index, cell in enumerate(fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:   # an empty cell: the function would fail; let Python say so
            raise NotTraceable("empty closure cell") from None
        cells.append(types.CellType(_leaf_or_guard(value, CELL, index, guards)))
    defaults = None
    if fn.__defaults__ is not None:
        defaults = tuple(_leaf_or_guard(v, DEFAULT, i, guards) for i, v in enumerate(fn.__defaults__))
    scope = dict(fn.__globals__)
    scope.update(leaves)
    scope["__builtins__"] = _BUILTINS
    traced = types.FunctionType(fn.__code__, scope, fn.__name__, defaults,
                                tuple(cells) if fn.__closure__ is not None else None)
    guards += [(GLOBAL, i, name) for i, name in enumerate(global_names)]
    return traced, tuple(guards)


def trace(fn, call) -> tuple[tuple, tuple]:
    """Trace ``call(traced_fn)`` (which calls the rebuilt grid on stand-ins) into
    ``(program, cell_guards)``; raises NotTraceable."""
    traced, guards = _traced_copy(fn)
    try:
        result = call(traced)
    except NotTraceable:
        raise
    except Exception as exc:   # the stand-ins took a path the real call would not: give up
        raise NotTraceable(f"{type(exc).__name__}: {exc}") from None
    return compile_result(result), guards


def compile_result(result) -> tuple:
    """The program of a grid result (a tuple/list of 1-3 ints or Syms, or a lone one)."""
    if isinstance(result, (Sym, int)):
        result = (result,)
    if not isinstance(result, (tuple, list)) or not 1 <= len(result) <= 3:
        raise NotTraceable("a grid must be 1-3 values")
    program: list = []
    for value in result:
        if type(value) is bool:
            raise NotTraceable("a bool as a grid size")
        program += Sym.lift(value).ops
        program.append(OUT)
    if _max_depth(program) > MAX_STACK:
        raise NotTraceable("grid expression too deep")
    return tuple(program)


def _max_depth(program) -> int:
    depth = deepest = pc = 0
    while pc < len(program):
        op = program[pc]
        if op in _ARITY:
            depth += 1
            pc += 1 + _ARITY[op]
        else:
            depth += 0 if op == NEG else -1
            pc += 1
        deepest = max(deepest, depth)
    return deepest


def arg_stand_ins(args, roles_exact_scalars=frozenset(), constexpr_positions=frozenset()):
    """Stand-ins for a call's positional ``args``: tensors -> SymTensor, ints -> Sym leaves,
    constexprs and None concrete, other scalars opaque."""
    import torch

    out = []
    for i, value in enumerate(args):
        if i in constexpr_positions or value is None:
            out.append(value)
        elif isinstance(value, torch.Tensor):
            out.append(SymTensor(i, value))
        elif type(value) is int and -(1 << 63) <= value < (1 << 63):
            out.append(Sym((ARG, i)))
        else:
            out.append(OPAQUE)
    return out


def _floordiv(a: int, b: int):
    # C gives up on both: a zero divisor, and INT64_MIN by -1 (which overflows int64)
    return None if b == 0 or (a == -(1 << 63) and b == -1) else a // b


def _mod(a: int, b: int):
    return None if b == 0 or (a == -(1 << 63) and b == -1) else a % b


_BINARY = {ADD: int.__add__, SUB: int.__sub__, MUL: int.__mul__, FLOORDIV: _floordiv, MOD: _mod,
           MIN: builtins.min, MAX: builtins.max}
_I64 = 1 << 63


def evaluate(program, args, closure=None, defaults=None, guards=(), scope=None):
    """The C evaluator's twin: ``(gx, gy, gz)`` for ``args``, or None where C gives up
    (division by zero, an int64 overflow, a size outside [0, 2**32), a non-int cell or default,
    a guarded cell or default that is another object now). ``closure``/``defaults``: the grid
    function's ``__closure__`` and ``__defaults__``; ``scope`` its ``__globals__``."""
    import torch

    global_names = {index: name for op, index, name in guards if op == GLOBAL}
    for op, index, expected in guards:
        if op == GLOBAL:
            continue
        try:
            now = closure[index].cell_contents if op == CELL else defaults[index]
        except (TypeError, IndexError, ValueError):
            return None
        if now is not expected:
            return None
    stack: list = []
    out: list = []
    pc = 0
    while pc < len(program):
        op = program[pc]
        if op == CONST:
            stack.append(program[pc + 1])
        elif op == ARG:
            value = args[program[pc + 1]]
            if type(value) is not int or not -_I64 <= value < _I64:
                return None
            stack.append(value)
        elif op in (SHAPE, STRIDE):
            t = args[program[pc + 1]]
            d = program[pc + 2]
            if not isinstance(t, torch.Tensor) or d >= t.dim():
                return None
            stack.append(t.shape[d] if op == SHAPE else t.stride(d))
        elif op == NUMEL:
            t = args[program[pc + 1]]
            if not isinstance(t, torch.Tensor):
                return None
            stack.append(t.numel())
        elif op in (CELL, DEFAULT, GLOBAL):
            try:
                index = program[pc + 1]
                value = (closure[index].cell_contents if op == CELL else defaults[index]
                         if op == DEFAULT else scope[global_names[index]])
            except (TypeError, IndexError, ValueError, KeyError):
                return None
            if type(value) is not int or not -_I64 <= value < _I64:
                return None
            stack.append(value)
        elif op == NEG:
            stack.append(-stack.pop())
        elif op == OUT:
            value = stack.pop()
            if not 0 <= value < (1 << 32):
                return None
            out.append(value)
        else:
            b, a = stack.pop(), stack.pop()
            value = _BINARY[op](a, b)
            if value is None:
                return None
            stack.append(value)
        if stack and not -_I64 <= stack[-1] < _I64:
            return None
        pc += 1 + _ARITY.get(op, 0)
    out += [1] * (3 - len(out))
    return tuple(out)
