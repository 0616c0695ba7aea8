"""Triton backend: compile a ``@triton.jit`` kernel for a key, and plan its direct launch.

Lifetime: per key (a miss). Specialization is Triton's own (``native_specialize_impl``, the
function ``JITFunction.run`` uses), compiled ahead of time with ``triton.compile(ASTSource)``
for the tensors' device (or any ``GPUTarget``, without a GPU). The key of a binary in our
caches names the exact arch, the toolchain (Triton version, libtriton and ptxas identity), the
source and its dependencies, the options and the cache-invalidating env vars.

The launch plan mirrors Triton's C launcher (3.6's generated one and 3.9's table-driven one):
kernel parameters are the non-constexpr arguments, then Triton's trailing scratch pointers
(NULL when their sizes are 0); ``cuLaunchKernelEx`` with grid x times num_ctas, 32*num_warps
threads, the metadata's shared bytes, and PDL / cooperative / cluster attributes. Whatever the
plan cannot express (scratch memory, tensor descriptors, fp16 scalars, ...) launches through
Triton's own ``CompiledKernel.run`` instead, permanently for that entry, with one log line.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import triton
import triton.knobs as triton_knobs
from triton.compiler import ASTSource, make_backend
from triton.compiler.compiler import CompiledKernel
from triton.backends.compiler import GPUTarget
from triton._C.libtriton import get_cache_invalidating_env_vars, native_specialize_impl
from triton.runtime.jit import KernelParam

try:  # imported lazily by native_specialize_impl on its first call (~80 ms): pay it at import
    import triton.experimental.gluon  # noqa: F401
except ImportError:
    pass

from fastdispatch import _stats as stats, cache, keys
from fastdispatch.dispatcher import (MODE_DRIVER, MODE_SLOW, ROLE_CONSTEXPR, ROLE_RUNTIME,
                                     Dispatcher)
from fastdispatch.errors import check_cuda_tensors
from fastdispatch.knobs import knobs as fd_knobs

log = logging.getLogger("fastdispatch")

keys.impl.set_triton_hooks(getattr(triton_knobs, "HookChain", type(None)), triton_knobs.runtime,
                           triton_knobs.compilation)

# ParamKind values of launchers/_driver.pxd.
PARAM_PTR, PARAM_I32, PARAM_I64, PARAM_U8, PARAM_F32, PARAM_F64, PARAM_NULL = range(7)
_SCALAR_KINDS = {"i32": PARAM_I32, "i64": PARAM_I64, "u64": PARAM_I64, "u1": PARAM_U8,
                 "i1": PARAM_U8, "fp32": PARAM_F32, "f32": PARAM_F32, "fp64": PARAM_F64}
# CUlaunchAttributeID values (cuda.h), checked against cuda-bindings in the tests.
ATTR_COOPERATIVE, ATTR_CLUSTER_DIMENSION, ATTR_CLUSTER_SCHEDULING, ATTR_PDL = 2, 4, 5, 6
CLUSTER_SCHEDULING_SPREAD = 1

_capabilities: dict = {}
_files_by_key: dict = {}          # key text -> {filename: bytes}  (per process)
_loaded: dict = {}                # (key text, device) -> CompiledKernel with handles loaded
_load_lock = threading.Lock()
_file_dirs: dict = {}             # key text -> directory holding the files (for CompiledKernel)


@functools.lru_cache(maxsize=None)
def toolchain_fingerprint(arch: int) -> str:
    """Triton's version plus the identity (size, mtime) of libtriton and the ptxas Triton
    would use for ``arch`` -- no subprocess, no hashing of the install."""
    def ident(path):
        try:
            st = os.stat(path)
            return f"{os.path.basename(path)}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            return f"{os.path.basename(path)}:missing"

    from triton._C import libtriton
    nvidia_bin = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if arch >= 100:
        ptxas = os.environ.get("TRITON_PTXAS_BLACKWELL_PATH") or os.path.join(nvidia_bin, "ptxas-blackwell")
        if not os.path.exists(ptxas):
            ptxas = os.environ.get("TRITON_PTXAS_PATH") or os.path.join(nvidia_bin, "ptxas")
    else:
        ptxas = os.environ.get("TRITON_PTXAS_PATH") or os.path.join(nvidia_bin, "ptxas")
    return f"triton-{triton.__version__}+{ident(libtriton.__file__)}+{ident(ptxas)}"


def device_capability(device: int) -> tuple[int, int]:
    """Compute capability of CUDA device ``device``, queried once per process."""
    cap = _capabilities.get(device)
    if cap is None:
        cap = _capabilities[device] = torch.cuda.get_device_capability(device)
    return cap


def target_for_device(device: int) -> GPUTarget:
    """Triton's GPUTarget for a CUDA device index."""
    major, minor = device_capability(device)
    return GPUTarget("cuda", major * 10 + minor, 32)


