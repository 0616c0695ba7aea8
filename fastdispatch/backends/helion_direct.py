"""The direct-launch entry of a replayed Helion launch: a hit launches the inner binary from C.

Lifetime: per key (built at a miss). A replay (``helion_replay``) costs a Python frame plus the
inner Triton wrapper's own key and lookup on every hit: +1.7 to +2.4 us over the plain
fastdispatch Triton hit of the same kernel body (2/8/16 inputs, measured on the lent H200).
Instead, the outer entry is a MODE_DRIVER entry that launches the inner wrapper's own entry for
the recorded launch: its launch plan with each parameter's argument index moved from the inner
call to the outer one (:func:`remap_plan`), the recorded grid, the inner entry's guards, and
``result_index`` returning the call's ``out`` -- or the tensor the host function allocated,
which the entry allocates per call (``Entry(allocs=...)``: ``torch.empty_like`` called from C,
its data pointer in the argument slot after the call's). A hit is the outer key in C, a table
find, the allocations and ``cuLaunchKernelEx``, with no Python frame of ours.

Why it is the same launch (each point is checked in :func:`direct_recipe`; anything else keeps
the replay, and the reason is in the entry's ``info["direct"]``):

- the inner entry is the one the replay's first call would publish (built here, without a
  launch, under the inner wrapper's own lock and double check): MODE_DRIVER, made from its
  recipe, no ``pre_call`` (config pre-hooks), no autotune / heuristics layers;
- every kernel parameter reads an inner argument that is one of the call's tensors (a replay
  names each by identity, and refuses aliased calls) or one of its allocations (on the launch
  device; ``helion_replay`` says when an allocation replays): a tensor's slot is its data pointer plus
  byte offset under every role, in both key builders (``_keys_table.pxi`` ``_build``,
  ``_keys_py.arg_words``), so the remapped parameter reads the same value; a float keyed by
  class (Helion's runtime scalar, e.g. ``eps``) has its value's double bits in its slot under
  both keys, which the fp32 parameter converts alike. Constants and
  launch options are constexprs of the binary, read by no parameter; a runtime scalar among
  them (one the plan reads) refuses: the outer call has no slot holding it;
- the outer key fixes the inner key: per tensor the outer ROLE_EXACT words hold dtype, rank,
  device, exact shape and strides and 16-byte alignment, of which the inner ROLE_CLASS words
  are a function; the constants and the grid are computed by Helion's host function from the
  exact shapes and the bound config (a ``set_config`` or ``reset`` clears the outer table);
  Triton's knob word (debug, instrumentation) is in the outer key too (``HelionKernel`` passes
  the knobs);
- the same device and stream: the outer launch uses the first CUDA tensor's device in the
  outer call's order, checked equal to the inner entry's device (both are fixed by the key's
  device words, so one check at the miss holds for every hit); the context is the plan's;
- the inner entry's globals guard and launch-hook watch are carried over; when either fires
  (or the stream cannot be read), the slow launch is the replay, i.e. the inner wrapper's own
  path (Triton's "global changed" error, its hooks); it returns the same result.

The function handle stays valid while the entry exists: fastdispatch's driver module never
unloads a module it loaded (Triton's ``CompiledKernel.__del__`` unloads only the module of
Triton's own ``_init_handles``), and ``info["recipe"]`` keeps the inner recipe (its
CompiledKernel) referenced anyway, also after the inner table is cleared or evicts.
Under CUDA graph capture a hit is an ordinary MODE_DRIVER launch on the capturing stream; a
miss is refused before anything is built (``HelionKernel._handle_miss``).
"""
from __future__ import annotations

import torch

from fastdispatch.dispatcher import MODE_DRIVER
from fastdispatch.knobs import knobs as fd_knobs

#: ``PARAM_NULL`` of launchers/_driver.pxd (backends/triton/plan.py; equal, checked in the
#: tests): Triton's trailing scratch pointers, passed as NULL, read no argument slot.
PARAM_NULL = 6
#: The fields of a launch plan (``backends/triton/plan.launch_plan``). A plan with any other
#: field is refused: it might name argument indices too.
PLAN_FIELDS = frozenset({"function", "context", "block_x", "num_ctas", "shared_bytes",
                         "param_kinds", "param_args", "attrs"})


