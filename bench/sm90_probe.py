"""Correctness and timing probe of the sm90 scaled_mm kernel on a Hopper GPU (not a test).

    python bench/sm90_probe.py [--no-check | --check-extra] [--no-time] [--config NAME=k:v,...]
                               [--shapes M,N,K;...]

Checks every shipped config on random data (NaN-poisoned output, rel. error against the fp32
reference rounded to bf16), then times the dispatch heuristic's pick and the extra configs:
median GPU time (clean-flushed L2 between calls, `bench.CleanFlushTimer`), interleaved with
``torch._scaled_mm`` (cuBLASLt) in both accumulation modes. Prints one line per result; the
summary comes last.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from fastdispatch.kernels.scaled_mm import sm90
from fastdispatch.kernels.scaled_mm.bench import CleanFlushTimer, read_floor_ms, wall_us

FP8 = torch.float8_e4m3fn
_compiled: dict = {}


def kernel_fn(cfg, has_bias):
    key = (cfg, has_bias)
    if key not in _compiled:
        t = time.perf_counter()
        _compiled[key] = sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=has_bias))
        print(f"compiled {cfg} bias={has_bias} in {time.perf_counter() - t:.1f} s", flush=True)
    return _compiled[key]


def make(m, n, k, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    a = (torch.randn(m, k, device="cuda", generator=g) * 2).to(FP8)
    bt = (torch.randn(n, k, device="cuda", generator=g) * 2).to(FP8)
    sa = torch.rand(m, device="cuda", generator=g) + 0.5
    sb = torch.rand(n, device="cuda", generator=g) + 0.5
    bias = torch.randn(n, device="cuda", generator=g).to(torch.bfloat16)
    return a, bt, sa, sb, bias


def reference(a, bt, sa, sb, bias):
    acc = a.float() @ bt.float().t()
    acc = acc * sa[:, None] * sb[None, :]
    if bias is not None:
        acc = acc + bias.float()
    return acc


def check(cfg, m, n, k, has_bias):
    a, bt, sa, sb, bias = make(m, n, k, seed=m * 7 + n + k)
    out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.bfloat16)
    fn = kernel_fn(cfg, has_bias)
    operands = (a, bt.t(), sa[:, None], sb[None, :])  # torch._scaled_mm's layouts
    tail = (bias,) if has_bias else ()
    fn(*operands, out, *tail)
    torch.cuda.synchronize()
    # A second call must give the same bits (split-K partials are summed in a fixed order).
    again = torch.full_like(out, float("nan"))
    fn(*operands, again, *tail)
    same = bool(torch.equal(out.view(torch.int16), again.view(torch.int16)))
    ref = reference(a, bt, sa, sb, bias if has_bias else None)
    nans = int(out.isnan().sum())
    ref16 = ref.to(torch.bfloat16).float()
    err16 = float((out.float() - ref16).norm() / ref16.norm())
    err32 = float((out.float() - ref).norm() / ref.norm())
    ok = nans == 0 and err16 <= 2e-3 and same
    if k >= 4096:  # what cuBLAS makes of the same data, for scale
        for fast in (False, True):
            try:
                t = torch._scaled_mm(a, bt.t(), sa[:, None], sb[None, :], bias=bias if has_bias else None,
                                     out_dtype=torch.bfloat16, use_fast_accum=fast).float()
            except RuntimeError as exc:   # (cuBLASLt has no fp8 algorithm with bias for some small M)
                print(f"     torch._scaled_mm use_fast_accum={fast}: refused ({str(exc)[:60]})")
                continue
            print(f"     torch._scaled_mm use_fast_accum={fast}: rel_err(vs bf16 ref)="
                  f"{float((t - ref16).norm() / ref16.norm()):.2e} (vs fp32 ref)={float((t - ref).norm() / ref.norm()):.2e}")
    print(f"{'OK  ' if ok else 'FAIL'} {name_of(cfg):10s} M={m} N={n} K={k} bias={has_bias} "
          f"unwritten={nans} repeatable={same} rel_err(vs bf16 ref)={err16:.2e} (vs fp32 ref)={err32:.2e}", flush=True)
    return ok


def short(cfg):
    """The config's fields that differ from `Sm90Config`'s defaults (stages resolved), as k:v."""
    base = sm90.Sm90Config()
    return ",".join(f"{f.name}:{getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
                    if getattr(cfg, f.name) != getattr(base, f.name))


def name_of(cfg):
    for name, c in sm90.shipped_configs().items():
        if dataclasses.replace(cfg, stages=None) == dataclasses.replace(c, stages=None):
            return name
    return "custom"


def run_checks(extra, extra_only=False):
    ok = True
    if extra_only:
        for cfg in extra:
            # K=128: one k-tile, so split-K parts past the first get none. The last two: several
            # partial tiles per CTA (the persistent walk's later tiles, the ring carried over).
            for m, n, k in ((1000, 272, 336), (100, 1040, 2064), (7, 8192, 8192), (1, 4096, 4096), (33, 520, 128),
                            (2100, 2600, 400), (1500, 2904, 128)):
                for has_bias in (False, True):
                    ok &= check(cfg, m, n, k, has_bias)
        return ok
    odd = [(m, 272, 336) for m in (1, 7, 16, 100, 128, 1000, 4096)]
    for m, n, k in odd + [(256, 256, 256), (1024, 1024, 1024), (2048, 2048, 8192)]:
        for has_bias in (False, True):
            ok &= check(sm90.default_config(m, n, k), m, n, k, has_bias)
    # Every shipped config on shapes that are not multiples of its tile.
    for name, cfg in sm90.shipped_configs().items():
        for m, n, k in ((1000, 272, 336), (100, 1040, 2064), (5, 4096, 4096)):
            ok &= check(cfg.resolved(), m, n, k, True)
    for cfg in extra:
        for m, n, k in ((1000, 272, 336), (2048, 2048, 8192), (7, 8192, 8192)):
            ok &= check(cfg, m, n, k, False)
    return ok


_timer = None


def timer():
    """The clean-flush timer (see bench.CleanFlushTimer; do_bench's write flush charges
    bandwidth-bound calls for its dirty lines), made once."""
    global _timer
    if _timer is None:
        _timer = CleanFlushTimer()
    return _timer


def bench_ms(f):
    """Median GPU time with a clean-flushed L2."""
    return timer().median_ms(f)


def run_timing(shapes, extra):
    lines = []
    tiny = torch.zeros(1, device="cuda")
    line = (f"TIME floor: one-element torch kernel, clean-flush GPU time {bench_ms(lambda: tiny.add_(1)) * 1e3:.1f} us, "
            f"wall {wall_us(lambda: tiny.add_(1)):.1f} us")
    print(line, flush=True)
    lines.append(line)
    for m, n, k in shapes:
        a, bt, sa, sb, _ = make(m, n, k)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        cfgs = [sm90.default_config(m, n, k)] + list(extra)
        b, sa2, sb2 = bt.t(), sa[:, None], sb[None, :]   # torch._scaled_mm's layouts
        fns = [kernel_fn(cfg, False) for cfg in cfgs]
        # cuBLAS (both modes) and every config timed interleaved (see CleanFlushTimer.medians_ms).
        t_ref, t_fast, *t_cfgs = timer().medians_ms(
            [lambda: torch._scaled_mm(a, b, sa2, sb2, out_dtype=torch.bfloat16),
             lambda: torch._scaled_mm(a, b, sa2, sb2, out_dtype=torch.bfloat16, use_fast_accum=True)]
            + [lambda fn=fn: fn(a, b, sa2, sb2, out) for fn in fns])
        w_ref = wall_us(lambda: torch._scaled_mm(a, b, sa2, sb2, out_dtype=torch.bfloat16))
        flop = 2 * m * n * k
        # What reading B's bytes costs on its own, timed the same way: torch.sum over a buffer
        # of n*k bytes (a streaming reduction: the HBM read floor this timer can see).
        t_read = read_floor_ms(timer(), n * k)
        line = f"TIME {m}x{n}x{k} read floor: torch.sum over B's {n * k / 2**20:.0f} MiB {t_read * 1e3:8.1f} us"
        print(line, flush=True)
        lines.append(line)
        for cfg, fn, t in zip(cfgs, fns, t_cfgs):
            w = wall_us(lambda: fn(a, b, sa2, sb2, out))
            line = (f"TIME {m}x{n}x{k} {name_of(cfg):10s} ours {t * 1e3:8.1f} us {flop / t / 1e9:7.0f} TFLOP/s "
                    f"wall {w:6.1f} | torch._scaled_mm {t_ref * 1e3:8.1f} us {flop / t_ref / 1e9:7.0f} TFLOP/s "
                    f"wall {w_ref:6.1f} | "
                    f"speedup {t_ref / t:.3f}x (fast_accum torch {t_fast * 1e3:.1f} us) [{short(cfg)}]")
            print(line, flush=True)
            lines.append(line)
    return lines


def parse_config(text):
    """NAME=k:v,...: a shipped config (or the unshipped trial `sm90.FAST_PINGPONG`, as
    fast_pingpong, or the blockwise large-M tile `sm90.BLOCK_LARGE`, as block_large) with
    fields replaced (values: True / False, integers, else strings such as scales:rowwise)."""
    base, _, kv = text.partition("=")
    cfg = {**sm90.shipped_configs(), "fast_pingpong": sm90.FAST_PINGPONG, "block_large": sm90.BLOCK_LARGE}[base]
    over = {"stages": None}
    for item in filter(None, kv.split(",")):
        k, v = item.split(":")
        over[k] = v == "True" if v in ("True", "False") else (int(v) if v.lstrip("-").isdigit() else v)
    return dataclasses.replace(cfg, **over).resolved()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--check-extra", action="store_true", help="check only the --config configs")
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--config", action="append", default=[], help="NAME=key:val,... (extra config)")
    p.add_argument("--shapes", default="4096,4096,4096;8192,8192,8192;16384,8192,8192;"
                                        "1,8192,8192;16,8192,8192;128,8192,8192;1,4096,4096")
    args = p.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    extra = [parse_config(c) for c in args.config]
    ok = True
    if not args.no_check:
        ok = run_checks(extra, extra_only=args.check_extra)
    lines = []
    if not args.no_time:
        shapes = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";") if s]
        lines = run_timing(shapes, extra)
    print("==== summary ====")
    print("correctness:", "all OK" if ok else "FAILURES (see FAIL lines)")
    for line in lines:
        print(line)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "sm90_summary.txt"), "a") as f:
            f.write("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
