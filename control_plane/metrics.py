"""The replica's Prometheus metrics, read from its state at scrape time so they can never drift from it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from meridian_proto import routing_pb2


@dataclass(frozen=True, slots=True)
class ReplicaFigures:
    replica_id: str
    is_leader: bool
    tables: Mapping[str, routing_pb2.RoutingTable]
    publications: Mapping[str, int]


class _ReplicaCollector(Collector):
    def __init__(self, figures: Callable[[], ReplicaFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self._figures()
        leader = GaugeMetricFamily("meridian_cp_is_leader", "1 while this replica holds the leader key.",
                                   labels=["replica"])
        leader.add_metric([figures.replica_id], 1.0 if figures.is_leader else 0.0)
        epoch = GaugeMetricFamily("meridian_cp_epoch", "Epoch of the leader whose tables this replica serves.",
                                  labels=["replica"])
        epoch.add_metric([figures.replica_id], float(max((t.epoch for t in figures.tables.values()), default=0)))
        version = GaugeMetricFamily("meridian_cp_table_version", "Newest table version this replica serves.",
                                    labels=["replica", "region"])
        for region, table in sorted(figures.tables.items()):
            version.add_metric([figures.replica_id, region], float(table.version))
        publications = CounterMetricFamily("meridian_cp_publications", "Tables this replica published as leader.",
                                           labels=["replica", "region"])
        for region, count in sorted(figures.publications.items()):
            publications.add_metric([figures.replica_id, region], float(count))
        yield from (leader, epoch, version, publications)


def replica_metrics(figures: Callable[[], ReplicaFigures]) -> Callable[[], bytes]:
    """A function rendering the replica's metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReplicaCollector(figures))
    return lambda: generate_latest(registry)
