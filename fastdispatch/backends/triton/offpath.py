"""What a ``TritonKernel`` does off the hot path: grids in Python and as traced programs,
Triton's own launch paths (its launcher on our binary, the kernel object's whole ``run``, the
interpreter), torch.compile's view of the kernel, and ahead-of-time compiles.

Lifetime: per key (programs are traced when an entry is built) and per call only when the hot
path falls back here (a grid C cannot evaluate, a slow entry, an interpreted kernel). A mixin of
:class:`~fastdispatch.backends.triton.kernel.TritonKernel`, which holds the state it reads.
"""
from __future__ import annotations

import torch

from fastdispatch import keys
from fastdispatch.backends.triton import binaries, grids
from fastdispatch.backends.triton.plan import launch_plan, triton_launch

_MISSING = object()
_is_compiling = torch.compiler.is_compiling
_NO_DEFAULT = object()   # a call parameter without a default (TritonKernel._call_defaults)


class OffHotPath:
    """TritonKernel's grids, slow launches, torch.compile path and ahead-of-time compiles."""

    __slots__ = ()   # the state is TritonKernel's

    # -- Triton's own path -----------------------------------------------------------------------
    def _triton_grid(self, call_args, grid):
        if grid is not None:
            return grid
        if self.grid_style == grids.STYLE_ARGS:
            user = self.grid
            return lambda meta: user(*call_args)
        return self.grid

    def _triton_call_args(self, call_args):
        """(positional, keyword) arguments for Triton's own ``run``: the leading parameters the
        caller passes positionally, the rest by name (Triton's autotuner reads ``nargs``)."""
        positional, by_name = [], dict(self.fixed_constexprs)
        it = iter(zip(self.call_names, call_args))
        for p in self.params:
            if p.name in self.fixed_constexprs or p.name in self.layers.provided:
                break
            positional.append(next(it)[1])
        by_name.update(dict(it))
        return positional, by_name

    def _run_layer(self, layer, call_args, kwargs, grid):
        positional, by_name = self._triton_call_args(call_args)
        layer.run(*positional, grid=self._triton_grid(call_args, grid), warmup=False,
                  **by_name, **kwargs)

    def _launch_triton(self, call_args, kwargs, grid, inner_of=None):
        """Triton's own path below ``inner_of`` (or the whole kernel object)."""
        positional, by_name = self._triton_call_args(call_args)
        target = inner_of.fn if inner_of is not None else self.kernel
        target.run(*positional, grid=self._triton_grid(call_args, grid), warmup=False,
                   **by_name, **kwargs)


    # -- grids ---------------------------------------------------------------------------------
    def _kinds(self, call_args):
        return tuple(("T", a.dim()) if isinstance(a, torch.Tensor) else type(a).__name__
                     for a in call_args)

    def _program(self, style, grid, call_args, values):
        """The GridProgram of ``grid`` for this entry (memoized per resolved values and
        argument kinds), or None where it is called in Python."""
        memo = (grids.grid_key(grid), tuple(sorted((k, repr(v)) for k, v in values.items())),
                self._kinds(call_args),
                tuple(call_args[i] for i in sorted(self._constexpr_positions)))
        if memo not in self._programs:
            self._programs[memo] = grids.trace_program(
                style, grid, call_args, lambda a: self.meta(a, values), self._constexpr_positions)
        return self._programs[memo]

    def _entry_grid(self, call_args, values):
        """The wrap-time grid of a new entry: static tuple, GridProgram, or a Python callable."""
        if self.grid is None or self.grid_style == grids.STYLE_STATIC:
            return self.grid
        program = self._program(self.grid_style, self.grid, call_args, values)
        if program is not None:
            return program
        return lambda *args: self._grid_value(self.split(args)[0], values, None)

    def _grid_value(self, call_args, values, grid):
        """The grid of a call, computed in Python."""
        if grid is None:
            if self.grid_style == grids.STYLE_STATIC:
                return grids.sizes(self.grid)
            if self.grid_style == grids.STYLE_ARGS:
                return grids.sizes(self.grid(*call_args))
            return grids.sizes(self.grid(self.meta(call_args, values)))
        if isinstance(grid, (tuple, list, int)):
            return grids.sizes(grid)
        return grids.sizes(grid(self.meta(call_args, values)))

    def _grid_slow(self, values, entry, args, grid):
        """C's fallback for a grid it has no program for: trace one for next time, compute now."""
        call_args, _ = self.split(args)
        if grid is not None and not isinstance(grid, (tuple, list)):
            key = grids.grid_key(grid)
            if id(key) not in entry.grid_programs:
                program = self._program(grids.STYLE_META, grid, call_args, values)
                entry.set_grid_program(key, program if program is not None else False)
        return self._grid_value(call_args, values, grid)

    # -- launches off the hot path -------------------------------------------------------------
    def _slow_launch(self, kernel, device, guard, values, args, grid=None):
        """Triton's launcher on our binary (hooks, scratch, descriptors), or Triton's whole path
        when a global the kernel read changed (so Triton raises its own error)."""
        call_args, opts = self.split(args)
        for gdict, name, value in guard:
            if gdict.get(name, _MISSING) != value:
                return self._native_launch(args, grid)
        triton_launch(kernel, device, self._grid_value(call_args, values, grid),
                      self.full_args(call_args, values))
        return None

    def _native_launch(self, args, grid=None):
        """The kernel object's own Triton path (heuristics and autotuning per call, as Triton)."""
        call_args, opts = self.split(args)
        positional, by_name = self._triton_call_args(call_args)
        return self.kernel.run(*positional, grid=self._triton_grid(call_args, grid), warmup=False,
                               **by_name, **opts)

    def _interpreter_launch(self, values, args, grid=None):
        call_args, _ = self.split(args)
        full = self.full_args(call_args, values)
        options = self._options_in(values)
        return self.fn[self._grid_value(call_args, values, grid)](*full, **options)

    # -- torch.compile ---------------------------------------------------------------------------
    # Under torch.compile, Dynamo sees the Triton kernel itself (its user-defined Triton kernel
    # support, with mutation analysis: no copies of the inputs), so the compiled graph is the one
    # a native ``kernel[grid](...)`` gives (same generated code, same graph time on the H200).
    # What stays ours is the guards on what the trace reads, checked on every call: these two
    # methods (in this class's dict, so Dynamo's lookup walks no further) read one attribute,
    # ``_traced`` = (kernel object, fixed constexprs, positional limit, omitted defaults), and
    # call Triton's own ``kernel[grid]`` with the call's arguments. Binding in Python (``bind``,
    # ~100 more guard lines, +2.5 us per call) is left to calls Triton's binder would misread.
    # These are the general methods: a TritonKernel whose constants have literal forms gets
    # its own class with the same methods written for it (``traced.py``), which read only
    # ``self.kernel``; these serve the rest and the pure-Python key builder.
    def __getitem__(self, grid, *_not_specialized):   # *_: see Dispatcher.__getitem__
        if not _is_compiling():
            return keys.FastKernel.__getitem__(self, grid)   # eager, pure-Python key builder
        kernel, fixed, limit, defaults = self._traced
        launch = kernel[grid]

        def traced(*args, **kwargs):
            if len(args) > limit:   # a positional argument Triton would bind to a held parameter
                return self._compiled_call(self.bind(args, kwargs), grid)
            for position, name, default in defaults:   # Dynamo's META holds only what is passed
                if position >= len(args) and name not in kwargs:
                    kwargs[name] = default
            return launch(*args, **kwargs, **fixed)
        return traced

    def __call__(self, *args, **kwargs):
        if not _is_compiling():
            return keys.FastKernel.__call__(self, *args, **kwargs)   # eager, pure-Python key builder
        style = self.grid_style
        if style == grids.STYLE_ARGS:   # the grid takes every call argument, positionally
            tail = self._call_defaults[len(args):]
            if kwargs or len(args) > len(self._call_defaults) or any(d is _NO_DEFAULT for d in tail):
                return self._compiled_call(self.bind(args, kwargs), None)
            args = args + tail
            return self[tuple(self.grid(*args))](*args)
        if self.grid is None:
            return self._compiled_call(self.bind(args, kwargs), None)   # raises the no-grid error
        return self[self.grid](*args, **kwargs)

    def _compiled_call(self, args: tuple, grid):
        """``k[grid](...)`` / ``k(...)`` under torch.compile, bound in Python: Triton's call of
        the kernel object with our bound arguments."""
        call_args, opts = self.split(args)
        positional, by_name = self._triton_call_args(call_args)
        if grid is None:
            grid = self.grid if self.grid_style != grids.STYLE_ARGS else tuple(self.grid(*call_args))
        return self.kernel[grid](*positional, **by_name, **opts)

    # -- ahead of time -----------------------------------------------------------------------------
    def compile_for(self, *args, target, gpu=None, **kwargs):
        """Compile (or load from the caches) the binary for a call with ``args``/``kwargs`` on
        ``target``; no GPU needed. Binds like a call (keywords, defaults, launch options);
        autotuned kernels need a decision (``decisions.import_file``; ``gpu``: the identity
        it was tuned on, ``"<name>|sm_<cc>"``) or a single config.
        Returns ``(key_text, files)`` mapping Triton's file names to bytes."""
        bound = self.bind(args, kwargs)
        call_args, opts = self.split(bound)
        resolution = (self.resolve(call_args, opts, may_tune=False, gpu=gpu)
                      if self.layers.layers else None)
        values = resolution.values if resolution else dict(opts)
        full = self.full_args(call_args, values)
        options = {**self.options, **self._options_in(values)}
        key_text, src, parsed = binaries.specialize(self.fn, self.params, full, options, target)
        if self.grid is not None and self.grid_style != grids.STYLE_STATIC:
            self._grid_value(call_args, values, None)   # a broken grid fails here, not at a call
        return key_text, binaries.binary_files(key_text, src, target, parsed)

    def specialize(self, args: tuple, target):
        """(key_text, ASTSource, options) for positional call ``args`` on ``target``."""
        call_args, opts = self.split(tuple(args) + (None,) * (len(self.param_names) + len(self.option_names) - len(args)))
        values = dict(opts)
        return binaries.specialize(self.fn, self.params, self.full_args(call_args, values),
                                   {**self.options, **values}, target)

    def launch_plan(self, kernel, src, device: int) -> dict:
        """The direct launch plan of a loaded binary (raises NoFastPath when inexpressible)."""
        return launch_plan(kernel, src, device, self._call_index())
