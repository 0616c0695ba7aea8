"""Where a fastdispatch call's time goes, step by step (GPU). Prints ns per step per arity.

Each step runs alone in a C loop (``fastdispatch._keys.probe_costs``); compare with
``python -m fastdispatch bench launch`` for the end-to-end figures of the same process kind.
"""
import torch

import fastdispatch
from fastdispatch import _keys
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid


def step_costs(kernel, args, grid=None) -> str:
    """``probe_costs`` of a published direct entry as one line, "step ns, ..." (synchronized
    around, so the launches of the steps do not overlap what comes after)."""
    torch.cuda.synchronize()
    costs = _keys.probe_costs(kernel, args, 20000, grid)
    torch.cuda.synchronize()
    return ", ".join(f"{k} {v:.0f}" for k, v in costs.items())


def main():
    if not torch.cuda.is_available():
        print("probe_hot_path: no CUDA GPU; skipped")
        return
    for n, fn in ADD_KERNELS.items():
        kernel = fastdispatch.triton_kernel(fn, grid=add_grid(4096), constexprs={"BLOCK": BLOCK})
        args = (*[torch.randn(4096, device="cuda") for _ in range(n)], torch.empty(4096, device="cuda"), 4096)
        kernel(*args)
        step_costs(kernel, args)                         # warm-up
        print(f"{n:>2} inputs: " + step_costs(kernel, args))


if __name__ == "__main__":
    main()
