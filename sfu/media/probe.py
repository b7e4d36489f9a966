"""Bandwidth probes toward one subscriber: RTP padding on a video forwarder's RTX SSRC (RFC 4588; padding-
only RTX packets are what libwebrtc probes with too), sent in short bursts on the subscriber's 50 ms
RTCP timer, before the allocator raises a layer or resumes paused video.

A probe asks: does `target_bps` (what the subscriber would receive after the upgrade) get through? The
padding fills the gap between the media sent now and the target. The send path stamps every padding
packet like media (abs-send-time, transport-wide seq), so a transport-cc subscriber's feedback covers it
(`gcc.SendSideEstimator.probe_*` turns that into the proven rate) and a REMB subscriber's own estimator
sees the higher arrival rate (its REMB may grow only up to 1.5x what arrives).

Off the packet path: nothing here runs unless a probe is on; the padding buffer is built once per probe.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sfu.media.forwarder import Forwarder, RtpSink

PADDING: Final = 255  # RFC 3550 5.1: the last octet counts the padding, so at most 255 octets
PACKET_BYTES: Final = 12 + PADDING  # + 8 octets of extensions stamped by the send path
_HEADER: Final = struct.Struct("!BBHII")
MAX_PACKETS_PER_TICK: Final = 60  # 60 x 275 B per 50 ms: ~2.6 Mbit/s of padding at most
SPREAD: Final = 5
SLICE_S: Final = 0.01


@dataclass(slots=True)
class BandwidthTotals:
    """Process-wide counters for /metrics (transports come and go; these only grow)."""

    probes: int = 0
    probe_successes: int = 0
    padding_packets: int = 0
    padding_bytes: int = 0
    twcc_feedbacks: int = 0
    bandwidth_pauses: int = 0


BANDWIDTH_TOTALS = BandwidthTotals()


def probe_carrier(forwarders: Sequence[Forwarder]) -> Forwarder | None:
    """A video forwarder whose subscriber accepted RTX (padding needs an SSRC of its own), or None."""
    for f in forwarders:
        if f.video and f.rtx_payload_type >= 0 and f.rtx_ssrc:
            return f
    return None


class Prober:
    """One probe at a time: `start`, then `tick` every timer period until `sending` is False."""

    __slots__ = (
        "_carry_bytes",
        "_last_ns",
        "_padding",
        "bytes_sent",
        "ends_ns",
        "packets_sent",
        "padding_bps",
        "sending",
        "target_bps",
    )

    def __init__(self) -> None:
        self.sending = False
        self.target_bps = 0
        self.padding_bps = 0
        self.ends_ns = 0
        self.bytes_sent = 0  # padding octets over all probes (metrics: probe bytes)
        self.packets_sent = 0
        self._last_ns = 0
        self._carry_bytes = 0.0
        self._padding = bytes(PADDING - 1) + bytes((PADDING,))

    def start(self, target_bps: int, media_bps: int, now_ns: int, duration_ns: int) -> None:
        self.sending = True
        self.target_bps = target_bps
        self.padding_bps = max(0, target_bps - media_bps)
        self.ends_ns = now_ns + duration_ns
        self._last_ns = now_ns
        self._carry_bytes = 0.0

    def tick(self, carrier: Forwarder | None, sink: RtpSink, now_ns: int) -> int:
        """Sends the padding due since the last tick on `carrier`'s RTX SSRC; returns packets sent."""
        if not self.sending:
            return 0
        if now_ns >= self.ends_ns:
            self.sending = False
            now_ns = self.ends_ns
        due = self._carry_bytes + self.padding_bps * (now_ns - self._last_ns) / 8e9
        self._last_ns = now_ns
        if carrier is None or not sink.connected:
            self._carry_bytes = 0.0
            return 0
        count = min(int(due // PACKET_BYTES), MAX_PACKETS_PER_TICK)
        self._carry_bytes = due - count * PACKET_BYTES if count < MAX_PACKETS_PER_TICK else 0.0
        if count <= 0:
            return 0
        # paced, as a pacer would: the tick's packets in `SPREAD` slices 10 ms apart, not one burst
        loop = asyncio.get_running_loop()
        per_slice = -(-count // SPREAD)
        sent = self._send(carrier, sink, min(per_slice, count))
        left = count - per_slice
        k = 1
        while left > 0:
            loop.call_later(k * SLICE_S, self._send, carrier, sink, min(per_slice, left))
            left -= per_slice
            k += 1
        return sent

    def _send(self, carrier: Forwarder, sink: RtpSink, count: int) -> int:
        ts = carrier.last_ts_out
        pt = carrier.rtx_payload_type
        ssrc = carrier.rtx_ssrc
        send = sink.send_rtp
        padding = self._padding
        sent = 0
        for _ in range(count):
            seq = carrier.rtx_seq
            carrier.rtx_seq = (seq + 1) & 0xFFFF
            buf = bytearray(_HEADER.pack(0xA0, pt, seq, ts, ssrc))  # V=2, P=1, no marker
            buf += padding
            if send(buf):
                sent += 1
        self.packets_sent += sent
        self.bytes_sent += sent * PACKET_BYTES
        BANDWIDTH_TOTALS.padding_packets += sent
        BANDWIDTH_TOTALS.padding_bytes += sent * PACKET_BYTES
        return sent
