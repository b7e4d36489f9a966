"""The ONLY loadtest module that touches aiortc/aioice/SDK internals (aiortc 1.16.0, aioice 0.13.0).

`tests/unit/loadtest/test_taps_contract.py` fails loudly if an upgrade moves any of this.

- **Send stamp** (publishers): aiortc's `RTCRtpSender` hands every serialized RTP packet to
  `self.transport._send_rtp(bytes)` (looked up on the instance) before SRTP protection. `hook_send`
  puts an instance attribute there that appends one RFC 8285 one-byte element to the header extension:
  the send time (`time.monotonic_ns()`, 8 bytes, CLOCK_MONOTONIC is one clock for every process of the
  machine). Its URI is negotiated by appending it to aiortc's module-level `HEADER_EXTENSIONS`
  (`install_send_time_extension`, once per process, publishers and subscribers alike). We borrow the
  webrtc.org video-timing URI because pysfu forwards that element opaquely (only its id is rewritten);
  the content is ours, so only this tool may read it.
- **Socket tap** (subscribers): aioice keeps one `StunProtocol` per local socket in
  `Connection._protocols`, and the event loop calls `protocol.datagram_received(data, addr)` (an
  instance attribute wins). `SocketTap` puts one there that counts SRTP media datagrams by the RTP
  header, which SRTP leaves in the clear (RFC 3711 section 3.1: only the payload is encrypted; header
  extensions stay readable without RFC 6904), and drops them: no unprotect, no parse, no aiortc
  receiver. STUN, DTLS and RTCP datagrams (RFC 7983 / RFC 5761 demultiplexing) go on to aioice
  unchanged, so ICE consent, DTLS and the server's sender reports work as before.
- **Raw send path** (`--publisher-path raw`): a negotiated transceiver's SSRC, payload type, mid
  extension id, SRTP session and nominated ICE pair (`raw_send_path`), so `loadtest.raw_publisher` can
  send pre-packetized RTP without aiortc's per-packet objects.
- **Raw publishers' RTCP**: the sender's RTCP CNAME (`RTCRtpSender.__cname`) for the raw stream's own
  sender reports, and aiortc's sender RTCP loop stopped (`silence_sender_rtcp`).
- **Quiet receivers** (kernel path): each aiortc receiver's `_run_rtcp` loop (`silence_receivers`) and
  the connection's own consent checks (`Connection.query_consent` / `_query_consent_task`,
  `quiet_consent`).
- **Fast consent answers** (kernel path, raw publishers): the ICE sockets' `datagram_received` answers
  Binding requests on the nominated pair itself (`answer_consent_fast`, `bridge.consent_responder`).
- The subscriber transport of a `client_sdk.Session`: `session._subscriber.pc` (`subscriber_dtls`), and
  the local ports of its ICE sockets, `protocol.transport` of each aioice protocol (`local_ports`).
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiortc.codecs import HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from loadtest.stats import StreamStats
from sfu.media.bridge import consent_responder, fast_protect
from sfu.media.consent import BINDING_REQUEST

SEND_TIME_URI: Final = "http://www.webrtc.org/experiments/rtp-hdrext/video-timing"
MID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:mid"
SEND_TIME_ID: Final = 8  # pysfu's router id for this URI, so an aiortc publisher needs no id rewrite
_ONE_BYTE: Final = 0xBEDE
_EXT_HEAD: Final = struct.Struct("!HH")
# one element: id 8, 8 bytes of monotonic ns, then 3 bytes of padding (RFC 8285 section 4.2)
_STAMP: Final = struct.Struct("!BQ3x")
_STAMP_BYTE: Final = (SEND_TIME_ID << 4) | 7
_SEQ_TS: Final = struct.Struct("!HI")
_U64: Final = struct.Struct("!Q")
_monotonic_ns = time.monotonic_ns
AUTH_TAG_BYTES: Final[dict[bytes, int]] = {
    b"SRTP_AEAD_AES_256_GCM": 16,
    b"SRTP_AEAD_AES_128_GCM": 16,
    b"SRTP_AES128_CM_SHA1_80": 10,
}


def install_send_time_extension() -> None:
    """Offers/answers `SEND_TIME_URI` on audio and video m-sections of this process (idempotent)."""
    for kind in ("audio", "video"):
        table = HEADER_EXTENSIONS[kind]
        if not any(e.uri == SEND_TIME_URI for e in table):
            table.append(RTCRtpHeaderExtensionParameters(id=SEND_TIME_ID, uri=SEND_TIME_URI))


def add_send_stamp(data: bytes, now_ns: int) -> bytes:
    """`data` (an RTP packet) with the send-time element appended to its extension block (or a new one)."""
    b0 = data[0]
    off = 12 + ((b0 & 0x0F) << 2)
    element = _STAMP.pack(_STAMP_BYTE, now_ns)
    if not b0 & 0x10:
        head = _EXT_HEAD.pack(_ONE_BYTE, 3)
        return bytes((b0 | 0x10,)) + data[1:off] + head + element + data[off:]
    if len(data) < off + 4:
        return data
    profile, words = _EXT_HEAD.unpack_from(data, off)
    end = off + 4 + (words << 2)
    if profile != _ONE_BYTE or end > len(data):
        return data  # two-byte form (elements > 16 bytes): left alone, that packet has no stamp
    return data[:off] + _EXT_HEAD.pack(_ONE_BYTE, words + 3) + data[off + 4 : end] + element + data[end:]


def read_send_stamp(data: bytes, b0: int) -> int:
    """The send time stamped by `add_send_stamp`, or -1; the element is found by its id (the server may
    have rewritten the other ids and appended its own elements)."""
    i = 12 + ((b0 & 0x0F) << 2)
    if not b0 & 0x10 or len(data) < i + 4 or data[i] != 0xBE or data[i + 1] != 0xDE:
        return -1
    end = min(i + 4 + ((data[i + 2] << 8 | data[i + 3]) << 2), len(data))
    i += 4
    while i + 9 <= end:
        b = data[i]
        if b == 0:
            i += 1
            continue
        if b == _STAMP_BYTE:
            return int(_U64.unpack_from(data, i + 1)[0])
        if b >> 4 == 15:
            return -1
        i += 2 + (b & 0x0F)
    return -1


def hook_send(transport: Any, on_packet: Callable[[bytes, int], None]) -> bool:
    """Stamps every RTP packet (not RTCP) `transport` sends and calls `on_packet(stamped, now_ns)`;
    False if aiortc moved `_send_rtp`."""
    original: Callable[[bytes], Awaitable[None]] | None = getattr(transport, "_send_rtp", None)
    if original is None:
        return False

    async def send_rtp(data: bytes) -> None:
        if len(data) >= 12 and not 192 <= data[1] <= 223:  # RTCP packet types (RFC 5761 section 4)
            now_ns = _monotonic_ns()
            data = add_send_stamp(data, now_ns)
            on_packet(data, now_ns)
        await original(data)

    transport._send_rtp = send_rtp
    return True


def local_ports(dtls: Any) -> list[int]:
    """The local UDP ports of a DTLS transport's ICE sockets (aioice `Connection._protocols`)."""
    ports = []
    for protocol in dtls.transport._connection._protocols:
        transport = getattr(protocol, "transport", None)
        name = transport.get_extra_info("sockname") if transport is not None else None
        if name:
            ports.append(int(name[1]))
    return ports


