"""Where a Helion direct entry's time goes above the plain Triton hit (issue 15), on the GPU.

``bench launch`` puts ``fastdispatch.helion_kernel`` (out given, a direct entry) at +0.9 to
+1.0 us over the plain fastdispatch hit of the same add. This times both in rotating rounds
(paired), the C loop of each entry's launch alone (``floor_loop``: the binaries' own launch
cost), and the hot path's steps of each (``probe_costs``), so the difference can be placed: in
the binary's launch, in the C steps, or above C. Usage: ``python bench/probe_helion.py``.
"""
from __future__ import annotations

import functools

import torch

import fastdispatch
from fastdispatch import bench_rounds
from fastdispatch.bench_launch import NUMEL, _time_per_call
from fastdispatch.kernels import add as plain_add
from fastdispatch.kernels import helion_kernels as hk
from probe_hot_path import step_costs   # bench/ is the script's directory: on sys.path


def main() -> None:
    if not torch.cuda.is_available():
        print("probe_helion: no CUDA GPU; skipped")
        return
    groups, entries = {}, {}
    for n in (2, 16):
        inputs = [torch.randn(NUMEL, device="cuda") for _ in range(n)]
        out = torch.empty(NUMEL, device="cuda")
        plain = fastdispatch.triton_kernel(plain_add.ADD_KERNELS[n], grid=plain_add.add_grid(NUMEL),
                                           constexprs={"BLOCK": plain_add.BLOCK})
        helion = fastdispatch.helion_kernel(hk.ADD_KERNELS[n])
        plain_args, helion_args = (*inputs, out, NUMEL), (*inputs, out)
        for k, a in ((plain, plain_args), (helion, helion_args)):
            k(*a)
            k(*a)
        torch.cuda.synchronize()
        p_entry, h_entry = plain.published()[0], helion.published()[0]
        print(f"{n} inputs: helion entry direct={h_entry.info.get('direct')!r}, guard "
              f"{h_entry.info['recipe']['globals_guard'] if h_entry.info.get('direct') is True else None}")

        def looped(k, a, iterations):
            for _ in range(iterations):
                k(*a)

        def floor(entry, k, a, iterations):
            entry.floor_loop(k, a, iterations)
        paths = {"plain hit": functools.partial(looped, plain, plain_args),
                 "helion direct": functools.partial(looped, helion, helion_args),
                 "plain floor_loop": functools.partial(floor, p_entry, plain, plain_args),
                 "helion floor_loop": functools.partial(floor, h_entry, helion, helion_args)}
        groups[n] = {name: functools.partial(_time_per_call, fn, 2000) for name, fn in paths.items()}
        entries[n] = ((plain, plain_args), (helion, helion_args))
    samples = bench_rounds.interleaved_groups(groups, 31)
    for n, rows in samples.items():
        print(f"\n{n} inputs (us per call, median of 31 rounds; paired against the plain hit)")
        for name, values in rows.items():
            p = bench_rounds.paired(values, rows["plain hit"])
            print(f"  {name:<20} {bench_rounds.summary(values).median:6.2f}  {p.median:+.2f} [{p.q1:+.2f}, {p.q3:+.2f}]")
        for label, (k, a) in zip(("plain", "helion"), entries[n]):
            print(f"  C steps, {label}: " + step_costs(k, a))


if __name__ == "__main__":
    main()
