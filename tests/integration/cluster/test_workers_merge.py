"""The front's sums of worker metrics and stats (sfu/cluster/merge.py), on real prometheus_client output."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from sfu.cluster.merge import merge_prometheus, merge_stats


def exposition(packets: int, lag: float, participants: int) -> str:
    class Collector:
        def collect(self) -> Iterator[Metric]:
            out = CounterMetricFamily("sfu_packets_out", "forwarded", labels=["kind"])
            out.add_metric(["video"], packets)
            out.add_metric(["audio"], packets // 10)
            yield out
            yield GaugeMetricFamily("sfu_participants", "participants", value=participants)
            yield GaugeMetricFamily("sfu_event_loop_lag_seconds", "lag", value=lag)
            yield GaugeMetricFamily("sfu_gc_pause_max_seconds", "longest GC pause", value=lag / 2)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry).decode()


def test_counters_and_gauges_add_up_and_lag_is_the_worst_worker() -> None:
    merged = merge_prometheus([exposition(1000, 0.5, 3), exposition(300, 0.02, 4)],
                              ["# TYPE sfu_cluster_workers gauge", "sfu_cluster_workers 2"]).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(merged) for s in family.samples}
    assert samples[("sfu_packets_out_total", (("kind", "video"),))] == 1300
    assert samples[("sfu_packets_out_total", (("kind", "audio"),))] == 130
    assert samples[("sfu_participants", ())] == 7
    assert samples[("sfu_event_loop_lag_seconds", ())] == 0.5
    assert samples[("sfu_gc_pause_max_seconds", ())] == 0.25
    assert samples[("sfu_cluster_workers", ())] == 2
    assert "# TYPE sfu_packets_out_total counter" in merged


def test_stats_add_numbers_through_nested_objects() -> None:
    one = {"sessions": 1, "packets_out": {"video": 10}, "event_loop_lag_seconds": {"max_10s": 0.3}, "v": "x",
           "gc": {"collections": {"2": 1}, "max_pause_10s": 0.4}}
    two = {"sessions": 2, "packets_out": {"video": 5, "audio": 1}, "event_loop_lag_seconds": {"max_10s": 0.1},
           "gc": {"collections": {"2": 2}, "max_pause_10s": 0.2}}
    assert merge_stats([one, two]) == {"sessions": 3, "packets_out": {"video": 15, "audio": 1},
                                       "event_loop_lag_seconds": {"max_10s": 0.3}, "v": "x",
                                       "gc": {"collections": {"2": 3}, "max_pause_10s": 0.4}}
