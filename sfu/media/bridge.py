"""The ONLY module that touches aiortc/aioice internals (pinned: aiortc 1.16.0, aioice 0.13.0).

aiortc is a WebRTC endpoint: its receiver decodes every track and its sender encodes. We keep its SDP,
ICE, DTLS and SRTP keys and take the packets out beside it, the way mediasoup and LiveKit sit beside
libwebrtc:

- receive: `RTCDtlsTransport._handle_rtp_data` / `_handle_rtcp_data` are looked up on the instance, so
  an instance attribute sees every SRTP-decrypted datagram as raw bytes, before aiortc parses it (its
  parser drops header extensions it does not know) and before its router. aiortc's receivers never
  see a packet;
- no decoding/encoding: `RTCRtpReceiver.receive` (starts a decoder thread) and `RTCRtpSender.send`
  (starts the encode/packetize loop) are replaced per instance by no-ops before aiortc's connect task
  runs;
- send: `transport._tx_srtp.protect()` + the nominated ICE pair's `DatagramTransport.sendto`,
  synchronously, no coroutine per packet;
- ICE hosts: `aioice.ice.get_host_addresses` is wrapped once; inside `ice_hosts_scope(hosts)` (a
  ContextVar, so only the peer connections whose candidates are gathered in that scope are affected,
  including aioice's gather tasks, which copy the context) it returns exactly the configured hosts;
- ICE ports and announced addresses: `aioice.ice.Connection.get_component_candidates` is wrapped the
  same way; inside `ice_network_scope(network)` host sockets bind within a port range and candidates
  carry the public address of a 1:1 NAT (contract: `tests/unit/deploy/test_ice_network.py`);
- ICE consent (RFC 7675): the server's connections check it with `sfu.media.freshness` (one scheduler
  per event loop) instead of aioice's per-connection `query_consent` task, which is replaced by an
  instance attribute before aioice starts it (`disarm_aioice_consent`, `start_consent_checks`;
  contract: `tests/unit/media/test_freshness.py`).

`tests/unit/media/test_bridge_contract.py` fails loudly if an upgrade moves any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import ipaddress
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aioice.stun
import aioice.turn
import pylibsrtp
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import CODECS
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.sdp import candidate_from_sdp
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from sfu.media import freshness
from sfu.media.consent import BINDING_REQUEST, BindingAnswerer
from sfu.media.consent import TOTALS as CONSENT_TOTALS
from sfu.media.twcc import SendHistory, abs_send_time, stamp

log = logging.getLogger("sfu.media.bridge")

_ICE_HOSTS: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "sfu_ice_hosts", default=None
)
_original_get_host_addresses: Callable[[bool, bool], list[str]] | None = None


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    hosts = _ICE_HOSTS.get()
    if hosts is None:
        assert _original_get_host_addresses is not None
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return [
        h
        for h in hosts
        if (ipaddress.ip_address(h).version == 4 and use_ipv4)
        or (ipaddress.ip_address(h).version == 6 and use_ipv6)
    ]


def install_ice_host_override() -> None:
    """Wraps `aioice.ice.get_host_addresses` once per process; a no-op outside `ice_hosts_scope`."""
    global _original_get_host_addresses
    if _original_get_host_addresses is None:
        _original_get_host_addresses = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _get_host_addresses


@contextlib.contextmanager
def ice_hosts_scope(hosts: Sequence[str]) -> Iterator[None]:
    """Candidates gathered inside offer exactly `hosts` (aioice otherwise skips loopback)."""
    install_ice_host_override()
    token = _ICE_HOSTS.set(tuple(hosts))
    try:
        yield
    finally:
        _ICE_HOSTS.reset(token)


DEFAULT_UDP_BUFFER_BYTES = 2 * 1024 * 1024  # per ICE socket, each direction; Linux clamps to [rw]mem_max


@dataclass(frozen=True, slots=True)
class IceNetwork:
    """Where host candidates bind and which address they announce (docs/deployment.md).

    `port_range`: inclusive UDP ports for host sockets, so a firewall or `docker run -p` can open
    exactly them. `announced`: (local address, public address) pairs; "0.0.0.0" / "::" as the local
    address stand for every address of that family. The socket stays bound to the local address; only
    the candidate carries the public one (a 1:1 NAT maps it back), as mediasoup's `announcedIp` does.
    """

    port_range: tuple[int, int] | None = None
    announced: tuple[tuple[str, str], ...] = ()
    udp_buffer_bytes: int = DEFAULT_UDP_BUFFER_BYTES  # SO_RCVBUF/SO_SNDBUF per ICE socket (set_udp_buffers)

    def announce(self, host: str) -> str:
        """The address to put in the candidate for a socket bound to `host`."""
        wildcard = "0.0.0.0" if ipaddress.ip_address(host).version == 4 else "::"
        exact = dict(self.announced)
        return exact.get(host) or exact.get(wildcard) or host

    @property
    def is_default(self) -> bool:
        return self.port_range is None and not self.announced


_NETWORK: contextvars.ContextVar[IceNetwork | None] = contextvars.ContextVar("sfu_ice_network", default=None)
_original_get_component_candidates: Callable[..., Any] | None = None


async def _bind_host(connection: Any, address: str, port_range: tuple[int, int] | None) -> Any:
    """A StunProtocol on a UDP socket bound to `address` and a free port of `port_range` (any port when
    None), or None when no port is free; the first port tried is random so transports spread out."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    if port_range is None:
        ports: Sequence[int] = (0,)
    else:
        low, high = port_range
        start = random.randint(low, high)
        ports = [*range(start, high + 1), *range(low, start)]
    for port in ports:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            log.warning("cannot bind ICE host %s: %s", address, exc)
            return None
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
            _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        return protocol
    log.warning("no free UDP port in %s on %s: host candidate skipped", port_range, address)
    return None


