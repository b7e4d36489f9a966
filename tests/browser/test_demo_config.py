"""`GET /demo/config.json` hands the demo web-only key only to pages that may use it; `/sdk/` is CORS-open."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import pytest

from sfu.bootstrap import ensure_demo
from tests.support import RunningServer


@pytest.mark.parametrize(
    ("origin", "shown"),
    [
        (None, True),  # same-origin fetch from the page on 127.0.0.1 (Host decides)
        ("self", True),  # one of the key's origins
        ("http://localhost:9999", True),  # loopback
        ("https://evil.example.com", False),
        ("http://192.0.2.7:7880", False),
    ],
)
async def test_demo_config_shows_the_demo_key_only_to_allowed_or_loopback_pages(
    server: RunningServer, origin: str | None, shown: bool
) -> None:
    creds = await ensure_demo(server.server.store, replace(server.config, port=server.port))
    headers = {} if origin is None else {"Origin": server.url if origin == "self" else origin}
    url = f"{server.url}/demo/config.json"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
        assert r.status == 200
        body = await r.json()
    assert body == {"key": creds.web_key if shown else None}


async def test_demo_config_without_demo_credentials_has_no_key(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/demo/config.json") as r:
        assert await r.json() == {"key": None}


async def test_the_sdk_module_may_be_imported_from_any_origin(server: RunningServer) -> None:
    headers = {"Origin": "https://app.example.com"}
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/sdk/sfu.js", headers=headers) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "export class Session" in await r.text()
