"""H.264 end to end: a participant publishes a pre-encoded libx264 clip (aiortc packetizes it: STAP-A,
FU-A), the server records it, and the Matroska file is the same bitstream with true timing.

The SDK's `publish` leaves the codec to aiortc's default order (VP8 first), so the publisher here is an
aiortc peer whose only video codec is H.264 (`setCodecPreferences`), negotiated through the participant's
`publish` request like the SDK does it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from client_sdk.admin import AdminClient
from client_sdk.examples.record_session import record_feed
from loadtest.media import encode_h264, has_h264_encoder
from sfu.media import bridge
from tests.integration.recording.probe import (
    TimedVideoTrack,
    decode_errors,
    probe,
    read_frames,
    require_ffprobe,
)
from tests.integration.sdk.conftest import Sessions
from tests.support import Credentials, RunningServer, wait_until

FPS = 30
RECORD_S = 6.0
JOB_FRAMES = 90

pytestmark = pytest.mark.skipif(not has_h264_encoder(), reason="this PyAV build has no libx264")


def nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, without start codes (H.264 annex B.1)."""
    return [nal.rstrip(b"\x00") for nal in access_unit.split(b"\x00\x00\x01") if nal.rstrip(b"\x00")]


def length_prefixed_units(sample: bytes) -> list[bytes]:
    """The NAL units of a Matroska/MP4 H.264 sample: 4-byte big-endian length, unit, repeated."""
    units = []
    i = 0
    while i + 4 <= len(sample):
        size = int.from_bytes(sample[i : i + 4], "big")
        units.append(sample[i + 4 : i + 4 + size])
        i += 4 + size
    assert i == len(sample), "not a length-prefixed sample"
    return units


@pytest.fixture
async def sessions(server: RunningServer) -> AsyncIterator[Sessions]:
    opened = Sessions(server.url)
    try:
        yield opened
    finally:
        await opened.close_all()


async def test_h264_is_recorded_as_a_codec_copy_in_matroska_with_true_frame_count_and_duration(
    server: RunningServer, creds: Credentials, sessions: Sessions, tmp_path: Path
) -> None:
    require_ffprobe()
    clip = encode_h264(320, 240, fps=FPS, seconds=20, bitrate_bps=400_000, keyframe_interval_s=1)
    video = TimedVideoTrack(clip)
    cam = await sessions.connect(token=creds.token("room", "cam"), auto_subscribe=False)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver(video, direction="sendonly")
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences(
            [c for c in codecs if c.mimeType == "video/H264" and c.parameters.get("packetization-mode") == "1"
             and c.parameters.get("profile-level-id") == "42e01f"]
            + [c for c in codecs if c.mimeType == "video/rtx"]
        )
        with bridge.ice_hosts_scope(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        assert "VP8" not in offer
        reply = await cam._request("publish", sdp=offer, feeds=[{"mid": transceiver.mid, "source": "camera"}])
        assert re.search(r"^a=rtpmap:\d+ H264/90000", str(reply["sdp"]), re.M)
        await pc.setRemoteDescription(RTCSessionDescription(str(reply["sdp"]), "answer"))
        feed_id = str(reply["feeds"][0]["feed_id"])
        session = server.server.registry.get(creds.cid, "room")
        assert session is not None and session.media is not None
        media = session.media

        def flowing() -> bool:
            receiver = media.receivers_by_feed.get(feed_id)
            return receiver is not None and receiver.packets > 20

        await wait_until(flowing, timeout_s=15)
        # the SDK's recording job example records the same feed on the client side meanwhile
        job_token = creds.token("room", "job", grants={"hidden": True, "publish": False})
        job = await sessions.connect(token=job_token, auto_subscribe=False)
        raw = await job.subscribe(feed_id, decode=False)
        (tmp_path / "job").mkdir()
        job_task = asyncio.create_task(record_feed(raw, tmp_path / "job", max_frames=JOB_FRAMES))
        async with AdminClient(server.url, creds.admin_token()) as admin:
            recording_id = await admin.start_recording("room")
            await asyncio.sleep(RECORD_S)
            stopped_at = time.time()
            result = await admin.stop_recording("room", recording_id)
            (entry,) = result["files"]
            path = tmp_path / entry["name"]
            path.write_bytes(await admin.download_recording_file(recording_id, entry["name"]))
        writer = await asyncio.wait_for(job_task, 15)
    finally:
        await bridge.close_peer_connection(pc)

    assert (entry["codec"], entry["state"], path.suffix) == ("video/H264", "complete", ".mkv")
    found = await probe(path)
    assert found.codec == "h264"
    # codec copy: the file's access units hold the clip's NAL units, byte for byte, from a key frame on
    # (RTP carries NAL units, not start codes; Matroska stores them length-prefixed, ISO 14496-15)
    recorded = [length_prefixed_units(f) for f in read_frames(path, len(found.packet_sizes))]
    sent_units = [nal_units(f.data) for f in clip.frames]
    first = next((i for i in range(len(sent_units)) if sent_units[i : i + 3] == recorded[:3]), -1)
    assert first >= 0, "recorded frames are not the published ones"
    assert clip.frames[first].keyframe
    assert recorded == sent_units[first : first + len(recorded)]
    sent = sum(1 for t in video.sent_at[first:] if t <= stopped_at)
    assert abs(len(found.packet_sizes) - sent) <= max(2, 0.02 * sent), (len(found.packet_sizes), sent)
    truth_s = video.sent_at[first + len(found.packet_sizes) - 1] - video.sent_at[first] + 1 / FPS
    assert found.format_duration is not None and abs(found.format_duration - truth_s) <= 0.3
    assert entry["frames"] == len(found.packet_sizes)
    print(f"h264: {len(found.packet_sizes)} frames ({sent} sent), {found.format_duration:.3f} s "
          f"(truth {truth_s:.3f})")

    # the example's file: the same NAL units too, decodable without an error
    assert (writer.frames, writer.path.suffix) == (JOB_FRAMES, ".mkv")
    job_units = [length_prefixed_units(f) for f in read_frames(writer.path, JOB_FRAMES)]
    job_first = next((i for i in range(len(sent_units)) if sent_units[i : i + 3] == job_units[:3]), -1)
    assert job_first >= 0 and clip.frames[job_first].keyframe
    assert job_units == sent_units[job_first : job_first + JOB_FRAMES]
    assert decode_errors(writer.path) == ""
