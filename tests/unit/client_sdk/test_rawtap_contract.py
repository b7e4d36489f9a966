"""Contract with aiortc internals the SDK uses (aiortc 1.16.0, aioice 0.13.0): fails loudly if they move."""

from __future__ import annotations

import inspect
from typing import Any

import aioice.ice
import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from client_sdk.ice import gather_on, loopback_host, rtc_configuration
from client_sdk.rawtap import RawSink, media_sections
from client_sdk.signaling import rtc_url
from client_sdk.wire import IceServer


def test_dtls_transport_looks_up_the_rtp_handler_on_the_instance() -> None:
    source = inspect.getsource(RTCDtlsTransport._recv_next)
    assert "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)" in source
    assert list(inspect.signature(RTCDtlsTransport._handle_rtp_data).parameters) == [
        "self",
        "data",
        "arrival_time_ms",
    ]
    assert hasattr(RTCRtpReceiver, "_send_rtcp_pli")


def test_aioice_gathers_host_addresses_through_the_module_function() -> None:
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in source


def test_loopback_candidates_are_gathered_only_inside_the_scope() -> None:
    with gather_on(("127.0.0.1",)):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("::1", "::1"),
        ("10.0.0.5", None),
        (None, None),
    ],
)
def test_a_loopback_server_host_selects_loopback_gathering(host: str | None, expected: str | None) -> None:
    assert loopback_host(host) == expected


def test_the_rtc_configuration_never_falls_back_to_public_stun() -> None:
    assert rtc_configuration(()).iceServers == []
    config = rtc_configuration((IceServer(("turn:127.0.0.1:3478",), "u", "c"),))
    assert [(s.urls, s.username, s.credential) for s in config.iceServers or []] == [
        (["turn:127.0.0.1:3478"], "u", "c")
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:7880", "ws://127.0.0.1:7880/v1/rtc"),
        ("https://sfu.example.com/", "wss://sfu.example.com/v1/rtc"),
        ("https://example.com/sfu", "wss://example.com/sfu/v1/rtc"),
        ("ws://127.0.0.1:7880/v1/rtc", "ws://127.0.0.1:7880/v1/rtc"),
    ],
)
def test_the_signaling_url_is_derived_from_the_base_url(url: str, expected: str) -> None:
    assert rtc_url(url) == expected


SDP = """v=0\r
o=- 1 1 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=group:BUNDLE 0 1\r
m=video 9 UDP/TLS/RTP/SAVPF 96 97\r
c=IN IP4 0.0.0.0\r
a=mid:0\r
a=sendonly\r
a=rtpmap:96 VP8/90000\r
a=rtpmap:97 rtx/90000\r
a=fmtp:97 apt=96\r
a=ssrc-group:FID 1111 2222\r
a=ssrc:1111 cname:x\r
a=ssrc:2222 cname:x\r
m=audio 9 UDP/TLS/RTP/SAVPF 111\r
c=IN IP4 0.0.0.0\r
a=mid:1\r
a=sendonly\r
a=rtpmap:111 opus/48000/2\r
a=ssrc:3333 cname:x\r
"""


def test_media_sections_give_primary_ssrcs_and_codecs_per_mid() -> None:
    sections = media_sections(SDP)
    assert sections["0"].ssrcs == (1111,)
    assert sections["0"].codecs_by_pt[96] == "video/VP8"
    assert sections["1"].ssrcs == (3333,)
    assert sections["1"].clock_rate_by_pt[111] == 48000


async def test_a_raw_sink_drops_the_oldest_packets_when_full_and_ends_on_close() -> None:
    from aiortc.rtp import RtpPacket

    sink = RawSink()
    for seq in range(4100):
        sink.push(RtpPacket(sequence_number=seq))
    sink.close()
    received = [p.sequence_number async for p in sink.packets()]
    assert received == list(range(5, 4100))
    assert sink.dropped == 5


def test_aioice_starts_consent_checks_through_the_instance_attribute() -> None:
    """`close_peer_connection` relies on it to disarm a consent task started after close."""
    source = inspect.getsource(aioice.ice.Connection.connect)
    assert "asyncio.create_task(self.query_consent())" in source


