"""The demo conferencing page and the browser SDK in real Chromium against the in-process server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import pytest

from sfu.bootstrap import ensure_demo
from sfu.signaling.ws import SOCKETS_KEY
from tests.browser.chromium import (
    ARTIFACTS,
    WEB_ROOT,
    chromium,
    join_demo,
    needs_chromium,
    new_page,
    poll,
    static_site,
    tiles,
)
from tests.support import RunningServer

pytestmark = [pytest.mark.browser, needs_chromium]

SESSION = "standup"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as running:
        yield running


async def demo_url(server: RunningServer) -> str:
    """The demo page as `sfu serve` offers it: the page gets the demo web-only key from /demo/config.json."""
    await ensure_demo(server.server.store, replace(server.config, port=server.port))
    return f"{server.url}/?" + urlencode({"session": SESSION})


def remote_tiles(shown: list[dict[str, Any]], kind: str = "participant") -> list[dict[str, Any]]:
    return [t for t in shown if t["kind"] == kind]


async def wait_for_decoding(page: Any, count: int, kind: str = "participant", timeout_s: float = 20) -> None:
    """`count` remote tiles of `kind` whose framesDecoded keeps increasing."""
    first = await poll(
        lambda: tiles(page), lambda ts: len([t for t in remote_tiles(ts, kind) if t["frames"] > 0]) >= count,
        timeout_s, f"{count} {kind} tiles decoding",
    )
    before = {t["key"]: t["frames"] for t in remote_tiles(first, kind)}

    def increased(shown: list[dict[str, Any]]) -> bool:
        grown = [t for t in remote_tiles(shown, kind) if t["frames"] > before.get(t["key"], 0) + 5]
        return len(grown) >= count

    await poll(lambda: tiles(page), increased, timeout_s, f"framesDecoded increasing on {count} {kind} tiles")


async def test_three_browsers_see_each_other_chat_share_screen_and_leave(
    server: RunningServer, browser: Any
) -> None:
    url = await demo_url(server)
    alice, bob, carol = [await new_page(browser, server.url) for _ in range(3)]
    uids = {}
    for page, name in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
        uids[name] = await join_demo(page, url, name)

    # each page shows the two others, with video decoding
    await asyncio.gather(*(wait_for_decoding(page, 2) for page in (alice, bob, carol)))
    for page, me in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
        shown = remote_tiles(await tiles(page))
        assert sorted(t["uid"] for t in shown) == sorted(uid for name, uid in uids.items() if name != me)

    # Alice mutes her microphone: the others' tiles of Alice show it
    await alice.click("#mic-button")
    for page in (bob, carol):
        await page.wait_for_selector(f".tile[data-uid='{uids['Alice']}'][data-mic='muted']", timeout=5000)
    assert await alice.get_attribute("#mic-button", "aria-pressed") == "true"

    # a chat line from Bob reaches Alice and Carol
    await bob.fill("#chat-input", "hello from Bob")
    await bob.press("#chat-input", "Enter")
    for page in (alice, carol):
        await page.wait_for_selector("#messages li:has-text('hello from Bob')", timeout=5000)

    # a late joiner sees the chat history (persistent `chat` pipeline)
    dave = await new_page(browser, server.url)
    uids["Dave"] = await join_demo(dave, url, "Dave", mic=False, cam=False)
    await dave.wait_for_selector("#messages li:has-text('hello from Bob')", timeout=5000)

    # Carol shares her screen: an extra tile on the others
    await carol.click("#screen-button")
    await carol.wait_for_selector(".tile[data-key='local-screen']", timeout=10000)
    await asyncio.gather(*(wait_for_decoding(page, 1, kind="screen") for page in (alice, bob)))

    ARTIFACTS.mkdir(exist_ok=True)
    await alice.screenshot(path=str(ARTIFACTS / "demo-grid-alice.png"))
    await dave.screenshot(path=str(ARTIFACTS / "demo-grid-dave.png"))

    # Carol leaves: her tiles go from the others within 2 s
    started = time.monotonic()
    await carol.click("#leave-button")
    seen_after = []
    for page in (alice, bob, dave):
        await page.wait_for_selector(f".tile[data-uid='{uids['Carol']}']", state="detached", timeout=2000)
        seen_after.append(round(time.monotonic() - started, 2))
    assert seen_after[-1] < 2.0, f"Carol's tiles went after {seen_after} s"
    await carol.wait_for_selector("#left-screen:not([hidden])")

    for page in (alice, bob, dave):
        await page.click("#leave-button")


async def test_a_page_on_a_disallowed_origin_is_told_origin_not_allowed(
    server: RunningServer, browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    creds = await server.credentials(origin=server.url)  # the key allows the SFU's origin only
    demo = WEB_ROOT / "demo"
    async with static_site({"/": demo / "index.html"}, {"/demo/": demo}) as other:
        page = await new_page(browser, other)
        query = urlencode({"server": server.url, "key": creds.web_key, "session": SESSION})
        await page.goto(f"{other}/?{query}")  # the page imports /sdk/sfu.js from the SFU
        await page.wait_for_selector("body[data-ready='true']")
        await page.fill("#name-input", "Mallory")
        await page.uncheck("#join-cam")
        await page.click("#join-button")
        alert = await page.wait_for_selector("#join-error:not([hidden])", timeout=10000)
        text = (await alert.text_content()) or ""
        assert "origin not allowed" in text
        assert await alert.get_attribute("data-code") == "forbidden"
        assert await page.is_hidden("#room")
    assert server.server.registry.sessions_by_key == {} or all(
        not s.participants_by_uid for s in server.server.registry.sessions_by_key.values()
    )
    refused = [
        r for r in caplog.records if r.name.startswith("sfu") and "forbidden" in r.getMessage().lower()
    ]
    assert refused, "the server did not log the forbidden join"


async def alice_publishes_to_bob(server: RunningServer, browser: Any) -> tuple[Any, Any, str]:
    """Two demo pages: Alice with her camera (no mic), Bob watching only, once he decodes her video."""
    url = await demo_url(server)
    alice = await new_page(browser, server.url)
    bob = await new_page(browser, server.url)
    alice_uid = await join_demo(alice, url, "Alice", mic=False)
    await join_demo(bob, url, "Bob", mic=False, cam=False)
    await wait_for_decoding(bob, 1)
    return alice, bob, alice_uid


async def test_shrinking_a_tile_switches_that_subscriber_to_the_lowest_layer(
    server: RunningServer, browser: Any
) -> None:
    _alice, bob, alice_uid = await alice_publishes_to_bob(server, browser)
    read_width = f"""async () => {{
      const tile = window.demo.state.tiles.get('{alice_uid}');
      const stats = await tile.videoFeed.receiver.getStats();
      let width = 0;
      stats.forEach((s) => {{
        if (s.type === 'inbound-rtp' && s.kind === 'video') width = s.frameWidth || 0;
      }});
      return width;
    }}"""
    resize = """([uid, w, h]) => {
      const el = document.querySelector(`.tile[data-uid='${uid}']`);
      el.style.cssText = `position:fixed;left:0;top:0;width:${w}px;height:${h}px;max-height:none;z-index:9`;
    }"""
    # a large tile receives more than the lowest layer (h or f of q/h/f): the allocator's cap follows the
    # transport-cc estimate, which makes a layer dynacast had stopped wanted again, and Chrome resumes it...
    await bob.evaluate(resize, [alice_uid, 1280, 720])
    await poll(lambda: bob.evaluate(read_width), lambda w: w > 320, 15, "above the lowest layer")
    # ...and a 160x90 one only the lowest (320x180)
    await bob.evaluate(
        "window.layers = []; window.demo.session.on('layerchanged', (e) => window.layers.push(e.rid))"
    )
    await bob.evaluate(resize, [alice_uid, 160, 90])
    await poll(lambda: bob.evaluate(read_width), lambda w: 0 < w <= 320, 10, "lowest layer on a 160x90 tile")
    assert "q" in await bob.evaluate("window.layers")


async def test_a_dropped_socket_resumes_without_the_others_seeing_a_leave(
    server: RunningServer, browser: Any
) -> None:
    alice, bob, alice_uid = await alice_publishes_to_bob(server, browser)
    await bob.evaluate(
        "window.left = []; window.demo.session.on('participantleft', (p) => window.left.push(p.uid))"
    )
    await alice.evaluate("""() => {
      window.events = [];
      const session = window.demo.session;
      session.on('reconnecting', (e) => window.events.push('reconnecting'));
      session.on('reconnected', (e) => window.events.push(e.resumed ? 'resumed' : 'rejoined'));
    }""")
    # the network drops the socket (no close frame); the peer connections stay up
    [socket] = [s for s in server.app[SOCKETS_KEY] if s.participant and s.participant.uid == alice_uid]
    transport = socket.request.transport
    assert transport is not None
    transport.abort()
    await poll(lambda: alice.evaluate("window.events"), lambda e: len(e) > 0, 5, "reconnecting")
    await bob.fill("#chat-input", "did you miss this?")
    await bob.press("#chat-input", "Enter")
    await poll(lambda: alice.evaluate("window.events"), lambda e: "resumed" in e, 10, "a resume")
    assert (await alice.evaluate("window.events"))[0] == "reconnecting"
    await alice.wait_for_selector("#banner", state="hidden", timeout=2000)
    await alice.wait_for_selector("#messages li:has-text('did you miss this?')", timeout=5000)
    await wait_for_decoding(bob, 1)
    assert await bob.evaluate("window.left") == []
    assert [t["uid"] for t in remote_tiles(await tiles(bob))] == [alice_uid]


async def test_a_hidden_tile_pauses_its_video_and_showing_it_resumes(
    server: RunningServer, browser: Any
) -> None:
    _alice, bob, alice_uid = await alice_publishes_to_bob(server, browser)
    packets = f"""async () => {{
      const stats = await window.demo.state.tiles.get('{alice_uid}').videoFeed.receiver.getStats();
      let packets = 0;
      stats.forEach((s) => {{ if (s.type === 'inbound-rtp') packets += s.packetsReceived; }});
      return packets;
    }}"""
    # adaptive stream: a hidden element sends `set_quality {paused: true}`, the server stops forwarding
    display = """([uid, value]) => {
      document.querySelector(`.tile[data-uid='${uid}'] video`).style.display = value;
    }"""
    await bob.evaluate(display, [alice_uid, "none"])
    await asyncio.sleep(1.0)
    paused_at = await bob.evaluate(packets)
    await asyncio.sleep(1.0)
    assert await bob.evaluate(packets) - paused_at < 5, "packets still arrive for a hidden tile"
    await bob.evaluate(display, [alice_uid, ""])
    await wait_for_decoding(bob, 1)


async def test_dynacast_stops_encoding_the_layers_nobody_receives(
    server: RunningServer, browser: Any
) -> None:
    alice, bob, alice_uid = await alice_publishes_to_bob(server, browser)
    await bob.evaluate("""(uid) => {
      const el = document.querySelector(`.tile[data-uid='${uid}']`);
      el.style.cssText = 'position:fixed;left:0;top:0;width:160px;height:90px;z-index:9';
    }""", alice_uid)
    encodings = """() => window.demo.state.cam.transceiver.sender.getParameters().encodings
      .map((e) => [e.rid, e.active])"""
    # Bob's only subscription wants the lowest layer: the server asks Alice for q alone
    await poll(
        lambda: alice.evaluate(encodings),
        lambda e: e == [["q", True], ["h", False], ["f", False]],
        8, "h and f paused at the publisher",
    )


async def test_a_full_session_and_a_denied_camera_get_clear_messages(
    server: RunningServer, browser: Any
) -> None:
    creds = await server.credentials(origin=server.url, max_participants=1)
    url = f"{server.url}/?" + urlencode({"session": SESSION, "key": creds.web_key})
    first = await new_page(browser, server.url)
    await join_demo(first, url, "First", mic=False, cam=False)

    second = await new_page(browser, server.url)
    await second.goto(url)
    await second.wait_for_selector("body[data-ready='true']")
    await second.fill("#name-input", "Second")
    await second.click("#join-button")
    alert = await second.wait_for_selector("#join-error:not([hidden])", timeout=5000)
    assert "session is full" in ((await alert.text_content()) or "")

    # the browser refuses the camera and microphone: the page joins anyway and says why nothing is sent
    denied = await new_page(browser, server.url)
    await denied.add_init_script("""
      navigator.mediaDevices.getUserMedia = async () => {
        throw new DOMException('Permission denied', 'NotAllowedError');
      };
    """)
    await first.click("#leave-button")
    await join_demo(denied, url, "Denied")
    toast = await denied.wait_for_selector(".toast[data-code='permission_denied']", timeout=5000)
    assert "Permission denied" in ((await toast.text_content()) or "")
    assert await denied.get_attribute("#mic-button", "aria-pressed") == "true"
