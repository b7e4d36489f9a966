"""The publisher transport: the client offers, the server answers; one Receiver per published track."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiortc import RTCSessionDescription

from sfu.media import bridge
from sfu.media.counters import DropReason
from sfu.media.receiver import Receiver
from sfu.media.rtcp import SenderReport, build_remb, build_rr, parse_compound
from sfu.media.rtp import (
    SSRC,
    URI_MID,
    URI_RID,
    build_extension_id_map,
    find_extension,
    payload_bounds,
)
from sfu.media.sdp import MediaSection, munge_publisher_answer
from sfu.media.transport import REPORT_EVERY_TICKS, RTCP_INTERVAL_S, Transport

log = logging.getLogger("sfu.media.publisher")

_SSRC_UNPACK = SSRC.unpack_from
_monotonic_ns = time.monotonic_ns

# REMB towards publishers (draft-alvestrand-rmcat-remb): twice what we measure, at least 3 Mbit/s, at
# most 20 Mbit/s. The floor lets a browser ramp from its 300 kbit/s start to its full layer set; the
# publisher's own loss-based control still backs off on real loss. A per-subscriber allocator is the
# place for anything smarter.
REMB_MIN_BPS = 3_000_000
REMB_MAX_BPS = 20_000_000
# A simulcast layer with no packet for this long has stopped (forwarders fall back within a second).
LAYER_TIMEOUT_NS = 600_000_000

LayersChanged = Callable[[Receiver, list[dict[str, int | str | None]]], None]


@dataclass(frozen=True, slots=True)
class PublishedTrack:
    """One track of a publisher's offer: the session makes it a Feed."""

    mid: str
    kind: str
    codec: str  # mime, e.g. "video/VP8"
    receiver: Receiver


def _layer_shape(layers: list[dict[str, int | str | None]]) -> list[tuple[object, ...]]:
    return [(x["rid"], x["width"], x["height"], bool(x["bitrate"])) for x in layers]


