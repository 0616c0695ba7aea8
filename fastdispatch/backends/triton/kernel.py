"""``TritonKernel``: any Triton kernel object behind the fastdispatch hot path.

Lifetime: per miss (this module) over per-call C (``_keys.pyx``). A wrapped kernel is a
``JITFunction`` or any nesting of ``Heuristics``/``Autotuner`` over one (``layers.py``). Its key
holds what Triton's binaries depend on (role CLASS: dtypes, 16-byte alignment, int classes,
device; constexprs and per-call launch options by value; Triton's knobs) plus the exact values
that decided the layers' output for the call (autotune ``key`` arguments, whatever a heuristic
read): a new shape of an existing binary is a hit, never a miss. A miss resolves the layers,
finds or compiles the binary (memoized per specialization, so a miss for a known binary is a
dict lookup, not a re-specialization) and publishes an entry with a launch plan and the grid as
a C program.

Calls: ``k(*args, **kwargs)`` with the grid given at wrap time, or Triton's ``k[grid](...)``;
keywords, omitted defaults and launch options (``num_warps``, ...) are bound in C.
"""
from __future__ import annotations

import functools
import inspect
import logging
import sys

import torch
import triton.knobs as triton_knobs
from triton.runtime.jit import JITFunction, KernelParam

from fastdispatch import _stats as stats, keys
from fastdispatch.backends.triton import binaries, decisions, grids, traced
from fastdispatch.backends.triton.layers import Layers, tuning_key_of
from fastdispatch.backends.triton.offpath import _NO_DEFAULT, OffHotPath
from fastdispatch.backends.triton.plan import NoFastPath
from fastdispatch.dispatcher import (MODE_DRIVER, MODE_SLOW, ROLE_CLASS, ROLE_CONSTEXPR,
                                     ROLE_VALUE, Dispatcher, _refuse_during_capture)
from fastdispatch.errors import check_cuda_tensors
from fastdispatch.knobs import knobs as fd_knobs

log = logging.getLogger("fastdispatch")

keys.impl.set_triton_hooks(getattr(triton_knobs, "HookChain", type(None)), triton_knobs.runtime,
                           triton_knobs.compilation)

#: Launch options a call may pass as keywords (part of the key when given).
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "launch_pdl",
                  "launch_cooperative_grid", "enable_fp_fusion")


def _is_interpreted(fn) -> bool:
    """True for Triton's ``InterpretedFunction`` (``TRITON_INTERPRET=1``). Its module imports
    numpy, which fastdispatch does not need: an interpreted function exists only once that
    module is imported, so it is looked up in ``sys.modules``, never imported here."""
    interpreter = sys.modules.get("triton.runtime.interpreter")
    return interpreter is not None and isinstance(fn, interpreter.InterpretedFunction)


def _guard_value(globals_dict, name: str, value):
    """The value the hot path's globals guard compares ``globals_dict[name]`` with. Triton
    keeps a deep copy of each global a kernel reads and compares with ``!=``; for a
    ``tl.constexpr`` (immutable; Helion's block sizes are such globals) that ``!=`` is a
    Python method building another constexpr (1-2 us per call on the lent H200), so the guard
    holds the live object while it still equals the copy, and the guard's identity check
    answers. Mutable values keep Triton's copy: an in-place change must still fire."""
    from triton.language import constexpr

    live = globals_dict.get(name)
    if type(value) is constexpr and type(live) is constexpr and bool(live == value):
        return live
    return value


def _params_of(fn) -> list:
    """The KernelParams of a JITFunction, or built the same way for an InterpretedFunction."""
    params = getattr(fn, "params", None)
    if params is not None:
        return list(params)
    signature = inspect.signature(fn.fn)
    return [KernelParam(i, p, False, False) for i, p in enumerate(signature.parameters.values())]


def _tensor_descriptor_type():
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return ()
    return (TensorDescriptor,)


