"""Contract with the aiortc/aioice/SDK internals `loadtest/taps.py` uses (aiortc 1.16.0, aioice 0.13.0),
and its header arithmetic. The taps on real traffic: tests/integration/loadtest/test_socket_tap.py."""

from __future__ import annotations

import inspect
import struct
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket

import client_sdk
from client_sdk.peers import SubscriberPeer
from loadtest.stats import StreamStats
from loadtest.taps import (
    SEND_TIME_URI,
    CountedStream,
    SocketTap,
    add_send_stamp,
    install_send_time_extension,
    read_send_stamp,
)


@pytest.fixture
def send_time_extension() -> Iterator[None]:
    saved = {kind: list(table) for kind, table in HEADER_EXTENSIONS.items()}
    try:
        yield
    finally:
        for kind, table in saved.items():
            HEADER_EXTENSIONS[kind][:] = table


def test_senders_hand_serialized_rtp_to_the_transport_instance() -> None:
    source = inspect.getsource(RTCRtpSender)
    assert source.count("await self.transport._send_rtp(") >= 2  # media and retransmissions


@pytest.mark.usefixtures("send_time_extension")
async def test_the_send_time_extension_is_offered_once_per_kind() -> None:
    install_send_time_extension()
    install_send_time_extension()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video")
        pc.addTransceiver("audio")
        offer = await pc.createOffer()
    finally:
        await pc.close()
    assert offer.sdp.count(f"a=extmap:8 {SEND_TIME_URI}") == 2
    assert sum(e.uri == SEND_TIME_URI for e in HEADER_EXTENSIONS["video"]) == 1


def test_aioice_keeps_its_sockets_protocols_on_the_connection() -> None:
    connection = aioice.ice.Connection(ice_controlling=True)
    assert vars(connection)["_protocols"] == []
    assert list(inspect.signature(aioice.ice.StunProtocol.datagram_received).parameters) == [
        "self",
        "data",
        "addr",
    ]


def test_the_sdk_session_keeps_its_subscriber_peer_connection() -> None:
    session = client_sdk.Session("http://127.0.0.1:1", token="t")
    assert "_subscriber" in vars(session)
    assert "self.pc = RTCPeerConnection(" in inspect.getsource(SubscriberPeer.__init__)


def _rtp(seq: int, *, csrcs: int = 0, ext: bool = True, ssrc: int = 7) -> bytes:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000, ssrc=ssrc,
                       payload=bytes(range(40)))  # fmt: skip
    packet.csrc = list(range(csrcs))
    if ext:
        packet.extensions.mid = "0"
    return packet.serialize(_mid_map()) if ext else packet.serialize()


def _mid_map() -> Any:
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap

    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid")]))  # fmt: skip
    return extensions


@pytest.mark.parametrize(("csrcs", "ext"), [(0, True), (0, False), (2, True)])
def test_a_send_stamp_is_appended_read_back_and_leaves_the_payload_alone(csrcs: int, ext: bool) -> None:
    data = _rtp(5, csrcs=csrcs, ext=ext)
    stamped = add_send_stamp(data, 123_456_789_012)
    assert read_send_stamp(stamped, stamped[0]) == 123_456_789_012
    assert read_send_stamp(data, data[0]) == -1
    before, after = RtpPacket.parse(data, _mid_map()), RtpPacket.parse(stamped, _mid_map())
    assert after.payload == before.payload and after.sequence_number == 5 and after.csrc == before.csrc
    assert after.extensions.mid == before.extensions.mid
    # a server appending its own element after ours (abs-send-time, id 3) does not hide it
    off = 12 + 4 * csrcs
    words = struct.unpack_from("!H", stamped, off + 2)[0]
    end = off + 4 + 4 * words
    grown = stamped[: off + 2] + struct.pack("!H", words + 1) + stamped[off + 4 : end] + b"\x32\x01\x02\x03"
    grown += stamped[end:]
    assert read_send_stamp(grown, grown[0]) == 123_456_789_012


