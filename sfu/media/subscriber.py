"""The subscriber transport: the server offers, the client answers; one Forwarder per subscribed feed."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiortc import RTCSessionDescription

from sfu.media import bridge
from sfu.media.allocator import StreamAllocator
from sfu.media.forwarder import Forwarder
from sfu.media.probe import BANDWIDTH_TOTALS
from sfu.media.receiver import Receiver
from sfu.media.rtcp import (
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    SenderReport,
    TransportCc,
    build_sdes,
    build_sr,
    ntp_now,
    parse_compound,
)
from sfu.media.rtp import TS_MASK
from sfu.media.sdp import OfferedSlot, congestion_control_ids, munge_subscriber_offer, rtx_payload_type
from sfu.media.sdp import parse as parse_sdp
from sfu.media.transport import Transport

_monotonic_ns = time.monotonic_ns


@dataclass(slots=True, eq=False)
class _Slot:
    """One m-section: kept after `remove` (inactive) so a resubscribe continues the same SSRC/seq/ts.

    Once the client has answered an offer in which it is inactive (`retired`), another feed of the same
    kind and payload type may take it over (mid reused, new SSRC, sendonly again), as mediasoup and
    LiveKit recycle m-sections: the SDP of a long meeting stays as large as its busiest moment.
    """

    transceiver: Any
    forwarder: Forwarder
    tag: str
    stream_id: str
    active: bool = True
    attached: bool = False
    offered_active: bool = False  # its direction in the last offer created (sendonly or inactive)
    retired: bool = False  # answered inactive: free for another feed


class SubscriberTransport(Transport):
    """Sends forwarded feeds to one participant. One negotiation at a time: add/remove, then
    `create_offer()`, then `set_answer()`; forwarding to a new m-section starts once it is answered."""

    def __init__(
        self, ice_hosts: Sequence[str], on_closed: Callable[[Transport], None] | None = None
    ) -> None:
        super().__init__(ice_hosts, on_closed)
        self._slots: list[_Slot] = []
        self._slots_by_receiver: dict[Receiver, _Slot] = {}
        self._forwarders_by_ssrc: dict[int, Forwarder] = {}
        self.remb_bps = 0
        self.allocator = StreamAllocator()
        self.cname = f"sfu-{self.rtcp_ssrc:08x}"
        self._sr_sent_ns: dict[int, int] = {}  # LSR (middle 32 bits of our SR's NTP) -> when it was sent
        self.twcc_feedbacks = 0
        self.receiver_reports = 0

    @property
    def forwarders(self) -> list[Forwarder]:
        return [s.forwarder for s in self._slots if s.active]

    def add(self, receiver: Receiver, *, tag: str = "", stream_id: str = "") -> Forwarder:
        """A forwarder for `receiver`: a resubscribe reuses the old one and its m-section, a new feed
        takes over a retired m-section of its kind and codec if there is one, else a new m-section."""
        slot = self._slots_by_receiver.get(receiver)
        if slot is not None:
            if not slot.active:
                slot.active = True
                slot.retired = False
                slot.tag = tag or slot.tag
                bridge.set_direction(slot.transceiver, "sendonly")
            return slot.forwarder
        reused = self._reuse(receiver, tag, stream_id)
        if reused is not None:
            return reused
        transceiver, ssrc, payload_type, rtx_ssrc = bridge.add_sendonly_transceiver(
            self._pc, receiver.kind, receiver.codec, receiver.fmtp
        )
        forwarder = Forwarder(
            receiver,
            self.sink,
            mid="",
            ssrc=ssrc,
            payload_type=payload_type,
            initial_seq=random.getrandbits(16),
            initial_ts=random.getrandbits(32),
        )
        forwarder.rtx_ssrc = rtx_ssrc
        slot = _Slot(transceiver, forwarder, tag, stream_id or f"sfu-{id(receiver):x}")
        self._slots.append(slot)
        self._slots_by_receiver[receiver] = slot
        self._forwarders_by_ssrc[ssrc] = forwarder
        return forwarder

    def _reuse(self, receiver: Receiver, tag: str, stream_id: str) -> Forwarder | None:
        """Moves a retired m-section (same kind and payload type) to `receiver` with fresh SSRCs."""
        payload_type = bridge.subscriber_payload_type(receiver.kind, receiver.codec, receiver.fmtp)
        fits = [s for s in self._slots if s.retired and s.forwarder.kind == receiver.kind]
        slot = next((s for s in fits if s.forwarder.payload_type == payload_type), None)
        if slot is None:
            return None
        old = slot.forwarder
        if self._slots_by_receiver.get(old.receiver) is slot:
            del self._slots_by_receiver[old.receiver]
        self._forwarders_by_ssrc.pop(old.ssrc, None)
        ssrc, rtx_ssrc = bridge.renew_sender_ssrcs(slot.transceiver)
        forwarder = Forwarder(
            receiver,
            self.sink,
            mid=old.mid,
            ssrc=ssrc,
            payload_type=payload_type,
            initial_seq=random.getrandbits(16),
            initial_ts=random.getrandbits(32),
        )
        forwarder.rtx_ssrc = rtx_ssrc
        slot.forwarder = forwarder
        slot.tag = tag
        slot.stream_id = stream_id or f"sfu-{id(receiver):x}"
        slot.active = True
        slot.retired = False
        slot.attached = False
        bridge.set_direction(slot.transceiver, "sendonly")
        self._slots_by_receiver[receiver] = slot
        self._forwarders_by_ssrc[ssrc] = forwarder
        return forwarder

    @property
    def media_sections(self) -> int:
        """How many audio/video m-sections this transport has (active, inactive or retired)."""
        return len(self._slots)

    @property
    def reusable_sections(self) -> int:
        """How many of them are retired: answered inactive, free for the next feed of their kind."""
        return sum(1 for s in self._slots if s.retired)

    def remove(self, forwarder: Forwarder) -> None:
        """Stops forwarding now; the next offer marks the m-section inactive (state kept for resubscribe)."""
        slot = self._slots_by_receiver.get(forwarder.receiver)
        if slot is None or slot.forwarder is not forwarder or not slot.active:
            return
        slot.active = False
        slot.attached = False
        forwarder.receiver.remove_forwarder(forwarder)
        forwarder.stop()
        bridge.set_direction(slot.transceiver, "inactive")

    async def create_offer(self) -> tuple[str, dict[str, str]]:
        """The next offer and {mid: tag} of its active m-sections."""
        offer = await self._pc.createOffer()
        local_sdp = await self._set_local(offer)
        mids = [section.mid for section in parse_sdp(local_sdp)]
        if mids:
            bridge.settle_bundle_owner(self._pc, mids[0])
        offered: dict[str, OfferedSlot] = {}
        tags: dict[str, str] = {}
        for slot in self._slots:
            mid = bridge.transceiver_mid(slot.transceiver)
            if mid is None:
                continue
            slot.forwarder.mid = mid
            slot.offered_active = slot.active
            track_id = slot.tag or f"{slot.stream_id}-{mid}"
            offered[mid] = OfferedSlot(slot.forwarder.kind, slot.stream_id, track_id)
            if slot.active:
                tags[mid] = slot.tag
        return munge_subscriber_offer(local_sdp, offered), tags

    async def set_answer(self, answer_sdp: str) -> None:
        """Applies the client's answer; newly answered forwarders start (on the next key frame)."""
        await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        bridge.disable_aiortc_media(self._pc)
        self._hook()
        sections = {s.mid: s for s in parse_sdp(answer_sdp)}
        self.sink.set_congestion_control(*congestion_control_ids(answer_sdp))
        for slot in self._slots:
            answered = sections.get(slot.forwarder.mid)
            if answered is not None:
                slot.forwarder.rtx_payload_type = rtx_payload_type(answered, slot.forwarder.payload_type)
        now_ns = _monotonic_ns()
        for slot in self._slots:
            if not slot.active and not slot.offered_active and slot.forwarder.mid:
                slot.retired = True  # the client saw it go inactive: another feed may take it
            if slot.active and slot.offered_active and not slot.attached and slot.forwarder.mid:
                slot.attached = True
                slot.forwarder.receiver.add_forwarder(slot.forwarder)
                slot.forwarder.receiver.request_key_frame(now_ns)

    def _on_sink_connected(self) -> None:
        now_ns = _monotonic_ns()
        for slot in self._slots:
            if slot.attached:
                slot.forwarder.receiver.request_key_frame(now_ns)

    def _on_rtcp_data(self, data: bytes) -> bridge._Done:
        """Subscriber feedback: NACKs answered from the ring, PLI/FIR coalesced to the publisher."""
        self.rtcp_packets_in += 1
        now_ns = _monotonic_ns()
        by_ssrc = self._forwarders_by_ssrc
        for packet in parse_compound(data):
            if isinstance(packet, Nack):
                forwarder = by_ssrc.get(packet.media_ssrc)
                if forwarder is not None and forwarder.started:
                    forwarder.retransmit(packet.seqs)
            elif isinstance(packet, Pli):
                forwarder = by_ssrc.get(packet.media_ssrc)
                if forwarder is not None:
                    forwarder.on_key_frame_request(now_ns)
            elif isinstance(packet, Fir):
                for ssrc, _seq_nr in packet.entries:
                    forwarder = by_ssrc.get(ssrc)
                    if forwarder is not None:
                        forwarder.on_key_frame_request(now_ns)
            elif isinstance(packet, Remb) and packet.bitrate_bps:
                self.remb_bps = packet.bitrate_bps
                self.allocator.bwe.on_remb(packet.bitrate_bps, now_ns // 1_000_000)
            elif isinstance(packet, TransportCc | ReceiverReport | SenderReport):
                self._on_congestion_feedback(packet, now_ns)
        return bridge.DONE

    def _on_congestion_feedback(
        self, packet: TransportCc | ReceiverReport | SenderReport, now_ns: int
    ) -> None:
        if isinstance(packet, TransportCc):
            self.twcc_feedbacks += 1
            BANDWIDTH_TOTALS.twcc_feedbacks += 1
            results = self.sink.history.packet_results(packet)
            if results:
                self.allocator.bwe.on_transport_feedback(results, now_ns // 1_000_000)
        else:
            self._on_reports(packet.reports, now_ns)

    def _on_reports(self, reports: Sequence[ReportBlock], now_ns: int) -> None:
        """RFC 3550 6.4.1 blocks about our SSRCs: loss and jitter, RTT from LSR/DLSR (A.8)."""
        by_ssrc = self._forwarders_by_ssrc
        for block in reports:
            forwarder = by_ssrc.get(block.ssrc)
            if forwarder is None:
                continue
            self.receiver_reports += 1
            rtt_ms = -1.0
            sent_ns = self._sr_sent_ns.get(block.lsr) if block.lsr else None
            if sent_ns is not None:
                rtt_ms = (now_ns - sent_ns) / 1e6 - block.dlsr * 1000 / 65536
            if forwarder.video or len(reports) == 1:
                self.allocator.bwe.on_receiver_report(
                    block.fraction_lost, block.jitter, max(rtt_ms, 0.0) if sent_ns is not None else -1.0,
                    now_ns // 1_000_000,
                )

    def _flush(self, report: bool) -> None:
        """Every tick a running probe's padding; once a second: the allocator, an SR per started
        forwarder in its own timestamp space, plus SDES."""
        if self.allocator.probing:
            self.allocator.tick(self.forwarders, self.sink, _monotonic_ns())
        if not report:
            return
        now_ns = _monotonic_ns()
        self.allocator.allocate(self.forwarders, now_ns)
        wall = time.time()
        parts: list[bytes] = []
        for slot in self._slots:
            f = slot.forwarder
            if not slot.active or not f.started:
                continue
            r = f.layer_receiver  # simulcast: the SR of the layer forwarded now (own ts offset)
            if r.sr_ntp:  # RFC 3550 6.4.1: the publisher's NTP<->RTP pair, moved to now and to our ts space
                elapsed_ns = now_ns - r.sr_arrival_ns
                ntp = r.sr_ntp + elapsed_ns * 4294967296 // 1_000_000_000
                rtp_ts = r.sr_rtp_ts + elapsed_ns * r.clock_rate // 1_000_000_000 + f.ts_off
            else:
                ntp = ntp_now(wall)
                rtp_ts = f.last_ts_out + (now_ns - f.last_out_ns) * f.clock_rate // 1_000_000_000
            parts.append(build_sr(f.ssrc, ntp & 0xFFFFFFFFFFFFFFFF, rtp_ts & TS_MASK, f.packets, f.octets))
            sent = self._sr_sent_ns
            if len(sent) > 256:
                sent.clear()
            sent[(ntp >> 16) & 0xFFFFFFFF] = now_ns
        if parts:
            parts.append(build_sdes(self.rtcp_ssrc, self.cname))
            self._send_rtcp(parts)

    def _close_media(self) -> None:
        for slot in self._slots:
            slot.forwarder.receiver.remove_forwarder(slot.forwarder)
            slot.forwarder.stop()
        self._slots.clear()
        self._slots_by_receiver.clear()
        self._forwarders_by_ssrc.clear()
