"""``python -m fastdispatch inspect scaled_mm --arch sm_90a|sm_100a [--recipe R] [--shape M,N,K]``.

Compiles the config the dispatcher would pick for the shape and scale recipe (``rowwise``, or
``blockwise``: torch's BlockWise1x128 x BlockWise128x128), without a GPU, and reports its
configuration, SMEM, and (where a ptxas is found) registers and spills, then which path
(our kernel or torch._scaled_mm, and why) each recipe / dtype combination takes on that arch
(``routing.route`` on meta tensors). The last line is JSON of PTX instruction counts keyed by
opcode prefix.
"""
from __future__ import annotations

import dataclasses
import json

import torch

from fastdispatch.kernels.scaled_mm._ptx import DEFAULT_PREFIXES, count_ptx_ops, ptxas_resource_usage

CAPABILITIES = {"sm_90a": (9, 0), "sm_100a": (10, 0)}
#: --recipe -> the dispatcher's recipe name.
RECIPES = {"rowwise": "rowwise", "blockwise": "block_1x128_128x128"}
_TABLE_RECIPES = ("tensorwise", "rowwise", "block_1x128_128x128", "block_1x128_1x128", "block_128x128_1x128")
_OPERANDS = ((torch.float8_e4m3fn, torch.float8_e4m3fn), (torch.float8_e4m3fn, torch.float8_e5m2),
             (torch.float8_e5m2, torch.float8_e4m3fn))
_OUTS = (torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn)


def _meta_problem(recipe: str, a_dtype, b_dtype, m: int, n: int, k: int):
    meta = dict(device="meta")
    a = torch.empty(m, k, dtype=a_dtype, **meta)
    b = torch.empty(n, k, dtype=b_dtype, **meta).t()
    L, f32 = -(-k // 128), dict(dtype=torch.float32, **meta)
    sa, sb = {
        "tensorwise": lambda: (torch.empty((), **f32), torch.empty((), **f32)),
        "rowwise": lambda: (torch.empty(m, 1, **f32), torch.empty(1, n, **f32)),
        "block_1x128_128x128": lambda: (torch.empty(L, m, **f32).t(), torch.empty(-(-n // 128), L, **f32).t()),
        "block_1x128_1x128": lambda: (torch.empty(L, m, **f32).t(), torch.empty(L, n, **f32)),
        "block_128x128_1x128": lambda: (torch.empty(-(-m // 128), L, **f32), torch.empty(L, n, **f32)),
    }[recipe]()
    return a, b, sa, sb


def path_table(arch: str, m: int = 4096, n: int = 4096, k: int = 4096) -> list[dict]:
    """Which path each recipe x operand dtypes x out dtype takes on ``arch`` (no bias, compact
    operands): [{'recipe', 'a', 'b', 'out', 'path', 'reason'}]; e5m2 x e5m2 is refused by torch."""
    from fastdispatch.kernels.scaled_mm.routing import route

    rows = []
    for recipe in _TABLE_RECIPES:
        for a_dtype, b_dtype in _OPERANDS:
            for out_dtype in _OUTS:
                problem = _meta_problem(recipe, a_dtype, b_dtype, m, n, k)
                variant, why = route(CAPABILITIES[arch], *problem, None, None, out_dtype)
                rows.append({"recipe": recipe, "a": str(a_dtype)[6:], "b": str(b_dtype)[6:],
                             "out": str(out_dtype)[6:],
                             "path": "our kernel" if variant in ("sm90", "sm100") else "torch._scaled_mm",
                             "reason": why})
    return rows


def inspect_variant(arch: str, m: int, n: int, k: int, has_bias: bool = False, recipe: str = "rowwise") -> dict:
    """{'variant', 'config', 'smem_bytes', 'resources', 'ptx_counts'} for ``arch``, a shape and
    a recipe (a name of :data:`RECIPES`)."""
    scales = RECIPES[recipe]
    if arch == "sm_90a":
        from fastdispatch.kernels.scaled_mm import sm90 as module
        config = module.default_config(m, n, k, scales=scales)
        ptx = module.ptx_sm90(config, has_bias=has_bias)
        variant = "sm90 (WGMMA, TMA, warp-specialized persistent)"
    elif arch == "sm_100a":
        if scales != "rowwise":
            raise ValueError("the sm100 kernel is rowwise only (blockwise goes to torch._scaled_mm there)")
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
    recipe = getattr(args, "recipe", "rowwise")
    report = inspect_variant(args.arch, m, n, k, recipe=recipe)
    print(f"scaled_mm {m}x{n}x{k} {recipe} for {args.arch}: {report['variant']}")
    print(f"config: {report['config']}")
    print(f"smem bytes: {report['smem_bytes']}")
    print(f"registers/spills (ptxas): {report['resources'] or 'no ptxas found'}")
    print(f"paths on {args.arch} (no bias, compact operands; e5m2 x e5m2: refused by torch):")
    for row in path_table(args.arch, m, n, k):
        print(f"  {row['recipe']:<20} {row['a']:>13} x {row['b']:<13} -> {row['out']:<13} {row['path']}"
              + (f" ({row['reason']})" if row["reason"] else ""))
    print(json.dumps(report["ptx_counts"]))
    return 0
