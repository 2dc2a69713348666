"""Latency by stage from a service's own histograms, over one phase of a benchmark.

`scrape` reads every histogram of a /metrics page; the difference of two scrapes (before and after a
phase) holds only that phase's observations, whose quantiles `quantile` estimates the way PromQL's
histogram_quantile does (linear within the bucket). Used by bench_spend to say where a Spend's time
goes at half load: the gRPC handling time, and inside it the batcher's queue wait, batch run and
hand-back to the event loop.
"""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Hist:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    count: float = 0.0
    total: float = 0.0

    def minus(self, earlier: Hist) -> Hist:
        return Hist({le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
                    self.count - earlier.count, self.total - earlier.total)

    def quantile(self, q: float) -> float:
        """Seconds below which a fraction q of the observations fell (NaN without observations)."""
        if self.count <= 0:
            return math.nan
        rank, lower, below = q * self.count, 0.0, 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le]
            if n >= rank:
                if math.isinf(le):
                    return lower
                return lower + (le - lower) * (rank - below) / max(n - below, 1e-12)
            lower, below = le, n
        return lower

    @staticmethod
    def merged(hists: list[Hist]) -> Hist:
        total = Hist()
        for h in hists:
            for le, c in h.buckets.items():
                total.buckets[le] = total.buckets.get(le, 0.0) + c
            total.count += h.count
            total.total += h.total
        return total

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count > 0 else math.nan


Key = tuple[str, tuple[tuple[str, str], ...]]


def parse(text: str) -> dict[Key, Hist]:
    """Every histogram series of an exposition: (name, labels without `le`) -> Hist."""
    out: dict[Key, Hist] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            h = out.setdefault((family.name, labels), Hist())
            if s.name.endswith("_bucket"):
                h.buckets[float(s.labels["le"])] = s.value
            elif s.name.endswith("_count"):
                h.count = s.value
            elif s.name.endswith("_sum"):
                h.total = s.value
    return out


def scrape(port: int) -> dict[Key, Hist]:
    return parse(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


def between(before: dict[Key, Hist], after: dict[Key, Hist], name: str, **labels: str) -> Hist:
    """The observations of histogram `name` (labels matching) made between the two scrapes, summed."""
    return Hist.merged([h.minus(before.get((n, lbls), Hist())) for (n, lbls), h in after.items()
                        if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())])


def describe(h: Hist) -> str:
    ms = 1000.0
    return (f"p50 {h.quantile(0.5) * ms:.1f} / p99 {h.quantile(0.99) * ms:.1f} / mean {h.mean * ms:.1f} ms "
            f"({h.count:,.0f} obs.)")
