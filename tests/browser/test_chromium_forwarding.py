"""Media core against real Chromium: a page publishes camera + microphone with the bare PROTOCOL.md
messages (no SDK), a second page subscribes; `getStats()` must show decoded video and received audio,
and the publisher's send estimate must ramp past 1.5 Mbit/s thanks to the server's REMB feedback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.browser.chromium import chromium, needs_chromium
from tests.support import Credentials, RunningServer

PAGE = Path(__file__).parent / "pages" / "raw_peer.html"

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    """The test page from a second local server (JWTs need no origin match)."""

    async def page(_: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as running:
        context = await running.new_context()
        try:
            yield context
        finally:
            await context.close()


async def poll(page: Any, script: str, predicate: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(script)
        if predicate(value):
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"{script} never satisfied the condition; last value {value!r}")


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
    stats = await poll(
        subscriber, "window.inboundStats()",
        lambda s: s.get("video", {}).get("framesDecoded", 0) > 30
        and s.get("audio", {}).get("totalSamplesReceived", 0) > 48000,
        timeout_s=20,
    )
    assert stats["video"]["packetsReceived"] > 0
    bitrate = await poll(publisher, "window.outgoingBitrate()", lambda b: b > 1_500_000, timeout_s=20)
    print(f"publisher availableOutgoingBitrate {bitrate / 1e6:.2f} Mbit/s")
