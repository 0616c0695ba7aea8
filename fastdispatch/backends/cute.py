"""CuTe DSL backend: compile a ``@cute.jit`` host function per argument class, call it through TVM-FFI.

Lifetime: per key (a miss). A hit never comes here: the entry is MODE_CALL and the C hot path
calls the binary's raw TVM-FFI function positionally with the call's own torch tensors (~0.36 us
for 3 tensors on the lent H100, DESIGN §4; the stream is torch's current one, read in C by
TVM-FFI through the DLPack exchange API, so CUDA graph capture works).

Binaries are size-generic (DESIGN §4): each tensor argument becomes a fake tensor with symbolic
sizes, so one binary serves every shape of a *class*: dtype, rank, 16-byte alignment of the data
pointer and layout (canonical row-major vs. arbitrary strides, 32- vs 64-bit sizes). The fast
key holds exactly that class (ROLE_LAYOUT, computed in C), so a new shape is a hit; with a
user ``validate`` or ``fake_args`` (which may read sizes) it holds exact shapes instead.

Where a binary comes from, in order: memory (``_binaries``, by compile-key text), the disk
cache (``cache.load("cute", key)``: an object file from ``export_to_c``, loaded with
``cutlass.runtime.load_module(..., enable_tvm_ffi=True)``, ~ms), ``cute.compile`` under one
process-wide lock (it is neither thread-safe nor cached by the DSL: cutlass#3398). The disk key
holds everything that changes the code: the module source hash, exact arch (``sm_90a``), the
nvidia-cutlass-dsl and apache-tvm-ffi versions, compile options, ``CUTE_DSL_*`` env vars and
each argument's class.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import logging
import os
import tempfile
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastdispatch import _stats as stats, cache, keys
from fastdispatch.dispatcher import MODE_CALL, Dispatcher
from fastdispatch.errors import check_cuda_tensors

log = logging.getLogger("fastdispatch")

#: One lock for every ``cute.compile`` / ``export_to_c`` / ``load_module`` in this process: the
#: DSL keeps a shared MLIR context and global singletons (DESIGN §4). Kernels compiling CuTe code
#: outside this backend should take it too.
COMPILE_LOCK = threading.RLock()

#: Options this backend always passes; ``compile_options`` are appended.
BASE_OPTIONS = "--enable-tvm-ffi"
OBJECT_FILE = "kernel.o"

_binaries: dict = {}            # compile-key text -> CuteBinary (per process, all wrappers)
_binaries_lock = threading.Lock()
_flight = cache.SingleFlight()  # per compile key: N wrappers/threads on one key compile once
_capabilities: dict = {}


def _versions() -> str:
    out = []
    for dist in ("nvidia-cutlass-dsl", "apache-tvm-ffi"):
        try:
            out.append(f"{dist}={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist}=?")
    return ",".join(out)


_VERSIONS = _versions()


def arch_for_capability(major: int, minor: int) -> str:
    """The exact arch a binary is compiled for: ``sm_90a`` for 9.0, ``sm_100a`` for 10.0.

    The ``a`` (arch-specific) variants from Hopper on, since kernels use WGMMA/TMA/tcgen05.
    """
    cc = major * 10 + minor
    return f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"


def device_arch(device: int) -> str:
    """Arch of CUDA device ``device``, queried once per process."""
    cap = _capabilities.get(device)
    if cap is None:
        cap = _capabilities[device] = torch.cuda.get_device_capability(device)
    return arch_for_capability(*cap)


def _normalize_arch(arch=None, target=None) -> str:
    if target is not None:  # a triton GPUTarget (fastdispatch.precompile passes one)
        cc = int(target.arch)
        return arch_for_capability(cc // 10, cc % 10)
    if not isinstance(arch, str) or not arch.startswith("sm_") or not arch[3:].rstrip("af").isdigit():
        raise ValueError(f"arch must look like 'sm_90a' or 'sm_100a', got {arch!r}")
    return arch


def _codegen_env() -> str:
    # Conservative: every CUTE_DSL_* variable except pure logging/dumping ones may change code.
    skip = ("CUTE_DSL_LOG", "CUTE_DSL_PRINT", "CUTE_DSL_DUMP", "CUTE_DSL_KEEP", "CUTE_DSL_CACHE")
    return ";".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                    if k.startswith("CUTE_DSL_") and not k.startswith(skip))


# -- argument classes ------------------------------------------------------------------------
def _torch_to_cutlass():
    import cutlass

    names = {"float32": "Float32", "float16": "Float16", "bfloat16": "BFloat16",
             "float64": "Float64", "int8": "Int8", "int16": "Int16", "int32": "Int32",
             "int64": "Int64", "uint8": "Uint8", "uint16": "Uint16", "uint32": "Uint32",
             "uint64": "Uint64", "bool": "Boolean", "float8_e4m3fn": "Float8E4M3FN",
             "float8_e5m2": "Float8E5M2"}
    return {getattr(torch, t): getattr(cutlass, c) for t, c in names.items()
            if hasattr(torch, t) and hasattr(cutlass, c)}


_DTYPES: dict = {}


def _row_major_strides(shape) -> tuple:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


@dataclass(frozen=True)
class TensorClass:
    """What a size-generic binary depends on for one tensor argument."""

    dtype: torch.dtype
    rank: int
    aligned16: bool      # data_ptr % 16 == 0 (the fast key's alignment bit)
    compact: bool        # strides are exactly the row-major ones of its shape
    wide: bool           # some size needs 64 bits

    @classmethod
    def of(cls, t: torch.Tensor) -> "TensorClass":
        try:
            aligned = t.data_ptr() % 16 == 0
        except Exception:  # meta / FakeTensor: no storage, treat as aligned (precompile specs)
            aligned = True
        shape = tuple(t.shape)
        return cls(t.dtype, len(shape), aligned, tuple(t.stride()) == _row_major_strides(shape),
                   any(s >= 2 ** 31 for s in shape) or t.numel() >= 2 ** 31)

    def text(self) -> str:
        return (f"T({str(self.dtype).replace('torch.', '')},r{self.rank},"
                f"{'a16' if self.aligned16 else 'a' + str(_elem_bytes(self.dtype))},"
                f"{'compact' if self.compact else 'strided'}{',i64' if self.wide else ''})")

    def fake(self):
        """A fake tensor of this class with one fresh symbolic size per mode."""
        import cutlass.cute as cute
        from cutlass.cute.runtime import make_fake_compact_tensor, make_fake_tensor

        if not _DTYPES:
            _DTYPES.update(_torch_to_cutlass())
        element = _DTYPES.get(self.dtype)
        if element is None:
            raise ValueError(f"dtype {self.dtype} has no CuTe DSL element type here")
        sym = cute.sym_int64 if self.wide else cute.sym_int32
        shape = tuple(sym() for _ in range(self.rank))
        align = 16 if self.aligned16 else _elem_bytes(self.dtype)
        if self.compact:
            order = tuple(range(self.rank - 1, -1, -1))  # last mode fastest (row-major)
            return make_fake_compact_tensor(element, shape, stride_order=order, assumed_align=align)
        strides = tuple(cute.sym_int64() for _ in range(self.rank))
        return make_fake_tensor(element, shape, strides, assumed_align=align)


def _elem_bytes(dtype: torch.dtype) -> int:
    return max(1, torch.empty((), dtype=dtype).element_size())


def _scalar(value, annotation):
    """(class text, compile-time value) of a runtime scalar: always a *dynamic* DSL value, so a
    binary never bakes in a value the fast key does not hold (ints are keyed by class only)."""
    import cutlass

    if isinstance(annotation, type) and issubclass(annotation, cutlass.Numeric):
        return f"S({annotation.__name__})", annotation(value)
    if isinstance(value, bool):
        return "S(Boolean)", cutlass.Boolean(value)
    if isinstance(value, int):
        if -(2 ** 31) <= value < 2 ** 31:
            return "S(Int32)", cutlass.Int32(value)
        return "S(Int64)", cutlass.Int64(value)
    return "S(Float32)", cutlass.Float32(value)


# -- binaries --------------------------------------------------------------------------------
@dataclass
class CuteBinary:
    """One compiled (or loaded) binary for a compile key.

    ``fn``: the raw positional TVM-FFI function (None when compiled for another arch than the
    local GPU's, e.g. AOT on a CPU machine); ``slow``: the same through the DSL's kwargs wrapper
    (or ``fn`` when loaded from disk); ``files``: ``{"kernel.o": bytes}`` as stored on disk;
    ``ptx``: the PTX text when compiled with ``keep_ptx``. Unpacks as ``(key, files)`` like the
    Triton backend's ``compile_for`` result (``fastdispatch.precompile`` relies on that).
    """

    key: str
    files: dict
    fn: object = None
    slow: object = None
    ptx: str | None = None
    source: str = "compile"     # "compile" | "disk"
    compiled: object = field(default=None, repr=False)   # cute.compile result or loaded module
    module: object = field(default=None, repr=False)     # load_module result kept alive

    def __iter__(self):
        return iter((self.key, self.files))


def _symbol(key_text: str) -> str:
    # A C identifier, unique per key, so two loaded modules never share exported symbols.
    return "fd_cute_" + cache.key_digest(key_text)[:24]


def _load_object(key_text: str, data: bytes):
    """The raw TVM-FFI function of an exported object file (``load_module``, ~ms)."""
    import cutlass.runtime

    with tempfile.TemporaryDirectory(prefix="fastdispatch-cute-") as d:
        path = os.path.join(d, OBJECT_FILE)
        Path(path).write_bytes(data)
        with COMPILE_LOCK:
            module = cutlass.runtime.load_module(path, enable_tvm_ffi=True)
            fn = module[_symbol(key_text)]
    # The engine holding the code is kept alive by the function (keep_alive_object); keep the
    # module too, in case a DSL version ties the engine's lifetime to it.
    return fn, module


def raw_function(compiled):
    """The positional TVM-FFI function of a ``cute.compile`` result, or None if it has none.

    4.8.1 returns either a ``tvm_ffi.Function`` subclass whose Python ``__call__`` re-checks its
    handle per call, or a kwargs wrapper exposing ``__tvm_ffi_object__()``; both reduce to the
    plain ``tvm_ffi.Function`` so the hot path pays only TVM-FFI's own C call.
    """
    getter = getattr(compiled, "__tvm_ffi_object__", None)
    if getter is not None:
        return getter()
    import tvm_ffi

    if isinstance(compiled, tvm_ffi.Function):
        if compiled.__chandle__() == 0:
            return None
        return tvm_ffi.Function.__call__.__get__(compiled)  # C slot, no Python frame
    return None


# -- the dispatcher --------------------------------------------------------------------------
class CuteKernel(Dispatcher):
    """A ``@cute.jit`` host function behind the fastdispatch hot path (see :func:`cute_kernel`)."""

    def __init__(self, jit_fn, *, param_names=None, fake_args=None, constexprs=None,
                 compile_options: str = "", stream_param: str | None = None, validate=None,
                 name=None):
        if not callable(jit_fn):
            raise TypeError(f"cute_kernel: jit_fn must be a @cute.jit function, got {type(jit_fn).__name__}")
        if not isinstance(compile_options, str):
            raise TypeError(f"cute_kernel: compile_options must be a str, got {type(compile_options).__name__}")
        if "--gpu-arch" in compile_options or "--enable-tvm-ffi" in compile_options:
            raise ValueError("cute_kernel: compile_options must not set --gpu-arch or "
                             "--enable-tvm-ffi (the backend sets both, per key)")
        if fake_args is not None and not callable(fake_args):
            raise TypeError("cute_kernel: fake_args must be a callable (classes, args) -> "
                            "compile-time arguments")
        if validate is not None and not callable(validate):
            raise TypeError("cute_kernel: validate must be a callable of the call's arguments")
        self.jit_fn = jit_fn
        self.compile_options = compile_options.strip()
        self.fixed_constexprs = dict(constexprs or {})
        self._fake_args = fake_args
        self._validate = validate
        sig = inspect.signature(jit_fn)
        params = list(sig.parameters.values())
        hints = _annotations(jit_fn)
        all_names = [p.name for p in params]
        for fixed in self.fixed_constexprs:
            if fixed not in all_names:
                raise ValueError(f"cute_kernel: constexprs names '{fixed}', which is not a "
                                 f"parameter of {jit_fn.__name__} ({', '.join(all_names)})")
        self.stream_param = stream_param if stream_param is not None else _find_stream(params, hints)
        if self.stream_param is None or self.stream_param not in all_names:
            raise ValueError(f"cute_kernel: {jit_fn.__name__} needs a stream parameter (annotated "
                             f"cuda.CUstream or named 'stream', or pass stream_param=): launches "
                             f"must go on torch's current stream")
        # Constexpr parameters are compiled in, not passed to the binary: fixed now (or their
        # default), so the call's arguments map 1:1 onto the TVM-FFI function's.
        call = []
        for p in params:
            if p.name == self.stream_param or p.name in self.fixed_constexprs:
                continue
            if _is_constexpr(hints.get(p.name)):
                if p.default is inspect.Parameter.empty:
                    raise ValueError(f"cute_kernel: Constexpr parameter '{p.name}' of "
                                     f"{jit_fn.__name__} must be fixed with constexprs={{...}}")
                self.fixed_constexprs[p.name] = p.default
                continue
            if p.default is not inspect.Parameter.empty:
                raise ValueError(f"cute_kernel: runtime parameter '{p.name}' has a default; "
                                 f"pass every runtime argument (the binary is positional)")
            call.append(p.name)
        self._all_params = all_names
        self._tensor_params = {n for n in call if _is_tensor_annotation(hints.get(n))}
        self._hints = hints
        if param_names is not None:
            param_names = tuple(param_names)
            if len(param_names) != len(call):
                raise ValueError(f"cute_kernel: param_names has {len(param_names)} names for "
                                 f"{len(call)} runtime parameters ({', '.join(call)})")
        self._jit_call_names = tuple(call)
        self._source_hash = _source_hash(jit_fn)
        self.compiles = 0    # binaries this wrapper compiled (not loaded) -- tests, diagnostics
        # The key holds what a binary depends on: each tensor's layout class (dtype, rank,
        # alignment, compact or strided, 32/64-bit sizes: ROLE_LAYOUT), so a new size is a hit.
        # A user validate() or fake_args() may look at exact sizes, so those keep ROLE_EXACT
        # (one entry per shape, validated once per shape).
        role = keys.ROLE_EXACT if (validate is not None or fake_args is not None) else keys.ROLE_LAYOUT
        super().__init__(name or getattr(jit_fn, "__name__", "cute_kernel"), param_names or call,
                         roles=bytes([role] * len(call)))

    # -- arguments ---------------------------------------------------------------------------
    def validate(self, args: tuple) -> None:
        named = list(zip(self.param_names, args))
        for (pname, value), jname in zip(named, self._jit_call_names):
            if jname in self._tensor_params and not isinstance(value, torch.Tensor):
                raise TypeError(f"{self.name}(): argument '{pname}' must be a torch.Tensor "
                                f"(a cute.Tensor parameter), got {type(value).__name__}")
            if not isinstance(value, (torch.Tensor, int, float)):
                raise TypeError(f"{self.name}(): argument '{pname}' must be a torch.Tensor, int "
                                f"or float, got {type(value).__name__}")
        check_cuda_tensors(self.name, named)
        if self._validate is not None:
            self._validate(*args)

    def classes(self, args: tuple) -> list:
        """The compile-relevant class of each call argument (TensorClass or scalar text)."""
        out = []
        for pname, jname, value in zip(self.param_names, self._jit_call_names, args):
            if isinstance(value, torch.Tensor):
                out.append(TensorClass.of(value))
            elif isinstance(value, (int, float)):
                out.append(_scalar(value, self._hints.get(jname))[0])
            else:
                raise TypeError(f"{self.name}(): argument '{pname}' must be a torch.Tensor, int "
                                f"or float, got {type(value).__name__}")
        return out

    def key_text(self, args: tuple, arch: str) -> str:
        """The compile key of ``args`` on ``arch``: everything the binary depends on, no sizes."""
        classes = self.classes(args)
        parts = [c.text() if isinstance(c, TensorClass) else c for c in classes]
        consts = ",".join(f"{k}={v!r}" for k, v in sorted(self.fixed_constexprs.items()))
        return (f"fastdispatch-cute|fn={getattr(self.jit_fn, '__module__', '?')}."
                f"{getattr(self.jit_fn, '__qualname__', self.name)}|src={self._source_hash}|"
                f"arch={arch}|{_VERSIONS}|opts={self.compile_options}|env={_codegen_env()}|"
                f"const={consts}|fake={'custom' if self._fake_args else 'generic'}|"
                f"args={';'.join(parts)}")

    def compile_args(self, args: tuple) -> list:
        """The arguments ``cute.compile`` gets for ``args``: fake tensors, dynamic scalars,
        fixed constexprs and the TVM-FFI env stream, in the jit function's parameter order."""
        from cutlass.cute.runtime import make_fake_stream

        if self._fake_args is not None:
            runtime = list(self._fake_args(self.classes(args), args))
            if len(runtime) != len(args):
                raise ValueError(f"cute_kernel: fake_args returned {len(runtime)} values for "
                                 f"{len(args)} runtime parameters")
        else:
            runtime = []
            for jname, value in zip(self._jit_call_names, args):
                if isinstance(value, torch.Tensor):
                    runtime.append(TensorClass.of(value).fake())
                else:
                    runtime.append(_scalar(value, self._hints.get(jname))[1])
        by_name = dict(zip(self._jit_call_names, runtime))
        by_name.update(self.fixed_constexprs)
        by_name[self.stream_param] = make_fake_stream(use_tvm_ffi_env_stream=True)
        return [by_name[n] for n in self._all_params]

    # -- compile -----------------------------------------------------------------------------
    def compile_for(self, *args, arch: str | None = None, target=None, keep_ptx: bool = True,
                    use_cache: bool = True) -> CuteBinary:
        """Compile (or find) the binary for ``args``' class on ``arch`` (e.g. ``"sm_90a"``);
        no GPU needed. ``args`` may be CPU or meta tensors: only dtype, rank, alignment and
        layout matter. ``target`` (a triton ``GPUTarget``) is accepted for
        ``fastdispatch.precompile``. With ``keep_ptx`` a fresh compile keeps ``.ptx``;
        ``use_cache=False`` always compiles (and stores nothing).
        """
        if len(args) != len(self.param_names):
            raise TypeError(f"{self.name}.compile_for() takes {len(self.param_names)} arguments "
                            f"({', '.join(self.param_names)}) but {len(args)} were given")
        arch = _normalize_arch(arch, target)
        key_text = self.key_text(args, arch)
        if not use_cache:
            return self._compile(args, arch, key_text, keep_ptx)
        return self._binary(args, arch, key_text, keep_ptx)

    def _binary(self, args, arch: str, key_text: str, keep_ptx: bool) -> CuteBinary:
        found = _binaries.get(key_text)
        if found is not None and (found.ptx is not None or not keep_ptx):
            return found
        with _flight.lock(key_text):
            found = _binaries.get(key_text)
            if found is not None and (found.ptx is not None or not keep_ptx):
                return found
            if found is None and not keep_ptx:
                files = cache.load("cute", key_text)
                if files is not None and OBJECT_FILE in files:
                    try:
                        fn, module = _load_object(key_text, files[OBJECT_FILE])
                        found = CuteBinary(key_text, files, fn=fn, slow=fn, source="disk",
                                           module=module)
                    except Exception as exc:  # an unloadable object is as bad as a corrupt one
                        log.warning("fastdispatch: cannot load cached CuTe binary for %s (%s: %s); "
                                    "recompiling", self.name, type(exc).__name__, exc)
            if found is None or (keep_ptx and found.ptx is None):
                found = self._compile(args, arch, key_text, keep_ptx)
                cache.store("cute", key_text, found.files)
            with _binaries_lock:
                _binaries[key_text] = found
        return found

    def _compile(self, args, arch: str, key_text: str, keep_ptx: bool) -> CuteBinary:
        import cutlass.cute as cute

        options = f"{BASE_OPTIONS} --gpu-arch {arch}"
        if self.compile_options:
            options += " " + self.compile_options
        started = time.perf_counter()
        with COMPILE_LOCK, tempfile.TemporaryDirectory(prefix="fastdispatch-cute-") as d:
            opts = options
            if keep_ptx:
                # `cute.compile[KeepPTX]` is dropped once an options string is given (4.8.1):
                # the option form writes the PTX to dump-dir and reads it back into `__ptx__`.
                opts += f" --keep-ptx --dump-dir {d}"
            compiled = cute.compile(self.jit_fn, *self.compile_args(args), options=opts)
            ptx = getattr(compiled, "__ptx__", None) if keep_ptx else None
            obj = os.path.join(d, OBJECT_FILE)
            compiled.export_to_c(obj, function_name=_symbol(key_text))
            data = Path(obj).read_bytes()
        seconds = time.perf_counter() - started
        self.compiles += 1
        stats.record("compiles")
        stats.record("compile_seconds", seconds)
        log.info("fastdispatch: compiled CuTe kernel %s for %s in %.2f s", self.name, arch, seconds)
        return CuteBinary(key_text, {OBJECT_FILE: data}, fn=raw_function(compiled), slow=compiled,
                          ptx=ptx, source="compile", compiled=compiled)

    # -- entries -----------------------------------------------------------------------------
    def make_entry(self, args: tuple, words: tuple):
        device = _first_cuda_device(args)
        arch = device_arch(device)
        key_text = self.key_text(args, arch)
        binary = self._binary(args, arch, key_text, keep_ptx=False)
        if binary.fn is None:
            # Compiled, but the DSL built no callable (e.g. compile_for() ran before for this
            # arch with the GPU's driver not yet initialized): load the exported object; same code.
            with _flight.lock(key_text):
                if binary.fn is None:
                    binary.fn, binary.module = _load_object(key_text, binary.files[OBJECT_FILE])
        fn = binary.fn
        # The kwargs wrapper when this process compiled it (its callable exists), else fn.
        slow_target = binary.slow if raw_function(binary.slow) is not None else fn
        return keys.Entry(words, MODE_CALL, fn=fn, slow=lambda a: slow_target(*a),
                          info={"key": key_text, "device": device, "arch": arch,
                                "source": binary.source})


def _annotations(fn) -> dict:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return dict(getattr(fn, "__annotations__", {}))


def _is_constexpr(annotation) -> bool:
    import cutlass

    return annotation is cutlass.Constexpr or typing.get_origin(annotation) is cutlass.Constexpr


def _is_tensor_annotation(annotation) -> bool:
    import cutlass.cute as cute

    return isinstance(annotation, type) and issubclass(annotation, cute.Tensor)


def _find_stream(params, hints):
    for p in params:
        ann = hints.get(p.name)
        if getattr(ann, "__name__", "") == "CUstream" or p.name == "stream":
            return p.name
    return None


def _source_hash(fn) -> str:
    """SHA-256 of the function's source and of its whole module's (the ``@cute.kernel`` it
    launches usually lives next to it; helpers imported from elsewhere are not covered)."""
    h = hashlib.sha256()
    for obj in (fn, inspect.getmodule(fn)):
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):
            h.update(repr(getattr(fn, "__code__", fn)).encode())
    return h.hexdigest()[:32]


