"""``bench launch``: the DESIGN §1 table, measured side by side in one process.

For each arity (2, 8, 16 fp32 inputs of 4096 elements) and each launch path, wall time per call
over ``iterations`` back-to-back calls (synchronized before and after), repeated ``repeats``
times with every (arity, path) cell interleaved; the table shows medians and ratios to the
driver floor. Paths: the floor (a C loop of cuLaunchKernelEx on the same binary, arguments
packed once), fastdispatch, Triton's ``CompiledKernel.run`` with its arguments replayed,
Triton's ``kernel[grid]``, torch eager ``torch.add(a, b, out=c)``, and one kernel inside a
replayed CUDA graph of 100. Results are checked against torch before timing.
"""
from __future__ import annotations

import statistics
import time

import torch
import triton.knobs as triton_knobs

from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid

NUMEL = 4096
GRAPH_KERNELS = 100


def _time_per_call(fn, iterations: int) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter_ns()
    fn(iterations)
    torch.cuda.synchronize()
    return (time.perf_counter_ns() - started) / iterations / 1000.0  # us


def _paths(n: int):
    import fastdispatch

    jit_fn = ADD_KERNELS[n]
    inputs = [torch.randn(NUMEL, device="cuda") for _ in range(n)]
    out = torch.full((NUMEL,), float("nan"), device="cuda")
    expected = torch.stack(inputs).sum(0)
    grid = add_grid(NUMEL)
    static = fastdispatch.triton_kernel(jit_fn, grid=grid, constexprs={"BLOCK": BLOCK})
    call_args = (*inputs, out, NUMEL)
    static(*call_args)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    entry = static.published()[0]
    if entry.mode != 1:
        raise RuntimeError(f"fastdispatch entry is not a direct launch: {entry.info}")

    # Triton's CompiledKernel.run, its arguments replayed (what its C launcher alone costs).
    compiled = jit_fn.warmup(*inputs, out, NUMEL, BLOCK=BLOCK, grid=grid)
    stream = torch.cuda.current_stream().cuda_stream
    full = (*inputs, out, NUMEL, BLOCK)
    launch_metadata = compiled.launch_metadata(grid + (1, 1), stream, *full)
    run = compiled.run
    enter, exit_ = triton_knobs.runtime.launch_enter_hook, triton_knobs.runtime.launch_exit_hook
    fn_handle, packed = compiled.function, compiled.packed_metadata

    a, b, c = inputs[0], inputs[1], out

    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        static(*call_args)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        for _ in range(GRAPH_KERNELS):
            static(*call_args)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    def floor(k):
        entry.floor_loop(static, call_args, k)

    def fd(k):
        for _ in range(k):
            static(*call_args)

    def triton_run(k):
        for _ in range(k):
            run(grid[0], 1, 1, stream, fn_handle, packed, launch_metadata, enter, exit_, *full)

    def triton_jit(k):
        for _ in range(k):
            jit_fn[grid](*inputs, out, NUMEL, BLOCK=BLOCK)

    def torch_add(k):
        for _ in range(k):
            torch.add(a, b, out=c)

    def graph_replay(k):
        for _ in range(max(1, k // GRAPH_KERNELS)):
            graph.replay()

    def graph_time(iterations):
        # per kernel inside the graph
        replays = max(1, iterations // GRAPH_KERNELS)
        return _time_per_call(graph_replay, replays * GRAPH_KERNELS)

    paths = {
        "floor: C loop of cuLaunchKernelEx": floor,
        "fastdispatch": fd,
        "Triton CompiledKernel.run (args replayed)": triton_run,
        "Triton kernel[grid]": triton_jit,
        "torch.add(a, b, out=c) (2 inputs)": torch_add,
    }
    return paths, graph_time, (static, call_args, expected, out)


def run_launch_bench(iterations: int = 20000, repeats: int = 7) -> dict:
    """Measure, print the table, and return {arity: {path: median_us}}."""
    graph = "CUDA graph replay (per kernel, 100/graph)"
    setups = {n: _paths(n) for n in (2, 8, 16)}
    samples = {n: {name: [] for name in [*paths, graph]} for n, (paths, _, _) in setups.items()}
    for paths, _, _ in setups.values():
        for fn in paths.values():   # warm every path once
            fn(100)
    # Every repeat runs every (arity, path) cell once: drift of the host's or the GPU's clocks
    # over the run spreads over all cells instead of biasing the arity measured first.
    for _ in range(repeats):
        for n, (paths, graph_time, _) in setups.items():
            for name, fn in paths.items():
                samples[n][name].append(_time_per_call(fn, iterations))
            samples[n][graph].append(graph_time(iterations))
    results = {}
    for n, (_, _, (static, call_args, expected, out)) in setups.items():
        out.fill_(float("nan"))
        static(*call_args)
        torch.cuda.synchronize()
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        results[n] = {name: statistics.median(v) for name, v in samples[n].items()}
    _print_table(results)
    return {str(n): row for n, row in results.items()}


def _print_table(results: dict) -> None:
    import fastdispatch

    facts = fastdispatch.info()
    gpu = facts["gpus"][0]["name"] if facts["gpus"] else "?"
    print(f"\nlaunch latency, us per call (median of interleaved repeats); {gpu}, torch "
          f"{facts['torch']}, triton {facts['triton']}, key builder {facts['key_builder']}, "
          f"exchange API {facts['dlpack_exchange_api']}")
    names = list(next(iter(results.values())).keys())
    arities = list(results)
    print(f"{'path':<45}" + "".join(f"{f'{n} inputs':>18}" for n in arities))
    for name in names:
        cells = []
        for n in arities:
            floor = results[n]["floor: C loop of cuLaunchKernelEx"]
            value = results[n][name]
            cells.append(f"{value:8.2f} ({value / floor:4.2f}x)")
        print(f"{name:<45}" + "".join(f"{c:>18}" for c in cells))
    print("budget: fastdispatch <= floor + 0.5 us + 0.1 us per tensor argument")
    for n in arities:
        floor = results[n]["floor: C loop of cuLaunchKernelEx"]
        budget = floor + 0.5 + 0.1 * (n + 1)
        got = results[n]["fastdispatch"]
        print(f"  {n:>2} inputs: fastdispatch {got:.2f} us, budget {budget:.2f} us -> "
              f"{'MET' if got <= budget else 'MISSED'}")