def test_aiortc_senders_stop_their_track_when_they_end() -> None:
    """Why the SDK gives aiortc a `SenderTrack` proxy and not the user's track."""
    from aiortc.rtcrtpsender import RTCRtpSender

    assert "self.__track.stop()" in inspect.getsource(RTCRtpSender._run_rtp)


def test_rtp_router_registers_receivers_by_ssrc_once_and_routes_by_ssrc_first() -> None:
    """rawtap.route_announced_ssrcs: a reused mid's new SSRCs are added to the router's table."""
    from aiortc.rtcdtlstransport import RtpRouter

    assert "self._rtp_router.register_receiver(" in inspect.getsource(RTCDtlsTransport._register_rtp_receiver)
    assert "if not self.__started:" in inspect.getsource(RTCRtpReceiver.receive)
    router = RtpRouter()
    receiver, other = object(), object()
    router.register_receiver(receiver, ssrcs=[1], payload_types=[97])  # type: ignore[arg-type]
    router.register_receiver(other, ssrcs=[2], payload_types=[97])  # type: ignore[arg-type]
    router.register_receiver(receiver, ssrcs=[3], payload_types=[])  # type: ignore[arg-type]
    assert receiver in router.receivers and router.ssrc_table[3] is receiver
    assert router.payload_type_table[97] == {receiver, other}
    from aiortc.rtp import RtpPacket

    assert router.route_rtp(RtpPacket(payload_type=97, ssrc=3)) is receiver
    assert router.route_rtp(RtpPacket(payload_type=97, ssrc=4)) is None  # shared payload type: dropped


def test_aiortc_reads_the_module_level_codec_table_when_it_negotiates() -> None:
    """rawtap.install_negotiation_codecs: VP9 appended to `aiortc.codecs.CODECS` is offered and answered."""
    from aiortc.codecs import CODECS
    from aiortc.rtcpeerconnection import RTCPeerConnection

    from client_sdk.rawtap import install_negotiation_codecs

    assert "CODECS[transceiver.kind]" in inspect.getsource(RTCPeerConnection.createOffer)
    install_negotiation_codecs()
    install_negotiation_codecs()  # idempotent
    vp9 = [c for c in CODECS["video"] if c.mimeType.lower() == "video/vp9"]
    assert [c.parameters["profile-id"] for c in vp9] == ["0", "2"]
    rtx_apts = {c.parameters.get("apt") for c in CODECS["video"] if c.mimeType.lower() == "video/rtx"}
    assert {c.payloadType for c in vp9} <= rtx_apts
    assert CODECS["video"][0].mimeType == "video/VP8"  # VP8 stays preferred
    payload_types = [c.payloadType for c in CODECS["video"]]
    assert len(payload_types) == len(set(payload_types))


def test_the_stun_parse_guard_keeps_aioice_from_raising_struct_error_on_media() -> None:
    """rawtap.install_stun_parse_guard: aioice parses every datagram as STUN and catches only ValueError."""
    import struct

    import aioice.stun

    from client_sdk import rawtap

    assert "stun.parse_message(data)" in inspect.getsource(aioice.ice.StunProtocol.datagram_received)
    assert "except ValueError:" in inspect.getsource(aioice.ice.StunProtocol.datagram_received)
    attribute = struct.pack("!HH", 0x8029, 8) + b"\x00" * 4  # ICE-CONTROLLED with 4 of its 8 bytes
    truncated = struct.pack("!HHI12s", 0x0001, len(attribute), 0x2112A442, b"t" * 12) + attribute
    with pytest.raises(struct.error):
        inspect.unwrap(aioice.stun.parse_message)(truncated)  # aioice's own, under any guard in place
    rawtap.install_stun_parse_guard()
    rawtap.install_stun_parse_guard()  # idempotent (and a no-op if the server's guard came first)
    with pytest.raises(ValueError, match="malformed STUN"):
        aioice.stun.parse_message(truncated)
    rtp = bytes([0x80, 0x60]) + (100 - 20).to_bytes(2, "big") + bytes(96)  # seq == length - 20
    with pytest.raises(ValueError, match="RFC 7983"):
        aioice.stun.parse_message(rtp)
    good = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
    assert aioice.stun.parse_message(bytes(good)).transaction_id == good.transaction_id


