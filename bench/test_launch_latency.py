"""Launch latency of the DESIGN §1 paths, side by side, through the ``launch_latency`` fixture.

Run: ``pytest bench/ --benchmark-only --benchmark-json=launch.json``. Group by arity to read
ratios: the driver floor, fastdispatch, Triton's CompiledKernel.run (arguments replayed),
Triton's kernel[grid], torch eager add.
"""
import pytest
import torch
import triton.knobs as triton_knobs

import fastdispatch
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid

NUMEL = 4096


@pytest.fixture(scope="module", params=[2, 8, 16], ids=lambda n: f"{n}in")
def setup(request):
    n = request.param
    inputs = [torch.randn(NUMEL, device="cuda") for _ in range(n)]
    out = torch.empty(NUMEL, device="cuda")
    kernel = fastdispatch.triton_kernel(ADD_KERNELS[n], grid=add_grid(NUMEL), constexprs={"BLOCK": BLOCK})
    args = (*inputs, out, NUMEL)
    kernel(*args)
    torch.testing.assert_close(out, torch.stack(inputs).sum(0))
    return n, kernel, args


def test_floor(setup, launch_latency, benchmark):
    n, kernel, args = setup
    benchmark.group = f"{n} inputs"
    entry = kernel.published()[0]
    launch_latency(lambda count: entry.floor_loop(kernel, args, count), batched=True)


def test_fastdispatch(setup, launch_latency, benchmark):
    n, kernel, args = setup
    benchmark.group = f"{n} inputs"
    launch_latency(kernel, *args)


def test_triton_compiled_run(setup, launch_latency, benchmark):
    n, kernel, args = setup
    benchmark.group = f"{n} inputs"
    fn = ADD_KERNELS[n]
    grid = add_grid(NUMEL)
    compiled = fn.warmup(*args, BLOCK=BLOCK, grid=grid)
    stream = torch.cuda.current_stream().cuda_stream
    full = (*args, BLOCK)
    meta = compiled.launch_metadata(grid + (1, 1), stream, *full)
    enter, exit_ = triton_knobs.runtime.launch_enter_hook, triton_knobs.runtime.launch_exit_hook
    launch_latency(compiled.run, grid[0], 1, 1, stream, compiled.function, compiled.packed_metadata,
                   meta, enter, exit_, *full)


def test_triton_jit(setup, launch_latency, benchmark):
    n, kernel, args = setup
    benchmark.group = f"{n} inputs"
    launched = ADD_KERNELS[n][add_grid(NUMEL)]
    launch_latency(lambda: launched(*args, BLOCK=BLOCK), iterations=1000)


def test_torch_add(setup, launch_latency, benchmark):
    n, kernel, args = setup
    benchmark.group = f"{n} inputs"
    a, b, out = args[0], args[1], args[-2]
    launch_latency(lambda: torch.add(a, b, out=out))
