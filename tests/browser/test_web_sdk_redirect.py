"""The web SDK against two `sfu serve --redis --redirect` nodes: a page served by node B joins with B's
web-only key through B, is redirected to the owner A (which accepts B's key for B's origin: the keys live
in Redis), publishes its camera to a Python subscriber on A; when A dies, the page falls back to B,
which takes the session over, and publishes again to a Python subscriber that came back there too."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import client_sdk
from client_sdk import Reconnected
from tests.browser.chromium import evaluate_until, needs_chromium
from tests.integration.cluster.test_nodes import join_raw, two_nodes
from tests.integration.cluster.test_redirect_sdk import redirect_loop
from tests.integration.cluster.test_workers import frames_within, placed, worker_of
from tests.redis_server import redis_missing
from tests.support import wait_until

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
    pytest.mark.skipif(redis_missing() is not None, reason=redis_missing() or ""),
]

JOIN_JS = """async ([url, key]) => {
  const { Session } = await import("/sdk/sfu.js");
  window.events = [];
  const session = await Session.connect({ url, key, session: "standup", uid: "browser",
                                          autoSubscribe: false });
  session.on("reconnecting", () => window.events.push("reconnecting"));
  session.on("reconnected", (e) => window.events.push(e.resumed ? "resumed" : "rejoined"));
  session.on("disconnected", (e) => window.events.push("disconnected " + e.reason));
  window.session = session;
  await session.publishCamera({ simulcast: false });
  return session.nodeUrl;
}"""


def browser_video(session: client_sdk.Session) -> str | None:
    return next((f.feed_id for f in session.feeds_by_id.values() if f.uid == "browser" and f.kind == "video"),
                None)


async def test_web_sdk_follows_the_redirect_and_falls_back_when_the_owner_dies(
    tmp_path: Path, browser: Any
) -> None:
    async with two_nodes(tmp_path, "--redirect") as (a, b), aiohttp.ClientSession() as http:
        web_key = re.search(r"key=(wk_\S+)", b.output[0])
        assert web_key is not None
        # the first join, through A, places the session on A; a second viewer comes through B
        viewer_a = await client_sdk.connect(a.url, token=a.token("standup", "viewer-a"), auto_subscribe=False)
        viewer_b = await client_sdk.connect(b.url, token=a.token("standup", "viewer-b"), auto_subscribe=False)
        try:
            assert viewer_b.node_url == a.ws_url
            await browser.grant_permissions(["camera", "microphone"], origin=b.url)
            page = await browser.new_page()
            await page.goto(b.url + "/")
            node_url = await page.evaluate(JOIN_JS, [b.url, web_key.group(1)])
            assert node_url == a.ws_url
            await wait_until(lambda: browser_video(viewer_a) is not None, 10)
            feed_id = browser_video(viewer_a)
            assert feed_id is not None
            assert await frames_within(await viewer_a.subscribe(feed_id), 1.0) > 0
            await wait_until(lambda: placed(http, a, "standup"), 10)
            home = await worker_of(http, a, "standup")
            assert home is not None

            # node A dies whole: the page and viewer_b fall back to B, which takes the session over
            await viewer_a.close()
            events = viewer_b.events()
            os.kill(home["pid"], signal.SIGKILL)
            a.proc.kill()
            await a.proc.wait()
            assert (await events.next(Reconnected, timeout_s=25)).resumed is False
            await evaluate_until(page, "window.events", lambda e: "rejoined" in e, 25)
            page_events = await page.evaluate("window.events")
            assert page_events[0] == "reconnecting"
            assert not any(e.startswith("disconnected") for e in page_events), page_events
            assert await page.evaluate("window.session.nodeUrl") == b.ws_url
            # the camera is published again (fresh transports) and reaches viewer_b through B
            await wait_until(lambda: browser_video(viewer_b) not in (None, feed_id), 15)
            new_feed_id = browser_video(viewer_b)
            assert new_feed_id is not None
            assert await frames_within(await viewer_b.subscribe(new_feed_id), 1.0) > 0
            await wait_until(lambda: placed(http, b, "standup"), 10)
            await page.evaluate("window.session.leave()")
        finally:
            await viewer_b.close()
            await viewer_a.close()


LOOP_JS = """async ([url, token]) => {
  const { Session } = await import("/sdk/sfu.js");
  try {
    await Session.connect({ url, token });
    return "joined";
  } catch (error) {
    return `${error.name} ${error.code} ${error.message}`;
  }
}"""


async def test_web_sdk_ends_a_redirect_loop_with_a_typed_error(tmp_path: Path, browser: Any) -> None:
    async with redirect_loop(tmp_path) as (a, b), aiohttp.ClientSession() as http:
        first, joined = await join_raw(http, a.ws_url, a.token("standup", "alice"))  # placed on A
        assert joined["type"] == "joined", joined
        page = await browser.new_page()
        await page.goto(b.url + "/")
        result = await page.evaluate(LOOP_JS, [b.url, a.token("standup", "bob")])
        assert result.startswith("TooManyRedirectsError redirect_loop more than 3 redirects"), result
        assert b.ws_url in result
        await first.close()
