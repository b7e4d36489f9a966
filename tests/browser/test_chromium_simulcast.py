"""Simulcast against real Chromium: a page publishes its camera in three encodings (rids q/h/f,
scaleResolutionDownBy 4/2/1) with the bare PROTOCOL.md messages; the server must report three layers in
the feed, a second page must decode, `set_quality` to 320x180 must drop the decoded width without a
freeze of a second or more, and asking for `f` again must switch back up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.chromium import evaluate_until, needs_chromium
from tests.support import Credentials, RunningServer

PAGE = Path(__file__).parent / "pages" / "simulcast_peer.html"

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
]


async def watch_switch(page: Any, want: Any, timeout_s: float) -> list[tuple[float, int, int]]:
    """(t, framesDecoded, frameWidth) every 100 ms until `want(width)`; fails on a freeze of >= 1 s."""
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        stats = await page.evaluate("window.videoIn()")
        samples.append((time.monotonic(), stats["framesDecoded"], stats["frameWidth"]))
        frozen_since = next((t for t, n, _ in samples if n == samples[-1][1]), samples[-1][0])
        assert samples[-1][0] - frozen_since < 1.0, f"no new frame for a second: {samples[-12:]}"
        if want(samples[-1][2]):
            return samples
        await asyncio.sleep(0.1)
    raise AssertionError(f"width never switched: {samples[-5:]}")


async def test_chromium_simulcast_layers_switch_down_and_up_without_a_freeze(
    server: RunningServer, creds: Credentials, page_url: str, browser: Any
) -> None:
    publisher = await browser.new_page()
    subscriber = await browser.new_page()
    await publisher.goto(page_url)
    await subscriber.goto(page_url)
    feeds = await publisher.evaluate(
        "([u, t]) => window.publish(u, t)", [server.ws_url, creds.token("room", "cam")]
    )
    feed_id = feeds[0]["feed_id"]
    await subscriber.evaluate(
        "([u, t]) => window.subscribe(u, t)", [server.ws_url, creds.token("room", "viewer")]
    )
    layers = await evaluate_until(
        subscriber, f"(window.feeds['{feed_id}'] || {{}}).layers || []",
        lambda ls: [x["rid"] for x in ls] == ["q", "h", "f"] and all(x["width"] for x in ls), 20,
    )
    print("feed layers:", layers)
    first = await evaluate_until(
        subscriber, "window.videoIn()",
        lambda s: bool(s) and s["framesDecoded"] > 30 and s["frameWidth"] > 320, 20,
    )
    print("subscriber starts at", first["frameWidth"], "x", first["frameHeight"])

    await subscriber.evaluate(f"window.setQuality({{feed_id: '{feed_id}', max_width: 320, max_height: 180}})")
    down = await watch_switch(subscriber, lambda w: 0 < w <= 320, 8)
    print(f"down to {down[-1][2]} wide in {down[-1][0] - down[0][0]:.2f} s")

    await subscriber.evaluate(f"window.setQuality({{feed_id: '{feed_id}', layer: 'f'}})")
    up = await watch_switch(subscriber, lambda w: w > 320, 8)
    print(f"up to {up[-1][2]} wide in {up[-1][0] - up[0][0]:.2f} s")

    events = await subscriber.evaluate("window.events")
    reasons = [(e["rid"], e["reason"]) for e in events if e["type"] == "layer_changed"]
    print("layer_changed:", reasons)
    assert ("q", "preference") in reasons, reasons
    # asked for `f`: the preference change triggers the switch up (reason `preference`), but the server
    # may stop at `h` while its estimate (starting near 1 Mbit/s) is below `f`, and go on to `f` after a
    # probe (reason `bandwidth`)
    last_rid, last_reason = reasons[-1]
    assert last_rid in ("h", "f") and last_reason in ("preference", "bandwidth"), reasons
    wanted = await publisher.evaluate("window.events")
    assert any(e["type"] == "layers_wanted" and e["rids"] == ["q"] for e in wanted), wanted
    final = await subscriber.evaluate("window.videoIn()")
    print("publisher encodings:", await publisher.evaluate("window.videoOut()"), "subscriber:", final)