@dataclass(frozen=True, slots=True)
class RawSendPath:
    """What a publisher needs to send RTP without aiortc's sender: the negotiated stream and the SRTP
    session + socket of its transport (`raw_send_path`)."""

    ssrc: int
    payload_type: int
    mime_type: str
    mid: str
    mid_ext_id: int  # 0: not negotiated
    stamp_ext_id: int  # SEND_TIME_URI's id, 0: not negotiated
    protect: Callable[[bytes], bytes | None]  # None: libsrtp refused the packet
    sendto: Callable[[bytes, Any], None]
    remote_addr: Any
    is_closing: Callable[[], bool]  # the socket's transport: aioice closed it (consent lost, or close())
    dtls: Any = None  # the aiortc RTCDtlsTransport (for `answer_consent_fast`)
    fileno: int = -1  # the ICE socket's descriptor (whole frames in one `sendmsg`), -1: unknown
    protect_rtcp: Callable[[bytes], bytes | None] | None = None  # SRTCP, for the stream's sender reports
    cname: str = ""  # the sender's RTCP CNAME (SDES), as negotiated


def raw_send_path(transceiver: Any) -> RawSendPath | None:
    """The send path of a negotiated, connected aiortc transceiver, or None if it is not connected yet.

    aiortc 1.16: `transceiver._codecs` (negotiated, primary first) and `._headerExtensions`; the sender's
    `_ssrc`; `RTCDtlsTransport._tx_srtp` (a pylibsrtp `Session`, protected through `bridge.fast_protect`,
    whose contract the server's tests hold) and its ICE
    connection's nominated pair for component 1 (`Connection._nominated[1]`: `.protocol.transport`, an
    asyncio datagram transport, and `.remote_addr`), as `RTCDtlsTransport._send_rtp` and
    `Connection.sendto` use them.
    """
    sender = transceiver.sender
    dtls = sender.transport
    srtp = getattr(dtls, "_tx_srtp", None)
    pair = dtls.transport._connection._nominated.get(1)
    codecs = transceiver._codecs
    if srtp is None or pair is None or not codecs or pair.protocol.transport is None:
        return None
    ext_ids = {e.uri: e.id for e in transceiver._headerExtensions}
    return RawSendPath(
        ssrc=sender._ssrc,
        payload_type=codecs[0].payloadType,
        mime_type=codecs[0].mimeType.lower(),
        mid=transceiver.mid or "",
        mid_ext_id=ext_ids.get(MID_URI, 0),
        stamp_ext_id=ext_ids.get(SEND_TIME_URI, 0),
        protect=fast_protect(srtp, rtcp=False),
        sendto=pair.protocol.transport.sendto,
        remote_addr=pair.remote_addr,
        is_closing=pair.protocol.transport.is_closing,
        dtls=dtls,
        fileno=_fileno(pair.protocol.transport),
        protect_rtcp=fast_protect(srtp, rtcp=True),
        cname=getattr(sender, "_RTCRtpSender__cname", None) or "",
    )