class _NoFastPath(Exception):
    """The direct launcher cannot express this binary; Triton's launcher is used."""


class TritonKernel(Dispatcher):
    """A ``@triton.jit`` kernel behind the fastdispatch hot path (see :func:`triton_kernel`)."""

    def __init__(self, fn, *, grid, constexprs=None, num_warps=4, num_stages=3, num_ctas=1,
                 name=None, **options):
        self.interpret = _is_interpreted(fn)
        if not (isinstance(fn, triton.runtime.jit.JITFunction) or self.interpret):
            raise TypeError(f"triton_kernel: fn must be a @triton.jit function, got {type(fn).__name__}")
        if grid is None or not (callable(grid) or isinstance(grid, (tuple, list, int))):
            raise TypeError("triton_kernel: grid must be a tuple of 1-3 ints or a callable of the "
                            f"call's arguments returning one, got {type(grid).__name__}")
        if not callable(grid):
            grid = (grid,) if isinstance(grid, int) else tuple(grid)
            if not 1 <= len(grid) <= 3 or not all(isinstance(g, int) and g >= 0 for g in grid):
                raise ValueError(f"triton_kernel: grid must have 1-3 non-negative ints, got {grid}")
        fixed = dict(constexprs or {})
        self.params = _params_of(fn)
        params = {p.name: p for p in self.params}
        for fixed_name in fixed:
            if fixed_name not in params:
                raise ValueError(f"triton_kernel: constexprs names '{fixed_name}', which is not a "
                                 f"parameter of {fn.__name__} ({', '.join(params)})")
            if not params[fixed_name].is_constexpr:
                raise ValueError(f"triton_kernel: '{fixed_name}' is not a tl.constexpr parameter "
                                 f"of {fn.__name__}")
        self.fn = fn
        self.grid = grid
        self.fixed_constexprs = fixed
        self.options = dict(num_warps=num_warps, num_stages=num_stages, num_ctas=num_ctas, **options)
        self.call_params = [p for p in self.params if p.name not in fixed]
        roles = bytes(ROLE_CONSTEXPR if p.is_constexpr else ROLE_RUNTIME for p in self.call_params)
        defaults = {p.name: p.default for p in self.call_params if p.has_default}
        super().__init__(name or fn.__name__, [p.name for p in self.call_params], roles, defaults,
                         knobs=(triton_knobs.runtime, triton_knobs.compilation))
        self._broken_reason = None     # set once priming fails: every later entry is slow

    # -- arguments ---------------------------------------------------------------------------
    def full_args(self, args: tuple) -> list:
        """The kernel's arguments in ``fn.params`` order: call arguments plus fixed constexprs."""
        it = iter(args)
        return [self.fixed_constexprs[p.name] if p.name in self.fixed_constexprs else next(it)
                for p in self.params]

    def grid_of(self, args: tuple) -> tuple:
        g = self.grid(*args) if callable(self.grid) else self.grid
        g = tuple(g) + (1, 1)
        return g[0], g[1], g[2]

    def validate(self, args: tuple) -> None:
        runtime = [(name, a) for name, a, role in zip(self.param_names, args, self.roles)
                   if role == ROLE_RUNTIME]
        for name, value in runtime:
            if value is not None and not isinstance(value, (torch.Tensor, int, float, bool)):
                raise TypeError(f"{self.name}(): argument '{name}' must be a torch.Tensor, int, "
                                f"float, bool or None, got {type(value).__name__}")
        check_cuda_tensors(self.name, runtime, allow_cpu=self.interpret)

    # -- specialization ----------------------------------------------------------------------
    def specialize(self, args: tuple, target: GPUTarget):
        """(key_text, ASTSource, options) for ``args`` on ``target``: Triton's own rules."""
        backend = make_backend(target)
        signature, constexprs, attrs = {}, {}, {}
        for i, (param, value) in enumerate(zip(self.params, self.full_args(args))):
            if param.is_constexpr:
                signature[param.name] = "constexpr"
                constexprs[(i,)] = value
                continue
            ty, spec = native_specialize_impl(type(backend), value, param.is_const,
                                              not param.do_not_specialize,
                                              not param.do_not_specialize_on_alignment)
            annotation = getattr(param, "annotation_type", None)
            if annotation and ty != "constexpr":
                if annotation == "u1" or annotation[:2] in ("fp", "bf"):
                    spec = None
                ty = annotation
            signature[param.name] = ty
            if ty == "constexpr":
                constexprs[(i,)] = spec
            elif isinstance(spec, str):
                attrs[(i,)] = backend.parse_attr(spec)
        opts = dict(self.options)
        opts["debug"] = bool(opts.get("debug") or self.fn.debug or triton_knobs.runtime.debug)
        opts["instrumentation_mode"] = triton_knobs.compilation.instrumentation_mode
        # Explicit, so AOT and JIT binaries agree and Triton 3.9 does not warn (DESIGN §4).
        opts.setdefault("enable_fp_fusion", os.environ.get("TRITON_DEFAULT_FP_FUSION", "1") != "0")
        options = backend.parse_options(opts)
        src = ASTSource(self.fn, signature, constexprs, attrs)
        env_vars = sorted(get_cache_invalidating_env_vars().items())
        # Not Triton's get_cache_key: its triton_key() hashes the whole Triton install and
        # libtriton.so (~0.5-1 s per process on the lent H100's host), which is most of a warm
        # cold start. The toolchain fingerprint below names the same things by version and
        # file identity instead (DESIGN §4: key the exact arch, every toolchain version, the
        # source hash, the options and the codegen-affecting env vars).
        key_text = (f"fastdispatch-triton|v1|arch={target.backend}:{target.arch}:{target.warp_size}|"
                    f"toolchain={toolchain_fingerprint(target.arch)}|src={src.hash()}|"
                    f"options={options.hash()}|env={env_vars}")
        return key_text, src, options

    def compile_for(self, *args, target: GPUTarget):
        """Compile (or load from the caches) the binary for ``args`` on ``target``; no GPU needed.

        Returns ``(key_text, files)`` where files maps Triton's file names (``.json``,
        ``.cubin``, ...) to bytes. Used by tests, ``precompile`` and the miss path.
        """
        key_text, src, options = self.specialize(args, target)
        return key_text, _binary_files(key_text, src, target, options)

    # -- entries -----------------------------------------------------------------------------
    def make_entry(self, args: tuple, words: tuple):
        if self.interpret:  # TRITON_INTERPRET=1: Triton's interpreter runs every call (CPU numerics)
            stats.record_fallback("TRITON_INTERPRET=1")
            return keys.Entry(words, MODE_SLOW, slow=self._interpreter_launch,
                              info={"fallback": "TRITON_INTERPRET=1"})
        device = _first_cuda_device(args)
        target = target_for_device(device)
        key_text, src, options = self.specialize(args, target)
        files = _binary_files(key_text, src, target, options)
        kernel = _loaded_kernel(key_text, src, files, device)
        guard = tuple((gdict, name, value) for (name, _), (value, gdict) in self.fn.used_global_vals.items())
        slow = functools.partial(_slow_launch, self, kernel, device, guard)
        info = {"key": key_text, "device": device, "name": kernel.name}
        reason = self._broken_reason
        if reason is None and fd_knobs.disable_fast_path:
            reason = "FASTDISPATCH_DISABLE_FAST_PATH=1"
        if reason is None and keys.IMPLEMENTATION != "cython":
            reason = f"key builder is {keys.IMPLEMENTATION} ({keys.reason})"
        if reason is None:
            try:
                plan = self.launch_plan(kernel, src, device)
                return keys.Entry(words, MODE_DRIVER, plan=plan, grid=self.grid, slow=slow,
                                  globals_guard=guard, watch_hooks=True, info=info)
            except _NoFastPath as exc:
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
        return keys.Entry(words, MODE_SLOW, slow=slow, info=info)

    def _interpreter_launch(self, args: tuple):
        return self.fn[self.grid_of(args)](*self.full_args(args))

    def launch_plan(self, kernel: CompiledKernel, src, device: int) -> dict:
        """The direct launch plan of a loaded binary (raises _NoFastPath when inexpressible)."""
        from fastdispatch.launchers import _driver

        if not _driver.available():
            raise _NoFastPath(_driver.load_error())
        md = kernel.metadata
        if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
            raise _NoFastPath("kernel needs scratch memory (allocated per launch by Triton)")
        if getattr(md, "tensordesc_meta", None):
            raise _NoFastPath("kernel takes tensor descriptors")
        if getattr(md, "num_ctas", 1) == 16:
            raise _NoFastPath("16-CTA clusters need a non-portable cluster attribute")
        mode = getattr(md, "instrumentation_mode", "") or ""
        if mode:
            raise _NoFastPath(f"instrumentation mode {mode!r} adds launcher arguments")
        if getattr(kernel, "fd_handles", None) is None:
            raise _NoFastPath("binary not loaded by the driver module")
        call_index = {name: i for i, name in enumerate(self.param_names)}
        kinds, arg_index = [], []
        for name, ty in src.signature.items():
            if ty == "constexpr":
                continue
            if not isinstance(ty, str) or ty.startswith("tensordesc"):
                raise _NoFastPath(f"parameter '{name}' has type {ty}")
            kind = PARAM_PTR if ty.startswith("*") else _SCALAR_KINDS.get(ty)
            if kind is None:
                raise _NoFastPath(f"parameter '{name}' has scalar type {ty} (no direct packing)")
            kinds.append(kind)
            arg_index.append(call_index[name])
        # Triton >= 3.5 appends global_scratch and profile_scratch; 3.4 only global_scratch.
        n_scratch = 2 if hasattr(md, "profile_scratch_size") else (1 if hasattr(md, "global_scratch_size") else 0)
        kinds += [PARAM_NULL] * n_scratch
        arg_index += [0] * n_scratch
        attrs = []
        if getattr(md, "launch_pdl", False):
            attrs.append((ATTR_PDL, 1))
        if getattr(md, "launch_cooperative_grid", False):
            attrs.append((ATTR_COOPERATIVE, 1))
        num_ctas = getattr(md, "num_ctas", 1)
        if num_ctas != 1:
            attrs.append((ATTR_CLUSTER_DIMENSION, (num_ctas, 1, 1)))
            attrs.append((ATTR_CLUSTER_SCHEDULING, CLUSTER_SCHEDULING_SPREAD))
        with torch.cuda.device(device):
            context = _driver.current_context_handle()
        if not context:
            raise _NoFastPath("no current CUDA context for the device")
        function, loaded_context, _ = kernel.fd_handles
        if loaded_context != context:
            raise _NoFastPath("the binary was loaded in another context than the device's current one")
        return {"function": function, "context": context, "block_x": 32 * md.num_warps,
                "num_ctas": num_ctas, "shared_bytes": md.shared, "param_kinds": kinds,
                "param_args": arg_index, "attrs": attrs}


