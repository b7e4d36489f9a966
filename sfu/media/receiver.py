"""One receiver per published feed (SSRC): parse once, keep a ring, find losses, fan out to forwarders.

Simulcast (RFC 8853): a feed's head receiver is its layer 0 and holds every layer's receiver in
`layers` (each its own SSRC, seq space, ring, NACK and key frame state). All layers fan out to the head's
forwarders; layers above 0 pass their index and reach only layer-aware consumers (`Forwarder.layered`),
so a consumer that is not layer-aware keeps seeing one stream: layer 0 (the recorder is a Forwarder
and layered, recording the top layer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sfu.media.counters import DropReason, new_drops
from sfu.media.histogram import ARRIVAL_TO_SEND, SAMPLE_MASK
from sfu.media.keyframes import KeyFrameRequester
from sfu.media.retransmit import RetransmitBuffer
from sfu.media.rtcp import build_nack
from sfu.media.rtp import (
    HEADER,
    KEY_FRAME_DETECTORS,
    SEQ_MASK,
    never_key_frame,
    payload_bounds,
    rewrite_extension_ids,
    vp8_key_frame_size,
)

if TYPE_CHECKING:
    from sfu.media.forwarder import Forwarder

MAX_NACK_TRIES = 3
MAX_MISSING = 256
_HEADER_UNPACK = HEADER.unpack_from
_TOO_SHORT = DropReason.TOO_SHORT
_BAD_VERSION = DropReason.BAD_VERSION
_UNKNOWN_PT = DropReason.UNKNOWN_PAYLOAD_TYPE
_DUPLICATE = DropReason.DUPLICATE
_MUTED = DropReason.MUTED
_monotonic_ns = time.monotonic_ns
_observe_arrival_to_send = ARRIVAL_TO_SEND.observe_ns


class ReceiverListener(Protocol):
    """The publisher transport: sends what a receiver asks for on its next RTCP flush."""

    def on_receiver_feedback(self, receiver: Receiver, urgent: bool) -> None: ...


class Receiver:
    """Receives one feed from its publisher and hands each packet to a tuple of forwarders."""

    __slots__ = (
        "active_mask",
        "base_seq",
        "bitrate_bps",
        "clock_rate",
        "codec",
        "cycles",
        "detect_key_frame",
        "drops",
        "expected_prior",
        "ext_id_map",
        "ext_identity",
        "feedback",
        "fmtp",
        "forwarders",
        "height",
        "highest_seq",
        "jitter_q4",
        "key_frame_requester",
        "key_frames",
        "kind",
        "last_key_frame_ns",
        "last_packet_ns",
        "last_transit",
        "layer",
        "layers",
        "listener",
        "mid",
        "missing",
        "muted",
        "nacks_out",
        "octets",
        "octets_at_rate",
        "on_layers_wanted",
        "packets",
        "payload_type",
        "pli_pending",
        "received_prior",
        "repaired",
        "rid",
        "ring",
        "sender_ssrc",
        "sr_arrival_ns",
        "sr_ntp",
        "sr_rtp_ts",
        "ssrc",
        "vp8",
        "wanted_mask",
        "width",
    )

    def __init__(
        self,
        listener: ReceiverListener,
        *,
        mid: str,
        kind: str,
        codec: str,
        clock_rate: int,
        payload_type: int,
        ssrc: int = 0,
        ext_id_map: bytes = bytes(256),
        ext_identity: bool = True,
        ring_size: int = 1024,
        sender_ssrc: int = 1,
        rid: str = "",
        layer: int = 0,
    ) -> None:
        self.listener = listener
        self.mid = mid
        self.kind = kind
        self.codec = codec
        self.fmtp = ""  # the publisher's fmtp for its payload type (H.264 profile for subscribers)
        self.clock_rate = clock_rate
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.ext_id_map = ext_id_map
        self.ext_identity = ext_identity
        self.detect_key_frame = KEY_FRAME_DETECTORS.get(codec.lower(), never_key_frame)
        self.ring = RetransmitBuffer(ring_size if kind == "video" else 64)
        self.forwarders: tuple[Forwarder, ...] = ()
        self.muted = False
        self.drops = new_drops()
        self.packets = 0
        self.octets = 0
        self.key_frames = 0
        self.repaired = 0
        self.nacks_out = 0
        self.highest_seq = -1
        self.base_seq = 0
        self.cycles = 0
        self.jitter_q4 = 0
        self.last_transit = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.missing: dict[int, int] = {}
        self.last_key_frame_ns = 0
        self.sender_ssrc = sender_ssrc  # our RTCP SSRC towards the publisher
        # PLI/FIR to the publisher at most once per 500 ms per feed (sfu/media/keyframes.py)
        self.key_frame_requester = KeyFrameRequester(sender_ssrc, ssrc) if kind == "video" else None
        self.feedback: list[bytes] = []  # RTCP for the publisher, sent on the transport's next flush
        self.pli_pending = False  # a key frame was wanted before the SSRC was known
        self.sr_ntp = 0
        self.sr_rtp_ts = 0
        self.sr_arrival_ns = 0
        self.rid = rid
        self.layer = layer  # this stream's simulcast layer index (0 also without simulcast)
        self.layers: tuple[Receiver, ...] = (self,)  # on a head: every layer, lowest first
        self.width = 0  # from the offer's a=rid max-width or the last VP8 key frame
        self.height = 0
        self.vp8 = codec.lower() == "video/vp8"
        self.last_packet_ns = 0
        self.octets_at_rate = 0
        self.bitrate_bps = 0
        self.active_mask = 1  # head: which layers arrive now (bit i = layer i)
        self.wanted_mask = -1  # head: which layers some consumer wants (dynacast); -1 = not computed
        self.on_layers_wanted: Callable[[Receiver], None] | None = None

    def on_rtp(self, data: bytes, now_ns: int) -> None:
        """The per-packet function: one header parse, then every forwarder (STYLE.md section 6)."""
        if len(data) < 12:
            self.drops[_TOO_SHORT] += 1
            return
        b0, b1, seq, ts, _ssrc = _HEADER_UNPACK(data)
        if b0 >> 6 != 2:
            self.drops[_BAD_VERSION] += 1
            return
        if b1 & 0x7F != self.payload_type:
            self.drops[_UNKNOWN_PT] += 1
            return
        start, end, profile, ext_end = payload_bounds(data, b0)
        if start > end:
            self.drops[_TOO_SHORT] += 1
            return
        # RFC 3550 appendix A.1 (sequence tracking) and A.8 (interarrival jitter).
        highest = self.highest_seq
        if highest < 0:
            self.base_seq = seq
            highest = self.highest_seq = (seq - 1) & SEQ_MASK
        delta = (seq - highest) & SEQ_MASK
        if delta == 0:
            self.drops[_DUPLICATE] += 1
            return
        if delta < 0x8000:
            if seq < highest:
                self.cycles += 0x10000
            self.highest_seq = seq
            if delta > 1 and self.kind == "video":
                self._on_gap(seq, delta)
            transit = (now_ns * self.clock_rate // 1_000_000_000) - ts
            d = transit - self.last_transit
            if self.packets:
                self.jitter_q4 += (d if d >= 0 else -d) - (self.jitter_q4 >> 4)
            self.last_transit = transit
        elif self.missing.pop(seq, None) is not None:
            self.repaired += 1
        elif self.ring.has(seq):
            self.drops[_DUPLICATE] += 1
            return
        self.packets += 1
        self.octets += len(data)
        self.last_packet_ns = now_ns
        if profile and not self.ext_identity:
            buf = bytearray(data)
            rewrite_extension_ids(buf, 12 + ((b0 & 0x0F) << 2) + 4, ext_end, profile, self.ext_id_map)
            data = bytes(buf)
        key_frame = self.detect_key_frame(data, start, end)
        if key_frame:
            self.key_frames += 1
            self.last_key_frame_ns = now_ns
            if self.key_frame_requester is not None:
                self.key_frame_requester.on_key_frame()
            if self.vp8:
                width, height = vp8_key_frame_size(data, start, end)
                if width:
                    self.width = width
                    self.height = height
        self.ring.store(seq, data)
        if self.muted:
            self.drops[_MUTED] += 1
            return
        layer = self.layer
        if layer:
            for forwarder in self.forwarders:
                forwarder.forward(data, seq, ts, key_frame, now_ns, layer)
        else:
            for forwarder in self.forwarders:
                forwarder.forward(data, seq, ts, key_frame, now_ns)
        if not self.packets & SAMPLE_MASK:  # 1 in 64 per receiver: arrival -> after the last sendto
            _observe_arrival_to_send(_monotonic_ns() - now_ns)

    def _on_gap(self, seq: int, delta: int) -> None:
        """Remembers the sequence numbers skipped before `seq` so the next RTCP flush NACKs them."""
        missing = self.missing
        for i in range(min(delta - 1, MAX_MISSING), 0, -1):  # oldest first
            missing[(seq - i) & SEQ_MASK] = 0
        if len(missing) > MAX_MISSING:
            for old in list(missing)[: len(missing) - MAX_MISSING]:
                del missing[old]
        self.listener.on_receiver_feedback(self, False)

    def take_nacks(self) -> list[int]:
        """Sequence numbers to NACK now (each at most MAX_NACK_TRIES times), RFC 4585 section 6.2.1."""
        if not self.missing:
            return []
        out: list[int] = []
        missing = self.missing
        for seq, tries in list(missing.items()):
            if tries >= MAX_NACK_TRIES or (self.highest_seq - seq) & SEQ_MASK >= self.ring.size:
                del missing[seq]
                continue
            missing[seq] = tries + 1
            out.append(seq)
        if out:
            self.nacks_out += 1
        return out

    def request_key_frame(self, now_ns: int) -> None:
        """Asks the publisher for a key frame; `KeyFrameRequester` coalesces (one per 500 ms per feed)."""
        requester = self.key_frame_requester
        if requester is None:
            return
        if not self.ssrc:
            self.pli_pending = True
            return
        packet = requester.request_key_frame(now_ns // 1_000_000)
        if packet is not None:
            self.feedback.append(packet)
            self.listener.on_receiver_feedback(self, True)

    def take_feedback(self, now_ns: int) -> list[bytes]:
        """RTCP for the publisher due now: key frame requests (incl. remembered ones) and NACKs."""
        out = self.feedback
        self.feedback = []
        if self.key_frame_requester is not None and self.ssrc:
            packet = self.key_frame_requester.poll(now_ns // 1_000_000)
            if packet is not None:
                out.append(packet)
        if self.missing and self.ssrc:
            nacks = self.take_nacks()
            if nacks:
                out.append(build_nack(self.sender_ssrc, self.ssrc, nacks))
        return out

    def set_ssrc(self, ssrc: int, now_ns: int) -> None:
        """The media SSRC, learned from RTP (MID extension or payload type) or changed by the publisher."""
        self.ssrc = ssrc
        if self.key_frame_requester is not None:
            self.key_frame_requester.set_ssrc(ssrc)
        if self.pli_pending:
            self.pli_pending = False
            self.request_key_frame(now_ns)

    @property
    def plis_out(self) -> int:
        return self.key_frame_requester.requests_sent if self.key_frame_requester is not None else 0

    def on_sender_report(self, ntp: int, rtp_ts: int, now_ns: int) -> None:
        """The publisher's NTP <-> RTP mapping (RFC 3550 6.4.1), translated per subscriber on send."""
        self.sr_ntp = ntp
        self.sr_rtp_ts = rtp_ts
        self.sr_arrival_ns = now_ns

    def report_block(self, now_ns: int) -> tuple[int, int, int, int, int, int, int]:
        """(ssrc, fraction lost, cumulative lost, ext highest seq, jitter, LSR, DLSR): RFC 3550 6.4.1."""
        ext_highest = self.cycles + self.highest_seq
        expected = ext_highest - self.base_seq + 1
        lost = max(0, expected - self.packets)
        expected_interval = expected - self.expected_prior
        received_interval = self.packets - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.packets
        lost_interval = expected_interval - received_interval
        fraction = (
            (lost_interval << 8) // expected_interval if expected_interval > 0 and lost_interval > 0 else 0
        )
        lsr = (self.sr_ntp >> 16) & 0xFFFFFFFF
        dlsr = (now_ns - self.sr_arrival_ns) * 65536 // 1_000_000_000 if self.sr_ntp else 0
        return (self.ssrc, min(fraction, 255), lost, ext_highest & 0xFFFFFFFF, self.jitter_q4 >> 4, lsr, dlsr)

    def add_forwarder(self, forwarder: Forwarder) -> None:
        if forwarder not in self.forwarders:
            self.forwarders = (*self.forwarders, forwarder)
            if len(self.layers) > 1 and getattr(forwarder, "layered", False):
                # layers may have started between the forwarder's creation and now (SDP round trip)
                forwarder.selector.set_available(self.active_mask)
            self._share_forwarders()

    def remove_forwarder(self, forwarder: Forwarder) -> None:
        self.forwarders = tuple(f for f in self.forwarders if f is not forwarder)
        self._share_forwarders()

    def _share_forwarders(self) -> None:
        """Layers above 0 fan out to the head's layer-aware forwarders (tuples replaced, never mutated)."""
        if len(self.layers) > 1:
            layered = tuple(f for f in self.forwarders if getattr(f, "layered", False))
            for receiver in self.layers[1:]:
                receiver.forwarders = layered
            self.update_wanted_layers()

    def set_layers(self, layers: tuple[Receiver, ...]) -> None:
        """Makes this receiver the head (layer 0) of a simulcast feed."""
        self.layers = layers
        self.active_mask = 0
        self._share_forwarders()

    def set_active_layers(self, mask: int, now_ns: int) -> None:
        """Head: the layers that arrive changed; layer-aware forwarders retarget (within one RTCP tick)."""
        self.active_mask = mask
        for forwarder in self.forwarders:
            if getattr(forwarder, "layered", False):
                forwarder.on_layers_available(mask, now_ns)

    def update_wanted_layers(self) -> None:
        """Head: recomputes which layers some consumer wants (dynacast); tells `on_layers_wanted`.

        A forwarder wants `wanted_layers_mask` (including its cap, not only what arrives: a paused layer
        must be asked for); consumers that are not layer-aware want layer 0.
        """
        if len(self.layers) < 2:
            return
        mask = 0
        for forwarder in self.forwarders:
            mask |= getattr(forwarder, "wanted_layers_mask", 1)
        if mask != self.wanted_mask:
            self.wanted_mask = mask
            if self.on_layers_wanted is not None:
                self.on_layers_wanted(self)

    @property
    def wanted_rids(self) -> list[str]:
        return [r.rid for r in self.layers if self.wanted_mask >> r.layer & 1]

    def set_muted(self, muted: bool) -> None:
        """Muted feeds are received (ring, stats) but not forwarded; unmuting resyncs on a key frame."""
        if muted == self.muted:
            return
        for receiver in self.layers:
            receiver.muted = muted
        for forwarder in self.forwarders:
            forwarder.stop()

    def close(self) -> None:
        for forwarder in self.forwarders:
            forwarder.stop()
        for receiver in self.layers:
            receiver.forwarders = ()
            receiver.ring.clear()
        self.forwarders = ()

    def stats(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "octets": self.octets,
            "key_frames": self.key_frames,
            "repaired": self.repaired,
            "nacks_out": self.nacks_out,
            "plis_out": self.plis_out,
            "jitter": self.jitter_q4 >> 4,
        }