def _fileno(transport: Any) -> int:
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else -1
    except (OSError, ValueError):
        return -1


def silence_receivers(session: Any) -> int:
    """Keeps every receiver of a `client_sdk.Session`'s subscriber peer connection from starting its RTCP
    loop; returns how many receivers.

    aiortc 1.16's `RTCRtpReceiver.receive()` (called once DTLS is up, after `subscribe` returned) starts
    `asyncio.ensure_future(self._run_rtcp())`, a loop that wakes every 0.5-1.5 s to send receiver
    reports. A receiver that gets no RTP (the kernel path) has nothing to report, but the wakeups alone
    cost a load process more than its share of the packets (a wakeup costs ~150 us of CPU on this VM).
    An instance attribute `_run_rtcp` wins the lookup: it only sets the started/exited events that
    `stop()` waits for, so closing works as usual."""
    receivers = [t.receiver for t in session._subscriber.pc.getTransceivers()]
    for receiver in receivers:

        async def quiet(receiver: Any = receiver) -> None:
            receiver._RTCRtpReceiver__rtcp_started.set()
            receiver._RTCRtpReceiver__rtcp_exited.set()

        receiver._run_rtcp = quiet
    return len(receivers)


def silence_sender_rtcp(sender: Any) -> None:
    """Stops aiortc's RTCP loop of a raw publisher's sender; the raw stream sends its sender reports.

    aiortc 1.16's `RTCRtpSender.send()` starts `self.__rtcp_task = asyncio.ensure_future(self._run_rtcp())`,
    a loop that wakes every 0.5-1.5 s to send an SR + SDES through `self._send_rtcp` and a BYE when it
    is cancelled. For a raw publisher those SRs say nothing true (aiortc sent no packet: NTP and RTP
    time 0, counts 0) and each costs a wakeup. `_send_rtcp` (looked up on the instance) becomes a
    no-op first, so the BYE of the cancelled loop goes nowhere, then the task is cancelled; the
    started/exited events `stop()` waits for are set, so closing works as usual. Before `send()` ran,
    an instance `_run_rtcp` that only sets them keeps the loop from starting at all."""

    async def nothing(packets: Any) -> None:
        return None

    async def quiet() -> None:
        sender._RTCRtpSender__rtcp_started.set()
        sender._RTCRtpSender__rtcp_exited.set()

    sender._send_rtcp = nothing
    sender._run_rtcp = quiet
    task = sender._RTCRtpSender__rtcp_task
    if task is not None and not task.done():
        task.cancel()
    sender._RTCRtpSender__rtcp_started.set()
    sender._RTCRtpSender__rtcp_exited.set()


def quiet_consent(dtls: Any) -> None:
    """Stops this side's ICE consent checks on a DTLS transport's connection (the peer's checks are
    still answered).

    aioice 0.13 starts `asyncio.create_task(self.query_consent())` when `Connection.connect()` succeeds:
    every ~5 s a STUN request and its response, two wakeups. A load subscriber that receives nothing
    has no use for them (the server checks consent itself, and the subscriber answers); an instance
    attribute wins the lookup if `connect()` has not finished yet, a running task is cancelled."""
    connection = dtls.transport._connection

    async def no_consent_checks() -> None:
        return None

    connection.query_consent = no_consent_checks
    task = connection._query_consent_task
    if task is not None and not task.done():
        task.cancel()


