"""CuTe DSL backend, per miss: `CuteKernel`, the dispatcher of a wrapped ``@cute.jit`` host
function (bind, validate, key, compile or load once per key, publish a MODE_CALL entry), and
`cute_kernel`, its public constructor."""
from __future__ import annotations

import inspect
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from fastdispatch import _stats as stats, cache, keys
from fastdispatch.backends.cute.arch import _VERSIONS, _codegen_env, _normalize_arch, device_arch
from fastdispatch.backends.cute.args import (TensorClass, _annotations, _find_stream, _first_cuda_device,
                                             _is_constexpr, _is_tensor_annotation, _scalar, _source_hash)
from fastdispatch.backends.cute.binaries import (BASE_OPTIONS, COMPILE_LOCK, OBJECT_FILE, CuteBinary, _binaries,
                                                 _binaries_lock, _flight, _load_object, _symbol, raw_function)
from fastdispatch.dispatcher import MODE_CALL, Dispatcher
from fastdispatch.errors import check_cuda_tensors

log = logging.getLogger("fastdispatch")


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
