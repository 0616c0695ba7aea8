"""Replaying a Helion host function's one launch, so a hit skips the host function too.

Lifetime: per key (a miss builds the replay; a hit runs it). Helion's generated host function
is Python: for a kernel that launches once it only allocates outputs, computes the grid and
passes the launch arguments, all fixed by our key (exact shapes, dtypes, constexprs) and the
bound config. At a miss the host function runs once with a *recording* launcher (nothing is
launched: no second execution of the kernel). The launch replays when what it recorded is
expressible:

- the host function's source (:func:`host_source_reason`, read with ``ast`` before it is run
  for the recording) does nothing but bind names to pure expressions of sizes, dtypes and
  devices, assert on them, allocate uninitialized memory (``torch.empty`` / ``empty_like`` /
  ``empty_strided`` / ``Tensor.new_empty``), launch once and return: no in-place op on an
  argument (``out.zero_()`` before an atomic-add kernel), no copy, no ``zeros``, no branch --
  which a replay would skip, and which a recording run would apply to the call's tensors a
  second time;
- exactly one launch, with launch options among ``num_warps`` / ``num_stages``, a grid of ints;
- every tensor argument is one of the call's own tensors (the same object; views and copies
  are not) or a tensor the host function allocated (below), every other argument a constant
  that our key fixes (an int, float or bool) or one of the call's floats keyed by class only
  (a runtime scalar such as ``eps``, passed through unchanged: checked by recording twice,
  :func:`build_replay`); the call has no int or bool keyed by class only (whose value could
  decide shapes or the grid);
- no tensor is passed twice in the call (aliased arguments: identity could not tell which
  argument a launch argument stands for, and the next call with the same key may not alias);
- the host function returns one of the call's arguments, a tensor it allocated, or None.

**Allocations.** A launch tensor that is none of the call's is replayed as an allocation
when it is fresh (its own storage, no view): by the source check above it came from one of
the uninitialized allocators. It is replayed as ``torch.empty_like(call_arg)`` when that gives the
same shape, strides, dtype and device (checked at the miss; the key fixes all four of the call
argument's), else as ``torch.empty_strided`` with the recorded ones. The contents are
undefined either way, as in the host function.

A replay is ``inner[grid](*call_tensors_allocations_and_constants, num_warps, num_stages,
...)`` on the cached fastdispatch Triton wrapper, with the options positional and the
``BoundLaunch`` made once, so the inner call binds nothing. Anything else keeps the host
function (Helion's generated code with fastdispatch's launcher). :func:`build_replay` returns
a :class:`Replay`, which also describes the launch (inner wrapper, grid, which call argument,
allocation or constant each launch argument is, the result): ``helion_direct`` turns it into
an entry that launches the inner binary from C (allocating in C too), with the replay as that
entry's slow path.

Helion >= 1.5 re-specializes bound kernels late: replays are built for Helion 1.4's bound
kernels only (whose host function changes only through ``set_config``, which invalidates the
entries).
"""
from __future__ import annotations

import ast
import functools
import inspect

import torch

_OPTIONS = ("num_warps", "num_stages")