def _first_cuda_device(args) -> int:
    for a in args:
        if isinstance(a, torch.Tensor) and a.device.type == "cuda":
            return a.device.index if a.device.index is not None else torch.cuda.current_device()
    raise ValueError("no CUDA tensor among the arguments")  # validate() reports this first


def cute_kernel(jit_fn, *, param_names=None, fake_args=None, constexprs=None,
                compile_options: str = "", stream_param: str | None = None, validate=None,
                name: str | None = None) -> CuteKernel:
    """Wrap a ``@cute.jit`` host function for microsecond dispatch through TVM-FFI.

    The host function takes ``cute.Tensor`` parameters (called with torch tensors), runtime
    scalars (ints/floats; annotate ``cutlass.Int32`` etc. to choose the type), ``Constexpr``
    parameters and one stream parameter (annotated ``cuda.CUstream`` or named ``stream``),
    which calls never pass: the launch goes on torch's current stream.

    - ``param_names``: names for the call's parameters in error messages (default: the jit
      function's runtime parameter names).
    - ``constexprs``: values for ``Constexpr`` parameters, fixed now; a ``Constexpr`` with a
      default is fixed to it. Calls pass only runtime parameters.
    - ``fake_args``: ``(classes, args) -> list`` of compile-time values for the runtime
      parameters, for kernels that need more than the generic fake tensors (divisibility,
      static modes). It must depend only on ``classes`` (one :class:`TensorClass` or scalar
      class text per argument), which is all the compile key holds.
    - ``compile_options``: extra ``cute.compile`` options (part of the key), e.g.
      ``"--opt-level 3"``; not ``--gpu-arch`` / ``--enable-tvm-ffi``.
    - ``validate``: ``validate(*args)`` raising TypeError/ValueError, run on misses (every new
      shape is a miss, so shape rules hold for every call that reaches a binary).

    One binary per (dtype, rank, 16-byte alignment, layout) class of the tensors and arch;
    every size of a class reuses it. Example (needs a CUDA GPU)::

        from fastdispatch.kernels.cute_add import cute_add
        add = fastdispatch.cute_kernel(cute_add)
        add(a, b, out)          # out = a + b, fp32 1-D
    """
    return CuteKernel(jit_fn, param_names=param_names, fake_args=fake_args, constexprs=constexprs,
                      compile_options=compile_options, stream_param=stream_param,
                      validate=validate, name=name)


def clear_memory_cache() -> None:
    """Forget in-memory binaries (wrapped kernels keep their published entries)."""
    with _binaries_lock:
        _binaries.clear()


def seed_binary(binary: CuteBinary) -> None:
    """Make ``binary`` the in-memory binary of its compile key, so wrappers use exactly it
    (benchmarks comparing call paths on one binary; it must have a callable ``fn``)."""
    if binary.fn is None:
        raise ValueError("seed_binary: this binary has no callable (compiled for another arch?)")
    with _binaries_lock:
        _binaries[binary.key] = binary
