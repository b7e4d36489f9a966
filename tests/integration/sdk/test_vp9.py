"""A VP9 feed to Python SDK subscribers in another process (aiortc has no VP9: the SDK registers it for
negotiation, raw subscriptions get its RTP, decoded ones are decoded by client_sdk/vp9.py with PyAV).

The publisher is tests/integration/media/test_vp9.py's `Vp9Publisher` (Chrome-like flexible-mode VP9 RTP
from frames libvpx encoded), published here through the signaling socket like any client.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiortc import RTCRtpSender, RTCSessionDescription

import client_sdk
from client_sdk import vp9 as sdk_vp9
from sfu.media import bridge
from tests.integration.media.peers import LOOPBACK
from tests.integration.media.test_vp9 import HEIGHT, WIDTH, Vp9Publisher
from tests.integration.sdk.conftest import Sessions
from tests.integration.sdk.test_media import ColorBars
from tests.integration.signaling.peers import Peer, open_peers
from tests.support import Credentials, RunningServer, wait_until

ROOT = Path(__file__).resolve().parents[3]


class SignaledVp9Publisher(Vp9Publisher):
    """`Vp9Publisher` negotiated with the server over `publish` instead of the media engine directly."""

    async def publish_over(self, peer: Peer) -> str:
        bridge.install_forward_only_codecs()
        transceiver = self.pc.addTransceiver("video", direction="sendonly")
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/VP9"][:1])
        with bridge.ice_hosts_scope(LOOPBACK):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        bridge.disable_aiortc_media(self.pc)
        own = f"a=ssrc:{transceiver.sender._ssrc} "
        offer = self.pc.localDescription.sdp.replace(own, f"a=ssrc:{self.ssrc} ")
        reply = await peer.request("publish", sdp=offer, feeds=[{"mid": transceiver.mid, "source": "camera"}])
        assert reply["type"] == "published", reply
        answer = reply["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        found = re.search(r"a=rtpmap:(\d+) VP9/90000", answer)
        assert found is not None, answer
        self.payload_type = int(found.group(1))
        dtls: Any = transceiver.sender.transport
        bridge.hook_dtls(dtls, lambda *a, **k: bridge.DONE, self._on_rtcp)
        self.sink.attach(dtls)
        await wait_until(lambda: self.sink.connected, 10.0)
        return str(reply["feeds"][0]["feed_id"])


async def test_sdk_subscribers_in_another_process_get_a_vp9_feed_raw_and_decoded(
    server: RunningServer, creds: Credentials
) -> None:
    publisher = SignaledVp9Publisher()
    async with open_peers(server) as peers:
        try:
            peer = await peers.join(creds.token("room", "vp9-pub"))
            feed_id = await publisher.publish_over(peer)
            publisher.start(30 * 60)
            tokens = [creds.token("room", uid) for uid in ("vp8-pub", "dec", "raw")]
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.integration.sdk.vp9_subscriber", server.url, feed_id, *tokens,
                cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
        finally:
            await publisher.close()
    assert process.returncode == 0, stderr.decode()[-3000:]
    assert b"Traceback" not in stderr and b"was destroyed but it is pending" not in stderr, stderr.decode()
    result = orjson.loads(stdout.splitlines()[-1])
    assert result["sfu_imported"] is False
    assert result["vp9_track"] == "Vp9Track"
    vp9 = result["vp9_frames"]
    assert len(vp9) == 30 and {(w, h) for w, h, _ in vp9} == {(WIDTH, HEIGHT)}
    pts = [p for _, _, p in vp9]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # 90 kHz RTP clock, increasing
    assert result["vp9_decode_errors"] == 0
    assert len(result["vp8_frames"]) == 5  # the VP8 feed in the same offer keeps working
    assert result["raw_codec"] == "video/VP9"
    vp9_pts = [int(pt) for pt, mime in result["raw_codecs_by_pt"].items() if mime == "video/VP9"]
    assert result["raw_payload_types"] == vp9_pts
    assert result["vp9_ended_on_unsubscribe"] is True


async def test_without_a_vp9_decoder_only_the_vp9_subscription_fails_with_unsupported_codec(
    server: RunningServer, creds: Credentials, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk_vp9, "DECODERS", ("no-such-vp9-decoder",))
    publisher = SignaledVp9Publisher()
    async with open_peers(server) as peers:
        try:
            peer = await peers.join(creds.token("room", "vp9-pub"))
            vp9_feed = await publisher.publish_over(peer)
            publisher.start(30 * 30)
            vp8 = await (await sessions.connect(token=creds.token("room", "vp8-pub"))).publish(ColorBars())
            bob = await sessions.connect(token=creds.token("room", "bob"), auto_subscribe=False)
            with pytest.raises(client_sdk.UnsupportedCodec) as refused:
                await bob.subscribe(vp9_feed)
            assert refused.value.codec == "video/VP9" and "decode=False" in refused.value.message
            room = server.server.registry.sessions_by_key[(creds.cid, "room")]
            participant = room.participants_by_uid["bob"]
            assert vp9_feed not in participant.subscriptions  # the SDK unsubscribed again
            video = await bob.subscribe(vp8.feed_id)
            frame: Any = await asyncio.wait_for(video.track.recv(), 10)
            assert (frame.width, frame.height) == (320, 240)
            raw = await bob.subscribe(vp9_feed, decode=False)
            assert raw.codec == "video/VP9"
            packets = []
            async with asyncio.timeout(10):
                async for packet in raw.packets():
                    packets.append(packet)
                    if len(packets) == 10:
                        break
            assert {p.ssrc for p in packets} == set(raw.section.ssrcs if raw.section else ())
        finally:
            await publisher.close()
