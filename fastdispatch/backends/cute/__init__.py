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

The parts, by lifetime: `arch` (per process: the device's arch, versions, environment), `args`
(per key: argument classes, fake arguments, the host function's signature), `binaries` (per
process: the compile lock, in-memory binaries, loading exported objects), `kernel` (per miss:
the dispatcher and `cute_kernel`).
"""
from __future__ import annotations

from fastdispatch.backends.cute.arch import arch_for_capability, device_arch  # noqa: F401
from fastdispatch.backends.cute.args import TensorClass  # noqa: F401
from fastdispatch.backends.cute.binaries import (  # noqa: F401
    BASE_OPTIONS, COMPILE_LOCK, OBJECT_FILE, CuteBinary, clear_memory_cache, raw_function, seed_binary)
from fastdispatch.backends.cute.kernel import CuteKernel, cute_kernel  # noqa: F401
