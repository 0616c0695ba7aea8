"""Where a fastdispatch call's time goes, step by step (GPU). Prints ns per step per arity.

Each step runs alone in a C loop (``fastdispatch._keys.probe_costs``); compare with
``python -m fastdispatch bench launch`` for the end-to-end figures of the same process kind.
"""
import torch

import fastdispatch
from fastdispatch import _keys
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid


def main():
    if not torch.cuda.is_available():
        print("probe_hot_path: no CUDA GPU; skipped")
        return
    for n, fn in ADD_KERNELS.items():
        kernel = fastdispatch.triton_kernel(fn, grid=add_grid(4096), constexprs={"BLOCK": BLOCK})
        args = (*[torch.randn(4096, device="cuda") for _ in range(n)], torch.empty(4096, device="cuda"), 4096)
        kernel(*args)
        torch.cuda.synchronize()
        costs = _keys.probe_costs(kernel, args, 20000)
        torch.cuda.synchronize()
        costs = _keys.probe_costs(kernel, args, 20000)
        torch.cuda.synchronize()
        print(f"{n:>2} inputs: " + ", ".join(f"{k} {v:.0f}" for k, v in costs.items()))


if __name__ == "__main__":
    main()