def remap_plan(plan: dict, index_map: dict) -> dict | None:
    """``plan`` (its parameters read the inner call's argument slots) reading the outer call's
    slots instead: a parameter reading inner argument ``i`` reads ``index_map[i]``. None when a
    parameter other than a NULL scratch pointer reads an argument the map does not name, or the
    plan is not one this function knows. The input plan is not modified."""
    if set(plan) != PLAN_FIELDS or len(plan["param_kinds"]) != len(plan["param_args"]):
        return None
    moved = []
    for kind, index in zip(plan["param_kinds"], plan["param_args"]):
        if kind == PARAM_NULL:
            moved.append(0)
        elif index in index_map:
            moved.append(index_map[index])
        else:
            return None
    return {**plan, "param_kinds": list(plan["param_kinds"]), "param_args": moved}


def inner_entry(inner, inner_args: tuple):
    """The inner wrapper's entry for the bound call ``inner_args`` and its recipe (or None).
    Built and published without a launch when the wrapper has none yet, as its own miss would
    (validate, make_entry, publish under its per-key lock): the entry the replay would hit."""
    words = inner.key_of(*inner_args)
    with inner._flight.lock(words):
        entry = inner.lookup(words)
        if entry is None:
            inner.validate(inner_args)
            entry = inner.make_entry(inner_args, words)
            inner.publish(entry)
    return entry, inner._recipes.get((words, fd_knobs.disable_fast_path))


def _no_grid(name: str):
    def grid_slow(entry, args, grid):
        raise TypeError(f"{name}[grid]: a Helion kernel computes its own grid; call it without one")
    return grid_slow


def direct_recipe(replay, args: tuple, info: dict, *, name: str, knobs_keyed: bool):
    """``(keywords, None)`` for ``keys.Entry(words, MODE_DRIVER, **keywords)`` launching
    ``replay``'s inner binary directly for the outer call ``args``, or ``(None, why not)``."""
    from fastdispatch.backends.triton.kernel import TritonKernel

    if not knobs_keyed:
        return None, "the outer key has no Triton knob word"
    inner = replay.inner
    if not isinstance(inner, TritonKernel) or inner.layers.layers:
        return None, "the inner wrapper has autotune or heuristics layers"
    if not all(type(args[i]) in (torch.Tensor, torch.nn.Parameter, float)
               for i in replay.index_map().values() if i < len(args)):   # past them: allocations
        return None, "a launch argument is not a plain tensor or a float"
    try:
        entry, recipe = inner_entry(inner, replay.inner_args(args))
    except Exception as exc:  # noqa: BLE001  (the replay's first call meets it again, as today)
        return None, f"building the inner entry failed: {type(exc).__name__}: {exc}"
    return direct_keywords(replay, first_cuda_device(args), entry, recipe, info, name)


def first_cuda_device(args: tuple):
    """The device index both key builders launch on: the first CUDA tensor's, in argument
    order (None: no CUDA tensor)."""
    for a in args:
        if isinstance(a, torch.Tensor) and a.is_cuda:
            return a.device.index
    return None


def direct_keywords(replay, device, entry, recipe, info: dict, name: str):
    """The checks on the inner ``entry`` and its ``recipe`` and the outer entry's keywords
    (``(keywords, None)`` or ``(None, why not)``); ``device``: the outer call's launch device
    (:func:`first_cuda_device`). No I/O: the CPU tests call it directly."""
    if entry.mode != MODE_DRIVER or recipe is None or entry.info is not recipe["info"]:
        fallback = entry.info.get("fallback") if isinstance(entry.info, dict) else None
        return None, f"the inner entry is not a direct launch ({fallback or 'no recipe'})"
    if recipe["pre_call"] is not None:
        return None, "the inner entry runs pre-launch hooks"
    plan = remap_plan(recipe["plan"], replay.index_map())
    if plan is None:
        return None, "a kernel parameter reads a constant (a runtime scalar)"
    if device is None or device != recipe["info"].get("device"):
        return None, "the call's launch device is not the inner entry's"
    if not all(d.type == "cuda" and d.index == device for d in replay.alloc_devices):
        return None, "the host function allocates on another device than the launch's"
    grid = replay.grid
    if not 1 <= len(grid) <= 3 or not all(type(g) is int and 0 <= g < 2 ** 32 for g in grid):
        return None, f"grid {grid!r} out of range"
    fn = replay.fn

    def slow(a, grid=None):   # the guards' fallback: the replay (the inner wrapper's own path)
        return fn(*a)

    keywords = dict(
        plan=plan,
        # Static: the host function computed it from the exact shapes and the bound config,
        # which the outer key fixes (set_config clears the table), so every hit has this grid.
        grid=tuple(grid), grid_slow=_no_grid(name), slow=slow,
        globals_guard=recipe["globals_guard"], watch_hooks=recipe["watch_hooks"],
        result_index=-1 if replay.result_index is None else replay.result_index,
        allocs=replay.allocs or None,
        info={**info, "direct": True, "inner": recipe["info"], "recipe": recipe})
    return keywords, None
