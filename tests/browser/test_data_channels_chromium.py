"""Binary data channels between Chromium (the browser SDK, `publishData` / `data` events) and Python
`client_sdk` peers through the server: random checksummed payloads go from the page to a Python peer,
which verifies and echoes them; the page finds them intact, reliable ones in order; `to` is respected
(a third peer receives nothing it was not sent); a server reset reaches the page as `datareset`.
The demo page's reactions travel the same way, from one browser context to another's page."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import client_sdk
from client_sdk import DataReceived
from tests.browser.chromium import chromium, evaluate_until, join_demo, needs_chromium, new_page
from tests.browser.test_demo import demo_url
from tests.integration.datachannels.support import Inbox, relay_of, verify, wait_channels_open
from tests.support import Credentials, RunningServer, wait_until

PAGE = Path(__file__).parent / "pages" / "data_peer.html"

pytestmark = [pytest.mark.browser, needs_chromium]

MAX_PAYLOAD = 15 * 1024


@dataclass
class Echo:
    """A client_sdk peer that verifies each checksummed payload from the page and sends it back to it."""

    session: client_sdk.Session
    seqs: dict[str, list[int]] = field(default_factory=dict)
    texts: list[bytes] = field(default_factory=list)
    corrupted: int = 0
    other: list[DataReceived] = field(default_factory=list)

    async def run(self) -> None:
        async for event in self.session.events():
            if not isinstance(event, DataReceived):
                continue
            if event.from_uid != "web" or event.topic in (None, "fin"):
                self.other.append(event)
                continue
            if event.topic == "text":
                self.texts.append(event.payload)
            else:
                try:
                    self.seqs.setdefault(event.topic, []).append(verify(event.payload))
                except AssertionError:
                    self.corrupted += 1
                    continue
            await self.session.publish_data(
                event.payload, reliable=event.reliable, to=[event.from_uid], topic=event.topic
            )


@pytest.fixture
async def page(page_url: str, browser: Any) -> Any:
    opened = await browser.new_page()
    opened.set_default_timeout(20_000)
    await opened.goto(page_url)
    return opened


@pytest.fixture
async def peers(server: RunningServer, creds: Credentials) -> AsyncIterator[tuple[Echo, Inbox]]:
    opened: list[client_sdk.Session] = []
    task: asyncio.Task[None] | None = None
    carol: Inbox | None = None
    try:
        for uid in ("echo", "carol"):
            token = creds.token("room", uid)
            opened.append(await client_sdk.connect(server.url, token=token, auto_subscribe=False))
        echo = Echo(opened[0])
        task = asyncio.create_task(echo.run(), name="echo")
        carol = Inbox(opened[1])
        yield echo, carol
    finally:
        if carol is not None:
            await carol.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in opened:
            await session.close()


async def test_chromium_and_a_python_peer_exchange_binary_data_intact_and_in_order(
    server: RunningServer, creds: Credentials, page: Any, peers: tuple[Echo, Inbox]
) -> None:
    echo, carol = peers
    uid = await page.evaluate("([u, t]) => window.start(u, t)", [server.url, creds.token("room", "web")])
    assert uid == "web"

    # reliable: every payload back, intact, identical and in order (the first send opens the channels)
    count = 60
    await page.evaluate(
        "(o) => window.sendBatch(o)",
        {"count": count, "reliable": True, "to": ["echo"], "topic": "blob", "minSize": 36,
         "maxSize": MAX_PAYLOAD},
    )
    report = await evaluate_until(
        page, "window.report('blob')", lambda r: len(r["seqs"]) >= count, timeout_s=30
    )
    assert report["seqs"] == list(range(count))
    assert report["intact"] and report["identical"]
    assert report["from"] == ["echo"] and report["reliable"] == [True]
    assert echo.seqs["blob"] == list(range(count)) and echo.corrupted == 0

    # lossy: unordered and droppable, but what arrives is intact (loopback: nearly everything arrives)
    relay = relay_of(server, creds)
    await wait_channels_open(relay, ["web", "echo", "carol"])
    lossy = 40
    await page.evaluate(
        "(o) => window.sendBatch(o)",
        {"count": lossy, "reliable": False, "to": ["echo"], "topic": "lossy", "minSize": 36, "maxSize": 1200},
    )
    report = await evaluate_until(
        page, "window.report('lossy')", lambda r: len(r["seqs"]) >= lossy // 2, timeout_s=20
    )
    assert report["intact"] and report["identical"] and report["reliable"] == [False]
    assert set(report["seqs"]) <= set(range(lossy)) and len(set(report["seqs"])) == len(report["seqs"])
    assert echo.corrupted == 0

    # a string goes as UTF-8; over 15 KiB is refused in the page with TooLargeError
    await page.evaluate("window.session.publishData('héllo ✋', { to: ['echo'], topic: 'text' })")
    texts = await evaluate_until(page, "window.texts('text')", lambda t: len(t) == 1, timeout_s=10)
    assert texts == ["héllo ✋"] and echo.texts == ["héllo ✋".encode()]
    error = await page.evaluate(
        f"window.errorOf(window.session.publishData(new Uint8Array({MAX_PAYLOAD + 1})))"
    )
    assert error is not None and error["name"] == "TooLargeError" and error["code"] == "too_large"

    # no `to`: everyone; carol got nothing before, only this one
    await page.evaluate("window.session.publishData(new Uint8Array([1, 2, 3]), { topic: 'fin' })")
    await wait_until(lambda: len(carol.data) >= 1)
    await wait_until(lambda: len(echo.other) >= 1)
    assert [(e.from_uid, e.topic, e.payload, e.reliable) for e in carol.data] == [
        ("web", "fin", b"\x01\x02\x03", True)
    ]
    assert [(e.from_uid, e.topic) for e in echo.other] == [("web", "fin")]

    # the server resets the page's reliable channel: a `datareset` event, then data flows on the new one
    relay.outboxes_by_uid["web"].reset()
    resets = await evaluate_until(page, "window.resets", lambda r: len(r) == 1, timeout_s=10)
    assert resets == [{"channel": "reliable", "reliable": True, "dropped": 1}]
    await wait_channels_open(relay, ["web"])
    for i in range(5):
        await echo.session.publish_data(bytes([i]) * 100, to=["web"], topic="after")
    after = await evaluate_until(
        page, "window.received.filter((e) => e.topic === 'after').map((e) => new Uint8Array(e.payload)[0])",
        lambda a: len(a) == 5, timeout_s=10,
    )
    assert after == [0, 1, 2, 3, 4]
    assert carol.data[1:] == [] and carol.resets == []


async def test_a_reaction_on_the_demo_page_floats_on_the_senders_tile_for_everyone(
    server: RunningServer,
) -> None:
    url = await demo_url(server)
    async with chromium() as browser:
        alice = await new_page(browser, server.url)
        bob = await new_page(browser, server.url)
        alice_uid = await join_demo(alice, url, "Alice", mic=False, cam=False)
        await join_demo(bob, url, "Bob", mic=False, cam=False)
        await bob.wait_for_selector(f'#grid .tile[data-uid="{alice_uid}"][data-kind="participant"]')
        await alice.click("#react-button")
        assert await alice.get_attribute("#react-button", "aria-expanded") == "true"
        on_bob = f'#grid .tile[data-kind="participant"][data-uid="{alice_uid}"]'

        async def reactions_on_bob() -> int:
            value = await bob.get_attribute(on_bob, "data-reactions")
            return int(value or 0)

        # lossy by design: the first ones may go while the server's channel towards Bob is still opening
        for _ in range(40):
            await alice.click('#reaction-tray button[data-emoji="🎉"]')
            if await reactions_on_bob():
                break
            await asyncio.sleep(0.25)
        float_el = await bob.wait_for_selector(f"{on_bob} .reaction-float", state="attached")
        assert await float_el.text_content() == "🎉"
        assert await bob.get_attribute(on_bob, "data-reaction") == "🎉"
        # the sender sees it on its own tile; Bob's own tile shows nothing
        assert await alice.get_attribute(".tile.local", "data-reaction") == "🎉"
        assert await bob.get_attribute(".tile.local", "data-reactions") is None
        await alice.keyboard.press("Escape")
        assert await alice.is_hidden("#reaction-tray")