def _is_interpreted(fn) -> bool:
    """True for Triton's ``InterpretedFunction`` (``TRITON_INTERPRET=1``). Its module imports
    numpy, which fastdispatch does not need: an interpreted function exists only once that
    module is imported, so it is looked up in ``sys.modules``, never imported here."""
    interpreter = sys.modules.get("triton.runtime.interpreter")
    return interpreter is not None and isinstance(fn, interpreter.InterpretedFunction)


def _params_of(fn) -> list:
    """The KernelParams of a JITFunction, or built the same way for an InterpretedFunction."""
    params = getattr(fn, "params", None)
    if params is not None:
        return list(params)
    signature = inspect.signature(fn.fn)
    return [KernelParam(i, p, False, False) for i, p in enumerate(signature.parameters.values())]


def triton_kernel(fn, *, grid, constexprs=None, num_warps=4, num_stages=3, num_ctas=1, **options):
    """Wrap a ``@triton.jit`` kernel for microsecond dispatch.

    ``grid``: a tuple of 1-3 ints, or a callable of the call's arguments returning one.
    ``constexprs``: ``tl.constexpr`` parameters fixed now (left out of every call); others are
    passed per call and their values are part of the key. Calls launch on the current torch
    stream of the tensors' device. Example (needs a CUDA GPU)::

        @triton.jit
        def add(x, y, out, n, BLOCK: tl.constexpr):
            i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            tl.store(out + i, tl.load(x + i, mask=i < n) + tl.load(y + i, mask=i < n), mask=i < n)

        k = fastdispatch.triton_kernel(add, grid=lambda x, y, out, n: (triton.cdiv(n, 1024),),
                                       constexprs={"BLOCK": 1024})
        k(x, y, out, x.numel())
    """
    return TritonKernel(fn, grid=grid, constexprs=constexprs, num_warps=num_warps,
                        num_stages=num_stages, num_ctas=num_ctas, **options)


