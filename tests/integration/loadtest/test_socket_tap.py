"""The load tool's cheap counting path on real packets from the server: a `SocketTap` counts SRTP media
at the subscriber's UDP socket, before unprotect; datagrams dropped, swapped and repeated between the
socket and the tap must show up as exactly that many lost, reordered and duplicate packets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiortc.codecs import HEADER_EXTENSIONS

import client_sdk
from client_sdk.encoded import EncodedAudioTrack, EncodedVideoTrack
from loadtest.media import encode_opus, encode_vp8
from loadtest.stats import StreamStats
from loadtest.taps import CountedStream, SocketTap, hook_send, install_send_time_extension, subscriber_dtls
from tests.support import Credentials, RunningServer, wait_until


@pytest.fixture
def send_time_extension() -> Iterator[None]:
    """The load workers negotiate the send-time extension process-wide; here only for this test."""
    saved = {kind: list(table) for kind, table in HEADER_EXTENSIONS.items()}
    install_send_time_extension()
    try:
        yield
    finally:
        for kind, table in saved.items():
            HEADER_EXTENSIONS[kind][:] = table


class Mangler:
    """Sits between the socket and the tap; of every 10 media datagrams of one SSRC it drops the 3rd,
    delivers the 6th after the 7th and the 9th twice, for the first `limit` (a multiple of 10)."""

    def __init__(self, protocol: Any, ssrc: int, limit: int) -> None:
        self.tap_hook = protocol.datagram_received
        self.ssrc = ssrc.to_bytes(4, "big")
        self.limit = limit
        self.seen = self.dropped = self.swapped = self.repeated = 0
        self.held: tuple[bytes, Any] | None = None
        protocol.datagram_received = self.datagram_received

    def datagram_received(self, data: bytes, addr: Any) -> None:
        media = len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224
        if not media or data[8:12] != self.ssrc or self.seen >= self.limit:
            self.tap_hook(data, addr)
            return
        self.seen += 1
        step = self.seen % 10
        if step == 3:
            self.dropped += 1
        elif step == 6:
            self.held = (data, addr)
        elif step == 7 and self.held is not None:
            self.tap_hook(data, addr)
            self.tap_hook(*self.held)
            self.held = None
            self.swapped += 1
        elif step == 9:
            self.tap_hook(data, addr)
            self.tap_hook(data, addr)
            self.repeated += 1
        else:
            self.tap_hook(data, addr)


@pytest.mark.usefixtures("send_time_extension")
async def test_socket_tap_counts_gaps_reordering_and_duplicates_of_real_srtp_packets(
    server: RunningServer, creds: Credentials
) -> None:
    video_clip = encode_vp8(320, 180, 30, 4.0, 300_000, 1.0)
    audio_clip = encode_opus(4.0)
    stamped = 0

    def on_sent(_data: bytes, _now_ns: int) -> None:
        nonlocal stamped
        stamped += 1

    async with (
        await client_sdk.connect(server.url, token=creds.token("tap", "pub"), auto_subscribe=False) as pub,
        await client_sdk.connect(server.url, token=creds.token("tap", "sub"), auto_subscribe=False) as sub,
    ):
        feeds = await pub.publish_many(
            [(EncodedVideoTrack(video_clip), None, None), (EncodedAudioTrack(audio_clip), None, None)]
        )
        transceiver = feeds[0].transceiver
        assert transceiver is not None and hook_send(transceiver.sender.transport, on_sent)
        video_raw = await sub.subscribe(feeds[0].feed_id, decode=False)
        audio_raw = await sub.subscribe(feeds[1].feed_id, decode=False)
        assert video_raw.section is not None and audio_raw.section is not None
        video = CountedStream(StreamStats(90000))
        audio = CountedStream(StreamStats(48000))
        video.latency_ms = []
        tap = SocketTap(subscriber_dtls(sub))
        for ssrc in video_raw.section.ssrcs:
            tap.bind(ssrc, video)
        for ssrc in audio_raw.section.ssrcs:
            tap.bind(ssrc, audio)
        assert tap.install() >= 1
        (video_ssrc,) = video_raw.section.ssrcs
        mangler = Mangler(tap.protocols[0], video_ssrc, limit=120)
        try:
            await wait_until(lambda: mangler.seen >= 120, timeout_s=20.0)
            received = video.stats.received
            await wait_until(lambda: video.stats.received >= received + 20, timeout_s=10.0)
            # nothing reached aiortc's receive path: the raw feed's queue stayed empty
            assert video_raw.sink.received == 0 and audio_raw.sink.received == 0
        finally:
            tap.detach()

    assert mangler.dropped == mangler.swapped == mangler.repeated == 12
    assert video.stats.lost == mangler.dropped
    assert video.stats.reordered == mangler.swapped
    assert video.stats.duplicates == mangler.repeated
    assert video.stats.received == video.stats.expected - mangler.dropped
    assert video.payload_bytes > 100 * video.stats.received  # payload sizes read from the SRTP datagrams
    assert audio.stats.received > 50 and audio.stats.lost == 0 and audio.stats.reordered == 0
    # the tool's send-time extension came through the server: one latency sample per counted packet
    assert stamped > 0 and len(video.latency_ms) == video.stats.received + video.stats.duplicates
    assert all(0 < ms < 1000 for ms in video.latency_ms)
    assert tap.unmatched == 0
