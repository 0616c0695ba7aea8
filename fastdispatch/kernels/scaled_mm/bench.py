"""scaled_mm vs torch._scaled_mm, side by side in one process (GPU).

Both libraries run in the same accumulation mode per row: "fp32" (use_fast_accum=False, the
default: each k-tile promoted into an fp32 accumulator) or "fast" (use_fast_accum=True).

Per shape: random e4m3 inputs (never zeros), rowwise fp32 scales; correctness against the fp32
reference first; then for both, inputs rotated over several buffer sets (so shapes that fit
in L2 are not measured from cache): the median GPU time with a clean-flushed L2
(`CleanFlushTimer`, the two libraries' calls interleaved) and ``triton.testing.do_bench``'s
median beside it, TFLOP/s, the end-to-end wall time per call of a back-to-back loop (launch
overhead included), and what torch.sum takes to read as many bytes as B under the same timer
(the read floor that timer can see).
"""
from __future__ import annotations

import time

import torch

LARGE = [(4096, 4096, 4096), (8192, 8192, 8192), (16384, 8192, 8192)]
SMALL_M = [(1, 4096, 4096), (16, 8192, 8192), (128, 8192, 8192)]
L2_BYTES = 50 * 2**20


def make_inputs(m, n, k, device="cuda", seed=0):
    """Random e4m3 A [M,K] row-major, B [K,N] column-major, rowwise scales."""
    g = torch.Generator(device=device).manual_seed(seed)
    a = (torch.randn(m, k, device=device, generator=g) * 0.5).to(torch.float8_e4m3fn)
    bt = (torch.randn(n, k, device=device, generator=g) * 0.5).to(torch.float8_e4m3fn)
    scale_a = torch.rand(m, 1, device=device, generator=g) + 0.5
    scale_b = torch.rand(1, n, device=device, generator=g) + 0.5
    return a, bt.t(), scale_a, scale_b


def rel_error(out, ref) -> float:
    """||out - ref|| / ||ref|| in fp64."""
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