async def _get_component_candidates(
    self: Any, component: int, addresses: list[str], timeout: int = 5  # noqa: ASYNC109 (aioice's signature)
) -> list[Any]:
    """aioice's `Connection.get_component_candidates` with our host sockets inside `ice_network_scope`.

    NOTE: mirrors aioice 0.13.0's host-candidate block (bind, SO_RCVBUF, `StunProtocol`, a `Candidate`
    appended to `_protocols`); STUN/TURN candidates are still aioice's own (it is called with no host
    addresses, so server-reflexive queries, which need host sockets, do not run: the server has none).
    """
    assert _original_get_component_candidates is not None
    network = _NETWORK.get()
    if network is None or network.is_default:
        return list(await _original_get_component_candidates(self, component, addresses, timeout))
    candidates: list[Any] = []
    for address in addresses:
        protocol = await _bind_host(self, address, network.port_range)
        if protocol is None:
            continue
        bound_host, port = protocol.transport.get_extra_info("sockname")[:2]
        host = network.announce(bound_host)
        protocol.local_candidate = aioice.Candidate(
            foundation=aioice.candidate.candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=aioice.candidate.candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    if self.turn_server is not None:
        candidates += await _original_get_component_candidates(self, component, [], timeout)
    return candidates


def install_ice_network_override() -> None:
    """Wraps `aioice.ice.Connection.get_component_candidates` once per process; a no-op outside
    `ice_network_scope`."""
    global _original_get_component_candidates
    if _original_get_component_candidates is None:
        _original_get_component_candidates = aioice.ice.Connection.get_component_candidates
        aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


@contextlib.contextmanager
def ice_network_scope(network: IceNetwork | None) -> Iterator[None]:
    """Host candidates gathered inside bind within `network.port_range` and announce its addresses."""
    if network is None or network.is_default:
        yield
        return
    install_ice_network_override()
    token = _NETWORK.set(network)
    try:
        yield
    finally:
        _NETWORK.reset(token)


def _refuse(packet: bytes | bytearray) -> bytes | None:
    return None


def _not_ours(data: bytes, addr: Any, protocol: Any) -> bool:
    return False


# Codecs the server forwards but aiortc 1.16 cannot encode or decode: registered for negotiation only
# (our packet path copies their RTP, aiortc's coders never start). Chrome offers VP9 profile-id 0 and 2.
FORWARD_ONLY_VIDEO_CODECS: tuple[tuple[str, dict[str, str]], ...] = (
    ("video/VP9", {"profile-id": "0"}),
    ("video/VP9", {"profile-id": "2"}),
)


def install_forward_only_codecs() -> None:
    """Appends `FORWARD_ONLY_VIDEO_CODECS` (+ RTX) to aiortc's codec table once per process.

    NOTE: aiortc 1.16 reads the module-level `aiortc.codecs.CODECS` when it builds offers and answers
    (`createOffer`, `setRemoteDescription`) and capabilities; VP9 is matched by mime type and clock rate
    only (`is_codec_compatible`), so the publisher answer copies the offer's profile-id (sdp.py). The
    entries go last: an offer listing VP8 first still gets VP8. Payload types continue aiortc's range.
    """
    video = CODECS["video"]
    if any(c.mimeType.lower() == "video/vp9" for c in video):
        return
    template = next(c for c in video if c.mimeType.lower() == "video/vp8")
    pt = max(c.payloadType or 0 for c in video) + 1
    for mime, parameters in FORWARD_ONLY_VIDEO_CODECS:
        video.append(
            RTCRtpCodecParameters(
                mimeType=mime,
                clockRate=90000,
                payloadType=pt,
                rtcpFeedback=list(template.rtcpFeedback),
                parameters=dict(parameters),
            )
        )
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx", clockRate=90000, payloadType=pt + 1, parameters={"apt": pt}
            )
        )
        pt += 2