# -- binaries -----------------------------------------------------------------------------------
def _binary_files(key_text: str, src, target: GPUTarget, options) -> dict:
    """Files of the binary for ``key_text``: memory, then disk, then ``triton.compile``."""
    files = _files_by_key.get(key_text)
    if files is not None:
        return files
    files = cache.load("triton", key_text)
    if files is None:
        started = time.perf_counter()
        compiled = triton.compile(src, target=target, options=options.__dict__)
        stats.record("compiles")
        stats.record("compile_seconds", time.perf_counter() - started)
        files = {}
        for filename, path in compiled.metadata_group.items():
            if filename.endswith((".json", ".cubin", ".ptx")):
                files[filename] = Path(path).read_bytes()
        cache.store("triton", key_text, files)
    _files_by_key[key_text] = files
    return files


def _files_dir(key_text: str, files: dict) -> Path:
    """A directory holding ``files`` (CompiledKernel reads metadata and binary from paths)."""
    found = _file_dirs.get(key_text)
    if found is None:
        found = Path(tempfile.mkdtemp(prefix="fastdispatch-"))
        for filename, data in files.items():
            (found / filename).write_bytes(data)
        _file_dirs[key_text] = found
    return found


def _loaded_kernel(key_text: str, src, files: dict, device: int) -> CompiledKernel:
    """A CompiledKernel for ``files`` whose function is loaded on ``device`` (once per device).

    The module is loaded by our driver module (``function``/``context`` set on the kernel);
    Triton's own ``_init_handles`` (which also builds its launcher) runs only if the slow path
    is ever taken, in :func:`_slow_launch`.
    """
    with _load_lock:
        kernel = _loaded.get((key_text, device))
        if kernel is None:
            directory = _files_dir(key_text, files)
            group = {name: str(directory / name) for name in files}
            kernel = CompiledKernel(src, group, cache.key_digest(key_text))
            kernel.fd_handles = None
            try:
                from fastdispatch.launchers import _driver
                if _driver.available():
                    with torch.cuda.device(device):
                        kernel.fd_handles = _driver.load_function(
                            bytes(kernel.kernel), kernel.name, kernel.metadata.shared, device)
            except ImportError:
                pass
            _loaded[(key_text, device)] = kernel
    return kernel


