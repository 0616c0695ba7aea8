"""Interleaved rounds and paired comparisons for the benchmarks (per benchmark run; no hot path).

On the lent H200 host wall times drift by +-10% within a minute, and rows of ``bench launch``
doing identical work differed by up to 0.4 us between long repeats: a difference of medians
cannot resolve a 0.3 us target. So a benchmark runs many short rounds, each timing every path
once, and compares two paths round by round (ours minus, or over, the reference timed in the
same round): whatever drifts slower than a round cancels in each round's comparison, and the
quartiles of the per-round values say how well the comparison is resolved.

Measures are zero-argument callables returning one sample (e.g. us per call over a short loop);
the timing, and any synchronization, stays with the benchmark that knows its paths.
"""
from __future__ import annotations

import operator
import statistics
from typing import Callable, Hashable, Mapping, NamedTuple, Sequence, TypeVar

G = TypeVar("G", bound=Hashable)
Measure = Callable[[], float]


def rotated(names: Sequence, r: int) -> list:
    """Round ``r``'s order: ``names`` rotated left by ``r``, so each runs first once every
    ``len(names)`` rounds (a path run first meets an idle GPU and cold host caches)."""
    k = r % len(names)
    return [*names[k:], *names[:k]]


def interleaved_groups(groups: Mapping[G, Mapping[str, Measure]],
                       rounds: int) -> dict[G, dict[str, list[float]]]:
    """``{group: {name: [one sample per round]}}``. Each round measures every group's paths once,
    the groups in their order and each group's paths in ``rotated`` order, so sample ``r`` of
    every path comes from round ``r`` (what :func:`paired` relies on)."""
    samples = {g: {name: [] for name in paths} for g, paths in groups.items()}
    for r in range(rounds):
        for g, paths in groups.items():
            for name in rotated(list(paths), r):
                samples[g][name].append(paths[name]())
    return samples


def interleaved(paths: Mapping[str, Measure], rounds: int) -> dict[str, list[float]]:
    """``{name: [one sample per round]}`` for one group of paths (see :func:`interleaved_groups`)."""
    return interleaved_groups({None: paths}, rounds)[None]


class Paired(NamedTuple):
    """Per-round comparisons of two paths: their median and quartiles, and the values in round order."""
    median: float
    q1: float
    q3: float
    values: tuple


def paired(ours: Sequence[float], theirs: Sequence[float],
           compare: Callable[[float, float], float] = operator.sub) -> Paired:
    """``compare(ours[r], theirs[r])`` for each round ``r`` (a difference by default; pass
    ``operator.truediv`` for ratios), summarized by :func:`summary`. Both lists must come from
    the same rounds (:func:`interleaved` gives that)."""
    if len(ours) != len(theirs):
        raise ValueError(f"paired: {len(ours)} rounds against {len(theirs)}")
    return summary([compare(a, b) for a, b in zip(ours, theirs)])


def summary(values: Sequence[float]) -> Paired:
    """Median and quartiles of ``values`` (``statistics.quantiles``, its default exclusive
    method); with one value both quartiles are that value."""
    if not values:
        raise ValueError("summary: no values")
    median = statistics.median(values)
    # statistics.quantiles needs two points before Python 3.13; one round has no spread.
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (median, median, median)
    return Paired(median, q1, q3, tuple(values))
