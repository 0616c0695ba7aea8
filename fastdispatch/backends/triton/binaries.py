"""Triton binaries: Triton's own specialization, the compile key, and the binary caches.

Lifetime: per key (a miss) and per process (``_files_by_key``, ``_loaded``). Specialization is
Triton's (``native_specialize_impl``, what ``JITFunction.run`` uses), compiled ahead of time with
``triton.compile(ASTSource)`` for the tensors' device or any ``GPUTarget`` (no GPU needed). A
binary's compile key names the exact arch, the toolchain (Triton version, libtriton and ptxas
identity), the source and its dependencies, the options and the cache-invalidating env vars.
"""
from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from pathlib import Path

import torch
import triton
import triton.knobs as triton_knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.compiler.compiler import CompiledKernel
from triton._C.libtriton import get_cache_invalidating_env_vars, native_specialize_impl

try:  # imported lazily by native_specialize_impl on its first call (~80 ms): pay it at import
    import triton.experimental.gluon  # noqa: F401
except ImportError:
    pass

from fastdispatch import _stats as stats, cache

_capabilities: dict = {}
_files_by_key: dict = {}          # key text -> {filename: bytes}  (per process)
_loaded: dict = {}                # (key text, device) -> CompiledKernel with handles loaded
_load_lock = threading.Lock()
_file_dirs: dict = {}             # key text -> directory holding the files (for CompiledKernel)
_backends: dict = {}              # GPUTarget -> Triton backend (make_backend is not free)


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
    """The ``GPUTarget`` Triton would compile for on CUDA device ``device``."""
    major, minor = device_capability(device)
    return GPUTarget("cuda", major * 10 + minor, 32)


def backend_for(target: GPUTarget):
    """Triton's compiler backend for ``target`` (made once per target)."""
    found = _backends.get(target)
    if found is None:
        found = _backends[target] = make_backend(target)
    return found


def signature_of(params, full_args, target: GPUTarget):
    """Triton's specialization of ``full_args`` (in ``params`` order): (signature, constexprs,
    attrs), exactly as ``JITFunction.run``'s binder computes them."""
    backend = backend_for(target)
    signature, constexprs, attrs = {}, {}, {}
    for i, (param, value) in enumerate(zip(params, full_args)):
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
    return signature, constexprs, attrs


def specialize(fn, params, full_args, options: dict, target: GPUTarget):
    """(key_text, ASTSource, parsed options) of ``fn`` for ``full_args`` on ``target``."""
    backend = backend_for(target)
    signature, constexprs, attrs = signature_of(params, full_args, target)
    opts = dict(options)
    opts["debug"] = bool(opts.get("debug") or fn.debug or triton_knobs.runtime.debug)
    opts["instrumentation_mode"] = triton_knobs.compilation.instrumentation_mode
    # Explicit, so AOT and JIT binaries agree and Triton 3.9 does not warn (DESIGN §4).
    opts.setdefault("enable_fp_fusion", os.environ.get("TRITON_DEFAULT_FP_FUSION", "1") != "0")
    parsed = backend.parse_options(opts)
    src = ASTSource(fn, signature, constexprs, attrs)
    env_vars = sorted(get_cache_invalidating_env_vars().items())
    # Not Triton's get_cache_key: its triton_key() hashes the whole Triton install and
    # libtriton.so (~0.5-1 s per process on the lent H100's host), which is most of a warm
    # cold start. The toolchain fingerprint below names the same things by version and
    # file identity instead (DESIGN §4: key the exact arch, every toolchain version, the
    # source hash, the options and the codegen-affecting env vars).
    key_text = (f"fastdispatch-triton|v1|arch={target.backend}:{target.arch}:{target.warp_size}|"
                f"toolchain={toolchain_fingerprint(target.arch)}|src={src.hash()}|"
                f"options={parsed.hash()}|env={env_vars}")
    return key_text, src, parsed


def binary_files(key_text: str, src, target: GPUTarget, options) -> dict:
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


def loaded_kernel(key_text: str, src, files: dict, device: int) -> CompiledKernel:
    """A CompiledKernel for ``files`` whose function is loaded on ``device`` (once per device).

    The module is loaded by our driver module (``fd_handles`` set on the kernel); Triton's own
    ``_init_handles`` (which also builds its launcher) runs only if the slow path is ever taken.
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


def clear_memory() -> None:
    """Forget in-memory binaries and loaded kernels (not the disk cache)."""
    _files_by_key.clear()
    _loaded.clear()
