"""The benchmark's stage breakdown reads histograms the way PromQL's histogram_quantile does."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tests.load.stages import between, parse


def _exposition(values: list[float], registry: CollectorRegistry, hist: Histogram) -> str:
    for v in values:
        hist.labels("connects").observe(v)
    return generate_latest(registry).decode()


def test_the_difference_of_two_scrapes_holds_only_the_phase_between_them():
    registry = CollectorRegistry()
    hist = Histogram("stage_seconds", "", ["service"], buckets=(0.001, 0.01, 0.1, 1.0), registry=registry)
    before = parse(_exposition([0.5] * 100, registry, hist))  # an earlier phase: slow
    after = parse(_exposition([0.005] * 99 + [0.05], registry, hist))  # this phase: 99 fast, 1 slow
    phase = between(before, after, "stage_seconds", service="connects")
    assert phase.count == 100
    assert math.isclose(phase.total, 99 * 0.005 + 0.05)
    # 99 of 100 in (0.001, 0.01]: the median interpolates inside that bucket, p99 at its top.
    assert 0.001 < phase.quantile(0.5) < 0.01
    assert math.isclose(phase.quantile(0.99), 0.01)
    assert 0.01 < phase.quantile(0.999) <= 0.1
    assert between(before, after, "stage_seconds", service="ads").count == 0
    assert math.isnan(between(before, after, "stage_seconds", service="ads").quantile(0.5))