class TritonKernel(OffHotPath, Dispatcher):
    """A Triton kernel object behind the fastdispatch hot path (see :func:`triton_kernel`)."""

    __slots__ = ("layers", "interpret", "kernel", "fn", "params", "_param_name_set", "fixed_constexprs",
                 "options", "call_params", "call_names", "grid_style", "grid", "_value_names",
                 "_constexpr_positions", "_tensor_descriptor", "_traced", "_call_defaults",
                 "_broken_reason", "_opaque", "_builds", "_programs", "_recipes")

    def __init__(self, kernel, *, grid=None, constexprs=None, name=None, max_entries=None,
                 **options):
        self.layers = Layers(kernel)
        fn = self.layers.base
        self.interpret = _is_interpreted(fn)
        if not (isinstance(fn, JITFunction) or self.interpret):
            raise TypeError("triton_kernel: kernel must be a @triton.jit function, or "
                            "@triton.autotune / @triton.heuristics over one, got "
                            f"{type(kernel).__name__}")
        self.kernel, self.fn = kernel, fn
        self.params = _params_of(fn)
        self._param_name_set = frozenset(p.name for p in self.params)
        by_name = {p.name: p for p in self.params}
        fixed = dict(constexprs or {})
        for fixed_name in fixed:
            if fixed_name not in by_name:
                raise ValueError(f"triton_kernel: constexprs names '{fixed_name}', which is not a "
                                 f"parameter of {fn.__name__} ({', '.join(by_name)})")
            if not by_name[fixed_name].is_constexpr:
                raise ValueError(f"triton_kernel: '{fixed_name}' is not a tl.constexpr parameter "
                                 f"of {fn.__name__}")
        self.fixed_constexprs = fixed
        self.options = {k: v for k, v in options.items() if v is not None}
        self.call_params = [p for p in self.params
                            if p.name not in fixed and p.name not in self.layers.provided]
        self.call_names = tuple(p.name for p in self.call_params)
        self.grid_style, self.grid = grids.normalize(grid, len(self.call_params))
        self._value_names = set(self.layers.autotune_keys) & set(self.call_names)
        self._constexpr_positions = frozenset(i for i, p in enumerate(self.call_params) if p.is_constexpr)
        self._tensor_descriptor = _tensor_descriptor_type()
        defaults = {p.name: p.default for p in self.call_params if p.has_default}
        super().__init__(name or fn.__name__, self.call_names, self._call_roles(), defaults,
                         knobs=(triton_knobs.runtime, triton_knobs.compilation),
                         options=LAUNCH_OPTIONS, max_entries=max_entries)
        # torch.compile's direct form (offpath): a call passing at most the parameters before
        # the first fixed or layer-provided one positionally is Triton's own call of the kernel
        # object, with the fixed constexprs added as keywords.
        held = [i for i, p in enumerate(self.params) if p.name in fixed or p.name in self.layers.provided]
        # Omitted defaults are passed too: Dynamo's META for a grid holds only what the call
        # passes (a grid reading an omitted BLOCK default would fail under torch.compile).
        self._traced = (kernel, dict(fixed), held[0] if held else len(self.params),
                        tuple((i, p.name, p.default) for i, p in enumerate(self.call_params) if p.has_default))
        self._call_defaults = tuple(p.default if p.has_default else _NO_DEFAULT for p in self.call_params)
        self._broken_reason = None     # set once priming fails: every later entry is slow
        self._opaque = None            # set once a heuristic reads what no key can hold
        self._builds: dict = {}        # specialization -> built launch pieces (known binaries)
        self._programs: dict = {}      # (grid key, resolved values, arg kinds) -> GridProgram
        self._recipes: dict = {}       # key words -> what a direct-launch Entry is built from
        self._adopt_traced_class(name or fn.__name__)

    def _adopt_traced_class(self, name: str):
        """Move this kernel to its own subclass whose torch.compile methods hold its constants
        as literals (``traced.py``: fewer guards per compiled call). Only with the C key
        builder (the pure-Python one runs the traced methods for eager calls too) and only for
        TritonKernel itself (a user's subclass keeps its own methods)."""
        if type(self) is not TritonKernel or keys.IMPLEMENTATION != "cython":
            return
        _, fixed, limit, defaults = self._traced
        cls = traced.traced_class(TritonKernel, name, fixed, limit, len(self.params), defaults,
                                  self.grid_style, self.grid, self._call_defaults, _NO_DEFAULT)
        if cls is not None:
            keys.impl.adopt_class(self, cls)

    def _register_op(self):
        """No generic custom op: under torch.compile Dynamo sees the Triton kernel itself."""

    def _call_roles(self) -> bytes:
        return bytes(ROLE_CONSTEXPR if p.is_constexpr else ROLE_VALUE if p.name in self._value_names
                     else ROLE_CLASS for p in self.call_params)

    # -- arguments ---------------------------------------------------------------------------
    def split(self, args: tuple):
        """(call arguments, per-call launch options given) of a bound call."""
        n = len(self.call_params)
        opts = {name: v for name, v in zip(self.option_names, args[n:]) if v is not None}
        return tuple(args[:n]), opts

    def full_args(self, call_args: tuple, values: dict | None = None) -> list:
        """The kernel's arguments in ``fn.params`` order: call arguments, fixed constexprs, the
        layers' values, then parameter defaults (Triton's binder does the same)."""
        values = values or {}
        it = iter(call_args)
        out = []
        for p in self.params:
            if p.name in self.fixed_constexprs:
                out.append(self.fixed_constexprs[p.name])
            elif p.name in values:
                out.append(values[p.name])
            elif p.name in self.layers.provided:
                out.append(p.default)   # provided by a layer that did not set it this time
            else:
                out.append(next(it))
        return out

    def meta(self, call_args, values: dict) -> dict:
        """Triton's META for a grid callable: every kernel parameter by name."""
        return dict(zip((p.name for p in self.params), self.full_args(tuple(call_args), values)))

    def validate(self, args: tuple) -> None:
        call_args, _ = self.split(args)
        runtime = [(name, a) for name, a, p in zip(self.call_names, call_args, self.call_params)
                   if not p.is_constexpr]
        for name, value in runtime:
            if value is not None and not isinstance(value, (torch.Tensor, int, float, bool) + self._tensor_descriptor):
                raise TypeError(f"{self.name}(): argument '{name}' must be a torch.Tensor, int, "
                                f"float, bool, None or TensorDescriptor, got {type(value).__name__}")
        tensors = [(n, v.base if isinstance(v, self._tensor_descriptor) else v) for n, v in runtime
                   if isinstance(v, (torch.Tensor,) + self._tensor_descriptor)]
        check_cuda_tensors(self.name, tensors, allow_cpu=self.interpret)

    # -- the layers ----------------------------------------------------------------------------
    def _device_of(self, call_args):
        for a in call_args:
            if self._tensor_descriptor and isinstance(a, self._tensor_descriptor):
                a = a.base
            if isinstance(a, torch.Tensor) and a.device.type == "cuda":
                return a.device.index if a.device.index is not None else torch.cuda.current_device()
        return None

    def _scope(self, layer, device, gpu=None):
        return decisions.scope_of(layer, self.fn, gpu or decisions.gpu_identity(device))

    def resolve(self, call_args: tuple, opts: dict, grid=None, *, may_tune=True, gpu=None):
        """The layers' values for a call (tuning, and launching it, if a decision is missing).
        ``gpu``: the GPU identity decisions are looked up for (ahead of time, without it)."""
        named = dict(zip(self.call_names, call_args))
        tensors = {n for n, v in named.items() if isinstance(v, torch.Tensor)}
        device = self._device_of(call_args)

        def decide(layer, tuning_key):
            scope = self._scope(layer, device, gpu)
            index = decisions.lookup(scope, tuning_key)
            return None if index is None else layer.configs[index]

        def tune(layer, kwargs):
            if not may_tune:
                raise RuntimeError(f"fastdispatch: {self.name} has no autotune decision for this "
                                   f"call and may not tune here")
            _refuse_during_capture(self.name)
            scope = self._scope(layer, device)
            tuning_key = tuning_key_of(layer, {**named, **kwargs})
            group = decisions.distributed_group()
            if group is not None and group.get_rank() != 0:
                index = decisions.broadcast_index(group, None)
                self._launch_triton(call_args, {**kwargs, **layer.configs[index].all_kwargs()}, grid,
                                    inner_of=layer)
            else:
                stats.record("tunes")
                self._run_layer(layer, call_args, kwargs, grid)
                index = layer.configs.index(layer.best_config)
                if group is not None:
                    decisions.broadcast_index(group, index)
            decisions.record(scope, tuning_key, index)
            return layer.configs[index]

        return self.layers.resolve(named, opts, tensors, decide, tune)

    # -- the miss ------------------------------------------------------------------------------
    def _handle_miss(self, args: tuple, kwargs: dict | None, grid=None):
        if kwargs or len(args) != len(self.param_names) + len(self.option_names):
            return super()._handle_miss(args, kwargs, grid)   # binds in Python, then comes back
        self.validate(args)
        if grid is None and self.grid is None:
            raise TypeError(f"{self.name}(): no launch grid: pass grid= to triton_kernel() or "
                            f"call {self.name}[grid](...)")
        _refuse_during_capture(self.name)
        call_args, opts = self.split(args)
        resolution = self.resolve(call_args, opts, grid)
        grew = resolution.value_reads - self._value_names
        if grew:   # a heuristic read more than the key held: key those values too (from now on)
            self._value_names |= grew
            self.set_roles(self._call_roles() + bytes([ROLE_CONSTEXPR] * len(self.option_names)))
        if resolution.opaque and self._opaque is None:
            self._opaque = resolution.opaque
            log.info("fastdispatch: %s takes Triton's own path on every call: %s", self.name,
                     resolution.opaque)
        words = self.key_of(*args)
        with self._flight.lock(words):
            entry = self.lookup(words)
            if entry is None:
                stats.record("misses")
                entry = self.make_entry(args, words, resolution)
                self.publish(entry)
        if resolution.launched:
            return None   # Triton's autotuner ran this call while tuning it
        return self.launch_once(entry, args, grid)

    def make_entry(self, args: tuple, words: tuple, resolution=None):
        # An entry rebuilt for the same key words (after an eviction or clear_entries): its
        # recipe is kept, so the miss costs a dict lookup and the Entry (~20 us less).
        recipe = self._recipes.get((words, fd_knobs.disable_fast_path))
        if recipe is not None and self._broken_reason is None and not self._opaque:
            return keys.Entry(words, MODE_DRIVER, **recipe)
        call_args, opts = self.split(args)
        if resolution is None:
            resolution = self.resolve(call_args, opts, may_tune=False)
        values = resolution.values
        pre_call = self._pre_call(resolution.pre_hooks, values) if resolution.pre_hooks else None
        if self.interpret:  # TRITON_INTERPRET=1: Triton's interpreter runs every call (CPU numerics)
            stats.record_fallback("TRITON_INTERPRET=1")
            return keys.Entry(words, MODE_SLOW, slow=functools.partial(self._interpreter_launch, values),
                              pre_call=pre_call, info={"fallback": "TRITON_INTERPRET=1", "values": values})
        if self._opaque:
            stats.record_fallback("opaque heuristics")
            return keys.Entry(words, MODE_SLOW, slow=self._native_launch,
                              info={"fallback": f"opaque heuristics: {self._opaque}"})
        device = self._device_of(call_args)
        if device is None:
            raise ValueError(f"{self.name}(): no CUDA tensor among the arguments")
        target = binaries.target_for_device(device)
        full = self.full_args(call_args, values)
        options = {**self.options, **self._options_in(values)}
        built = self._binary_for(full, options, target, device)
        kernel, src, key_text = built["kernel"], built["src"], built["key"]
        guard = tuple((gdict, name, _guard_value(gdict, name, value))
                      for (name, _), (value, gdict) in self.fn.used_global_vals.items())
        slow = functools.partial(self._slow_launch, kernel, device, guard, values)
        info = {"key": key_text, "device": device, "name": kernel.name, "values": values}
        reason = self._broken_reason
        if reason is None and fd_knobs.disable_fast_path:
            reason = "FASTDISPATCH_DISABLE_FAST_PATH=1"
        if reason is None and keys.IMPLEMENTATION != "cython":
            reason = f"key builder is {keys.IMPLEMENTATION} ({keys.reason})"
        if reason is None and getattr(self.fn, "pre_run_hooks", None):
            reason = "the JITFunction has pre-run hooks"
        if reason is None:
            try:
                plan = built.get("plan")
                if plan is None:
                    plan = built["plan"] = self.launch_plan(kernel, src, device)
                recipe = dict(plan=plan, grid=self._entry_grid(call_args, values), grid_fn=self.grid,
                              grid_slow=functools.partial(self._grid_slow, values), slow=slow,
                              globals_guard=guard, watch_hooks=True, pre_call=pre_call, info=info)
                if len(self._recipes) >= 2 * self.max_entries:
                    self._recipes.clear()
                self._recipes[(words, fd_knobs.disable_fast_path)] = recipe
                return keys.Entry(words, MODE_DRIVER, **recipe)
            except NoFastPath as exc:
                reason = str(exc)
                stats.record_fallback(reason)
                log.info("fastdispatch: %s uses Triton's launcher for this key: %s", self.name, reason)
            except Exception as exc:  # a priming failure: slow path for good, said once
                reason = self._broken_reason = f"priming failed: {type(exc).__name__}: {exc}"
                stats.record_fallback("priming failed")
                log.warning("fastdispatch: fast path disabled for kernel %s (%s); using Triton's "
                            "launcher from now on", self.name, reason)
        else:
            stats.record_fallback(reason)
        info["fallback"] = reason
        return keys.Entry(words, MODE_SLOW, slow=slow, pre_call=pre_call, info=info)

    def _options_in(self, values: dict) -> dict:
        """The launch options among the layers' values (what is not a kernel parameter)."""
        return {k: v for k, v in values.items() if k not in self._param_name_set}

    def _call_index(self) -> dict:
        return {name: i for i, name in enumerate(self.call_names)}

    def _binary_for(self, full: list, options: dict, target, device: int) -> dict:
        """The binary for a specialization, loaded on ``device`` -- memoized, so a miss whose
        binary is known costs Triton's specialization of the arguments and a dict lookup."""
        signature, constexprs, attrs = binaries.signature_of(self.params, full, target)
        memo = (device, target, tuple(signature.items()), tuple(constexprs.items()),
                tuple(sorted((k, repr(v)) for k, v in attrs.items())),
                tuple(sorted(options.items())), binaries.triton_knobs.runtime.debug,
                binaries.triton_knobs.compilation.instrumentation_mode)
        found = self._builds.get(memo)
        if found is None:
            key_text, src, parsed = binaries.specialize(self.fn, self.params, full, options, target)
            files = binaries.binary_files(key_text, src, target, parsed)
            kernel = binaries.loaded_kernel(key_text, src, files, device)
            found = self._builds[memo] = {"key": key_text, "src": src, "kernel": kernel}
        return found

    def _pre_call(self, hooks, values):
        def run_hooks(args):
            call_args, _ = self.split(args)
            meta = self.meta(call_args, values)
            for hook in hooks:
                hook(meta)
        return run_hooks



def triton_kernel(kernel, *, grid=None, constexprs=None, **options):
    """Wrap a Triton kernel object for microsecond dispatch: a ``@triton.jit`` function, or
    ``@triton.autotune`` / ``@triton.heuristics`` over one, nested in any order.

    ``grid``: optional; a tuple of 1-3 ints, a callable of META (Triton's convention) or of
    the call's arguments. Without it, call ``k[grid](*args, **kwargs)`` as Triton's own
    ``kernel[grid](...)``. ``constexprs``: ``tl.constexpr`` parameters fixed now (left out of
    every call). ``options``: launch options fixed now (``num_warps=8``, ...); a call may also
    pass them as keywords. Example (needs a CUDA GPU)::

        @triton.jit
        def add(x, y, out, n, BLOCK: tl.constexpr):
            i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(out + i, tl.load(x + i, mask=i < n) + tl.load(y + i, mask=i < n), mask=i < n)

        fast = fastdispatch.triton_kernel(add)
        fast[lambda META: (triton.cdiv(n, META["BLOCK"]),)](x, y, out, n, BLOCK=1024)
    """
    return TritonKernel(kernel, grid=grid, constexprs=constexprs, **options)
