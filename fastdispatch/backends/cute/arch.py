"""CuTe DSL backend, per process: the exact arch of a device (queried once), the DSL and TVM-FFI
versions and the code-changing ``CUTE_DSL_*`` environment that go into every compile key."""
from __future__ import annotations

import importlib.metadata
import os

import torch

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
