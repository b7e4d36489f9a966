"""One forwarder per (feed, subscriber): start on a key frame, rewrite the header, send, answer NACKs.

Simulcast: every layer's packets reach `forward` with their layer index; the `SimulcastSelector` says
which one is current, and a switch happens on a key frame of the target layer only, re-basing seq and ts
(`Munger.resync`), so the subscriber sees one continuous stream (one SSRC) across switches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Protocol

from sfu.media.counters import DropReason, new_drops
from sfu.media.munger import Munger
from sfu.media.rtp import HEADER, PT_SEQ_TS_SSRC, SEQ, SEQ_MASK, TS_MASK, payload_bounds
from sfu.media.selector import REASON_BANDWIDTH, SimulcastSelector

if TYPE_CHECKING:
    from sfu.media.receiver import Receiver

_PACK = PT_SEQ_TS_SSRC.pack_into
_PAUSED = DropReason.PAUSED
_WAITING = DropReason.WAITING_FOR_KEY_FRAME
_BEFORE_START = DropReason.BEFORE_START
_NOT_CONNECTED = DropReason.NOT_CONNECTED

log = logging.getLogger("sfu.media.forwarder")
_monotonic_ns = time.monotonic_ns
RETRANSMIT_GAP_NS = 150_000_000  # a seq is retransmitted at most once per this (NACKs repeat per RTT)

LayerChanged = Callable[["Forwarder", str, str], None]  # (forwarder, rid, reason)


class RtpSink(Protocol):
    """Where a forwarder's packets go: a subscriber transport's SRTP + socket (see bridge.SrtpSink)."""

    @property
    def connected(self) -> bool: ...

    def send_rtp(self, packet: bytearray) -> bool: ...


class Forwarder(Munger):
    """Sends one feed to one subscriber; seq/ts/SSRC continuity comes from `Munger`.

    `forward` is the per-packet function: flat, early returns, one copy (`bytearray(data)`) and one
    `pack_into` of byte 1 (marker kept, payload type set), seq, timestamp and SSRC.
    """

    layered: ClassVar[bool] = True  # receives every simulcast layer, with its index

    __slots__ = (
        "_retransmitted_ns",
        "announced_layer",
        "bandwidth_paused",
        "drops",
        "kind",
        "layer_receiver",
        "layer_switches",
        "layers",
        "mid",
        "nacks_in",
        "octets",
        "on_layer_changed",
        "packets",
        "paused",
        "payload_type",
        "plis_in",
        "prev_epoch",
        "receiver",
        "retransmissions",
        "rtx_payload_type",
        "rtx_seq",
        "rtx_ssrc",
        "screen",
        "selector",
        "send",
        "sink",
        "speaking",
        "user_paused",
        "video",
    )

    def __init__(
        self,
        receiver: Receiver,
        sink: RtpSink,
        *,
        mid: str,
        ssrc: int,
        payload_type: int,
        initial_seq: int,
        initial_ts: int,
    ) -> None:
        super().__init__(ssrc, receiver.clock_rate, initial_seq, initial_ts)
        self.receiver = receiver
        self.sink = sink
        self.send = sink.send_rtp
        self.mid = mid
        self.kind = receiver.kind
        self.video = receiver.kind == "video"
        self.payload_type = payload_type
        self.rtx_payload_type = -1  # >= 0 once the subscriber's answer accepted RTX (RFC 4588)
        self.rtx_ssrc = 0
        self.rtx_seq = initial_seq ^ 0x5A5A
        self.paused = False  # user_paused or bandwidth_paused: the one flag the packet path reads
        self.user_paused = False  # set_quality {paused}
        self.bandwidth_paused = False  # the allocator: not even the lowest layer fits the estimate
        self.screen = False  # a screen share: the allocator serves it first (set by the session)
        self.speaking = False  # its publisher is an active speaker: served before other cameras
        self.drops = new_drops()
        self.packets = 0
        self.octets = 0
        self.retransmissions = 0
        self.nacks_in = 0
        self.plis_in = 0
        self.layers = receiver.layers  # the feed's layer receivers, lowest first ((receiver,) if one)
        self.layer_receiver = receiver  # the layer forwarded now: its ring answers NACKs, its SR maps ts
        self.selector = SimulcastSelector(len(self.layers))
        self.layer_switches = 0
        # the layer before the last switch: (its receiver, seq offset, ts offset, first out seq, last out
        # seq), so a NACK for a packet lost just before the switch is still answered from its ring
        self.prev_epoch: tuple[Receiver, int, int, int, int] | None = None
        self._retransmitted_ns: dict[int, int] = {}  # out seq -> when it was last retransmitted
        self.announced_layer = -1
        self.on_layer_changed: LayerChanged | None = None
        if self.selector.simulcast:
            self.selector.set_available(receiver.active_mask)

    def forward(
        self, data: bytes, seq: int, ts: int, key_frame: bool, now_ns: int, layer: int = 0
    ) -> None:
        """Called by the receivers of the feed for every packet, in arrival order."""
        if self.paused:
            self.drops[_PAUSED] += 1
            return
        selector = self.selector
        if layer != selector.current_layer:
            if layer != selector.target_layer:
                return  # another simulcast layer than this subscriber's
            if not key_frame or not self.sink.connected:  # switch only on the target's key frame
                self.drops[_WAITING] += 1
                self.layers[layer].request_key_frame(now_ns)
                return
            self._switch_layer(layer, seq, ts, now_ns)
        elif not self.started:
            if not self.sink.connected:  # starting now would waste the key frame
                self.drops[_NOT_CONNECTED] += 1
                return
            if self.video and not key_frame:  # a decoder cannot start mid-GOP
                self.drops[_WAITING] += 1
                self.layers[layer].request_key_frame(now_ns)
                return
            self.resync(seq, ts, now_ns)
        elif (seq - self.start_seq) & SEQ_MASK >= 0x8000:  # older than this epoch's first packet
            self.drops[_BEFORE_START] += 1
            return
        out_seq = (seq + self.seq_off) & SEQ_MASK
        out_ts = (ts + self.ts_off) & TS_MASK
        buf = bytearray(data)
        _PACK(buf, 1, (data[1] & 0x80) | self.payload_type, out_seq, out_ts, self.ssrc)
        if (out_seq - self.last_seq_out) & SEQ_MASK < 0x8000:
            self.last_seq_out = out_seq
            self.last_ts_out = out_ts
            self.last_out_ns = now_ns
        if self.send(buf):
            self.packets += 1
            self.octets += len(buf)
        else:
            self.drops[_NOT_CONNECTED] += 1

    def retransmit(self, out_seqs: Sequence[int]) -> int:
        """Resends what the ring still holds for a subscriber's NACK (RFC 4585 6.2.1); returns the count.

        RFC 4588 RTX when the subscriber accepted it, else a plain retransmission with its own seq.
        """
        self.nacks_in += 1
        sent = 0
        ring = self.layer_receiver.ring
        now_ns = _monotonic_ns()
        recent = self._retransmitted_ns
        if len(recent) > 2048:
            recent.clear()
        for out_seq in out_seqs:
            if now_ns - recent.get(out_seq, -RETRANSMIT_GAP_NS) < RETRANSMIT_GAP_NS:
                continue  # repeated NACKs within about an RTT: the first answer may still be on its way
            recent[out_seq] = now_ns
            seq = self.feed_seq(out_seq)
            ts_off = self.ts_off
            if seq >= 0:
                data = ring.get(seq)
            else:
                data, ts_off = self._previous_layer_packet(out_seq)
            if data is None:
                self.drops[DropReason.NACK_MISS] += 1
                continue
            b0, b1, _seq, ts, _ssrc = HEADER.unpack_from(data)
            out_ts = (ts + ts_off) & TS_MASK
            if self.rtx_payload_type >= 0:
                # RFC 4588 section 4: the original seq (ours) leads the payload; padding is dropped
                start, end, _profile, _ext_end = payload_bounds(data, b0)
                buf = bytearray(data[:start])
                buf += SEQ.pack(out_seq)
                buf += data[start:end]
                buf[0] = b0 & 0xDF
                _PACK(buf, 1, (b1 & 0x80) | self.rtx_payload_type, self.rtx_seq, out_ts, self.rtx_ssrc)
                self.rtx_seq = (self.rtx_seq + 1) & SEQ_MASK
            else:
                buf = bytearray(data)
                _PACK(buf, 1, (b1 & 0x80) | self.payload_type, out_seq, out_ts, self.ssrc)
            if self.send(buf):
                sent += 1
        self.retransmissions += sent
        return sent

    def _previous_layer_packet(self, out_seq: int) -> tuple[bytes | None, int]:
        """(A NACKed packet from before the last layer switch, its epoch's ts offset), or (None, 0)."""
        prev = self.prev_epoch
        if prev is None:
            return None, 0
        receiver, seq_off, ts_off, first_out, last_out = prev
        if (out_seq - first_out) & SEQ_MASK > (last_out - first_out) & SEQ_MASK:
            return None, 0
        data: bytes | None = receiver.ring.get((out_seq - seq_off) & SEQ_MASK)
        return data, ts_off

    def on_key_frame_request(self, now_ns: int) -> None:
        """A subscriber's PLI or FIR (RFC 4585 6.3.1, RFC 5104 4.3.1): the receiver coalesces them."""
        self.plis_in += 1
        self.layer_receiver.request_key_frame(now_ns)

    def set_paused(self, paused: bool) -> None:
        """Pause (stop sending, keep state) or resume on the next key frame, without seq/ts jumps."""
        self.user_paused = paused
        self._apply_pause()

    @property
    def priority(self) -> int:
        """The allocator's order: 0 screen share, 1 an active speaker's video, 2 the others."""
        return 0 if self.screen else 1 if self.speaking else 2

    def set_bandwidth_paused(self, paused: bool) -> bool:
        """The allocator's pause (video that does not fit even at its lowest layer); True if it changed.
        A pause is announced at once (`layer_changed` with no rid); a resume by `announce_resumed`, once
        the allocator has chosen the layer it resumes on."""
        if paused == self.bandwidth_paused:
            return False
        self.bandwidth_paused = paused
        self._apply_pause()
        if paused and self.on_layer_changed is not None:
            self.on_layer_changed(self, "", REASON_BANDWIDTH)
        return True

    def announce_resumed(self) -> None:
        """`layer_changed` (reason bandwidth) naming the layer a bandwidth-paused feed resumes on; its
        key frame switch then announces nothing more unless the layer differs."""
        target = self.selector.target_layer if self.selector.simulcast else 0
        if not 0 <= target < len(self.layers):
            target = 0
        if self.selector.simulcast:
            self.announced_layer = target
        if self.on_layer_changed is not None:
            self.on_layer_changed(self, self.layers[target].rid, REASON_BANDWIDTH)

    def _apply_pause(self) -> None:
        paused = self.user_paused or self.bandwidth_paused
        if paused == self.paused:
            return
        self.paused = paused
        self.stop()
        self.receiver.update_wanted_layers()

    # -- simulcast (off the per-packet path) -------------------------------------------------------------

    def _switch_layer(self, layer: int, seq: int, ts: int, now_ns: int) -> None:
        """A key frame of the target layer: continue seq/ts from our last packet (RFC 3550 5.1, 8.2)."""
        if self.started:
            first_out = (self.start_seq + self.seq_off) & SEQ_MASK
            self.prev_epoch = (self.layer_receiver, self.seq_off, self.ts_off, first_out, self.last_seq_out)
        self.resync(seq, ts, now_ns)
        self.selector.switched(layer)
        self.layer_receiver = self.layers[layer]
        if layer == self.announced_layer or not self.selector.simulcast:
            return  # a restart (pause, mute) on the same layer is no switch
        if self.announced_layer >= 0:
            self.layer_switches += 1
        self.announced_layer = layer
        self.receiver.update_wanted_layers()
        rid = self.layer_receiver.rid
        log.debug("forwarder %s switched to layer %s (%s)", self.mid, rid, self.selector.reason)
        if self.on_layer_changed is not None:
            self.on_layer_changed(self, rid, self.selector.reason)

    def set_max_layer(self, layer: int, now_ns: int) -> None:
        """The subscriber's preference (set_quality): the highest layer it wants."""
        if self.selector.set_max_layer(layer):
            self._request_target(now_ns)
        self.receiver.update_wanted_layers()

    def set_bandwidth_layer(self, layer: int, now_ns: int) -> None:
        """The allocator's cap: the highest layer this subscriber's bandwidth estimate fits."""
        before = self.selector.bandwidth_layer
        if self.selector.set_bandwidth_layer(layer):
            self._request_target(now_ns)
            self.receiver.update_wanted_layers()
        elif self.selector.bandwidth_layer != before:
            self.receiver.update_wanted_layers()  # dynacast: a layer not arriving yet becomes wanted

    def on_layers_available(self, mask: int, now_ns: int) -> None:
        """The feed's arriving layers changed (one stopped or started): fall back or go up."""
        if self.selector.set_available(mask):
            self._request_target(now_ns)
            self.receiver.update_wanted_layers()

    def _request_target(self, now_ns: int) -> None:
        target = self.selector.target_layer
        if 0 <= target < len(self.layers) and target != self.selector.current_layer and not self.paused:
            self.layers[target].request_key_frame(now_ns)

    def stop(self) -> None:
        """The next forwarded packet resyncs on a key frame (mute, pause, unsubscribe, source switch)."""
        super().stop()
        self.selector.reset()

    @property
    def wanted_layers_mask(self) -> int:
        """Layers this subscriber needs from the publisher (dynacast): the one it gets now, the one it
        switches to, and the highest its preference and bandwidth allow; none while paused."""
        if self.paused:
            return 0
        selector = self.selector
        mask = 1 << min(selector.max_layer, selector.bandwidth_layer)
        for layer in (selector.current_layer, selector.target_layer):
            if layer >= 0:
                mask |= 1 << layer
        return mask

    @property
    def current_rid(self) -> str:
        layer = self.selector.current_layer
        return self.layers[layer].rid if 0 <= layer < len(self.layers) else ""

    def stats(self) -> dict[str, int]:
        return {
            "packets": self.packets,
            "octets": self.octets,
            "retransmissions": self.retransmissions,
            "nacks_in": self.nacks_in,
            "plis_in": self.plis_in,
            "layer_switches": self.layer_switches,
            "current_layer": self.selector.current_layer,
        }
