"""Replaying a Helion host function's one launch, so a hit skips the host function too.

Lifetime: per key (a miss builds the replay; a hit runs it). Helion's generated host function
is Python: for a kernel that allocates nothing and launches once it only computes the grid and
the launch arguments, all fixed by our key (exact shapes, constexprs) and the bound config.
At a miss the host function runs once with a *recording* launcher (nothing is launched: no
second execution of the kernel). The launch replays when what it recorded is expressible:

- exactly one launch, with launch options among ``num_warps`` / ``num_stages``, a grid of ints;
- every tensor argument is one of the call's own tensors (the same object; views, allocations
  and copies are not), every other argument a constant that our key fixes: an int, float or
  bool, and the call has no scalar argument keyed by class only (whose value could reach it);
- no tensor is passed twice in the call (aliased arguments: identity could not tell which
  argument a launch argument stands for, and the next call with the same key may not alias);
- the host function returns one of the call's arguments (or None).

A replay is ``inner[grid](*call_tensors_and_constants, num_warps, num_stages, ...)`` on the
cached fastdispatch Triton wrapper, with the options positional and the ``BoundLaunch`` made
once, so the inner call binds nothing. Anything else keeps the host function (Helion's
generated code with fastdispatch's launcher). :func:`build_replay` returns a :class:`Replay`,
which also describes the launch (inner wrapper, grid, which call argument or constant each
launch argument is, the result): ``helion_direct`` turns it into an entry that launches the
inner binary from C, with the replay as that entry's slow path.

Helion >= 1.5 re-specializes bound kernels late: replays are built for Helion 1.4's bound
kernels only (whose host function changes only through ``set_config``, which invalidates the
entries).
"""
from __future__ import annotations

import torch

_OPTIONS = ("num_warps", "num_stages")


class Replay:
    """A recorded launch. ``fn(*call_args)`` replays it on ``inner`` (the fastdispatch Triton
    wrapper) with the recorded static ``grid`` and returns the call's argument
    ``result_index`` (None: returns None). ``launch``: per launch argument ``("arg", i)`` (the
    call's argument i, a tensor) or ``("const", value)``; ``tail``: one value per launch option
    of ``inner`` (``inner.option_names``)."""

    __slots__ = ("fn", "inner", "grid", "launch", "tail", "result_index")

    def __init__(self, fn, inner, grid, launch, tail, result_index):
        self.fn, self.inner, self.grid = fn, inner, grid
        self.launch, self.tail, self.result_index = tuple(launch), tuple(tail), result_index

    def inner_args(self, args: tuple) -> tuple:
        """The inner wrapper's bound call (parameters, then launch options) for ``args``."""
        return tuple(args[v] if kind == "arg" else v for kind, v in self.launch) + self.tail

    def index_map(self) -> dict:
        """Inner argument index -> the call's argument index, for the call's tensors."""
        return {j: v for j, (kind, v) in enumerate(self.launch) if kind == "arg"}


def build_replay(run, args: tuple, roles: bytes, wrapper_for, scalar_class_role: int):
    """The :class:`Replay` of ``run``'s launch for the call's arguments, or None."""
    if any(role == scalar_class_role and not isinstance(a, torch.Tensor) and a is not None
           for a, role in zip(args, roles)):
        return None   # a scalar keyed by class: its value may flow into the launch
    by_identity = {id(a): i for i, a in enumerate(args) if isinstance(a, torch.Tensor)}
    if len(by_identity) != sum(isinstance(a, torch.Tensor) for a in args):
        return None   # a tensor passed twice: which argument a launch argument is is unknown
    launches = []

    def record(triton_kernel, grid, *largs, **options):
        launches.append((triton_kernel, grid, largs, options))

    try:
        returned = run(*args, _launcher=record)
    except Exception:  # noqa: BLE001  (the host function did something a replay cannot)
        return None
    if len(launches) != 1:
        return None
    jit_fn, grid, largs, options = launches[0]
    if set(options) - set(_OPTIONS) or not isinstance(grid, tuple) or not all(type(g) is int for g in grid):
        return None
    plan = []   # ("arg", index) or ("const", value), in the launch's argument order
    for value in largs:
        if isinstance(value, torch.Tensor):
            if id(value) not in by_identity:
                return None   # allocated, viewed or copied by the host function
            plan.append(("arg", by_identity[id(value)]))
        elif type(value) in (int, float, bool) or value is None:
            plan.append(("const", value))
        else:
            return None
    if returned is None:
        result_index = None
    elif isinstance(returned, torch.Tensor) and id(returned) in by_identity:
        result_index = by_identity[id(returned)]
    else:
        return None
    inner = wrapper_for(jit_fn)
    if len(plan) != len(inner.param_names):
        return None
    tail = tuple(options.get(name) for name in inner.option_names)
    launch = inner[grid]
    arg_indices = [i for kind, i in plan if kind == "arg"]
    if [kind for kind, _ in plan] == ["arg"] * len(arg_indices) + ["const"] * (len(plan) - len(arg_indices)) \
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

    def replay(*a):
        launch(*[a[v] if kind == "arg" else v for kind, v in plan], *tail)
        return None if result_index is None else a[result_index]
    return Replay(replay, inner, grid, plan, tail, result_index)