def new_peer_connection() -> RTCPeerConnection:
    """No STUN server (aiortc would add Google's), one transport for everything (max-bundle)."""
    install_forward_only_codecs()
    return RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


class _Done:
    """An awaitable that is already finished: lets a plain function stand in for an `async def` hook."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


DONE = _Done()

RtpHook = Callable[..., _Done]


async def _no_op(*args: object, **kwargs: object) -> None:
    return None


def disable_aiortc_media(pc: RTCPeerConnection) -> None:
    """No decoder thread, no encoder loop, no aiortc RTCP task for any transceiver of `pc`."""
    for transceiver in pc.getTransceivers():
        transceiver.receiver.receive = _no_op  # type: ignore[method-assign]
        transceiver.sender.send = _no_op  # type: ignore[method-assign]


def dtls_transports(pc: RTCPeerConnection) -> list[Any]:
    """The distinct DTLS transports of `pc` (one with BUNDLE)."""
    found: list[Any] = []
    for transceiver in pc.getTransceivers():
        if transceiver.receiver.transport not in found:
            found.append(transceiver.receiver.transport)
    if pc.sctp is not None and pc.sctp.transport not in found:
        found.append(pc.sctp.transport)
    return found


async def _consent_not_started() -> None:
    return None


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """`pc.close()` that leaves no aioice task behind.

    NOTE: aioice 0.13.0 race: a close that lands while `Connection.connect()` awaits its check-list
    state lets `connect()` resume afterwards and start `query_consent()`, a task that never ends.
    `query_consent` is looked up on the instance, so it is replaced by a no-op first; a consent task
    already running is cancelled by aioice's own close.
    """
    for dtls in dtls_transports(pc):
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        if connection is not None:
            connection.query_consent = _consent_not_started
            check = getattr(connection, "_sfu_consent", None)
            if check is not None:
                check.stop()
    await pc.close()


def settle_bundle_owner(pc: RTCPeerConnection, primary_mid: str) -> None:
    """Makes the m-section with `primary_mid` the owner of the shared (max-bundle) transport.

    NOTE: aiortc 1.16 marks the first-created object (transceiver or SCTP) as the owner; when that is
    not the first m-section of our offer (a data channel created before any transceiver), applying the
    answer "un-bundles" the other one and stops the transport they share. Trickled candidates are also
    routed to the owner only, so the owner must be the BUNDLE group's first mid.
    """
    for transceiver in pc.getTransceivers():
        transceiver._bundled = transceiver.mid != primary_mid
    if pc.sctp is not None:
        pc.sctp._bundled = pc.sctp.mid != primary_mid


def hook_dtls(dtls: Any, on_rtp: RtpHook, on_rtcp: RtpHook) -> None:
    """Routes decrypted RTP/RTCP bytes of `dtls` to our functions (called as `hook(data, ...)`)."""
    dtls._handle_rtp_data = on_rtp
    dtls._handle_rtcp_data = on_rtcp


def fast_protect(session: Any, rtcp: bool) -> Callable[[bytes | bytearray], bytes | None]:
    """pylibsrtp's protect without its `bytes`-only check and per-call allocation (SRTP in place in
    the session's own 1500-byte cffi buffer); returns None on a libsrtp error."""
    cdata = session._cdata
    buffer = session._buffer
    srtp = session._srtp
    length = _srtp_ffi.new("int *")
    func = _srtp_lib.srtp_protect_rtcp if rtcp else _srtp_lib.srtp_protect
    ok = _srtp_lib.srtp_err_status_ok
    limit = len(cdata) - 148  # SRTP_MAX_SRTCP_TRAILER_LEN and then some

    def protect(packet: bytes | bytearray) -> bytes | None:
        n = len(packet)
        if n > limit:
            return None
        buffer[0:n] = packet
        length[0] = n
        if func(srtp[0], cdata, length) != ok:
            return None
        out: bytes = buffer[0 : length[0]]
        return out

    return protect


