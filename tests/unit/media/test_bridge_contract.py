"""Fails loudly when an aiortc/aioice/pylibsrtp upgrade moves what `sfu/media/bridge.py` relies on."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aioice.ice
import pylibsrtp
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs import CODECS, HEADER_EXTENSIONS
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer
from pylibsrtp import _binding

from sfu.media import bridge
from sfu.media.rtp import ROUTER_EXTENSION_IDS


def test_versions_are_the_pinned_ones() -> None:
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"
    assert version("pylibsrtp") == "1.0.0"


def test_dtls_transport_looks_up_packet_handlers_on_the_instance() -> None:
    source = inspect.getsource(RTCDtlsTransport._recv_next)
    assert "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)" in source
    assert "await self._handle_rtcp_data(data)" in source
    assert "self._rx_srtp.unprotect(data)" in source
    init = inspect.getsource(RTCDtlsTransport.__init__)
    assert "self._tx_srtp" in init and "self._transport = transport" in init


def test_connect_starts_receivers_and_senders_through_instance_methods() -> None:
    source = inspect.getsource(RTCPeerConnection)
    assert "await transceiver.sender.send(self.__localRtp(transceiver))" in source
    assert "await transceiver.receiver.receive(" in source
    assert "threading.Thread" in inspect.getsource(RTCRtpReceiver.receive)
    assert "_run_rtp" in inspect.getsource(RTCRtpSender.send)


def test_aioice_gathers_hosts_through_the_module_function() -> None:
    assert "get_host_addresses(" in inspect.getsource(aioice.ice.Connection.gather_candidates)
    connection = aioice.ice.Connection(ice_controlling=True)
    assert connection._nominated == {}
    assert "self.protocol = protocol" in inspect.getsource(aioice.ice.CandidatePair.__init__)
    assert "remote_addr" in dir(aioice.ice.CandidatePair)
    assert "transport" in aioice.ice.StunProtocol.__annotations__


async def test_ice_host_scope_replaces_gathered_addresses() -> None:
    with bridge.ice_hosts_scope(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)


async def test_peer_connection_has_no_default_stun_server() -> None:
    pc = bridge.new_peer_connection()
    pc.addTransceiver("audio")
    transceiver = pc.getTransceivers()[0]
    assert transceiver.receiver.transport.transport.iceGatherer._connection.stun_server is None
    assert RTCIceGatherer.getDefaultIceServers()  # what we must keep out
    await pc.close()


def test_srtp_session_internals_used_by_fast_protect() -> None:
    session = pylibsrtp.Session()
    assert len(session._cdata) == 1500
    assert session._buffer is not None and session._srtp is not None
    assert hasattr(_binding.lib, "srtp_protect") and hasattr(_binding.lib, "srtp_protect_rtcp")


async def test_sendonly_transceiver_gives_sender_ssrc_and_fixed_payload_types() -> None:
    pc = bridge.new_peer_connection()
    transceiver, ssrc, pt, rtx_ssrc = bridge.add_sendonly_transceiver(pc, "video", "video/VP8", "")
    assert ssrc == transceiver.sender._ssrc and pt == 97 and rtx_ssrc == transceiver.sender._rtx_ssrc
    _, _, h264_pt, _ = bridge.add_sendonly_transceiver(pc, "video", "video/H264", "profile-level-id=42e01f")
    assert h264_pt == 101
    await pc.close()
    pts = {c.mimeType: c.payloadType for c in CODECS["audio"] + CODECS["video"] if c.mimeType != "video/rtx"}
    assert pts["audio/opus"] == 96 and pts["video/VP8"] == 97


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_aiortc_extension_ids_match_the_router_ids(kind: str) -> None:
    for ext in HEADER_EXTENSIONS[kind]:
        assert ROUTER_EXTENSION_IDS[ext.uri] == ext.id


def test_bundle_ownership_is_decided_by_the_private_bundled_flags() -> None:
    source = inspect.getsource(RTCPeerConnection.setRemoteDescription)
    assert "if transceiver.mid in slaveMids and not transceiver._bundled:" in source
    assert "and not self.__sctp._bundled" in source
    assert "and not transceiver._bundled" in inspect.getsource(RTCPeerConnection.addIceCandidate)


def test_ice_connection_keeps_its_socket_protocols_in_a_list() -> None:
    connection = aioice.ice.Connection(ice_controlling=True)
    assert connection._protocols == []
    assert "self.receiver.data_received(data" in inspect.getsource(aioice.ice.StunProtocol.datagram_received)


def test_aioice_starts_consent_checks_through_an_instance_lookup() -> None:
    """bridge.close_peer_connection stubs `query_consent` on the instance before closing (aioice race)."""
    from aioice.ice import Connection
    from aiortc.rtcicetransport import RTCIceTransport

    source = inspect.getsource(Connection.connect)
    assert "self.query_consent()" in source
    assert "self._connection" in inspect.getsource(RTCIceTransport.__init__)


def test_codec_table_is_read_at_negotiation_time_and_vp9_is_matched_by_name() -> None:
    """bridge.install_forward_only_codecs appends VP9 to `aiortc.codecs.CODECS` for negotiation only."""
    import aiortc.rtcpeerconnection as rtcpeerconnection
    from aiortc import RTCRtpCodecParameters

    assert rtcpeerconnection.CODECS is CODECS  # type: ignore[attr-defined]
    assert "CODECS[media.kind]" in inspect.getsource(RTCPeerConnection.setRemoteDescription)
    assert "CODECS[transceiver.kind][:]" in inspect.getsource(RTCPeerConnection.createOffer)
    bridge.install_forward_only_codecs()
    bridge.install_forward_only_codecs()  # idempotent
    vp9 = [c for c in CODECS["video"] if c.mimeType == "video/VP9"]
    assert [c.parameters for c in vp9] == [{"profile-id": "0"}, {"profile-id": "2"}]
    pts = [c.payloadType for c in CODECS["video"]]
    assert len(pts) == len(set(pts)) and all(pt is not None and 96 <= pt <= 127 for pt in pts)
    profile_2 = RTCRtpCodecParameters(mimeType="video/VP9", clockRate=90000, payloadType=100)
    assert rtcpeerconnection.is_codec_compatible(vp9[0], profile_2)  # hence sdp._mirror_vp9_profile


# --- UDP socket buffers and the STUN parse guard (loadtest issue 9) ---


def _stun_with_truncated_attribute() -> bytes:
    """A Binding request whose ICE-CONTROLLED attribute (8 bytes) carries only 4: aioice's unpack fails."""
    import struct

    attribute = struct.pack("!HH", 0x8029, 8) + b"\x00" * 4
    return struct.pack("!HHI12s", 0x0001, len(attribute), 0x2112A442, b"t" * 12) + attribute