def _vp8(seq: int, timestamp: int, key_start: bool = False, start: bool = False) -> Any:
    from aiortc.rtp import RtpPacket

    descriptor = b"\x10" if key_start or start else b"\x00"
    header = b"\x00" if key_start else b"\x01"  # VP8 frame header: P bit clear on a key frame
    return RtpPacket(
        payload_type=96,
        sequence_number=seq,
        timestamp=timestamp,
        ssrc=1234,
        payload=descriptor + header + b"x" * 20,
    )


async def _video_receiver() -> tuple[Any, Any, list[Any]]:
    """An aiortc video receiver fed through its own `_handle_rtp_packet`, and the RTCP it sends."""
    from aiortc import RTCPeerConnection
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    pc = RTCPeerConnection()
    receiver: Any = pc.addTransceiver("video", direction="recvonly").receiver
    receiver._RTCRtpReceiver__codecs[96] = RTCRtpCodecParameters("video/VP8", 90000, 96)
    receiver._set_rtcp_ssrc(99)
    sent: list[Any] = []

    async def send_rtcp(packet: Any) -> None:
        sent.append(packet)

    receiver._send_rtcp = send_rtcp
    return pc, receiver, sent


async def test_a_video_receiver_exposes_its_nack_list_and_jitter_buffer_to_the_repair() -> None:
    """rawtap.VideoReceiveState: what client_sdk/repair.py reads and changes in aiortc's video receiver."""
    from aiortc.rtp import RtcpPsfbPacket, RtcpRtpfbPacket

    from client_sdk.rawtap import video_receive_state

    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__nack_generator.add(packet)" in source
    assert "self.__jitter_buffer.add(packet)" in source
    assert list(inspect.signature(RTCRtpReceiver._send_rtcp_nack).parameters) == [
        "self",
        "media_ssrc",
        "lost",
    ]
    pc, receiver, sent = await _video_receiver()
    audio = pc.addTransceiver("audio", direction="recvonly").receiver
    assert video_receive_state(audio) is None
    state = video_receive_state(receiver)
    assert state is not None
    assert state.buffered() == (-1, [])
    # frames: A = 10-11 (key), B = 12-13, C = 14-15, D = 16-17 (key), E = 18; 13 is lost
    packets = [
        *(_vp8(10, 0, key_start=True), _vp8(11, 0), _vp8(12, 3000, start=True), _vp8(14, 6000, start=True)),
        *(_vp8(15, 6000), _vp8(16, 9000, key_start=True), _vp8(17, 9000), _vp8(18, 12000, start=True)),
    ]
    for packet in packets:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    assert state.missing == {13}
    assert isinstance(sent[0], RtcpRtpfbPacket) and sent[0].lost == [13]  # aiortc's own NACK, once
    origin, slots = state.buffered()
    assert origin == 12  # frame A went to the decoder; B waits for 13
    assert [p.sequence_number if p else None for p in slots] == [12, None, 14, 15, 16, 17, 18]
    assert state.mime_type(96) == "video/vp8" and state.mime_type(97) == ""
    state.skip_to(16)
    state.forget([13])
    assert state.buffered()[0] == 16 and state.missing == set()
    await receiver._handle_rtp_packet(_vp8(19, 15000, start=True), arrival_time_ms=0)
    assert state.buffered()[0] == 18  # frame D left the buffer (decoding restarted from the key frame)
    await state.send_nack(1234, [20, 21])
    await state.send_pli(1234)
    assert isinstance(sent[-2], RtcpRtpfbPacket) and sent[-2].lost == [20, 21] and sent[-2].media_ssrc == 1234
    assert isinstance(sent[-1], RtcpPsfbPacket) and sent[-1].media_ssrc == 1234
    await pc.close()
