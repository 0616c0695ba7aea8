"""Clock, power and energy of the GPU while one scaled_mm variant runs back to back (not a test).

    python bench/power_probe.py [--shape M,N,K] [--seconds S] [--rounds R] [--config NAME=k:v,...]

For each of torch._scaled_mm (both accumulation modes), the dispatch heuristic's pick and the
extra configs: calls the kernel back to back for ``--seconds`` while ``nvidia-smi`` samples the
SM clock, the power draw and the active clock-event (throttle) reasons every 50 ms, and prints
the medians of the samples of the run's second half (after the clocks settled) beside the GPU
time and energy per call over the same stretch. ``--rounds`` passes over the variants, every
other one reversed; last, each variant's median time against torch._scaled_mm's (fp32 accum).
Answers whether a large GEMM runs at the power limit (then time per call follows energy per
call, not issue efficiency). Reads the card's state only; changes nothing.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from fastdispatch.kernels.scaled_mm import sm90

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from sm90_probe import kernel_fn, make, name_of, parse_config, short  # noqa: E402

QUERY = "clocks.sm,power.draw,power.limit,clocks_event_reasons.active"


def sample_while(fn, seconds):
    """Run ``fn`` back to back for ``seconds`` under nvidia-smi sampling. Returns, over the second
    half: the median SM clock (MHz) and power (W), the power limit, the set of throttle-reason
    masks seen, and the GPU time per call (us)."""
    smi = subprocess.Popen(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-lms", "50"],
                           stdout=subprocess.PIPE, text=True)
    start = time.perf_counter()
    half = None  # an event recorded when the second half starts
    calls = 0
    while (now := time.perf_counter()) - start < seconds:
        if half is None and now - start >= seconds / 2:
            torch.cuda.synchronize()
            half = torch.cuda.Event(enable_timing=True)
            half.record()
            calls = 0
        for _ in range(10):
            fn()
        calls += 10
    end = torch.cuda.Event(enable_timing=True)
    end.record()
    torch.cuda.synchronize()
    us = half.elapsed_time(end) * 1e3 / calls
    smi.terminate()
    lines = smi.communicate()[0].strip().splitlines()
    rows = [line.split(", ") for line in lines[len(lines) // 2:]]
    clock = statistics.median(float(r[0]) for r in rows)
    power = statistics.median(float(r[1]) for r in rows)
    limit = rows[-1][2]
    reasons = sorted({r[3] for r in rows})
    return clock, power, limit, reasons, us


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="8192,8192,8192")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--rounds", type=int, default=2, help="passes over the variants, alternately reversed")
    args = p.parse_args()
    m, n, k = (int(x) for x in args.shape.split(","))
    a, bt, sa, sb, _ = make(m, n, k)
    b, sa2, sb2 = bt.t(), sa[:, None], sb[None, :]
    out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    runs = [(f"torch._scaled_mm fast={fast}",
             lambda fast=fast: torch._scaled_mm(a, b, sa2, sb2, out_dtype=torch.bfloat16, use_fast_accum=fast))
            for fast in (False, True)]
    for cfg in [sm90.default_config(m, n, k)] + [parse_config(c) for c in args.config]:
        fn = kernel_fn(cfg, False)
        runs.append((f"{name_of(cfg)} {short(cfg)}", lambda fn=fn: fn(a, b, sa2, sb2, out)))
    print(torch.cuda.get_device_name(), "torch", torch.__version__, f"shape {m}x{n}x{k}", flush=True)
    flop = 2 * m * n * k
    for fn in dict(runs).values():
        fn()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    # Forward, then backward (A B C C B A ...): a drift of the card's state over the run (it
    # warms up) weighs on every variant alike.
    order = [r for i in range(args.rounds) for r in (runs if i % 2 == 0 else runs[::-1])]
    for name, fn in order:
        clock, power, limit, reasons, us = sample_while(fn, args.seconds)
        times[name].append(us)
        print(f"POWER {m}x{n}x{k} {us:8.1f} us/call {flop / us / 1e6:6.0f} TFLOP/s {us * power / 1e6:6.3f} J/call"
              f" | SM clock {clock:6.0f} MHz power {power:5.0f} W (limit {limit}) reasons {','.join(reasons)}"
              f" | {name[:160]}", flush=True)
        time.sleep(1.0)
    ref = statistics.median(times[runs[0][0]])
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"SUSTAINED {m}x{n}x{k} {t:8.1f} us/call (median of {len(ts)}) {ref / t:5.3f}x torch._scaled_mm "
              f"fast=False | {name[:100]}", flush=True)


if __name__ == "__main__":
    main()