def consent_responder(connection: aioice.ice.Connection) -> Callable[[bytes, Any, Any], bool]:
    """`respond(data, addr, protocol)`: answers a consent check that came on `connection`'s nominated
    pair (that socket, that remote address) with `consent.BindingAnswerer` (the bytes aioice would send,
    a tenth of the Python) and returns True; False leaves the datagram to aioice: nothing nominated yet,
    another socket or address, a nomination (USE-CANDIDATE), a role conflict, anything unusual. What
    is skipped for the answered ones, aioice's `check_incoming`, does nothing more for a nominated pair
    (before nomination it is how a controlled agent learns of it, hence the condition).

    aioice 0.13: `Connection._nominated[1]` (`.protocol`, `.remote_addr`), `local_username`,
    `local_password`, `ice_controlling`; `StunProtocol.transport`."""
    nominated = connection._nominated
    answer = BindingAnswerer(connection.local_username, connection.local_password,
                             connection.ice_controlling).answer  # fmt: skip
    totals = CONSENT_TOTALS

    def respond(data: bytes, addr: Any, protocol: Any) -> bool:
        pair = nominated.get(1)
        transport = protocol.transport
        if pair is None or pair.protocol is not protocol or addr != pair.remote_addr or transport is None:
            return False
        response = answer(data, addr)
        if response is None:
            return False
        transport.sendto(response, addr)
        totals.answered += 1
        return True

    return respond


def disarm_aioice_consent(dtls: Any) -> None:
    """aioice will not start its own consent checks on `dtls`'s ICE connection (the server's
    `start_consent_checks` replaces them once DTLS is up).

    NOTE: aioice 0.13.0 starts `asyncio.create_task(self.query_consent())` at the end of
    `Connection.connect()`, looking `query_consent` up on the instance, so an instance attribute set
    before that wins. aiortc 1.16 starts `connect()` from a task that `setLocalDescription` /
    `setRemoteDescription` schedule (`ensure_future(self.__connect())`, no await after it): called right
    after the server's `setLocalDescription`, this always comes first. `start_consent_checks` still
    cancels a consent task it finds running."""
    connection = dtls.transport._connection
    connection.query_consent = _consent_not_started


