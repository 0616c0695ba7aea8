"""``python -m fastdispatch inspect scaled_mm --arch sm_90a|sm_100a [--shape M,N,K]``.

Compiles the variant the dispatcher would pick for the shape, without a GPU, and reports its
configuration, SMEM, and (where a ptxas is found) registers and spills. The last line is JSON of
PTX instruction counts keyed by opcode prefix.
"""
from __future__ import annotations

import dataclasses
import json

from fastdispatch.kernels.scaled_mm._ptx import DEFAULT_PREFIXES, count_ptx_ops, ptxas_resource_usage


def inspect_variant(arch: str, m: int, n: int, k: int, has_bias: bool = False) -> dict:
    """{'variant', 'config', 'smem_bytes', 'resources', 'ptx_counts'} for ``arch`` and a shape."""
    if arch == "sm_90a":
        from fastdispatch.kernels.scaled_mm import sm90 as module
        config = module.default_config(m, n, k)
        ptx = module.ptx_sm90(config, has_bias=has_bias)
        variant = "sm90 (WGMMA, TMA, warp-specialized persistent)"
    elif arch == "sm_100a":
        from fastdispatch.kernels.scaled_mm import sm100 as module
        config = module.default_config(m, n, k)
        ptx = module.ptx_sm100(config, has_bias=has_bias)
        variant = "sm100 (tcgen05 2-CTA, TMA, warp-specialized persistent) -- compiled, not run here"
    else:
        raise ValueError(f"arch must be sm_90a or sm_100a, got {arch!r}")
    smem = getattr(module, "smem_bytes", None)
    return {
        "variant": variant,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else repr(config),
        "smem_bytes": smem(config) if smem else None,
        "resources": ptxas_resource_usage(ptx, arch),
        "ptx_counts": count_ptx_ops(ptx, DEFAULT_PREFIXES),
    }


def inspect_main(args) -> int:
    m, n, k = (int(x) for x in args.shape.split(","))
    report = inspect_variant(args.arch, m, n, k)
    print(f"scaled_mm {m}x{n}x{k} for {args.arch}: {report['variant']}")
    print(f"config: {report['config']}")
    print(f"smem bytes: {report['smem_bytes']}")
    print(f"registers/spills (ptxas): {report['resources'] or 'no ptxas found'}")
    print(json.dumps(report["ptx_counts"]))
    return 0
