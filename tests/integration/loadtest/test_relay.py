"""The aiortc relay baseline through the real load tool: same publishers and counting subscribers."""

from __future__ import annotations

import pytest

from loadtest.report import table
from loadtest.runner import LoadConfig, run_load
from loadtest.spawn import SpawnedRelay
from loadtest.worker import MediaSpec

AUDIO_ONLY = MediaSpec(video=False, clip_s=4.0)


@pytest.mark.slow
async def test_audio_only_load_against_the_aiortc_relay_is_relayed_and_costed() -> None:
    with SpawnedRelay() as relay:
        config = LoadConfig(relay.url, relay.key_id, relay.secret, publishers=2, subscribers=2,
                            duration_s=3.0, warmup_s=1.0, workers=1, media=AUDIO_ONLY,
                            target="aiortc-relay")  # fmt: skip
        report = await run_load(config, progress=None)
    assert report.errors == []
    assert (report.feeds, report.streams) == (2, 4)  # one Opus feed per publisher, each to both
    assert report.sent_pps > 0 and report.received_pps > 0 and report.delivered_pct > 50
    assert report.lost == 0
    # the relay's own process metrics (prometheus_client's process collector) give its CPU and memory
    assert report.server_cpu_pct > 0 and report.server_cpu_us_per_packet > 0
    assert report.server_rss_bytes > 0
    assert report.latency_samples == 0  # re-encoded payloads cannot be matched to their send stamps
    assert "| aiortc-relay | 2 | 2 |" in table([report])
