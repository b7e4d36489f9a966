"""Media core against real Chromium: a page publishes camera + microphone with the bare PROTOCOL.md
messages (no SDK), a second page subscribes; `getStats()` must show decoded video and received audio,
and the publisher's send estimate must ramp past 1.5 Mbit/s thanks to the server's REMB feedback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import evaluate_until, needs_chromium
from tests.support import Credentials, RunningServer

PAGE = Path(__file__).parent / "pages" / "raw_peer.html"

pytestmark = [pytest.mark.browser, needs_chromium]


async def test_chromium_publishes_and_another_chromium_decodes_through_the_server(
    server: RunningServer, creds: Credentials, page_url: str, browser: Any
) -> None:
    publisher = await browser.new_page()
    subscriber = await browser.new_page()
    await publisher.goto(page_url)
    await subscriber.goto(page_url)
    feeds = await publisher.evaluate(
        "([u, t]) => window.publish(u, t)", [server.ws_url, creds.token("room", "cam")]
    )
    assert len(feeds) == 2
    await subscriber.evaluate(
        "([u, t]) => window.subscribe(u, t)", [server.ws_url, creds.token("room", "viewer")]
    )
    stats = await evaluate_until(
        subscriber, "window.inboundStats()",
        lambda s: s.get("video", {}).get("framesDecoded", 0) > 30
        and s.get("audio", {}).get("totalSamplesReceived", 0) > 48000,
        timeout_s=20,
    )
    assert stats["video"]["packetsReceived"] > 0
    bitrate = await evaluate_until(
        publisher, "window.outgoingBitrate()", lambda b: b > 1_500_000, timeout_s=20
    )
    print(f"publisher availableOutgoingBitrate {bitrate / 1e6:.2f} Mbit/s")