def _expire(connection: Any) -> None:
    """Closes `connection` as aioice's `query_consent` does when consent expires (RFC 7675 section 5.1):
    `Connection.close()` emits `ConnectionClosed`, aiortc's `RTCIceTransport._monitor` turns a completed
    transport "failed" and the peer connection follows."""
    task = asyncio.ensure_future(connection.close())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Future[None]] = set()  # consent-expired closes in progress (a task needs an owner)


def start_consent_checks(connection: Any) -> freshness.ConsentCheck | None:
    """The server's consent checks (`sfu.media.freshness`) on `connection`'s nominated pair instead of
    aioice's `query_consent`; None when nothing is nominated (yet). Idempotent.

    aioice 0.13.0 internals: `Connection._nominated[1]` (`.protocol.transport`, `.remote_addr`,
    `.component`), `local_username`, `remote_username`, `remote_password`, `ice_controlling`,
    `_tie_breaker` (the attributes `Connection.build_request(pair, nominate=False)` puts in, PRIORITY from
    `candidate_priority(component, "prflx")`), `_query_consent_task` (cancelled if aioice started one),
    `close()` (`_expire`). The socket's transport closing (aioice's close) ends the checks.
    """
    check: freshness.ConsentCheck | None = getattr(connection, "_sfu_consent", None)
    if check is not None and not check.stopped:
        return check
    pair = connection._nominated.get(1)
    transport = None if pair is None else pair.protocol.transport
    if pair is None or transport is None or transport.is_closing() or connection.remote_password is None:
        return None
    connection.query_consent = _consent_not_started
    task = connection._query_consent_task
    if task is not None and not task.done():
        task.cancel()  # started before `disarm_aioice_consent` (not called): aioice's close awaits it
    attributes = freshness.request_attributes(
        f"{connection.remote_username}:{connection.local_username}",
        aioice.candidate.candidate_priority(pair.component, "prflx"),
        connection.ice_controlling,
        connection._tie_breaker,
    )
    now = freshness.now_s()
    check = freshness.ConsentCheck(
        sendto=transport.sendto,
        protocol=pair.protocol,
        remote_addr=pair.remote_addr,
        attributes=attributes,
        remote_password=connection.remote_password,
        is_closing=transport.is_closing,
        on_expired=lambda: _expire(connection),
        now=now,
    )
    freshness.scheduler_for(asyncio.get_running_loop()).add(check, now)
    connection._sfu_consent = check
    return check


def bypass_ice_queue(dtls: Any, on_rtp: RtpHook, on_rtcp: RtpHook, check_consent: bool = False) -> int:
    """SRTP/SRTCP datagrams go straight from the socket callback to our hooks; returns protocols hooked.

    aioice otherwise tries a STUN parse (an exception per RTP packet), queues the datagram and wakes
    aiortc's DTLS reader task, which unprotects it: per datagram that is a queue round trip and a task
    switch. DTLS datagrams and STUN (RFC 7983 demultiplexing by the first byte) still take aioice's
    path, except the peer's consent checks on the nominated pair (`consent_responder`) and, with
    `check_consent` (the server), the responses to our own consent checks (`start_consent_checks`). Call
    once DTLS is connected (the SRTP session exists, ICE has nominated); protocols are fixed by then.
    """
    srtp = dtls._rx_srtp
    if srtp is None:
        return 0
    unprotect = srtp.unprotect
    unprotect_rtcp = srtp.unprotect_rtcp
    connection = dtls.transport._connection
    respond = consent_responder(connection)
    check = start_consent_checks(connection) if check_consent else None
    refreshed = check.response_received if check is not None else _not_ours
    hooked = 0
    for protocol in connection._protocols:
        if getattr(protocol, "_sfu_bypass", False):
            continue
        original = protocol.datagram_received

        def datagram_received(data: bytes, addr: tuple[Any, ...], original: Any = original,
                              protocol: Any = protocol) -> None:  # fmt: skip
            first = data[0] if data else 0
            if 127 < first < 192:
                try:
                    if len(data) >= 2 and 192 <= data[1] <= 208:
                        on_rtcp(unprotect_rtcp(data))
                    else:
                        on_rtp(unprotect(data))
                except pylibsrtp.Error:
                    pass  # replay or authentication failure: what aiortc does too (drops it)
                return
            if first == 0 and data[:2] == BINDING_REQUEST and respond(data, addr, protocol):
                return
            if first == 1 and refreshed(data, addr, protocol):
                return  # answers our own consent check: aioice has no transaction for it
            original(data, addr)

        protocol.datagram_received = datagram_received
        protocol._sfu_bypass = True
        hooked += 1
    return hooked


