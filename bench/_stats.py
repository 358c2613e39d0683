"""Samples of one contender on one workload, their medians, and ratios to the best contender."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench._proc import CpuTimes

METRICS = ("value", "user", "system", "total")
"""What a summary holds: the workload's primary metric, then server CPU µs per unit (user, system, total)."""


@dataclass(frozen=True)
class Sample:
    """One measured interval of one contender on one workload.

    ``value`` is the workload's primary metric (a throughput, or bytes per connection), ``units`` the work
    done in the interval (round-trips, requests, connections, MB) and ``cpu`` the server's CPU time spent in
    it, None where CPU is not measured.
    """

    value: float
    units: float
    cpu: CpuTimes | None
    detail: Mapping[str, float | int | str] = field(default_factory=dict)

    def cpu_us_per_unit(self) -> dict[str, float]:
        """Server CPU microseconds per unit of work (user, system, total); empty without CPU or work."""
        if self.cpu is None or self.units <= 0:
            return {}
        scale = 1e6 / self.units
        return {"user": self.cpu.user * scale, "system": self.cpu.system * scale, "total": self.cpu.total * scale}


def summarise(samples: Sequence[Sample]) -> dict[str, float]:
    """The median of every metric over ``samples`` (CPU metrics only if every sample has them)."""
    if not samples:
        return {}
    medians = {"value": statistics.median(s.value for s in samples)}
    per_unit = [s.cpu_us_per_unit() for s in samples]
    if all(per_unit):
        for metric in METRICS[1:]:
            medians[metric] = statistics.median(p[metric] for p in per_unit)
    return medians


def ratios_to_best(values: Mapping[str, float], higher_is_better: bool) -> dict[str, float]:
    """Each value divided by the best one (the largest, or the smallest when lower is better).

    The best gets 1.0; where the best is 0, the others get infinity (or 1.0 when they are 0 too).
    """
    if not values:
        return {}
    best = max(values.values()) if higher_is_better else min(values.values())
    if best == 0:
        return {name: 1.0 if v == 0 else math.inf for name, v in values.items()}
    return {name: v / best for name, v in values.items()}


def ratios_by_metric(medians: Mapping[str, Mapping[str, float]], higher_is_better: bool) -> dict[str, dict[str, float]]:
    """For each metric, every contender's median divided by the best contender's.

    ``medians`` maps contender to metric to median (as ``summarise`` gives). The primary ``value`` follows
    ``higher_is_better``; CPU per unit is always better lower. A metric counts only contenders that have it.
    """
    ratios: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        values = {name: m[metric] for name, m in medians.items() if metric in m}
        if values:
            ratios[metric] = ratios_to_best(values, higher_is_better if metric == "value" else False)
    return ratios


def round_ratios(samples: Mapping[str, Sequence[Sample]], base: str) -> dict[str, float]:
    """Each contender's median, over the rounds both ran, of its value divided by ``base``'s in the same round.

    Contenders run interleaved round by round, so a round's ratio compares two servers under the same conditions;
    its median is steadier than a ratio of medians on a machine whose speed drifts. Rounds pair up in order: a
    contender that failed stops early, and only its first rounds count. Empty without ``base`` or a paired round.
    """
    reference = [s.value for s in samples.get(base, ())]
    ratios = {}
    for name, own in samples.items():
        pairs = [(s.value, r) for s, r in zip(own, reference, strict=False) if r > 0]
        if name != base and pairs:
            ratios[name] = statistics.median(value / r for value, r in pairs)
    return ratios
