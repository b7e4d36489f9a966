"""TURN through Debian's coturn on loopback: two Chromium pages whose tokens carry `grants.force_relay`
get `ice_transport_policy: "relay"` in `joined`, publish and subscribe, and their selected candidate
pairs are relayed. `sfu serve --turn-url --turn-secret` hands out coturn REST credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.browser.chromium import RAW_PAGES, chromium, needs_chromium, static_site
from tests.integration.deploy.coturn import Coturn, coturn, ensure_coturn
from tests.integration.deploy.serve import serve
from tests.support import start_server

PAGE = Path(__file__).parent / "pages" / "relay_peer.html"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300), needs_chromium]


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[Coturn]:
    why = await asyncio.to_thread(ensure_coturn)
    if why is not None:
        pytest.skip(why)
    async with coturn(tmp_path) as running:
        yield running


@pytest.fixture
async def page_url() -> AsyncIterator[str]:
    async with static_site({"/": PAGE}, {"/shared/": RAW_PAGES}) as origin:
        yield origin + "/"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as running:
        yield running


async def poll(page: Any, predicate: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    value: dict[str, Any] = {}
    while time.monotonic() < deadline:
        value = await page.evaluate("window.selectedPair()")
        if predicate(value):
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"selected pair never satisfied the condition; last {value!r}")


async def test_force_relay_tokens_publish_and_subscribe_through_coturn(
    tmp_path: Path, turn: Coturn, page_url: str, browser: Any
) -> None:
    args = ("--ice-host", "127.0.0.1", "--turn-url", turn.url, "--turn-secret", turn.secret)
    async with serve(tmp_path / "data", *args) as running:
        relay = {"force_relay": True}
        publisher, subscriber = await browser.new_page(), await browser.new_page()
        await publisher.goto(page_url)
        await subscriber.goto(page_url)
        publish, subscribe = "([u, t]) => window.publish(u, t)", "([u, t]) => window.subscribe(u, t)"
        camera = running.token("room", "cam", grants=relay)
        published = await publisher.evaluate(publish, [running.ws_url, camera])
        assert published["policy"] == "relay"
        assert " typ relay " in published["sdp"] and " typ host " not in published["sdp"]
        viewer = running.token("room", "viewer", grants=relay)
        subscribed = await subscriber.evaluate(subscribe, [running.ws_url, viewer])
        assert subscribed["policy"] == "relay"
        sent = await poll(publisher, lambda s: s["local"] is not None and s["bytesSent"] > 10_000, 30)
        seen = await poll(subscriber, lambda s: s["local"] is not None and s["framesDecoded"] > 10, 30)
        assert sent["local"] == "relay" and seen["local"] == "relay", (sent, seen)
        assert sent["remote"] == seen["remote"] == "host"  # the server's own candidate, reached from coturn
        await publisher.close()
        await subscriber.close()


async def test_joined_says_relay_only_for_tokens_with_force_relay(tmp_path: Path) -> None:
    async with start_server(tmp_path / "data") as running, aiohttp.ClientSession() as http:
        creds = await running.credentials()
        for grants, expected in (({"force_relay": True}, "relay"), ({}, None)):
            async with http.ws_connect(running.ws_url) as ws:
                join = {"type": "join", "id": 1, "token": creds.token("room", "u", grants=grants)}
                await ws.send_str(orjson.dumps(join).decode())
                joined = orjson.loads(await ws.receive_str(timeout=5))
                assert joined.get("ice_transport_policy") == expected, joined
                await ws.send_str('{"type":"leave"}')
