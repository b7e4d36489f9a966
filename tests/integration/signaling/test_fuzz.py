"""Arbitrary JSON and bytes at the socket: answered or closed cleanly, no traceback, nobody else notices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.signaling.messages import PARSERS
from tests.integration.signaling.peers import Peer, Peers, open_peers
from tests.support import Credentials, start_server, wait_until

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=15,
)
field_names = st.sampled_from(["id", "token", "key", "session", "uid", "name", "data", "to", "pipeline",
                               "persist", "before", "after", "limit", "feed_id", "feed_ids", "muted", "sdp",
                               "feeds", "resume", "negotiation", "candidate", "transport", "layer", "paused"])
requests = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from([*sorted(PARSERS), "", "nope"]),
    st.dictionaries(field_names, json_values, max_size=6),
)
frames = (
    requests.map(lambda f: ("text", json.dumps(f)))
    | json_values.map(lambda v: ("text", json.dumps(v)))
    | st.text(max_size=200).map(lambda t: ("text", t))
    | st.binary(max_size=200).map(lambda b: ("bytes", b))
)
CLEAN_CLOSES = {1000, 4009}


@dataclass
class Arena:
    peers: Peers
    creds: Credentials
    witness: Peer
    fuzzer: Peer
    pings: int = 0

    async def new_fuzzer(self) -> None:
        # hidden and without data: whatever it does, the witness must see nothing at all
        token = self.creds.token("s", "fuzzer", grants={"hidden": True, "data": False, "publish": False})
        self.fuzzer = await self.peers.join(token)

    async def throw(self, kind: str, payload: Any) -> None:
        if kind == "bytes":
            await self.fuzzer.ws.send_bytes(payload)
        else:
            await self.fuzzer.ws.send_str(payload)
        self.pings += 1
        rid = f"probe-{self.pings}"
        if not self.fuzzer.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.fuzzer.send({"type": "ping", "id": rid})
        await wait_until(lambda: bool(self.fuzzer.of_type("pong", re=rid)) or self.fuzzer.ws.closed)
        if self.fuzzer.ws.closed or self.fuzzer.of_type("closed"):
            code = await self.fuzzer.closed()
            assert code in CLEAN_CLOSES, (code, payload)
            await self.new_fuzzer()


def test_arbitrary_frames_never_break_the_session(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()

    async def setup() -> Arena:
        running = await stack.enter_async_context(
            start_server(tmp_path / "d", frames_per_s=100000.0, frame_burst=100000)
        )
        peers = await stack.enter_async_context(open_peers(running))
        creds = await running.credentials()
        witness = await peers.join(creds.token("s", "witness"))
        arena = Arena(peers, creds, witness, witness)
        await arena.new_fuzzer()
        return arena

    try:
        caplog.set_level(logging.INFO)
        arena = loop.run_until_complete(setup())

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(frame=frames)
        def throw(frame: tuple[str, Any]) -> None:
            loop.run_until_complete(arena.throw(*frame))

        throw()

        async def witness_is_untouched() -> None:
            pong = await arena.witness.request("ping")
            assert pong["type"] == "pong"
            assert [f["type"] for f in arena.witness.frames] == ["joined", "pong"]

        loop.run_until_complete(witness_is_untouched())
    finally:
        loop.run_until_complete(stack.aclose())
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        loop.close()
    assert left == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_arbitrary_first_frames_are_answered_or_closed_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()

    async def setup() -> tuple[Peers, Peer]:
        running = await stack.enter_async_context(start_server(tmp_path / "d"))
        peers = await stack.enter_async_context(open_peers(running))
        creds = await running.credentials()
        return peers, await peers.join(creds.token("s", "witness"))

    async def first_frame(peers: Peers, kind: str, payload: Any) -> None:
        peer = await peers.connect()
        if kind == "bytes":
            await peer.ws.send_bytes(payload)
        else:
            await peer.ws.send_str(payload)
        await wait_until(lambda: bool(peer.frames) or peer.ws.closed)
        first = peer.frames[0] if peer.frames else None
        assert first is None or first["type"] in ("error", "joined"), first
        await peer.close()
        peers.opened.remove(peer)

    try:
        caplog.set_level(logging.INFO)
        peers, witness = loop.run_until_complete(setup())

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(frame=frames)
        def throw(frame: tuple[str, Any]) -> None:
            loop.run_until_complete(first_frame(peers, *frame))

        throw()

        async def witness_is_untouched() -> None:
            assert (await witness.request("ping"))["type"] == "pong"
            assert [f["type"] for f in witness.frames] == ["joined", "pong"]

        loop.run_until_complete(witness_is_untouched())
    finally:
        loop.run_until_complete(stack.aclose())
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        loop.close()
    assert left == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
