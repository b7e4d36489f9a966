"""Report arithmetic from window snapshots and /metrics deltas, the table, and the sweep files."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loadtest.cli import _sweep, per_subscriber_bytes, write_sweep
from loadtest.report import Report, build_report, histogram_delta, histogram_quantile, table
from loadtest.runner import LoadConfig, parse_metrics, plan_workers


def _snap(worker: int, **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"worker": worker, "pub_packets": 0, "received": 0, "received_bytes": 0,
                            "expected": 0, "lost": 0, "reordered": 0, "duplicates": 0, "jitter_ms": [],
                            "cpu_s": 0.0}  # fmt: skip
    return base | values


def _report(subscribers: int, rss: float) -> Report:
    start = [_snap(0)]
    end = [_snap(0, pub_packets=100, received=1000, expected=1010, lost=10, cpu_s=0.5,
                 jitter_ms=[1.0, 3.0], latency_ms=[1.0, 2.0, 3.0, 4.0])]  # fmt: skip
    m0 = {"process_cpu_seconds_total": 10.0, "sfu_packets_out_total": 0.0, "sfu_packets_in_total": 0.0,
          "sfu_bytes_in_total": 0.0, "sfu_bytes_out_total": 0.0}  # fmt: skip
    m1 = {"process_cpu_seconds_total": 10.2, "sfu_packets_out_total": 1e4, "sfu_packets_in_total": 1000.0,
          "sfu_bytes_in_total": 1e6, "sfu_bytes_out_total": 1e7, "process_resident_memory_bytes": rss,
          'sfu_drops_total{reason="muted",stage="receiver"}': 5.0}  # fmt: skip
    return build_report(1, subscribers, 1, 2, (start, end), (m0, m1), 10.0, [], machine_cpu_s=5.0)


def test_build_report_takes_window_deltas_from_workers_and_metrics() -> None:
    r = _report(10, 100e6)
    assert (r.sent_pps, r.received_pps) == (10.0, 100.0)
    assert r.loss_pct == pytest.approx(100 * 10 / 1010)
    assert (r.latency_ms_p50, r.latency_ms_p99, r.jitter_ms) == (2.0, 4.0, 2.0)
    assert r.server_pps_out == 1000.0 and r.server_mbps_out == pytest.approx(8.0)
    assert r.server_cpu_pct == pytest.approx(2.0) and r.server_cpu_us_per_packet == pytest.approx(20.0)
    assert r.worker_cpu_pct == [5.0] and r.machine_cpu_pct == 50.0
    assert r.server_drops == {'{reason="muted",stage="receiver"}': 5.0}
    assert "| 1 | 10 | 100 | 1000 |" in table([r])


def test_a_report_without_metrics_has_empty_server_columns() -> None:
    r = build_report(1, 1, 1, 1, ([_snap(0)], [_snap(0)]), ({}, {}), 5.0, [])
    assert math.isnan(r.server_cpu_us_per_packet) and math.isnan(r.loss_pct)
    assert r.to_json()["server_cpu_us_per_packet"] is None
    assert "| - |" in table([r])


def test_sweep_files_hold_every_point_and_the_memory_slope(tmp_path: Path) -> None:
    reports = [_report(1, 100e6), _report(51, 150e6)]
    assert per_subscriber_bytes(reports) == pytest.approx(1e6)
    json_path, png_path = write_sweep(tmp_path, "subscribers", "python -m loadtest --sweep", reports)
    body = json.loads(json_path.read_text())
    assert [p["subscribers"] for p in body["points"]] == [1, 51]
    assert body["rss_per_subscriber_bytes"] == pytest.approx(1e6)
    assert png_path.read_bytes().startswith(b"\x89PNG")


def test_workers_share_publishers_and_subscribers_round_robin() -> None:
    config = LoadConfig("http://127.0.0.1:1", "k", "s", publishers=3, subscribers=5, workers=2)
    plans = plan_workers(config, "room")
    assert [(p.publishers, p.subscribers) for p in plans] == [((0, 2), (0, 2, 4)), ((1,), (1, 3))]
    assert LoadConfig("u", "k", "s", subscribers=1).worker_count() == 1


def test_sweep_argument_and_metrics_parsing() -> None:
    assert _sweep("subscribers=1,10,50") == ("subscribers", [1, 10, 50])
    text = 'sfu_packets_out_total{kind="audio"} 2.0\nsfu_packets_out_total{kind="video"} 3.0\n'
    parsed = parse_metrics(text)
    assert parsed["sfu_packets_out_total"] == 5.0 and parsed['sfu_packets_out_total{kind="video"}'] == 3.0


def test_arrival_to_send_quantiles_come_from_the_window_histogram() -> None:
    def buckets(counts: list[float]) -> dict[str, float]:
        bounds = ["1e-05", "0.0001", "0.001", "+Inf"]
        cumulative = [sum(counts[: i + 1]) for i in range(len(counts))]
        name = "sfu_arrival_to_send_seconds_bucket"
        return {f'{name}{{le="{b}"}}': c for b, c in zip(bounds, cumulative, strict=True)}

    before, after = buckets([5, 0, 0, 0]), buckets([5, 50, 50, 0])  # window: 50 in 10-100 us, 50 in 0.1-1 ms
    window = histogram_delta(before, after, "sfu_arrival_to_send_seconds")
    assert window[-1] == (math.inf, 100.0)
    assert histogram_quantile(window, 0.5) == pytest.approx(100e-6)
    assert histogram_quantile(window, 0.99) == pytest.approx(100e-6 + 900e-6 * 49 / 50)
    assert math.isnan(histogram_quantile(histogram_delta(before, before, "sfu_arrival_to_send_seconds"), 0.5))
    snaps = ([_snap(0)], [_snap(0, pub_packets=10, received=9)])
    r = build_report(1, 1, 1, 1, snaps, (before, after), 1.0, [])
    assert r.server_fwd_samples == 100 and r.server_fwd_us_p50 == pytest.approx(100.0)
    assert r.delivered_pct == pytest.approx(90.0)


def test_a_relay_report_counts_forwarded_packets_at_the_subscribers() -> None:
    end = [_snap(0, pub_packets=50, received=200)]
    m0, m1 = {"process_cpu_seconds_total": 1.0}, {"process_cpu_seconds_total": 1.2}
    r = build_report(1, 4, 1, 1, ([_snap(0)], end), (m0, m1), 1.0, [], target="aiortc-relay")
    assert r.server_pps_out == 200 and r.server_cpu_us_per_packet == pytest.approx(1000.0)
    assert r.delivered_pct == pytest.approx(100.0) and "| aiortc-relay | 1 | 4 |" in table([r])


def test_a_compared_sweep_plots_one_line_per_server_and_takes_memory_from_pysfu(tmp_path: Path) -> None:
    sfu = [_report(1, 100e6), _report(51, 150e6)]
    relay = [replace(r, target="aiortc-relay", server_rss_bytes=900e6) for r in sfu]
    reports = [sfu[0], relay[0], sfu[1], relay[1]]
    json_path, png_path = write_sweep(tmp_path, "subscribers", "python -m loadtest --sweep", reports)
    body = json.loads(json_path.read_text())
    assert [p["target"] for p in body["points"]] == ["sfu", "aiortc-relay", "sfu", "aiortc-relay"]
    assert body["rss_per_subscriber_bytes"] == pytest.approx(1e6)
    assert png_path.read_bytes().startswith(b"\x89PNG")
