"""bench_rounds on the CPU: rotation, one sample per path per round, pairing within a round, the
quartiles. Stand-in measures return numbers from a fake host (no wall time is read)."""
import operator
import statistics

import pytest

from fastdispatch import bench_rounds


class FakeHost:
    """Measures whose samples are base[name] + the current round's drift; the round is read off
    the log of calls (every path once per round), so a sample from the wrong round shows."""

    def __init__(self, base: dict, drift: list):
        self.base, self.drift, self.log = base, drift, []

    def measures(self) -> dict:
        return {name: (lambda name=name: self._sample(name)) for name in self.base}

    def _sample(self, name):
        self.log.append(name)
        return self.base[name] + self.drift[(len(self.log) - 1) // len(self.base)]


def test_rotated_puts_every_name_first_once_per_len_rounds():
    names = ["a", "b", "c", "d"]
    orders = [bench_rounds.rotated(names, r) for r in range(8)]
    assert all(sorted(order) == names for order in orders)   # each round runs every name once
    assert [order[0] for order in orders] == names * 2
    assert orders[1] == ["b", "c", "d", "a"] and orders[5] == orders[1]


def test_interleaved_runs_rotated_rounds_and_keeps_round_order():
    host = FakeHost({"a": 1.0, "b": 2.0, "c": 3.0}, drift=[0.0, 10.0, 20.0, 30.0])
    samples = bench_rounds.interleaved(host.measures(), rounds=4)
    assert host.log == list("abc" "bca" "cab" "abc")
    assert samples == {"a": [1.0, 11.0, 21.0, 31.0], "b": [2.0, 12.0, 22.0, 32.0],
                       "c": [3.0, 13.0, 23.0, 33.0]}


def test_interleaved_groups_rotates_each_group_within_one_round():
    order = []

    def measure(name):
        return lambda: order.append(name) or 0.0

    groups = {2: {name: measure(name) for name in "ab"}, 8: {name: measure(name) for name in "xyz"}}
    samples = bench_rounds.interleaved_groups(groups, rounds=3)
    assert order == list("ab" "xyz" "ba" "yzx" "ab" "zxy")
    assert samples == {2: {"a": [0.0] * 3, "b": [0.0] * 3}, 8: {"x": [0.0] * 3, "y": [0.0] * 3, "z": [0.0] * 3}}


def test_paired_differences_come_from_the_same_round():
    # Drift far larger than the 0.25 difference, changing every round: paired within a round
    # it cancels exactly; paired across rounds (one sample shifted) it would not.
    drift = [0.0, 3.0, -2.0, 7.0, 1.0, -4.0, 5.0]
    host = FakeHost({"ours": 4.25, "plain": 4.0}, drift)
    samples = bench_rounds.interleaved(host.measures(), rounds=len(drift))
    p = bench_rounds.paired(samples["ours"], samples["plain"])
    assert p.values == (0.25,) * len(drift)
    assert (p.median, p.q1, p.q3) == (0.25, 0.25, 0.25)
    shifted = bench_rounds.paired(samples["ours"][1:], samples["plain"][:-1])
    assert shifted.q3 - shifted.q1 > 1.0
    # the rows themselves spread over the drift: their quartiles could not resolve 0.25
    row = bench_rounds.summary(samples["plain"])
    assert row.q3 - row.q1 > 4.0


def test_paired_quartiles_and_ratios():
    p = bench_rounds.paired([5.0, 7.0, 9.0, 100.0], [4.0, 5.0, 6.0, 0.0])
    # differences 1, 2, 3, 100; exclusive quartiles at positions 1.25 and 3.75 of 4
    assert p.values == (1.0, 2.0, 3.0, 100.0)
    assert p.median == 2.5 and p.q1 == pytest.approx(1.25) and p.q3 == pytest.approx(75.75)
    r = bench_rounds.paired([2.0, 3.0, 4.5], [2.0, 2.0, 3.0], operator.truediv)
    assert r.values == (1.0, 1.5, 1.5) and r.median == 1.5


def test_paired_edge_cases():
    one = bench_rounds.paired([3.0], [1.0])
    assert (one.median, one.q1, one.q3) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        bench_rounds.paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        bench_rounds.summary([])


def test_bench_launch_decides_the_drop_in_target_on_the_paired_median(capsys):
    """bench launch's target lines from fake samples (no GPU): ours is 0.1 us above plain in
    two rounds of three and 0.9 us in one, so the medians differ by 0.9 us (MISSED on them) and
    the paired median is 0.1 us (MET); the null pair is labelled by the autotuner's BLOCK."""
    pytest.importorskip("triton")
    from fastdispatch import bench_launch as bl

    autotune = "fastdispatch fast[grid], autotune (4 configs, key n)"
    triton_row = "Triton kernel[grid], autotune (4 configs, key n)"
    samples = {bl.FLOOR: [3.0, 3.0, 3.0], bl.FD: [4.0, 6.0, 5.0], bl.AUTOTUNE_PLAIN: [4.0, 6.0, 5.0],
               autotune: [4.1, 6.1, 5.9], triton_row: [40.0, 40.0, 40.0]}
    results = {2: {name: statistics.median(v) for name, v in samples.items()}}
    assert results[2][autotune] - results[2][bl.AUTOTUNE_PLAIN] == pytest.approx(0.9)
    for block, label in ((1024, "identical work"), (512, "not identical work: the autotuner picked BLOCK 512")):
        paired = {2: bl._paired(samples, block)}
        rows = paired[2]
        assert set(rows) == {f"{autotune} - {bl.AUTOTUNE_PLAIN}", f"{bl.FD} - {bl.AUTOTUNE_PLAIN}"}
        assert rows[f"{autotune} - {bl.AUTOTUNE_PLAIN}"]["median_us"] == pytest.approx(0.1)
        assert rows[f"{autotune} - {bl.AUTOTUNE_PLAIN}"]["rounds_us"] == pytest.approx([0.1, 0.1, 0.9])
        bl._print_table(results, paired, rounds=3, iterations=10)
        out = capsys.readouterr().out
        target = next(line for line in out.splitlines() if "autotune (4 configs, key n):" in line)
        assert "paired +0.10 [+0.10, +0.90] us" in target and target.endswith("-> MET"), target
        null = next(line for line in out.splitlines() if "null pair" in line)
        assert label in null and null.endswith("+0.00 [+0.00, +0.00] us"), null
