"""Programmatic dependent launch on the large-M sm90 picks: the table's config with ``pdl`` off
and on, beside cuBLAS, on a Hopper GPU (a trial probe, not a test).

    python bench/pdl_probe.py [--shapes M,N,K[,fast];...] [--rounds 3]

Per shape, interleaved for ``--rounds`` rounds: `triton.testing.do_bench` medians (the bench's
timer: an L2 flush and two events around each call) and back-to-back time (50 calls between two
events, no flush: what a stream of kernels sees), for torch._scaled_mm and the table's pick with
``pdl`` False / True. Each of our binaries is first checked against the fp32 reference on the
timed data (NaN-poisoned output; bound 2e-3, fast accumulation 4e-3). Prints one line per
implementation and shape; medians over rounds.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch
import triton

from fastdispatch.kernels.scaled_mm import sm90
from fastdispatch.kernels.scaled_mm.bench import rel_error

FP8 = torch.float8_e4m3fn
SHAPES = "4096,4096,4096,fast;8192,8192,8192,fast;16384,8192,8192,fast;4096,4096,4096;128,24576,1536;4096,4096,7168"


def back_to_back_us(fn, calls=50):
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / calls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default=SHAPES)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    for text in args.shapes.split(";"):
        parts = text.split(",")
        m, n, k = map(int, parts[:3])
        fast = len(parts) > 3 and parts[3] == "fast"
        g = torch.Generator(device="cuda").manual_seed(m + n + k)
        a = (torch.randn(m, k, device="cuda", generator=g) * 2).to(FP8)
        bt = (torch.randn(n, k, device="cuda", generator=g) * 2).to(FP8)
        sa = torch.rand(m, 1, device="cuda", generator=g) + 0.5
        sb = torch.rand(1, n, device="cuda", generator=g) + 0.5
        b = bt.t()
        ref = (a.float() @ bt.float().t()) * sa * sb
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        pick = sm90.default_config(m, n, k, fast_accum=fast)
        impls = {"torch": lambda: torch._scaled_mm(a, b, sa, sb, out_dtype=torch.bfloat16, use_fast_accum=fast)}
        for pdl in (False, True):
            cfg = dataclasses.replace(pick, pdl=pdl)
            fn = sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=False))
            out.fill_(float("nan"))
            fn(a, b, sa, sb, out)
            torch.cuda.synchronize()
            err = rel_error(out, ref)
            bound = 4e-3 if fast else 2e-3
            print(f"{'OK  ' if err <= bound and not out.isnan().any() else 'FAIL'} {m}x{n}x{k} pdl={pdl} "
                  f"rel_err {err:.2e} (bound {bound:.0e})", flush=True)
            impls[f"ours_pdl{int(pdl)}"] = lambda fn=fn: fn(a, b, sa, sb, out)
        times = {name: ([], []) for name in impls}
        for _ in range(args.rounds):
            for name, fn in impls.items():
                times[name][0].append(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3)
                times[name][1].append(back_to_back_us(fn))
        base = {what: statistics.median(times["torch"][i]) for i, what in enumerate(("do_bench", "b2b"))}
        for name, (db, b2b) in times.items():
            md, mb = statistics.median(db), statistics.median(b2b)
            print(f"{m}x{n}x{k}{' fast' if fast else ''} {name:10s} do_bench {md:8.1f} us (rounds "
                  f"{' '.join(f'{t:.1f}' for t in db)}) torch/this {base['do_bench'] / md:.3f} | back-to-back "
                  f"{mb:8.1f} us torch/this {base['b2b'] / mb:.3f}  [{pick.tile_m * pick.row_blocks}x{pick.tile_n}]",
                  flush=True)


if __name__ == "__main__":
    main()