def _first_cuda_device(args) -> int:
    for a in args:
        if isinstance(a, torch.Tensor) and a.device.type == "cuda":
            return a.device.index if a.device.index is not None else torch.cuda.current_device()
    raise ValueError("no CUDA tensor among the arguments")  # validate() reports this first


def _slow_launch(kernel_wrapper: TritonKernel, kernel: CompiledKernel, device: int, guard, args):
    """Triton's own launch of our binary: hooks, launch metadata and scratch handled by Triton."""
    full = kernel_wrapper.full_args(args)
    grid = kernel_wrapper.grid_of(args)
    for gdict, name, value in guard:
        if gdict.get(name, _MISSING) != value:
            # A global the kernel read changed after compile: Triton's own JIT path raises its error.
            return kernel_wrapper.fn[grid](*full, **kernel_wrapper.options)
    with torch.cuda.device(device):
        if kernel.function is None:
            kernel._init_handles()   # Triton's own module and launcher, only on this slow path
        stream = torch.cuda.current_stream(device).cuda_stream
        launch_metadata = kernel.launch_metadata(grid, stream, *full)
        kernel.run(grid[0], grid[1], grid[2], stream, kernel.function, kernel.packed_metadata,
                   launch_metadata, triton_knobs.runtime.launch_enter_hook,
                   triton_knobs.runtime.launch_exit_hook, *full)
    return None


_MISSING = object()
