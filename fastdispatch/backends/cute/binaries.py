"""CuTe DSL backend, per process: the compile lock, the in-memory binaries by compile key, and
the binaries themselves (`CuteBinary`: compiled, or an exported object file loaded from the disk
cache) with their raw positional TVM-FFI functions."""
from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastdispatch import cache

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