def answer_consent_fast(dtls: Any) -> int:
    """The server's consent checks reaching a DTLS transport's ICE sockets are answered by
    `bridge.consent_responder` (on the nominated pair, as the server answers its peers) before aioice
    sees them; returns protocols hooked. Safe to call before ICE completes: until a pair is nominated
    every request goes to aioice. aioice 0.13: `Connection._protocols`, and the event loop calls
    `protocol.datagram_received(data, addr)` (an instance attribute wins)."""
    connection = dtls.transport._connection
    respond = consent_responder(connection)
    hooked = 0
    for protocol in connection._protocols:
        if getattr(protocol, "_loadtest_answers", False):
            continue
        original = protocol.datagram_received

        def datagram_received(data: bytes, addr: Any, original: Any = original,
                              protocol: Any = protocol) -> None:  # fmt: skip
            if data[:2] == BINDING_REQUEST and respond(data, addr, protocol):
                return
            original(data, addr)

        protocol.datagram_received = datagram_received
        protocol._loadtest_answers = True
        hooked += 1
    return hooked


def subscriber_dtls(session: Any) -> Any:
    """The DTLS transport (bundled: one) of a `client_sdk.Session`'s subscriber peer connection."""
    transceivers = session._subscriber.pc.getTransceivers()
    return transceivers[0].receiver.transport if transceivers else None


class CountedStream:
    """What `SocketTap` keeps per SSRC: the stream's counters and where its latency samples go."""

    __slots__ = ("latency_ms", "payload_bytes", "stats")

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats
        self.payload_bytes = 0
        self.latency_ms: list[float] | None = None  # a list while latency is measured


class SocketTap:
    """Counts the SRTP media of one subscriber transport at its UDP sockets, before unprotect.

    `bind(ssrc, stream)` before the first packet; packets of other SSRCs (RTX, which only answers NACKs,
    which this subscriber does not send) are counted in `unmatched` and dropped.
    """

    def __init__(self, dtls: Any) -> None:
        self._dtls = dtls
        self.streams: dict[bytes, CountedStream] = {}
        self.unmatched = 0
        self.tag_bytes = 16
        self.protocols: list[Any] = []  # the aioice protocols hooked

    def bind(self, ssrc: int, stream: CountedStream) -> None:
        self.streams[ssrc.to_bytes(4, "big")] = stream

    def install(self) -> int:
        """Hooks every socket of the transport's ICE connection; returns how many (0: nothing to tap)."""
        connection = self._dtls.transport._connection
        ssl = getattr(self._dtls, "_ssl", None)
        if ssl is not None:
            with contextlib.suppress(Exception):
                self.tag_bytes = AUTH_TAG_BYTES.get(ssl.get_selected_srtp_profile(), self.tag_bytes)
        for protocol in connection._protocols:
            if "datagram_received" in vars(protocol):
                continue
            protocol.datagram_received = self._make_hook(protocol.datagram_received)
            self.protocols.append(protocol)
        return len(self.protocols)

    def detach(self) -> None:
        for protocol in self.protocols:
            with contextlib.suppress(AttributeError):
                del protocol.datagram_received
        self.protocols = []

    def _make_hook(self, original: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        streams = self.streams
        tag_bytes = self.tag_bytes
        unpack_seq_ts = _SEQ_TS.unpack_from
        now = _monotonic_ns

        def datagram_received(data: bytes, addr: Any) -> None:
            if len(data) < 12 or not 127 < data[0] < 192 or 191 < data[1] < 224:
                original(data, addr)  # STUN, DTLS, RTCP: aioice and aiortc as usual
                return
            counted = streams.get(data[8:12])
            if counted is None:
                self.unmatched += 1
                return
            arrival_ns = now()
            seq, ts = unpack_seq_ts(data, 2)
            counted.stats.on_packet(seq, ts, arrival_ns)
            b0 = data[0]
            header = 12 + ((b0 & 0x0F) << 2)
            if b0 & 0x10 and len(data) > header + 4:
                header += 4 + ((data[header + 2] << 8 | data[header + 3]) << 2)
            counted.payload_bytes += len(data) - header - tag_bytes
            samples = counted.latency_ms
            if samples is not None:
                sent_ns = read_send_stamp(data, b0)
                if sent_ns >= 0:
                    samples.append((arrival_ns - sent_ns) / 1e6)

        return datagram_received