class CleanFlushTimer:
    """GPU time of one call with a cold but *clean* L2, median over ``reps`` (CUDA events).

    Before each timed call the L2 is filled by reading a buffer of twice its size, so the
    call's operands come from HBM and what it evicts is clean. ``triton.testing.do_bench``
    flushes by *writing* 256 MB instead: the L2 is then full of dirty lines that the timed
    call must write back as its reads evict them. For a bandwidth-bound GEMV-like call that
    write-back is most of the cost (N = K = 8192, M = 16: 37 us under do_bench for ~22 us of
    reads, measured on the lent H100), and it is not the call's own traffic.
    """

    def __init__(self, l2_bytes: int = L2_BYTES):
        self._flush = torch.ones(2 * l2_bytes // 4, dtype=torch.float32, device="cuda")
        self._sink = torch.empty((), dtype=torch.float32, device="cuda")

    def flush(self):
        """Fill the L2 with clean lines (a read of twice its size). A max, not a sum: its
        kernel's name differs from torch.sum's, which `read_floor_ms` times."""
        torch.amax(self._flush, dim=0, out=self._sink)

    def median_ms(self, fn, reps: int = 50, warmup: int = 5) -> float:
        """Median GPU time of ``fn`` (ms)."""
        return self.medians_ms([fn], reps, warmup)[0]

    def medians_ms(self, fns, reps: int = 50, warmup: int = 5) -> list[float]:
        """Median GPU time of each of ``fns`` (ms), timed interleaved: every repeat times each
        function once, in turn, so a drift of the GPU's clock (a 700 W H100 slows as it heats
        over a long run of large GEMMs) weighs on all of them alike instead of on whichever
        ran last."""
        for fn in fns:
            for _ in range(warmup):
                fn()
        events = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                   for _ in range(reps)] for _ in fns]
        for i in range(reps):
            for fn, per_fn in zip(fns, events):
                self.flush()   # reads only: clean lines
                per_fn[i][0].record()
                fn()
                per_fn[i][1].record()
        torch.cuda.synchronize()
        medians = []
        for per_fn in events:
            times = sorted(start.elapsed_time(end) for start, end in per_fn)
            medians.append(times[len(times) // 2])
        return medians


def kernel_times_us(fns, flush, reps: int = 30, *, device: str = "cuda") -> list[dict[str, list[float]]]:
    """Per function of ``fns``: {kernel name: [CUPTI durations, us]} of what it launches, the
    functions called interleaved (each after ``flush()``), ``reps`` rounds, under
    torch.profiler. Kernel durations are the kernels' own time on the GPU, without what
    CUDA-event timing adds around a call (a one-element kernel reads ~3.6-4.4 us under
    `CleanFlushTimer` on the lent H100). Kernels are told apart by name: functions that launch
    a kernel of the same name as another's are profiled one after the other instead.
    ``device="cpu"`` profiles CPU ops the same way (tests)."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device == "cuda" else ProfilerActivity.CPU
    kind = torch.autograd.DeviceType.CUDA if device == "cuda" else torch.autograd.DeviceType.CPU

    def profiled(rounds, batch):
        with profile(activities=[activity]) as prof:
            for _ in range(rounds):
                for fn in batch:
                    flush()
                    fn()
            if device == "cuda":
                torch.cuda.synchronize()
        key = "device_time" if device == "cuda" else "cpu_time"
        return [(ev.name, getattr(ev, key)) for ev in prof.events() if ev.device_type == kind]

    for fn in fns:
        for _ in range(3):
            fn()
    flush_names = {name for name, _ in profiled(1, [lambda: None])}   # the flush alone
    names = [{name for name, _ in profiled(1, [fn])} - flush_names for fn in fns]
    distinct = all(not (a & b) for i, a in enumerate(names) for b in names[i + 1:])
    batches = [list(range(len(fns)))] if distinct else [[i] for i in range(len(fns))]
    times: list[dict[str, list[float]]] = [{} for _ in fns]
    for batch in batches:
        for name, dur in profiled(reps, [fns[i] for i in batch]):
            for i in batch:
                if name in names[i]:
                    times[i].setdefault(name, []).append(dur)
    return times


def kernel_medians_us(fns, flush, reps: int = 30) -> list[float]:
    """Median CUPTI kernel time per call of each of ``fns`` (summed over the kernels a call
    launches), timed interleaved (`kernel_times_us`)."""
    return [sum(sorted(d)[len(d) // 2] * len(d) / reps for d in per_name.values())
            for per_name in kernel_times_us(fns, flush, reps)]


def wall_us(fn, calls: int = 200) -> float:
    """Host wall time per call of a back-to-back loop of ``fn`` (one warm-up call, synchronized
    before and after): what a stream of calls costs end to end, launch included."""
    fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / calls * 1e6


def read_floor_fn(n_bytes: int):
    """A call that streams ``n_bytes`` from HBM: torch.sum over a buffer that size (the read
    floor a timer can see for an operand of that many bytes)."""
    buf = torch.ones(n_bytes // 4, device="cuda")
    return lambda: torch.sum(buf)


def read_floor_ms(timer: CleanFlushTimer, n_bytes: int) -> float:
    """What streaming ``n_bytes`` costs under ``timer`` (`read_floor_fn`)."""
    return timer.median_ms(read_floor_fn(n_bytes))


def _rotating(m, n, k):
    per_set = m * k + n * k + 2 * m * n
    sets = max(1, min(8, (2 * L2_BYTES) // max(per_set, 1) + 1))
    return [make_inputs(m, n, k, seed=i) for i in range(sets)]


def measure(m, n, k, *, rep_ms=200, fast_accum=False):
    """{'fd_ms', 'torch_ms' (clean-flush GPU time), 'fd_tflops', 'torch_tflops', 'fd_dobench_ms',
    'torch_dobench_ms', 'fd_wall_us', 'torch_wall_us' (back-to-back loop), 'fd_kernel_us',
    'torch_kernel_us' (CUPTI kernel time after a clean flush), 'read_floor_ms' (torch.sum over
    B's bytes, same timer), 'read_floor_kernel_us' (its CUPTI kernel time), 'rel_err'}."""
    import triton.testing

    import fastdispatch
    from fastdispatch.kernels.scaled_mm import reference

    sets = _rotating(m, n, k)
    outs = [torch.empty(m, n, dtype=torch.bfloat16, device="cuda") for _ in sets]
    a, b, sa, sb = sets[0]
    out = outs[0].fill_(float("nan"))
    fastdispatch.scaled_mm(a, b, sa, sb, out=out, use_fast_accum=fast_accum)
    err = rel_error(out, reference(a, b, sa, sb, out_dtype=torch.bfloat16))
    if not torch.isfinite(out).all():
        err = float("inf")
    state = {"i": 0}

    def fd():
        i = state["i"] = (state["i"] + 1) % len(sets)
        a, b, sa, sb = sets[i]
        fastdispatch.scaled_mm(a, b, sa, sb, out=outs[i], use_fast_accum=fast_accum)

    def cublas():
        i = state["i"] = (state["i"] + 1) % len(sets)
        a, b, sa, sb = sets[i]
        torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16, use_fast_accum=fast_accum, out=outs[i])

    flops = 2.0 * m * n * k
    result = {"rel_err": err}
    timer = CleanFlushTimer()
    fd_ms, torch_ms = timer.medians_ms([fd, cublas])
    for name, fn, ms in (("fd", fd, fd_ms), ("torch", cublas, torch_ms)):
        result[f"{name}_ms"] = ms
        result[f"{name}_tflops"] = flops / (ms * 1e-3) / 1e12
        # For comparison with figures taken that way (write-flushed L2: see CleanFlushTimer).
        result[f"{name}_dobench_ms"] = triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")
        result[f"{name}_wall_us"] = wall_us(fn)
    result["fd_kernel_us"], result["torch_kernel_us"] = kernel_medians_us([fd, cublas], timer.flush)
    read_b = read_floor_fn(n * k)   # B's bytes, under both timers
    result["read_floor_ms"] = timer.median_ms(read_b)
    result["read_floor_kernel_us"], = kernel_medians_us([read_b], timer.flush)
    return result


def main(quick: bool = False) -> dict:
    """Print the comparison table; returns {shape: result}."""
    if not torch.cuda.is_available():
        print("scaled_mm bench: no CUDA GPU; skipped")
        return {}
    from fastdispatch.kernels.scaled_mm.api import variant_for

    cap = torch.cuda.get_device_capability()
    print(f"{torch.cuda.get_device_name()} (sm_{cap[0]}{cap[1]}), kernel variant: {variant_for(cap)}; "
          f"torch {torch.__version__}; GPU time: median, clean-flushed L2 (do_bench's write-flush in "
          f"brackets), rotated inputs; wall = back-to-back loop; kernel = CUPTI kernel time after a clean "
          f"flush; B read = torch.sum over as many bytes as B, same timers")
    print(f"{'M x N x K':>20} {'accum':>6} {'fd us':>9} {'TFLOP/s':>8} {'cuBLAS us':>10} {'TFLOP/s':>8} "
          f"{'speedup':>8} {'[do_bench fd / cuBLAS]':>23} {'fd wall us':>11} {'cuBLAS wall us':>15} "
          f"{'kernel fd / cuBLAS us':>22} {'B read us [kernel]':>19} {'rel err':>9}")
    shapes = (SMALL_M + LARGE[:1]) if quick else (SMALL_M + LARGE)
    results = {}
    for (m, n, k), fast in [(s, False) for s in shapes] + [(s, True) for s in LARGE[:1 if quick else 3]]:
        mode = "fast" if fast else "fp32"
        try:
            r = measure(m, n, k, fast_accum=fast)
        except Exception as exc:  # report and go on: one shape's failure must not hide the rest
            print(f"{f'{m}x{n}x{k}':>20} {mode:>6} FAILED: {type(exc).__name__}: {exc}")
            continue
        results[f"{m}x{n}x{k}/{mode}"] = r
        dob = f"[{r['fd_dobench_ms'] * 1e3:.1f} / {r['torch_dobench_ms'] * 1e3:.1f}]"
        kern = f"{r['fd_kernel_us']:.1f} / {r['torch_kernel_us']:.1f}"
        read = f"{r['read_floor_ms'] * 1e3:.1f} [{r['read_floor_kernel_us']:.1f}]"
        print(f"{f'{m}x{n}x{k}':>20} {mode:>6} {r['fd_ms'] * 1e3:>9.1f} {r['fd_tflops']:>8.0f} "
              f"{r['torch_ms'] * 1e3:>10.1f} {r['torch_tflops']:>8.0f} {r['torch_ms'] / r['fd_ms']:>7.2f}x "
              f"{dob:>23} {r['fd_wall_us']:>11.1f} {r['torch_wall_us']:>15.1f} {kern:>22} {read:>19} "
              f"{r['rel_err']:>9.2e}")
    return results


if __name__ == "__main__":
    main()
