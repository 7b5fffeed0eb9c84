"""Alternating-median timing: a baseline and a candidate run in turns in one process.

Each round runs the baseline then the candidate (the order flips every round so neither always
runs on a warmer cache). The ratio of a round is ``baseline time / candidate time``, i.e. the
candidate's throughput relative to the baseline (1.0 = as fast, > 1 faster). The result is the
median of the per-round ratios with their spread (min, max and the interquartile range), plus
every time, so a noisy machine shows in the numbers instead of hiding in one average.

Wall-clock time decides the ratios. The process's CPU time (all its threads) is recorded beside
it: on a machine shared with other work, wall time also counts the time spent waiting for a
core, and the CPU-time ratio shows what the run would cost on a quiet machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Comparison:
    """Times (seconds) of every round and the per-round throughput ratios ``baseline / candidate``."""

    name: str
    baseline: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)
    baseline_cpu: list[float] = field(default_factory=list)
    candidate_cpu: list[float] = field(default_factory=list)
    work: float = 1.0  # units of work per run (e.g. tokens), for throughput figures
    unit: str = "run"
    target: float | None = None
    note: str = ""

    @property
    def ratios(self) -> list[float]:
        return [b / c for b, c in zip(self.baseline, self.candidate)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def cpu_ratios(self) -> list[float]:
        return [b / c for b, c in zip(self.baseline_cpu, self.candidate_cpu) if c > 0]

    @property
    def cpu_ratio(self) -> float | None:
        return statistics.median(self.cpu_ratios) if self.cpu_ratios else None

    def quartiles(self) -> tuple[float, float]:
        r = sorted(self.ratios)
        if len(r) < 4:
            return r[0], r[-1]
        q = statistics.quantiles(r, n=4)
        return q[0], q[2]

    @property
    def holds(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def throughput(self, which: str) -> float:
        times = self.baseline if which == "baseline" else self.candidate
        return self.work / statistics.median(times)

    def summary(self) -> dict:
        """JSON-friendly record: every time, every ratio, the median, spread and target."""
        out = asdict(self)
        q1, q3 = self.quartiles()
        out.update(ratios=self.ratios, ratio=self.ratio, cpu_ratios=self.cpu_ratios, cpu_ratio=self.cpu_ratio, ratio_min=min(self.ratios), ratio_max=max(self.ratios),
                   ratio_q1=q1, ratio_q3=q3, holds=self.holds,
                   baseline_per_s=self.throughput("baseline"), candidate_per_s=self.throughput("candidate"))
        return out


def clock(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    return clock2(fn)[0]


def clock2(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call of ``fn``."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def compare(name: str, baseline: Callable[[], object], candidate: Callable[[], object], runs: int = 5,
            warmup: int = 1, work: float = 1.0, unit: str = "run", target: float | None = None,
            note: str = "") -> Comparison:
    """Time ``baseline`` and ``candidate`` alternately ``runs`` times each (after ``warmup`` calls of each)."""
    for _ in range(warmup):
        baseline()
        candidate()
    result = Comparison(name, work=work, unit=unit, target=target, note=note)
    for i in range(runs):
        if i % 2 == 0:
            b = clock2(baseline)
            c = clock2(candidate)
        else:
            c = clock2(candidate)
            b = clock2(baseline)
        result.baseline.append(b[0])
        result.candidate.append(c[0])
        result.baseline_cpu.append(b[1])
        result.candidate_cpu.append(c[1])
    return result


def fmt_ratio(c: Comparison) -> str:
    """``0.98× (0.95–1.01)``: median ratio with its min–max spread."""
    return f"{c.ratio:.2f}× ({min(c.ratios):.2f}–{max(c.ratios):.2f})"


def rounds(fns: dict[str, Callable[[], object]], runs: int = 5,
           warmup: Callable[[str], None] | None = None) -> dict[str, list[tuple[float, float]]]:
    """``runs`` rounds calling every function once, in an order that rotates each round.

    Returns each function's (wall, CPU) seconds per round, so any two can be paired round by round.
    ``warmup(name)`` (or one call of each) runs first and is not timed.
    """
    names = list(fns)
    for name in names:
        warmup(name) if warmup else fns[name]()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(runs):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(clock2(fns[name]))
    return times


def paired(name: str, times: dict[str, list[tuple[float, float]]], baseline: str, candidate: str,
           **fields) -> Comparison:
    """The Comparison of two functions timed in the same ``rounds``."""
    cmp = Comparison(name, **fields)
    cmp.baseline = [t[0] for t in times[baseline]]
    cmp.candidate = [t[0] for t in times[candidate]]
    cmp.baseline_cpu = [t[1] for t in times[baseline]]
    cmp.candidate_cpu = [t[1] for t in times[candidate]]
    return cmp


def compare_many(prefix: str, baseline: Callable[[], object], candidates: dict[str, Callable[[], object]],
                 runs: int = 5, work: float = 1.0, unit: str = "run", targets: dict | None = None,
                 note: str = "", warmup: Callable[[str], None] | None = None) -> list[Comparison]:
    """Rounds of baseline + every candidate: one baseline run per round serves every candidate of
    that round, so each ratio still pairs two runs made close together, at a fraction of the cost
    of separate pairs."""
    times = rounds({"__baseline__": baseline, **candidates}, runs, warmup)
    return [paired(f"{prefix}/{name}", times, "__baseline__", name, work=work, unit=unit,
                   target=(targets or {}).get(name), note=note) for name in candidates]