def test_stun_parse_guard_turns_aioice_struct_errors_into_value_errors() -> None:
    import struct

    import aioice.stun
    import aioice.turn

    # aioice looks the parser up on its stun module per datagram (ICE and TURN), and only catches ValueError
    assert "stun.parse_message(data)" in inspect.getsource(aioice.ice.StunProtocol.datagram_received)
    assert "stun.parse_message(data)" in inspect.getsource(aioice.turn)
    assert "except ValueError:" in inspect.getsource(aioice.ice.StunProtocol.datagram_received)
    bad = _stun_with_truncated_attribute()
    original = inspect.unwrap(aioice.stun.parse_message)  # aioice's own, under whichever guard is in place
    with pytest.raises(struct.error):
        original(bad)
    bridge.install_stun_parse_guard()
    bridge.install_stun_parse_guard()  # idempotent (and a no-op if the client SDK's guard came first)
    with pytest.raises(ValueError, match="malformed STUN"):
        aioice.stun.parse_message(bad)
    rtp = bytes([0x80, 0x60]) + (100 - 20).to_bytes(2, "big") + bytes(96)  # seq == length - 20
    with pytest.raises(ValueError, match="RFC 7983"):
        aioice.stun.parse_message(rtp)
    good = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
    assert aioice.stun.parse_message(bytes(good)).transaction_id == good.transaction_id


async def test_udp_buffers_are_set_on_every_ice_socket_and_reported() -> None:
    pc = bridge.new_peer_connection()
    pc.addTransceiver("audio")
    with bridge.ice_hosts_scope(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    dtls = pc.getTransceivers()[0].sender.transport
    assert dtls.transport._connection._protocols  # one StunProtocol per host candidate
    small = bridge.set_udp_buffers(dtls, 64 * 1024)
    assert small[1] >= 64 * 1024  # Linux reports double the granted size
    large = bridge.set_udp_buffers(dtls, 1024 * 1024)
    assert large[1] > small[1]
    assert large[0] == small[0] > 0  # the receive side keeps aioice's size (see set_udp_buffers)
    await bridge.close_peer_connection(pc)
