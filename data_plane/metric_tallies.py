"""The request path's metrics as plain numbers, turned into Prometheus families only when scraped.

prometheus-client's metric objects take a lock and check their own state on every update, and finding a
labelled child is a lookup of its own: several calls per update, ten updates per request, a tenth of the
router's Python calls per request. The router is one thread on one event loop, so its hot counters and
histograms need neither: a tally is a dict from a label tuple to its number(s), and its family is built at
scrape time (`TallyCollector`). Metrics updated rarely (breaker transitions, table versions...) stay
prometheus-client's own.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class CounterTally:
    """A counter family: `inc(labels, amount)` on the request path, exported as `<name>_total`."""

    __slots__ = ("name", "documentation", "labelnames", "_values")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._values: defaultdict[Labels, float] = defaultdict(float)

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self._values[labels] += amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in list(self._values.items()):
            family.add_metric(labels, value)
        return family


class HistogramTally:
    """A histogram family: `observe(labels, value)` counts the value in the first bucket whose upper bound
    holds it (Prometheus' `le`), exported with cumulative buckets, `_sum` and `_count`."""

    __slots__ = ("name", "documentation", "labelnames", "_bounds", "_series")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        if list(buckets) != sorted(set(buckets)):
            raise ValueError(f"histogram {name}: buckets must be increasing and distinct, got {buckets}")
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._bounds = tuple(float(bound) for bound in buckets)
        # Per label tuple: a count per bucket, the last for values above every bound (+Inf), then the sum.
        self._series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self._bounds) + 2)
        series[bisect_left(self._bounds, value)] += 1
        series[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        names = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]
        for labels, series in list(self._series.items()):
            cumulative, buckets = 0.0, []
            for name, count in zip(names, series, strict=False):
                cumulative += count
                buckets.append((name, cumulative))
            family.add_metric(labels, buckets, series[-1])
        return family


Reader = Callable[[], Iterable[tuple[Labels, float]]]


class GaugeReading:
    """A gauge family read from live state at scrape time, so the request path does not update it at all: the
    component that holds the state gives `read_from` a function yielding each series' labels and value."""

    __slots__ = ("name", "documentation", "labelnames", "_read")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._read: Reader = tuple

    def read_from(self, read: Reader) -> None:
        self._read = read

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self._read():
            family.add_metric(labels, value)
        return family


class TallyCollector(Collector):
    """Exports tallies and readings from a prometheus-client registry, alongside its own metrics."""

    def __init__(self) -> None:
        self._members: list[CounterTally | HistogramTally | GaugeReading] = []

    def add(self, member: CounterTally | HistogramTally | GaugeReading) -> None:
        self._members.append(member)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily | GaugeMetricFamily]:
        for member in self._members:
            yield member.family()