class Replay:
    """A recorded launch. ``fn(*call_args)`` replays it on ``inner`` (the fastdispatch Triton
    wrapper) with the recorded static ``grid`` and returns ``result_index`` of the call's
    arguments followed by its allocations (None: returns None). ``launch``: per launch argument
    ``("arg", i)`` (index i of the call's arguments followed by its allocations, a tensor) or
    ``("const", value)``; ``tail``: one value per launch option of ``inner``
    (``inner.option_names``); ``allocs``: ``((make, index), ...)``, each allocation
    ``make(call_args[index])``, or ``make()`` for index -1 (``Entry(allocs=...)``'s form);
    ``alloc_devices``: the device of each, as recorded."""

    __slots__ = ("fn", "inner", "grid", "launch", "tail", "result_index", "allocs",
                 "alloc_devices")

    def __init__(self, fn, inner, grid, launch, tail, result_index, allocs=(), alloc_devices=()):
        self.fn, self.inner, self.grid = fn, inner, grid
        self.launch, self.tail, self.result_index = tuple(launch), tuple(tail), result_index
        self.allocs, self.alloc_devices = tuple(allocs), tuple(alloc_devices)

    def extended(self, args: tuple) -> tuple:
        """``args`` followed by fresh allocations (what ``launch`` indices name)."""
        if not self.allocs:
            return args
        return args + tuple(make(args[i]) if i >= 0 else make() for make, i in self.allocs)

    def inner_args(self, args: tuple) -> tuple:
        """The inner wrapper's bound call (parameters, then launch options) for ``args``."""
        ext = self.extended(args)
        return tuple(ext[v] if kind == "arg" else v for kind, v in self.launch) + self.tail

    def index_map(self) -> dict:
        """Inner argument index -> index of the call's arguments followed by its allocations."""
        return {j: v for j, (kind, v) in enumerate(self.launch) if kind == "arg"}


# -- what a host function may do to be replayed (its source, read at the miss) ---------------------
_ALLOCATORS = {("torch", "empty"), ("torch", "empty_like"), ("torch", "empty_strided")}
_PURE_CALLS = {("torch", "promote_types"), ("triton", "cdiv"), ("triton", "next_power_of_2")}
_PURE_METHODS = frozenset({"size", "stride", "numel", "dim", "new_empty"})   # new_empty allocates
_PURE_ATTRS = frozenset({"dtype", "device", "shape", "ndim", "layout"})
_PURE_BUILTINS = frozenset({"len", "min", "max", "int"})
_PURE_NODES = (ast.Constant, ast.Name, ast.Tuple, ast.List, ast.BinOp, ast.UnaryOp, ast.BoolOp,
               ast.Compare, ast.IfExp, ast.Subscript, ast.Slice, ast.JoinedStr,
               ast.FormattedValue, ast.keyword, ast.Load, ast.Store, ast.operator, ast.unaryop,
               ast.boolop, ast.cmpop, ast.expr_context)


def _impure_node(expr: ast.AST) -> str | None:
    """Why ``expr`` may do more than read sizes/dtypes/devices and allocate, or None."""
    for node in ast.walk(expr):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) \
                    and (f.value.id, f.attr) in _ALLOCATORS | _PURE_CALLS:
                continue
            if isinstance(f, ast.Attribute) and f.attr in _PURE_METHODS:
                continue
            if isinstance(f, ast.Name) and f.id in _PURE_BUILTINS:
                continue
            return f"calls {ast.unparse(f)}"
        if isinstance(node, ast.Attribute):
            if node.attr in _PURE_ATTRS or node.attr in _PURE_METHODS:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("torch", "triton"):
                continue   # a module attribute (torch.float32, or a call checked above)
            return f"reads .{node.attr}"
        if not isinstance(node, _PURE_NODES):
            return f"has a {type(node).__name__}"
    return None


def _names_only(target) -> bool:
    """An assignment target that binds names: ``a`` or ``a, b``."""
    return isinstance(target, ast.Name) or (
        isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts))


def _returns_names(value) -> bool:
    """``return``, ``return None``, ``return name`` or ``return (name, ...)``."""
    if value is None or (isinstance(value, ast.Constant) and value.value is None):
        return True
    return _names_only(value)


