"""Webhook deliveries to a local receiver: signed, idempotent, retried after a 500."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from tests.integration.signaling.peers import Peers
from tests.support import Credentials, RunningServer, wait_until


@dataclass
class Receiver:
    url: str
    failures_left: int = 0
    received: list[tuple[bytes, str]] = field(default_factory=list)  # (body, signature) of 2xx answers
    attempts: int = 0

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for body, _ in self.received]


@asynccontextmanager
async def receiver(failures: int = 0) -> AsyncIterator[Receiver]:
    state = Receiver(url="", failures_left=failures)

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        state.attempts += 1
        if state.failures_left > 0:
            state.failures_left -= 1
            return web.Response(status=500)
        state.received.append((body, request.headers.get("X-Sfu-Signature", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield state
    finally:
        await runner.cleanup()


async def register(server: RunningServer, creds: Credentials, url: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {creds.admin_token()}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(server.url + "/v1/webhooks", json={"url": url}) as response:
            assert response.status == 201
            created: dict[str, Any] = await response.json()
        async with http.get(server.url + "/v1/webhooks") as response:
            assert [w["webhook_id"] for w in (await response.json())["webhooks"]] == [created["webhook_id"]]
    return created


async def test_events_are_delivered_with_a_valid_signature(server: RunningServer, peers: Peers,
                                                           creds: Credentials) -> None:
    async with receiver() as hooks:
        await register(server, creds, hooks.url)
        alice = await peers.join(creds.token("s", "alice"))
        session = server.server.registry.get(creds.cid, "s")
        assert session is not None
        feed = session.add_feed("alice", kind="audio", source="microphone")
        session.remove_feed(feed.feed_id)
        await alice.send({"type": "leave"})
        await alice.closed()
        await session.end()
        wanted = ["session_started", "participant_joined", "feed_published", "feed_unpublished",
                  "participant_left", "session_ended"]
        await wait_until(lambda: sorted(e["event"] for e in hooks.events()) == sorted(wanted))
        for body, signature in hooks.received:
            expected = "sha256=" + hmac.new(creds.secret.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(signature, expected)
        events = {e["event"]: e for e in hooks.events()}
        assert events["participant_joined"]["data"] == {"sid": "s", "uid": "alice", "name": ""}
        assert events["feed_published"]["data"]["feed"]["feed_id"] == feed.feed_id
        assert all(e["cid"] == creds.cid and isinstance(e["ts"], int) and e["id"] for e in events.values())
        assert len({e["id"] for e in events.values()}) == len(wanted)


async def test_a_delivery_answered_500_is_retried_with_the_same_id(server: RunningServer, peers: Peers,
                                                                   creds: Credentials) -> None:
    server.server.webhooks.backoff_base_s = 0.05
    async with receiver(failures=2) as hooks:
        await register(server, creds, hooks.url)
        server.server.webhooks.emit(creds.cid, "participant_joined", {"sid": "s", "uid": "x"})
        await wait_until(lambda: len(hooks.received) == 1)
        assert hooks.attempts == 3
        assert hooks.events()[0]["event"] == "participant_joined"


async def test_a_deleted_webhook_gets_nothing(server: RunningServer, creds: Credentials) -> None:
    async with receiver() as hooks:
        created = await register(server, creds, hooks.url)
        headers = {"Authorization": f"Bearer {creds.admin_token()}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.delete(server.url + f"/v1/webhooks/{created['webhook_id']}") as response:
                assert response.status == 204
            async with http.delete(server.url + f"/v1/webhooks/{created['webhook_id']}") as response:
                assert response.status == 404
            async with http.post(server.url + "/v1/webhooks", json={"url": "ftp://x"}) as response:
                assert response.status == 400
        assert await server.server.store.list_webhooks(creds.cid) == []
