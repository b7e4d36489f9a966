"""NACK repair on a lossy subscriber link: a test host in a network namespace behind 5% random loss."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client_sdk.encoded import EncodedVideoTrack
from loadtest.media import encode_vp8
from tests.integration.system.conftest import Sessions
from tests.nethost import NetHost
from tests.support import RunningServer

SECONDS = 6.0

pytestmark = pytest.mark.netns


async def _decode_in_host(
    net_host: NetHost, server: RunningServer, token: str, feed_id: str
) -> dict[str, object]:
    url = f"http://{net_host.gateway}:{server.port}"
    return await net_host.run_module_json(
        "tests.integration.system.netns_subscriber", url, token, feed_id, str(SECONDS), timeout_s=60
    )


async def _run(net_host: NetHost, server: RunningServer, sessions: Sessions, uid: str) -> tuple[int, int]:
    """Frames the namespace subscriber decoded in SECONDS, and retransmissions the server sent it."""
    creds = await server.credentials()
    alice = await sessions.connect(token=creds.token("room", "alice"))
    # NOTE: a pre-encoded clip cannot answer PLIs; a 1 s key-frame interval bounds what one unrepaired loss
    # costs, as a live publisher answering the PLI would.
    clip = encode_vp8(640, 360, fps=30, seconds=10, bitrate_bps=1_200_000, keyframe_interval_s=1)
    feed = await alice.publish(EncodedVideoTrack(clip), source="camera")
    session = server.server.registry.get(creds.cid, "room")
    assert session is not None and session.media is not None
    session_media = session.media
    retransmissions = [0]

    async def watch() -> None:
        while True:
            media = session_media.media_by_uid.get(uid)
            forwarder = media.forwarders_by_feed.get(feed.feed_id) if media else None
            if forwarder is not None:
                retransmissions[0] = max(retransmissions[0], forwarder.retransmissions)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    try:
        result = await _decode_in_host(net_host, server, creds.token("room", uid), feed.feed_id)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    await alice.close()
    assert result["sizes"] == [[640, 360]]
    frames = result["frames"]
    assert isinstance(frames, int)
    return frames, retransmissions[0]


async def test_nack_keeps_decoded_frames_within_5_percent_under_5_percent_loss(
    net_host: NetHost, lan_server: RunningServer, tmp_path: Path
) -> None:
    sessions = Sessions(lan_server.url)
    try:
        clean_frames, _ = await _run(net_host, lan_server, sessions, "clean")
        via = net_host.set_loss(5)
        lossy_frames, retransmissions = await _run(net_host, lan_server, sessions, "lossy")
    finally:
        await sessions.close_all()
    print(f"loss via {via}: {clean_frames} frames clean, {lossy_frames} at 5% loss, "
          f"{retransmissions} retransmissions")
    assert clean_frames > SECONDS * 30 * 0.8
    assert retransmissions > 0, "the server answered no NACK"
    assert lossy_frames >= clean_frames * 0.95