def host_source_reason(run) -> str | None:
    """None when Helion's generated host function ``run`` only binds names to pure expressions
    (sizes, dtypes, devices, block sizes), asserts on them, allocates uninitialized tensors,
    calls ``_launcher`` once and returns names; else why not (the module docstring)."""
    g = getattr(run, "__globals__", {})
    if g.get("torch") is not torch or ("triton" in g and g["triton"].__name__ != "triton"):
        return "the host function's torch/triton are not the modules"
    try:
        tree = ast.parse(inspect.getsource(run))
    except (OSError, TypeError, SyntaxError) as exc:
        return f"no source for the host function ({type(exc).__name__})"
    fn = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(fn, ast.FunctionDef) or fn.decorator_list:
        return "the host function's source is not one plain function"
    launches = 0
    for i, stmt in enumerate(fn.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue   # docstring
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) \
                and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "_launcher":
            launches += 1
            call = stmt.value
            why = _impure_node(ast.Tuple(elts=[*call.args, *[k.value for k in call.keywords]]))
        elif isinstance(stmt, ast.Assign) and all(_names_only(t) for t in stmt.targets):
            why = _impure_node(stmt.value)
        elif isinstance(stmt, ast.Assert):
            why = _impure_node(stmt.test) or (stmt.msg is not None and _impure_node(stmt.msg))
        elif isinstance(stmt, ast.Return) and _returns_names(stmt.value):
            why = None
        elif isinstance(stmt, ast.Pass):
            why = None
        else:
            why = f"has a {type(stmt).__name__} statement `{ast.unparse(stmt).splitlines()[0][:60]}`"
        if why:
            return f"the host function {why} (line {stmt.lineno} of its source)"
    return None if launches == 1 else f"the host function calls _launcher {launches} times"


def _fresh(t: torch.Tensor, call_tensors: list) -> bool:
    """Whether ``t`` owns its storage (an allocation, not a view of anything)."""
    if t._base is not None or t.storage_offset() != 0 or t.layout is not torch.strided \
            or t.requires_grad or type(t) is not torch.Tensor:
        return False
    storage = t.untyped_storage().data_ptr()
    return all(c.untyped_storage().data_ptr() != storage for c in call_tensors) or t.numel() == 0


