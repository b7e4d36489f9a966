"""Debian's Chromium through Playwright (never `playwright install`), and helpers to drive the demo page."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

CHROMIUM = "/usr/bin/chromium"
WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RAW_PAGES = Path(__file__).resolve().parent / "pages"
"""Bare-protocol test pages; served at /shared/ beside a page so it can import protocol_peer.js."""
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
]

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)",
)


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """One headless Chromium with a fresh temporary profile; contexts made from it are isolated."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Any, origin: str, width: int = 1280, height: int = 720) -> Any:
    """A page in a context of its own (its own cookies and storage), camera and microphone granted."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    await context.grant_permissions(["camera", "microphone"], origin=origin)
    page = await context.new_page()
    page.set_default_timeout(15_000)
    return page


async def join_demo(page: Any, url: str, name: str, *, mic: bool = True, cam: bool = True) -> str:
    """Opens the demo page, joins as `name` and returns the participant's uid."""
    await page.goto(url)
    await page.wait_for_selector("body[data-ready='true']")
    await page.fill("#name-input", name)
    if not mic:
        await page.uncheck("#join-mic")
    if not cam:
        await page.uncheck("#join-cam")
    await page.click("#join-button")
    await page.wait_for_selector("#room:not([hidden])")
    uid: str = await page.get_attribute(".tile.local", "data-uid") or ""
    assert uid, "the local tile has no uid"
    return uid


async def poll(
    read: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool], timeout_s: float, what: str
) -> Any:
    """Reads until `predicate(value)`; fails naming `what` and the last value after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    value = None
    while True:
        value = await read()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s; last value {value!r}")
        await asyncio.sleep(0.2)


TILES_JS = """() => [...document.querySelectorAll('#grid .tile')].map((t) => ({
  key: t.dataset.key, uid: t.dataset.uid, kind: t.dataset.kind, mic: t.dataset.mic,
  frames: Number(t.dataset.frames), quality: t.dataset.quality, name: t.querySelector('.name').textContent,
}))"""


async def tiles(page: Any) -> list[dict[str, Any]]:
    """The tiles of the demo grid as the page shows them."""
    result: list[dict[str, Any]] = await page.evaluate(TILES_JS)
    return result


@asynccontextmanager
async def static_site(routes: dict[str, Path], directories: dict[str, Path]) -> AsyncIterator[str]:
    """A second local web server (another origin): `routes` serve single files, `directories` folders."""
    app = web.Application()
    for path, file in routes.items():

        async def serve(_: web.Request, file: Path = file) -> web.FileResponse:
            return web.FileResponse(file)

        app.router.add_get(path, serve)
    for prefix, folder in directories.items():
        app.router.add_static(prefix, folder)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def browser_context() -> AsyncIterator[Any]:
    """One isolated context of a fresh Chromium, for tests that drive several pages themselves."""
    async with chromium() as browser:
        context = await browser.new_context()
        try:
            yield context
        finally:
            await context.close()


async def evaluate_until(
    page: Any, script: str, predicate: Callable[[Any], bool], timeout_s: float, every_s: float = 0.25
) -> Any:
    """Evaluates `script` in the page until `predicate` holds for its value; fails with the last value."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(script)
        if predicate(value):
            return value
        await asyncio.sleep(every_s)
    raise AssertionError(f"{script} never satisfied the condition; last value {value!r}")