_monotonic_ns = time.monotonic_ns


class SrtpSink:
    """Sends RTP/RTCP on a DTLS transport: SRTP protect + `sendto` on the nominated pair, synchronous.

    Congestion control (a subscriber's sink, once its answer negotiated them): every RTP packet, media,
    retransmission or padding, gets the server's abs-send-time and/or the next transport-wide seq
    (`twcc.stamp`) right before SRTP protect, and `history` keeps its send time and size for the
    feedback (`set_congestion_control`).
    """

    __slots__ = (
        "_addr",
        "_dtls",
        "_protect",
        "_protect_rtcp",
        "_sendto",
        "abs_id",
        "connected",
        "history",
        "on_connected",
        "send_failures",
        "stamping",
        "twcc_id",
    )

    def __init__(self, on_connected: Callable[[], None] | None = None) -> None:
        self._dtls: Any = None
        self._protect: Callable[[bytes | bytearray], bytes | None] = _refuse
        self._protect_rtcp: Callable[[bytes | bytearray], bytes | None] = _refuse
        self._sendto: Callable[[bytes, tuple[str, int]], None] | None = None
        self._addr: tuple[str, int] = ("", 0)
        self.connected = False
        self.on_connected = on_connected
        self.send_failures = 0
        self.abs_id = 0
        self.twcc_id = 0
        self.stamping = False
        self.history = SendHistory()

    def set_congestion_control(self, abs_id: int, twcc_id: int) -> None:
        """Extension ids the subscriber's answer accepted (0 = not negotiated)."""
        self.abs_id = abs_id
        self.twcc_id = twcc_id
        self.stamping = bool(abs_id or twcc_id)

    def attach(self, dtls: Any) -> None:
        """Follows `dtls` state: binds when DTLS is connected (SRTP keys exist), unbinds when it ends."""
        if dtls is self._dtls:
            return
        self.detach()
        self._dtls = dtls
        dtls.on("statechange", self._on_state)
        self._on_state()

    def detach(self) -> None:
        if self._dtls is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._dtls.remove_listener("statechange", self._on_state)
            self._dtls = None
        self.connected = False

    def _on_state(self) -> None:
        dtls = self._dtls
        if dtls is None:
            return
        if dtls.state != "connected":
            self.connected = False
            return
        if self.connected:
            return
        pair = dtls.transport._connection._nominated.get(1)
        if dtls._tx_srtp is None or pair is None or pair.protocol.transport is None:
            return
        self._protect = fast_protect(dtls._tx_srtp, rtcp=False)
        self._protect_rtcp = fast_protect(dtls._tx_srtp, rtcp=True)
        self._sendto = pair.protocol.transport.sendto
        self._addr = pair.remote_addr
        self.connected = True
        log.debug("srtp sink bound to %s", self._addr)
        if self.on_connected is not None:
            self.on_connected()

    def send_rtp(self, packet: bytearray) -> bool:
        if not self.connected:
            return False
        if self.stamping:
            now_ns = _monotonic_ns()
            history = self.history
            stamp(packet, self.abs_id, abs_send_time(now_ns), self.twcc_id, history.next_seq & 0xFFFF)
            history.record(len(packet), now_ns // 1000)
        data = self._protect(packet)
        if data is None:
            self.send_failures += 1
            return False
        self._sendto(data, self._addr)  # type: ignore[misc]
        return True

    def send_rtcp(self, packet: bytes) -> bool:
        if not self.connected:
            return False
        data = self._protect_rtcp(packet)
        if data is None:
            self.send_failures += 1
            return False
        self._sendto(data, self._addr)  # type: ignore[misc]
        return True


def _subscriber_codec(kind: str, codec: str, fmtp: str) -> RTCRtpCodecParameters:
    """aiortc's codec entry for a feed's codec: the H.264 profile or VP9 profile-id its fmtp names."""
    params = _fmtp_dict(fmtp)
    candidates = [c for c in CODECS[kind] if c.mimeType.lower() == codec.lower()]
    if not candidates:
        raise ValueError(f"codec {codec} cannot be forwarded")
    chosen = candidates[0]
    if codec.lower() == "video/h264":
        want = str(params.get("profile-level-id", "42e01f")).lower()
        chosen = next((c for c in candidates if str(c.parameters.get("profile-level-id")) == want), chosen)
    elif codec.lower() == "video/vp9":
        want = str(params.get("profile-id", "0"))
        chosen = next((c for c in candidates if str(c.parameters.get("profile-id")) == want), chosen)
    return chosen


def subscriber_payload_type(kind: str, codec: str, fmtp: str) -> int:
    """The payload type subscribers get for this codec (what `add_sendonly_transceiver` returns)."""
    install_forward_only_codecs()
    pt = _subscriber_codec(kind, codec, fmtp).payloadType
    assert pt is not None
    return pt


def add_sendonly_transceiver(
    pc: RTCPeerConnection, kind: str, codec: str, fmtp: str
) -> tuple[Any, int, int, int]:
    """(transceiver, SSRC, payload type, RTX SSRC) for a subscriber m-section with the feed's codec only
    (+ RFC 4588 RTX for video, which the answer may decline).

    The payload type is aiortc's fixed one for that codec, so every subscriber gets the same PTs.
    """
    chosen = _subscriber_codec(kind, codec, fmtp)
    capability = next(
        c
        for c in RTCRtpSender.getCapabilities(kind).codecs
        if c.mimeType.lower() == codec.lower() and c.parameters == chosen.parameters
    )
    preferences = [capability]
    if kind == "video":
        preferences += [
            c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() == "video/rtx"
        ]
    transceiver = pc.addTransceiver(kind, direction="sendonly")
    transceiver.setCodecPreferences(preferences)
    transceiver.receiver.receive = _no_op  # type: ignore[method-assign]
    transceiver.sender.send = _no_op  # type: ignore[method-assign]
    assert chosen.payloadType is not None
    return transceiver, transceiver.sender._ssrc, chosen.payloadType, transceiver.sender._rtx_ssrc


def set_direction(transceiver: RTCRtpTransceiver, direction: str) -> None:
    transceiver.direction = direction


def renew_sender_ssrcs(transceiver: RTCRtpTransceiver) -> tuple[int, int]:
    """New (SSRC, RTX SSRC) for a reused subscriber m-section: the next offer announces them.

    NOTE: aiortc 1.16 writes `a=ssrc`/`a=ssrc-group:FID` from `sender._ssrc` / `sender._rtx_ssrc` at each
    `createOffer` (the sender itself never starts here, so nothing else holds the old values).
    """
    sender = transceiver.sender
    old = {sender._ssrc, sender._rtx_ssrc}
    ssrc = rtx_ssrc = 0
    while ssrc in old or ssrc == 0:
        ssrc = random.getrandbits(32)
    while rtx_ssrc in old or rtx_ssrc in (0, ssrc):
        rtx_ssrc = random.getrandbits(32)
    sender._ssrc = ssrc
    sender._rtx_ssrc = rtx_ssrc
    return ssrc, rtx_ssrc


def transceiver_mid(transceiver: RTCRtpTransceiver) -> str | None:
    mid: str | None = transceiver.mid
    return mid


async def add_ice_candidate(
    pc: RTCPeerConnection, candidate: str, sdp_mid: str | None, index: int | None
) -> None:
    """A trickled remote candidate (`candidate:...` line); an empty line ends the candidates."""
    if not candidate:
        await pc.addIceCandidate(None)
        return
    parsed = candidate_from_sdp(candidate.removeprefix("a=").removeprefix("candidate:"))
    parsed.sdpMid = sdp_mid
    parsed.sdpMLineIndex = index
    await pc.addIceCandidate(parsed)


def _fmtp_dict(fmtp: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in fmtp.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            out[key] = value
    return out


def decoder_threads_running() -> list[str]:
    """Names of aiortc decoder threads alive in this process (tests assert there are none)."""
    import threading

    return [t.name for t in threading.enumerate() if t.name.endswith("-decoder")]


# --- UDP socket buffers and STUN parse hardening (loadtest issue 9) -------------------------------------


def set_udp_buffers(dtls: Any, size_bytes: int) -> tuple[int, int]:
    """SO_SNDBUF on every UDP socket of `dtls`'s ICE connection; the (receive, send) sizes the kernel
    reports for the first one ((0, 0) if there is none).

    Only the send side: a fan-out burst (one packet in, N out) must not hit EAGAIN. The receive side stays
    at aioice's size on purpose: a deeper receive queue on a saturated server turns overload into seconds
    of latency instead of early drops, and SCTP then stops throttling a data-channel sender (measured with
    `loadtest.bench_datachannels`: with a 2 MiB SO_RCVBUF the reliable relay overflowed and reset).

    NOTE: aioice 0.13.0 keeps one `StunProtocol` per local candidate in `Connection._protocols`, each with
    its datagram transport; aioice itself sets SO_RCVBUF to `aioice.turn.UDP_SOCKET_BUFFER_SIZE` (256 KiB).
    Linux caps a request at `net.core.rmem_max` / `wmem_max` and reports double the granted size
    (socket(7)), so the returned values show what a host's sysctls allow.
    """
    effective = (0, 0)
    for protocol in dtls.transport._connection._protocols:
        transport = getattr(protocol, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size_bytes)
            got = (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            )
        except OSError as exc:
            log.warning("cannot size UDP socket buffers: %s", exc)
            continue
        if effective == (0, 0):
            effective = got
    return effective


_original_parse_message: Callable[[bytes], Any] | None = None


def _parse_stun(data: bytes) -> Any:
    """aioice's `stun.parse_message` that raises only ValueError (what its callers catch).

    RFC 7983: a STUN message starts with a byte 0-3, so SRTP/DTLS datagrams are refused before any parse.
    NOTE: aioice 0.13.0 reads attributes with `struct.unpack` on slices it does not length-check, so a
    datagram whose header happens to look like STUN (an RTP packet whose sequence number equals its length
    minus 20) raises `struct.error`, which `StunProtocol.datagram_received` does not catch.
    """
    assert _original_parse_message is not None
    if not data or data[0] > 3:
        raise ValueError("not a STUN message (RFC 7983)")
    try:
        return _original_parse_message(data)
    except (struct.error, UnicodeDecodeError, IndexError) as exc:
        raise ValueError(f"malformed STUN message: {exc}") from None


def install_stun_parse_guard() -> None:
    """Wraps `aioice.stun.parse_message` once per process (aioice's ICE and TURN look it up per call)."""
    global _original_parse_message
    current = aioice.stun.parse_message
    if _original_parse_message is None and not hasattr(current, "__wrapped__"):  # once, whoever comes first
        _original_parse_message = current
        setattr(_parse_stun, "__wrapped__", current)  # noqa: B010 (inspect.unwrap finds aioice's own)
        aioice.stun.parse_message = _parse_stun
