"""Fill the on-disk binary cache ahead of time (cold starts that must be fast).

Lifetime: a deployment step. ``python -m fastdispatch precompile MODULE:ATTR ... [--arch sm_90]
[--shapes FILE]``: each MODULE:ATTR names either a wrapped kernel (then ``--shapes`` gives its
example argument lists) or a callable returning ``(kernel, args)`` pairs. Arguments may be real
tensors (any device, even CPU) or :class:`TensorSpec`; only what the key depends on matters
(dtype, 16-byte alignment, int classes), so no GPU is needed and the arch can be another
machine's. The process that later serves finds the binaries under the same key and launches
without compiling, provided it runs the same Triton / toolchain (they are part of the key).
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorSpec:
    """A stand-in tensor argument: ``dtype`` and ``shape``; ``aligned=False`` makes its data
    pointer not 16-byte aligned (a view at offset one element)."""

    dtype: str = "float32"
    shape: tuple = (16,)
    aligned: bool = True

    def materialize(self) -> torch.Tensor:
        dtype = getattr(torch, self.dtype)
        numel = 1
        for s in self.shape:
            numel *= s
        base = torch.empty(numel + 16, dtype=dtype)
        start = 0 if self.aligned else 1
        return base[start:start + numel].view(self.shape)


def _materialize(arg):
    if isinstance(arg, TensorSpec):
        return arg.materialize()
    if isinstance(arg, dict) and "dtype" in arg:
        return TensorSpec(arg["dtype"], tuple(arg.get("shape", (16,))), arg.get("aligned", True)).materialize()
    return arg


def resolve(target: str):
    """The object named by ``MODULE:ATTR``."""
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"precompile: expected MODULE:ATTR, got {target!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def parse_arch(arch: str | None) -> int:
    """'sm_90', 'sm_90a', '90' -> 90; None -> the local GPU's."""
    if arch is None:
        if not torch.cuda.is_available():
            raise ValueError("precompile: no GPU here; name the target with --arch (e.g. sm_90)")
        major, minor = torch.cuda.get_device_capability()
        return major * 10 + minor
    digits = "".join(ch for ch in arch if ch.isdigit())
    if not digits:
        raise ValueError(f"precompile: cannot read an arch from {arch!r} (expected e.g. sm_90)")
    return int(digits)


def jobs(target: str, shapes: list | None):
    """(kernel, args) pairs for one MODULE:ATTR."""
    from fastdispatch.dispatcher import Dispatcher

    obj = resolve(target)
    if isinstance(obj, Dispatcher):
        if not shapes:
            raise ValueError(f"precompile: {target} is a kernel; give its argument lists with --shapes")
        return [(obj, tuple(_materialize(a) for a in args)) for args in shapes]
    if callable(obj):
        return [(kernel, tuple(_materialize(a) for a in args)) for kernel, args in obj()]
    raise TypeError(f"precompile: {target} is neither a wrapped kernel nor a callable returning "
                    f"(kernel, args) pairs")


def precompile(targets, arch: str | None = None, shapes_file: str | None = None,
               decisions_file: str | None = None, gpu: str | None = None) -> list[dict]:
    """Compile (or find) every binary; returns one report row per (kernel, args).

    ``decisions_file``: autotune decisions exported on the serving GPU
    (``fastdispatch.backends.triton.decisions.export``), imported first and stored with the
    binaries, so autotuned kernels compile the configs that GPU chose; ``gpu``: that GPU's
    name as ``torch.cuda.get_device_name`` says it (needed without a GPU here)."""
    from triton.backends.compiler import GPUTarget

    from fastdispatch import _stats

    shapes = json.load(open(shapes_file)) if shapes_file else None
    cc = parse_arch(arch)
    if decisions_file:
        from fastdispatch.backends.triton import decisions
        decisions.import_file(decisions_file)
    gpu_id = f"{gpu}|sm_{cc}" if gpu else None
    rows = []
    for target in targets:
        for kernel, args in jobs(target, shapes):
            before = _stats.snapshot().get("compiles", 0)
            extra = {"gpu": gpu_id} if gpu_id and getattr(kernel, "layers", None) is not None else {}
            key_text, files = kernel.compile_for(*args, target=GPUTarget("cuda", cc, 32), **extra)
            compiled = _stats.snapshot().get("compiles", 0) > before
            rows.append({"kernel": kernel.name, "arch": f"sm_{cc}", "compiled": compiled,
                         "files": sorted(files), "key": key_text[:80]})
    return rows
