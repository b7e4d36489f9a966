"""The load tool end to end against the in-process server, and `/metrics` after real forwarding."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import client_sdk
from client_sdk.encoded import EncodedVideoTrack
from loadtest.kernel_sink import TABLE_PREFIX
from loadtest.media import encode_vp8
from loadtest.report import table
from loadtest.runner import LoadConfig, run_load
from loadtest.worker import MediaSpec
from tests.support import Credentials, RunningServer

SMALL = MediaSpec(width=320, height=180, bitrate_bps=300_000, keyframe_s=1.0, clip_s=4.0)


async def test_a_five_second_load_of_one_publisher_and_five_subscribers_loses_nothing(
    server: RunningServer, creds: Credentials
) -> None:
    config = LoadConfig(server.url, creds.key_id, creds.secret, publishers=1, subscribers=5,
                        duration_s=5.0, warmup_s=1.0, workers=1, media=SMALL)  # fmt: skip
    report = await run_load(config, progress=None)
    assert report.errors == []
    assert (report.publishers, report.subscribers, report.feeds, report.streams) == (1, 5, 2, 10)
    assert report.expected > 0 and report.lost == 0 and report.loss_pct == 0.0
    assert report.received_pps > 0 and report.sent_pps > 0
    assert report.latency_samples > 0
    # the default counting path: at the subscribers' sockets, every datagram from an announced SSRC
    assert report.subscriber_path == "socket" and report.unmatched == 0
    assert report.client_cpu_us_per_packet > 0
    assert 0 < report.latency_ms_p50 <= report.latency_ms_p95 <= report.latency_ms_p99 < 1000
    # the server's view, from /metrics deltas
    assert report.server_pps_out > 4 * report.server_pps_in > 0
    assert report.server_cpu_pct > 0 and report.server_cpu_us_per_packet > 0
    assert report.server_rss_bytes > 0 and not math.isnan(report.server_mbps_out)
    # arrival -> send, sampled 1 in 64 packets per receiver: ~144 pkt/s over 5 s gives about 11 samples
    assert report.server_fwd_samples > 0
    assert 0 < report.server_fwd_us_p50 <= report.server_fwd_us_p99
    assert report.delivered_pct > 90
    assert "| pysfu | 1 | 5 |" in table([report])


async def test_the_kernel_path_counts_every_forwarded_packet_without_any_reaching_a_subscriber_socket(
    server: RunningServer, creds: Credentials
) -> None:
    """nftables counts and drops the subscribers' media (loadtest/kernel_sink.py): the server forwards
    as to any subscriber, the counts match what the publishers sent x subscribers, and the table is gone
    after the run. Two sessions from the same load workers: each subscriber gets its own session's feeds
    only (16 streams, not 32)."""
    config = LoadConfig(server.url, creds.key_id, creds.secret, publishers=1, subscribers=4,
                        duration_s=4.0, warmup_s=1.0, workers=2, media=SMALL,
                        subscriber_path="kernel", sessions=2)  # fmt: skip
    report = await run_load(config, progress=None)
    assert report.errors == []
    assert report.subscriber_path == "kernel" and report.sessions == 2 and report.streams == 16
    assert report.expected > 0 and report.received_pps > 0
    # window edges of separate processes: a few packets either way, never a real loss on loopback
    assert report.loss_pct < 1.0 and 99.0 < report.delivered_pct < 101.0
    assert report.unmatched == 0 and report.latency_samples == 0
    assert report.server_pps_out == pytest.approx(report.received_pps, rel=0.03)
    listing = await asyncio.create_subprocess_exec("nft", "list", "tables", stdout=asyncio.subprocess.PIPE)
    tables = (await listing.communicate())[0].decode()
    assert TABLE_PREFIX not in tables


async def _scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as reply:
        assert reply.status == 200 and reply.content_type == "text/plain"
        text = await reply.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_metrics_parse_and_count_forwarded_packets_after_a_short_publish_and_subscribe(
    server: RunningServer, creds: Credentials
) -> None:
    before = await _scrape(server.url)
    assert before["sfu_packets_out_total{kind=video}"] == 0
    assert before["process_cpu_seconds_total{}"] > 0 and before["process_resident_memory_bytes{}"] > 0
    clip = encode_vp8(320, 180, 30, 4.0, 300_000, 1.0)
    async with (
        await client_sdk.connect(
            server.url, token=creds.token("room", "alice"), auto_subscribe=False
        ) as alice,
        await client_sdk.connect(server.url, token=creds.token("room", "bob"), auto_subscribe=False) as bob,
    ):
        feed = await alice.publish(EncodedVideoTrack(clip))
        raw = await bob.subscribe(feed.feed_id, decode=False)
        received = 0
        async for _ in raw.packets():
            received += 1
            if received == 30:
                break
        after = await _scrape(server.url)
        assert after["sfu_sessions{}"] == 1 and after["sfu_participants{}"] == 2
        assert after["sfu_feeds{kind=video}"] == 1 and after["sfu_forwarders{kind=video}"] == 1
        assert after["sfu_packets_out_total{kind=video}"] >= 30
        assert after["sfu_bytes_out_total{kind=video}"] > after["sfu_packets_out_total{kind=video}"] * 12
        assert after["sfu_packets_in_total{kind=video}"] >= after["sfu_packets_out_total{kind=video}"]
        assert after["sfu_event_loop_lag_max_seconds{}"] >= 0
        # this test process keeps CPython's thresholds: two peers connecting run young collections
        assert after["sfu_gc_collections_total{generation=0}"] > 0
        assert after["sfu_gc_pause_seconds_total{generation=0}"] > 0
        assert after["sfu_gc_pause_max_seconds{}"] >= 0 and "sfu_gc_collections_total{generation=2}" in after
        assert after["sfu_udp_socket_buffer_bytes{direction=receive}"] > 256 * 1024  # above aioice's own
        assert after["sfu_udp_socket_buffer_bytes{direction=send}"] > 0
        histogram = "sfu_arrival_to_send_seconds"
        assert after[f"{histogram}_bucket{{le=+Inf}}"] == after[f"{histogram}_count{{}}"] >= 1
        assert after[f"{histogram}_sum{{}}"] > 0


async def test_stats_needs_an_admin_token_and_mirrors_the_metrics(
    server: RunningServer, creds: Credentials
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/v1/stats") as reply:
            assert reply.status == 401
        headers = {"Authorization": f"Bearer {creds.admin_token()}"}
        async with http.get(f"{server.url}/v1/stats", headers=headers) as reply:
            assert reply.status == 200
            stats = await reply.json()
    assert stats["sessions"] == 0
    assert set(stats["packets_out"]) == {"audio", "video"}
    assert stats["process"]["rss_bytes"] > 0 and "max_10s" in stats["event_loop_lag_seconds"]
    assert set(stats["gc"]) == {"collections", "pause_seconds", "max_pause_10s"}
