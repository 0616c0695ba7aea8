"""The direct launch plan of a loaded Triton binary, and Triton's own launch as the slow path.

Lifetime: per key (the plan is computed once per entry; the hot path walks it in C). The plan
mirrors Triton's C launcher (3.6's generated one and 3.7+'s table-driven one): kernel parameters
are the non-constexpr arguments, then Triton's trailing scratch pointers (NULL when their sizes
are 0); ``cuLaunchKernelEx`` with grid x times num_ctas, 32*num_warps threads, the metadata's
shared bytes, and PDL / cooperative / cluster attributes. Whatever the plan cannot express
(scratch memory, tensor descriptors, fp16 scalars, instrumentation, ...) raises
:class:`NoFastPath`, and the entry launches through Triton's ``CompiledKernel.run`` instead.
"""
from __future__ import annotations

import torch
import triton.knobs as triton_knobs

# ParamKind values of launchers/_driver.pxd.
PARAM_PTR, PARAM_I32, PARAM_I64, PARAM_U8, PARAM_F32, PARAM_F64, PARAM_NULL = range(7)
_SCALAR_KINDS = {"i32": PARAM_I32, "i64": PARAM_I64, "u64": PARAM_I64, "u1": PARAM_U8,
                 "i1": PARAM_U8, "fp32": PARAM_F32, "f32": PARAM_F32, "fp64": PARAM_F64}
# CUlaunchAttributeID values (cuda.h), checked against cuda-bindings in the tests.
ATTR_COOPERATIVE, ATTR_CLUSTER_DIMENSION, ATTR_CLUSTER_SCHEDULING, ATTR_PDL = 2, 4, 5, 6
CLUSTER_SCHEDULING_SPREAD = 1


class NoFastPath(Exception):
    """The direct launcher cannot express this binary; Triton's launcher is used."""


def launch_plan(kernel, src, device: int, call_index: dict) -> dict:
    """The plan of ``kernel`` (a loaded CompiledKernel) whose parameters come from the call's
    argument slots at ``call_index[name]``. Raises NoFastPath when inexpressible."""
    from fastdispatch.launchers import _driver

    if not _driver.available():
        raise NoFastPath(_driver.load_error())
    md = kernel.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise NoFastPath("kernel needs scratch memory (allocated per launch by Triton)")
    if getattr(md, "tensordesc_meta", None):
        raise NoFastPath("kernel takes tensor descriptors")
    if getattr(md, "num_ctas", 1) == 16:
        raise NoFastPath("16-CTA clusters need a non-portable cluster attribute")
    mode = getattr(md, "instrumentation_mode", "") or ""
    if mode:
        raise NoFastPath(f"instrumentation mode {mode!r} adds launcher arguments")
    if getattr(kernel, "fd_handles", None) is None:
        raise NoFastPath("binary not loaded by the driver module")
    kinds, arg_index = [], []
    for name, ty in src.signature.items():
        if ty == "constexpr":
            continue
        if not isinstance(ty, str) or ty.startswith("tensordesc"):
            raise NoFastPath(f"parameter '{name}' has type {ty}")
        kind = PARAM_PTR if ty.startswith("*") else _SCALAR_KINDS.get(ty)
        if kind is None:
            raise NoFastPath(f"parameter '{name}' has scalar type {ty} (no direct packing)")
        if name not in call_index:
            raise NoFastPath(f"parameter '{name}' is not an argument of the call")
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
        raise NoFastPath("no current CUDA context for the device")
    function, loaded_context, _ = kernel.fd_handles
    if loaded_context != context:
        raise NoFastPath("the binary was loaded in another context than the device's current one")
    return {"function": function, "context": context, "block_x": 32 * md.num_warps,
            "num_ctas": num_ctas, "shared_bytes": md.shared, "param_kinds": kinds,
            "param_args": arg_index, "attrs": attrs}


def triton_launch(kernel, device: int, grid: tuple, full_args: list) -> None:
    """Triton's own launch of our binary (its C launcher): hooks, launch metadata, scratch
    memory (through ``triton.set_allocator``) and tensor descriptors handled by Triton."""
    with torch.cuda.device(device):
        if kernel.function is None:
            kernel._init_handles()   # Triton's own module and launcher, only on this slow path
        stream = torch.cuda.current_stream(device).cuda_stream
        launch_metadata = kernel.launch_metadata(grid, stream, *full_args)
        kernel.run(grid[0], grid[1], grid[2], stream, kernel.function, kernel.packed_metadata,
                   launch_metadata, triton_knobs.runtime.launch_enter_hook,
                   triton_knobs.runtime.launch_exit_hook, *full_args)