def _allocator_for(t: torch.Tensor, args: tuple):
    """``(make, index)`` making a tensor with ``t``'s shape, strides, dtype and device for
    every call with this key (``Entry(allocs=...)``'s form)."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.shape == t.shape and a.dtype == t.dtype \
                and a.device == t.device:
            like = torch.empty_like(a)
            if like.stride() == t.stride() and like.layout is t.layout:
                return (torch.empty_like, i)
    return (functools.partial(torch.empty_strided, tuple(t.shape), tuple(t.stride()),
                              dtype=t.dtype, device=t.device), -1)


def _record(run, args: tuple):
    """``run``'s one launch for ``args`` with a recording launcher (nothing launched):
    ``(jit_fn, grid, launch args, options, returned)``, or None (it raised, or launched other
    than once)."""
    launches = []

    def record(triton_kernel, grid, *largs, **options):
        launches.append((triton_kernel, grid, largs, options))

    try:
        returned = run(*args, _launcher=record)
    except Exception:  # noqa: BLE001  (the host function did something a replay cannot)
        return None
    return (*launches[0], returned) if len(launches) == 1 else None


def _describe(recorded, args: tuple, floats: frozenset):
    """What each launch argument is: ``(plan, result_index, fresh tensors, what to compare)``
    (the module docstring's conditions), or None. ``floats``: the indices of the call's
    class-keyed float arguments; a launch argument that is one of them (the same object) reads
    that argument."""
    jit_fn, grid, largs, options, returned = recorded
    if set(options) - set(_OPTIONS) or not isinstance(grid, tuple) or not all(type(g) is int for g in grid):
        return None
    call_tensors = [a for a in args if isinstance(a, torch.Tensor)]
    by_identity = {id(a): i for i, a in enumerate(args) if isinstance(a, torch.Tensor) or i in floats}
    allocated = {}    # id(tensor) -> (index after the call's arguments, tensor)
    for value in [*largs, returned]:
        if isinstance(value, torch.Tensor) and id(value) not in by_identity and id(value) not in allocated:
            if not _fresh(value, call_tensors):
                return None   # a view or a copy of something: not an allocation
            allocated[id(value)] = (len(args) + len(allocated), value)
    plan = []   # ("arg", index) or ("const", value), in the launch's argument order
    for value in largs:
        if id(value) in by_identity:
            plan.append(("arg", by_identity[id(value)]))
        elif isinstance(value, torch.Tensor):
            plan.append(("arg", allocated[id(value)][0]))
        elif type(value) in (int, float, bool) or value is None:
            plan.append(("const", value))
        else:
            return None
    if returned is None:
        result_index = None
    elif isinstance(returned, torch.Tensor):
        result_index = by_identity.get(id(returned), allocated.get(id(returned), (None,))[0])
    else:
        return None
    fresh = [t for _, t in sorted(allocated.values(), key=lambda item: item[0])]
    compared = (jit_fn, grid, tuple(sorted(options.items())), tuple(plan), result_index,
                tuple((tuple(t.shape), t.stride(), t.dtype, t.device) for t in fresh))
    return plan, result_index, fresh, compared


def _other_float(value: float) -> float | None:
    """A float unequal to ``value`` (for the second recording), or None for nan/inf."""
    if value != value or value in (float("inf"), float("-inf")):
        return None
    return value * 0.5 + 0.375 if value != 0.75 else 0.125


def build_replay(run, args: tuple, roles: bytes, wrapper_for, scalar_class_role: int):
    """The :class:`Replay` of ``run``'s launch for the call's arguments, or None.

    A float keyed by class only (its value is not in the key: Helion passes it to the kernel as
    a runtime scalar, e.g. ``eps``) may reach the launch only as itself: the host function is
    recorded a second time with each such float changed, and the two launches must differ in
    exactly those arguments (the same objects as the call's). Any other scalar keyed by class
    keeps the host function."""
    floats = frozenset(i for i, (a, role) in enumerate(zip(args, roles))
                       if role == scalar_class_role and type(a) is float)
    if any(role == scalar_class_role and not isinstance(a, torch.Tensor) and a is not None
           and i not in floats for i, (a, role) in enumerate(zip(args, roles))):
        return None   # an int or bool keyed by class: its value may decide shapes or the grid
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if len({id(a) for a in tensors}) != len(tensors):
        return None   # a tensor passed twice: which argument a launch argument is is unknown
    if host_source_reason(run) is not None:
        return None   # it does work a replay would skip (and recording would repeat)
    recorded = _record(run, args)
    described = recorded and _describe(recorded, args, floats)
    if not described:
        return None
    plan, result_index, fresh, compared = described
    if floats:
        changed = [_other_float(a) if i in floats else a for i, a in enumerate(args)]
        if None in (changed[i] for i in floats):
            return None
        changed = tuple(changed)
        again = _record(run, changed)
        again = again and _describe(again, changed, floats)
        if not again or again[3] != compared:
            return None   # the float changes more than the launch argument it is
    jit_fn, grid, _, options, _ = recorded
    allocs = tuple(_allocator_for(t, args) for t in fresh)
    inner = wrapper_for(jit_fn)
    if len(plan) != len(inner.param_names):
        return None
    tail = tuple(options.get(name) for name in inner.option_names)
    launch = inner[grid]
    arg_indices = [i for kind, i in plan if kind == "arg"]
    if not allocs and [kind for kind, _ in plan] == ["arg"] * len(arg_indices) + ["const"] * (len(plan) - len(arg_indices)) \
            and arg_indices == list(range(len(arg_indices))):
        # The common shape: the call's tensors in order, then constants (block sizes).
        consts = tuple(v for kind, v in plan if kind == "const") + tail
        n = len(arg_indices)
        if result_index is None:
            def replay(*a):
                launch(*a[:n], *consts)
        else:
            def replay(*a):
                launch(*a[:n], *consts)
                return a[result_index]
        return Replay(replay, inner, grid, plan, tail, result_index)

    recorded_replay = Replay(None, inner, grid, plan, tail, result_index, allocs,
                             tuple(t.device for t in fresh))
    extended = recorded_replay.extended

    def replay(*a):
        ext = extended(a)
        launch(*[ext[v] if kind == "arg" else v for kind, v in plan], *tail)
        return None if result_index is None else ext[result_index]
    recorded_replay.fn = replay
    return recorded_replay
