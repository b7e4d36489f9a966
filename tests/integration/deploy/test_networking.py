"""Real aiortc peers through the server with an ICE port range, an announced (1:1 NAT) address, and IPv6
host candidates; loopback only."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import av
import pytest

from client_sdk import FeedPublished
from tests.integration.sdk.conftest import Sessions
from tests.integration.sdk.test_media import ColorBars
from tests.support import RunningServer, start_server
from tests.unit.deploy.test_ice_network import free_range

CANDIDATE_RE = re.compile(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host")


@pytest.fixture
async def sessions() -> AsyncIterator[Sessions]:
    opened = Sessions("")
    try:
        yield opened
    finally:
        await opened.close_all()


def server_candidates(running: RunningServer) -> list[tuple[str, int]]:
    found = []
    for transport in running.server.media.transports:
        sdp = transport._pc.localDescription.sdp
        found += [(host, int(port)) for host, port in CANDIDATE_RE.findall(sdp)]
    return found


async def forward_one_frame(running: RunningServer, url: str, sessions: Sessions) -> None:
    creds = await running.credentials()
    bob = await sessions.connect(url, token=creds.token("room", "bob"), auto_subscribe=False)
    events = bob.events()
    alice = await sessions.connect(url, token=creds.token("room", "alice"))
    video = await alice.publish(ColorBars())
    await events.next(FeedPublished)
    remote = await bob.subscribe(video.feed_id)
    frame = await remote.track.recv()
    assert isinstance(frame, av.VideoFrame) and frame.width == 320


async def test_media_flows_through_host_candidates_bound_in_the_port_range_announcing_the_public_ip(
    tmp_path: Path, sessions: Sessions
) -> None:
    low, high = free_range(8)
    announced = (("127.0.0.1", "203.0.113.7"),)
    async with start_server(tmp_path / "data", rtc_port_range=(low, high), public_ips=announced) as running:
        await forward_one_frame(running, running.url, sessions)
        candidates = server_candidates(running)
        assert len(candidates) == 2, candidates  # a publisher and a subscriber transport
        for host, port in candidates:
            assert host == "203.0.113.7" and low <= port <= high
        await sessions.close_all()


async def test_media_flows_over_ipv6_host_candidates(tmp_path: Path, sessions: Sessions) -> None:
    async with start_server(tmp_path / "data", extra_listen=("::1",), ice_hosts=("::1",)) as running:
        await forward_one_frame(running, f"http://[::1]:{running.port}", sessions)
        assert {host for host, _ in server_candidates(running)} == {"::1"}
        await sessions.close_all()