class PublisherTransport(Transport):
    """Receives a participant's published tracks; answers offers, sends RR/REMB/PLI/NACK back."""

    def __init__(
        self, ice_hosts: Sequence[str], on_closed: Callable[[Transport], None] | None = None
    ) -> None:
        super().__init__(ice_hosts, on_closed)
        self.receivers_by_mid: dict[str, Receiver] = {}
        self._receivers_by_ssrc: dict[int, Receiver] = {}
        self._receivers_by_pt: dict[int, Receiver] = {}
        self._mid_ext_id = 0
        self._rid_ext_id = 0
        self._octets_at_report = 0
        self._report_ns = 0
        self._rate_ns = 0
        self._layers_reported: dict[Receiver, list[dict[str, int | str | None]]] = {}
        self.remb_bps = REMB_MIN_BPS
        # session glue: feed.layers changed / which rids subscribers want (PROTOCOL.md layers_wanted)
        self.on_layers_changed: LayersChanged | None = None
        self.on_layers_wanted: Callable[[Receiver], None] | None = None

    async def negotiate(self, offer_sdp: str) -> tuple[str, list[PublishedTrack]]:
        """Applies an offer (first or renegotiation); returns the answer and every active track.

        New mids get new receivers; mids no longer sending are closed (their forwarders stop).
        """
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        # NOTE: before any await: aiortc's connect task would otherwise start decoders on renegotiation.
        bridge.disable_aiortc_media(self._pc)
        answer = await self._pc.createAnswer()
        local_sdp = await self._set_local(answer)
        answer_sdp, media = munge_publisher_answer(local_sdp, offer_sdp)
        for mid in [m for m in self.receivers_by_mid if m not in media]:
            self.receivers_by_mid.pop(mid).close()
        for mid, section in media.items():
            if mid not in self.receivers_by_mid:
                self.receivers_by_mid[mid] = self._new_receiver(section)
            if URI_MID in section.extmap:
                self._mid_ext_id = section.extmap[URI_MID]
            if URI_RID in section.extmap:
                self._rid_ext_id = section.extmap[URI_RID]
        self._rebuild_routes()
        tracks = [PublishedTrack(r.mid, r.kind, r.codec, r) for r in self.receivers_by_mid.values()]
        return answer_sdp, tracks

    def _new_receiver(self, section: MediaSection) -> Receiver:
        pt = section.payload_types[0]
        codec, clock_rate = section.rtpmap.get(pt, (f"{section.kind}/unknown", 90000))
        id_map, identity = build_extension_id_map(section.extmap)
        receiver = Receiver(
            self,
            mid=section.mid,
            kind=section.kind,
            codec=codec,
            clock_rate=clock_rate,
            payload_type=pt,
            ssrc=section.ssrcs[0] if section.ssrcs else 0,
            ext_id_map=id_map,
            ext_identity=identity,
            sender_ssrc=self.rtcp_ssrc,
        )
        receiver.fmtp = section.fmtp.get(pt, "")
        if section.kind == "video" and len(section.rids) > 1:
            # RFC 8853 simulcast: one receiver per rid (own SSRC, ring, NACK), latched by the rid extension
            layers = [receiver]
            for index, rid in enumerate(section.rids):
                layer = receiver if index == 0 else Receiver(
                    self,
                    mid=section.mid,
                    kind=section.kind,
                    codec=codec,
                    clock_rate=clock_rate,
                    payload_type=pt,
                    ext_id_map=id_map,
                    ext_identity=identity,
                    sender_ssrc=self.rtcp_ssrc,
                    rid=rid,
                    layer=index,
                )
                params = section.rid_params.get(rid, {})
                layer.width = int(params.get("max-width", "0") or 0)
                layer.height = int(params.get("max-height", "0") or 0)
                if index:
                    layers.append(layer)
            receiver.rid = section.rids[0]
            receiver.ssrc = 0  # learned from RTP (Chrome sends no a=ssrc with rids)
            receiver.set_layers(tuple(layers))
            receiver.on_layers_wanted = self._on_layers_wanted
        return receiver

    def _on_layers_wanted(self, receiver: Receiver) -> None:
        if self.on_layers_wanted is not None:
            self.on_layers_wanted(receiver)

    @property
    def layer_receivers(self) -> list[Receiver]:
        """Every receiving stream: one per plain track, one per simulcast layer."""
        return [layer for r in self.receivers_by_mid.values() for layer in r.layers]

    def _rebuild_routes(self) -> None:
        self._receivers_by_ssrc = {r.ssrc: r for r in self.layer_receivers if r.ssrc}
        by_pt: dict[int, list[Receiver]] = {}
        for r in self.receivers_by_mid.values():
            by_pt.setdefault(r.payload_type, []).append(r)
            if len(r.layers) > 1:
                by_pt[r.payload_type].append(r)  # simulcast: never by payload type alone
        # RTP payload-type routing only when unambiguous (one track with that payload type)
        self._receivers_by_pt = {pt: rs[0] for pt, rs in by_pt.items() if len(rs) == 1}

    def _on_rtp_data(self, data: bytes, arrival_time_ms: int = 0) -> bridge._Done:
        """Every decrypted RTP datagram of this transport, before aiortc parses anything."""
        if len(data) < 12:
            self.drops[DropReason.TOO_SHORT] += 1
            return bridge.DONE
        receiver = self._receivers_by_ssrc.get(_SSRC_UNPACK(data, 8)[0])
        if receiver is None:
            receiver = self._learn_ssrc(data)
            if receiver is None:
                return bridge.DONE
        receiver.on_rtp(data, _monotonic_ns())
        return bridge.DONE

    def _learn_ssrc(self, data: bytes) -> Receiver | None:
        """Latches an unknown SSRC to a track: RFC 8285 MID extension first, else a unique payload type."""
        ssrc = _SSRC_UNPACK(data, 8)[0]
        _start, _end, profile, ext_end = payload_bounds(data, data[0])
        receiver = None
        if self._mid_ext_id and profile:
            ext_start = 12 + ((data[0] & 0x0F) << 2) + 4
            mid = find_extension(data, ext_start, ext_end, profile, self._mid_ext_id)
            if mid is not None:
                receiver = self.receivers_by_mid.get(mid.decode(errors="replace"))
        if receiver is not None and len(receiver.layers) > 1:
            receiver = self._find_layer(data, receiver, profile, ext_end)
            if receiver is None:
                self.drops[DropReason.UNKNOWN_SSRC] += 1  # no rid (yet), or a repaired-rid (no RTX here)
                return None
        if receiver is None:
            receiver = self._receivers_by_pt.get(data[1] & 0x7F)
        if receiver is None:
            self.drops[DropReason.UNKNOWN_SSRC] += 1
            return None
        if receiver.ssrc in self._receivers_by_ssrc:
            del self._receivers_by_ssrc[receiver.ssrc]
        receiver.set_ssrc(ssrc, _monotonic_ns())
        self._receivers_by_ssrc[ssrc] = receiver
        return receiver

    def _find_layer(self, data: bytes, head: Receiver, profile: int, ext_end: int) -> Receiver | None:
        """The layer named by the RFC 8852 rtp-stream-id extension (Chrome sends it on the first packets
        of each SSRC only, so the SSRC is latched here)."""
        if not self._rid_ext_id:
            return None
        ext_start = 12 + ((data[0] & 0x0F) << 2) + 4
        rid = find_extension(data, ext_start, ext_end, profile, self._rid_ext_id)
        if rid is None:
            return None
        name = rid.decode(errors="replace")
        for layer in head.layers:
            if layer.rid == name:
                if layer.ssrc:
                    self._receivers_by_ssrc.pop(layer.ssrc, None)
                log.info("simulcast layer %s of mid %s is ssrc %d", name, head.mid, _SSRC_UNPACK(data, 8)[0])
                return layer
        return None

    def check_layers(self, now_ns: int, measure: bool) -> None:
        """Per RTCP tick: which simulcast layers arrive (forwarders fall back when one stops); once a
        second also each layer's bitrate (a video feed without simulcast too: the allocator pauses it
        when even it does not fit). Tells `on_layers_changed` when the feed's layers changed."""
        elapsed_ns = now_ns - self._rate_ns if self._rate_ns else 0
        if measure:
            self._rate_ns = now_ns
        for head in self.receivers_by_mid.values():
            if len(head.layers) < 2:
                if measure and head.kind == "video":
                    if elapsed_ns:
                        head.bitrate_bps = (head.octets - head.octets_at_rate) * 8_000_000_000 // elapsed_ns
                    head.octets_at_rate = head.octets
                continue
            mask = 0
            for layer in head.layers:
                if layer.last_packet_ns and now_ns - layer.last_packet_ns < LAYER_TIMEOUT_NS:
                    mask |= 1 << layer.layer
                if measure:
                    octets = layer.octets - layer.octets_at_rate
                    if elapsed_ns:
                        layer.bitrate_bps = octets * 8_000_000_000 // elapsed_ns
                    layer.octets_at_rate = layer.octets
            if mask != head.active_mask:
                rids = [r.rid for r in head.layers if mask >> r.layer & 1]
                log.info("simulcast mid %s layers %s", head.mid, rids)
                head.set_active_layers(mask, now_ns)
            self._report_layers(head)

    def _report_layers(self, head: Receiver) -> None:
        layers: list[dict[str, int | str | None]] = [
            {"rid": r.rid, "width": r.width or None, "height": r.height or None, "bitrate": r.bitrate_bps}
            for r in head.layers
            if head.active_mask >> r.layer & 1
        ]
        reported = self._layers_reported.get(head)
        if reported is not None and _layer_shape(reported) == _layer_shape(layers):
            return  # layers appearing or disappearing, new sizes, a first bitrate: not every bitrate change
        self._layers_reported[head] = layers
        if self.on_layers_changed is not None:
            self.on_layers_changed(head, layers)

    def _on_rtcp_data(self, data: bytes) -> bridge._Done:
        self.rtcp_packets_in += 1
        now_ns = _monotonic_ns()
        for packet in parse_compound(data):
            if isinstance(packet, SenderReport):
                receiver = self._receivers_by_ssrc.get(packet.ssrc)
                if receiver is not None:
                    receiver.on_sender_report(packet.ntp, packet.rtp_ts, now_ns)
        return bridge.DONE

    def on_receiver_feedback(self, receiver: Receiver, urgent: bool) -> None:
        if urgent:
            self._schedule_flush()

    def _flush(self, report: bool) -> None:
        """One compound RTCP datagram: RR (+REMB once a second), then PLIs and NACKs (RFC 4585 3.1)."""
        now_ns = _monotonic_ns()
        self.check_layers(now_ns, report)
        receivers = [r for r in self.layer_receivers if r.ssrc]
        feedback: list[bytes] = []
        for r in receivers:
            feedback += r.take_feedback(now_ns)
        if not report and not feedback:
            return
        blocks = [r.report_block(now_ns) for r in receivers if r.packets] if report else []
        parts = [build_rr(self.rtcp_ssrc, blocks)]
        if report and receivers:
            parts.append(build_remb(self.rtcp_ssrc, self._estimate_bps(now_ns), [r.ssrc for r in receivers]))
        self._send_rtcp(parts + feedback)

    def _estimate_bps(self, now_ns: int) -> int:
        octets = sum(r.octets for r in self.layer_receivers)
        elapsed_ns = (
            now_ns - self._report_ns if self._report_ns else int(RTCP_INTERVAL_S * REPORT_EVERY_TICKS * 1e9)
        )
        measured = (octets - self._octets_at_report) * 8 * 1_000_000_000 // max(elapsed_ns, 1)
        self._octets_at_report = octets
        self._report_ns = now_ns
        self.remb_bps = min(max(2 * measured, REMB_MIN_BPS), REMB_MAX_BPS)
        return self.remb_bps

    def _close_media(self) -> None:
        for receiver in self.receivers_by_mid.values():
            receiver.close()
        self.receivers_by_mid.clear()
        self._layers_reported.clear()
        self._receivers_by_ssrc.clear()
        self._receivers_by_pt.clear()