def test_read_send_stamp_survives_truncated_packets() -> None:
    stamped = add_send_stamp(_rtp(1), 99)
    for cut in range(12, len(stamped)):
        read_send_stamp(stamped[:cut], stamped[0])  # no exception, whatever it finds


class _Protocol:
    def __init__(self) -> None:
        self.passed: list[bytes] = []

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.passed.append(data)


class _Dtls:
    def __init__(self, protocol: _Protocol) -> None:
        connection = type("Connection", (), {})()
        connection._protocols = [protocol]
        self.transport = type("IceTransport", (), {})()
        self.transport._connection = connection


def test_the_socket_tap_counts_media_and_passes_everything_else_on() -> None:
    protocol = _Protocol()
    tap = SocketTap(_Dtls(protocol))
    counted = CountedStream(StreamStats(90000))
    counted.latency_ms = []
    tap.bind(7, counted)
    assert tap.install() == 1 and tap.install() == 1  # installing twice hooks once
    hook = protocol.datagram_received
    stun = b"\x00\x01" + bytes(30)
    dtls = b"\x16\xfe\xfd" + bytes(30)
    rtcp = b"\x80\xc8" + bytes(30)
    for seq in (1, 2, 4, 3, 3):
        hook(add_send_stamp(_rtp(seq), 1), None)
    hook(_rtp(9, ssrc=8), None)
    for other in (stun, dtls, rtcp):
        hook(other, None)
    assert protocol.passed == [stun, dtls, rtcp]
    stats = counted.stats
    assert (stats.received, stats.lost, stats.reordered, stats.duplicates) == (4, 0, 1, 1)
    assert tap.unmatched == 1 and len(counted.latency_ms) == 5
    tap.detach()
    assert "datagram_received" not in vars(protocol)


def test_the_raw_send_path_finds_what_aiortc_keeps_on_transceivers_transports_and_connections() -> None:
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtcrtptransceiver import RTCRtpTransceiver

    assert "self._codecs" in inspect.getsource(RTCRtpTransceiver.__init__)
    assert "self._headerExtensions" in inspect.getsource(RTCRtpTransceiver.__init__)
    assert "self._ssrc = " in inspect.getsource(RTCRtpSender.__init__)
    assert "data = self._tx_srtp.protect(data)" in inspect.getsource(RTCDtlsTransport._send_rtp)
    connection = aioice.ice.Connection(ice_controlling=True)
    assert vars(connection)["_nominated"] == {}
    assert "active_pair = self._nominated.get(component)" in inspect.getsource(aioice.ice.Connection.sendto)
    assert "self.transport.sendto(data, addr)" in inspect.getsource(aioice.ice.StunProtocol.send_data)


def test_receivers_start_their_rtcp_loop_through_the_instance_and_stop_waits_for_its_events() -> None:
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    assert "self.__rtcp_task = asyncio.ensure_future(self._run_rtcp())" in inspect.getsource(RTCRtpReceiver)
    stop = inspect.getsource(RTCRtpReceiver.stop)
    assert "await self.__rtcp_started.wait()" in stop and "await self.__rtcp_exited.wait()" in stop
    body = inspect.getsource(RTCRtpReceiver._run_rtcp)
    assert "self.__rtcp_started.set()" in body and "self.__rtcp_exited.set()" in body


def test_senders_run_their_rtcp_loop_through_the_instance_and_stop_waits_for_its_events() -> None:
    send = inspect.getsource(RTCRtpSender.send)
    assert "self.__rtcp_task = asyncio.ensure_future(self._run_rtcp())" in send
    assert "self.__cname = parameters.rtcp.cname" in send
    stop = inspect.getsource(RTCRtpSender.stop)
    assert "self.__rtcp_task.cancel()" in stop
    assert "await asyncio.gather(self.__rtp_exited.wait(), self.__rtcp_exited.wait())" in stop
    body = inspect.getsource(RTCRtpSender._run_rtcp)
    assert "await self._send_rtcp(packets)" in body and "self.__rtcp_exited.set()" in body
    assert "RtcpByePacket" in body  # sent through self._send_rtcp when the loop is cancelled
