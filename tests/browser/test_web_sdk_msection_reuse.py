"""The web SDK after the server recycles a subscriber m-section: the feed that takes over a mid plays in
its own element, the feed that left it shows nothing until it is attached again (on another mid).

A Python client_sdk participant publishes pre-encoded VP8 clips of different sizes, so each element's
`videoWidth` tells which feed it really shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import client_sdk
from client_sdk.encoded import EncodedVideoTrack
from loadtest.media import encode_vp8
from sfu.media.subscriber import SubscriberTransport
from tests.browser.chromium import evaluate_until, needs_chromium
from tests.support import Credentials, RunningServer, wait_until

PAGE = Path(__file__).parent / "pages" / "sdk_reuse.html"

pytestmark = [pytest.mark.browser, needs_chromium]


def shows(view: dict[str, Any], feed_id: str, width: int) -> bool:
    v = view.get(feed_id)
    return v is not None and v["width"] == width and v["playing"] and v["hasTrack"]


async def test_web_sdk_attaches_the_right_feed_after_an_m_section_is_reused(
    server: RunningServer, creds: Credentials, page_url: str, browser: Any, tmp_path: Path
) -> None:
    wide = encode_vp8(320, 180, 15, 2.0, 300_000, 0.5, cache_dir=tmp_path)
    small = encode_vp8(160, 96, 15, 2.0, 200_000, 0.5, cache_dir=tmp_path)
    medium = encode_vp8(240, 136, 15, 2.0, 200_000, 0.5, cache_dir=tmp_path)
    alice = client_sdk.Session(server.url, token=creds.token("room", "alice"), auto_subscribe=False)
    await alice.join()
    try:
        x = await alice.publish(EncodedVideoTrack(wide))
        y = await alice.publish(EncodedVideoTrack(small))
        page = await browser.new_page()
        await page.goto(page_url)
        await page.evaluate("([u, t]) => window.join(u, t)", [server.url, creds.token("room", "viewer")])
        await evaluate_until(page, "window.feedIds()", lambda ids: {x.feed_id, y.feed_id} <= set(ids), 10)

        await page.evaluate("(f) => window.attach(f)", x.feed_id)
        await evaluate_until(page, "window.view()", lambda v: shows(v, x.feed_id, 320), 15)
        [transport] = [t for t in server.server.media.transports if isinstance(t, SubscriberTransport)]
        await page.evaluate("(f) => window.unsubscribe(f)", x.feed_id)
        await wait_until(lambda: transport.reusable_sections == 1, timeout_s=10)

        # y takes over x's mid: y's element shows y, x keeps no track
        await page.evaluate("(f) => window.attach(f)", y.feed_id)
        view = await evaluate_until(page, "window.view()", lambda v: shows(v, y.feed_id, 160), 15)
        assert transport.media_sections == 1 and await page.evaluate("window.videoSections()") == 1
        assert not view[x.feed_id]["hasTrack"] and not view[x.feed_id]["playing"]

        # x again: a new m-section; both elements show their own feed
        await page.evaluate("(f) => window.attach(f)", x.feed_id)
        view = await evaluate_until(
            page, "window.view()", lambda v: shows(v, x.feed_id, 320) and shows(v, y.feed_id, 160), 15
        )
        assert view[x.feed_id]["mid"] != view[y.feed_id]["mid"] and transport.media_sections == 2

        # y is unpublished, z is published and attached: z gets y's mid
        y_mid = view[y.feed_id]["mid"]
        await alice.unpublish(y.feed_id)
        await wait_until(lambda: transport.reusable_sections == 1, timeout_s=10)
        z = await alice.publish(EncodedVideoTrack(medium))
        await evaluate_until(page, "window.feedIds()", lambda ids: z.feed_id in ids, 10)
        await page.evaluate("(f) => window.attach(f)", z.feed_id)
        view = await evaluate_until(
            page, "window.view()", lambda v: shows(v, z.feed_id, 240) and shows(v, x.feed_id, 320), 15
        )
        assert view[z.feed_id]["mid"] == y_mid and transport.media_sections == 2
        frames = view[z.feed_id]["frames"]
        await evaluate_until(page, "window.view()", lambda v: v[z.feed_id]["frames"] > frames + 10, 10)
    finally:
        await alice.close()
