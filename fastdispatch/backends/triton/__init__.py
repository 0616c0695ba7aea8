"""Triton backend: any Triton kernel object (``@triton.jit``, ``@triton.autotune``,
``@triton.heuristics``, nested) behind the fastdispatch hot path.

Lifetime, by file:

| file | lifetime | what |
|---|---|---|
| ``kernel.py`` | per miss | ``TritonKernel``: roles, binding, the miss, entries, torch.compile |
| ``layers.py`` | per miss | heuristics and autotune resolved for a call, and what decided them |
| ``decisions.py`` | per process / disk | autotune decisions: memory, disk, export/import, rank 0 |
| ``grids.py`` | per key | grid styles, META, programs traced for C |
| ``binaries.py`` | per key / per process | Triton's specialization, compile key, binary caches |
| ``plan.py`` | per key | the direct launch plan; Triton's own launch as the slow path |
"""
from fastdispatch.backends.triton.binaries import (_files_by_key, _loaded, device_capability,
                                                   target_for_device, toolchain_fingerprint)
from fastdispatch.backends.triton.kernel import LAUNCH_OPTIONS, TritonKernel, triton_kernel
from fastdispatch.backends.triton.plan import (ATTR_CLUSTER_DIMENSION, ATTR_CLUSTER_SCHEDULING,
                                               ATTR_COOPERATIVE, ATTR_PDL, CLUSTER_SCHEDULING_SPREAD,
                                               PARAM_F32, PARAM_F64, PARAM_I32, PARAM_I64, PARAM_NULL,
                                               PARAM_PTR, PARAM_U8, NoFastPath)

_NoFastPath = NoFastPath   # the old private name (tests, callers of 0.1)

__all__ = ["TritonKernel", "triton_kernel", "LAUNCH_OPTIONS", "NoFastPath", "device_capability",
           "target_for_device", "toolchain_fingerprint"]
