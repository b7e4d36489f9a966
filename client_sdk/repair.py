"""Loss repair for decoded video subscriptions: what a browser's receiver does and stock aiortc does not.

aiortc 1.16 NACKs a missing packet when the gap appears (and again only when another gap happens to
appear), and its jitter buffer hands nothing to the decoder while a hole is open: if a retransmission is
lost too, decoding stops until 512 packets have piled up behind the hole (seconds of video). Like
Chrome's NACK module and frame buffer, `VideoRepair` runs beside each video receiver of a subscription:

- every RENACK_S it NACKs again what is still missing, each packet at most MAX_NACKS times; then it gives
  up on it;
- when a key frame has arrived behind a hole, decoding restarts from that key frame at once (what is
  older than it is dropped, and no longer NACKed);
- when it gave up on the packet that blocks the buffer and no key frame is there yet, it asks for one
  (PLI, at most every PLI_INTERVAL_S) and restarts from it when it comes.

All access to aiortc's private state goes through `client_sdk.rawtap.VideoReceiveState`; this module
holds the policy only. It runs on a timer, never per packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from aiortc.rtp import RtpPacket

from client_sdk.rawtap import VideoReceiveState, video_receive_state

log = logging.getLogger("client_sdk.repair")

RENACK_S = 0.1
"""How often what is still missing is NACKed again (Chrome's NACK module: about once per RTT)."""
MAX_NACKS = 10
"""NACKs repeated per packet before giving up on it (Chrome: 10 retries)."""
PLI_INTERVAL_S = 1.0
"""Least time between two key frame requests while decoding waits for a key frame."""


@dataclass(slots=True)
class RepairStats:
    """What the repair of one receiver did."""

    renacked: int = 0  # NACKs repeated, counted per packet
    given_up: int = 0  # packets no longer NACKed after MAX_NACKS
    key_frame_restarts: int = 0  # times decoding skipped a hole to restart from a key frame
    key_frame_requests: int = 0  # PLIs sent because decoding waited for a key frame

    def add(self, other: RepairStats) -> None:
        self.renacked += other.renacked
        self.given_up += other.given_up
        self.key_frame_restarts += other.key_frame_restarts
        self.key_frame_requests += other.key_frame_requests


def is_vp8_key_frame_start(payload: bytes) -> bool:
    """The first packet of a VP8 key frame (RFC 7741: S=1, PID=0, then a frame header with P=0)."""
    if not payload:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x0F:
        return False
    i = 1
    if first & 0x80:  # X: extension byte
        if len(payload) < 2:
            return False
        extension = payload[1]
        i = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= i:
                return False
            i += 2 if payload[i] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            i += 1
        if extension & 0x30:  # T or K: TID/KEYIDX
            i += 1
    return len(payload) > i and not payload[i] & 0x01


def is_h264_key_frame_start(payload: bytes) -> bool:
    """A packet carrying an SPS or the start of an IDR slice (RFC 6184: single NAL, STAP-A, FU-A)."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A: 2-byte sizes, each followed by a NAL unit
        i = 1
        while i + 2 < len(payload):
            if payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + int.from_bytes(payload[i : i + 2], "big")
        return False
    if nal_type == 28:  # FU-A: the start fragment
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F in (5, 7)
    return nal_type in (5, 7)


KEY_FRAME_STARTS = {"video/vp8": is_vp8_key_frame_start, "video/h264": is_h264_key_frame_start}


def _older(a: int, b: int) -> bool:
    """Sequence number `a` comes before `b` (16-bit wraparound)."""
    return a != b and (b - a) & 0xFFFF < 0x8000


def _same_frame(earlier: RtpPacket | None, packet: RtpPacket) -> bool:
    return earlier is not None and earlier.timestamp == packet.timestamp


class VideoRepair:
    """The repair policy for one video receiver (see the module docstring); `tick()` is one round."""

    def __init__(self, state: VideoReceiveState, ssrc: int = 0) -> None:
        self.state = state
        self.ssrc = ssrc  # the media SSRC NACKs and PLIs name: learned from the packets, else the offer's
        self.stats = RepairStats()
        self._tries: dict[int, int] = {}
        self._blocked = False  # the last look found the jitter buffer held behind a hole
        self._last_pli = -PLI_INTERVAL_S

    def tick(self, now: float) -> tuple[list[int], bool]:
        """One round: (sequence numbers to NACK again, whether to send a PLI) for `state`'s receiver."""
        missing = self.state.missing
        renack: list[int] = []
        given_up: list[int] = []
        tries = self._tries
        for seq in missing:
            count = tries.get(seq)
            if count is None:
                tries[seq] = 0  # aiortc NACKed it when it went missing: repeat from the next round on
            elif count < MAX_NACKS:
                tries[seq] = count + 1
                renack.append(seq)
            else:
                given_up.append(seq)
        if given_up:
            self.state.forget(given_up)
            self.stats.given_up += len(given_up)
        if len(tries) > len(missing):
            self._tries = tries = {seq: n for seq, n in tries.items() if seq in missing}
        pli = False
        if missing or self._blocked:
            pli = self._unblock(now)
        if renack:
            renack = [seq for seq in renack if seq in missing]  # _unblock may have dropped some
            self.stats.renacked += len(renack)
        return sorted(renack), pli

    def _unblock(self, now: float) -> bool:
        """Restarts decoding from a key frame behind the first hole, if any; True if a PLI is due."""
        origin, slots = self.state.buffered()
        missing = self.state.missing
        if origin >= 0 and missing:
            stale = [seq for seq in missing if _older(seq, origin)]  # the buffer skipped them already
            if stale:
                self.state.forget(stale)
        if slots and (last := slots[-1]) is not None:
            self.ssrc = last.ssrc  # an m-section the server reused carries another feed's SSRC
        hole = next((i for i, packet in enumerate(slots) if packet is None), -1)
        self._blocked = hole >= 0
        if hole < 0:
            return False
        key = self._newest_key_frame(slots, hole)
        if key > hole:
            start = (origin + key) & 0xFFFF
            self.state.skip_to(start)
            self.state.forget([seq for seq in missing if _older(seq, start)])
            self.stats.key_frame_restarts += 1
            origin, slots = self.state.buffered()
            self._blocked = any(packet is None for packet in slots)
            return False
        hole_seq = (origin + hole) & 0xFFFF
        if hole_seq in missing or now - self._last_pli < PLI_INTERVAL_S or not self.ssrc:
            return False  # still NACKed, or a key frame was asked for just now
        self._last_pli = now
        self.stats.key_frame_requests += 1
        return True

    def _newest_key_frame(self, slots: list[RtpPacket | None], after: int) -> int:
        """The slot of the first packet of the newest key frame after slot `after`, or -1."""
        for i in range(len(slots) - 1, after, -1):
            packet = slots[i]
            if packet is None:
                continue
            starts = KEY_FRAME_STARTS.get(self.state.mime_type(packet.payload_type))
            if starts is None or not starts(packet.payload):
                continue
            while i - 1 > after and _same_frame(slots[i - 1], packet):
                i -= 1  # the key frame begins earlier (H.264: SPS and PPS before the IDR slice)
            return i
        return -1

    async def run(self) -> None:
        """Ticks every RENACK_S until cancelled."""
        state = self.state
        while True:
            await asyncio.sleep(RENACK_S)
            renack, pli = self.tick(time.monotonic())
            if not self.ssrc:
                continue
            if renack:
                await state.send_nack(self.ssrc, renack)
            if pli:
                await state.send_pli(self.ssrc)


class Repairs:
    """The running repairs of one subscriber transport, one per video receiver."""

    def __init__(self) -> None:
        self._running: dict[int, tuple[VideoRepair, asyncio.Task[None]]] = {}
        self._done = RepairStats()

    def start(self, receiver: object, ssrcs: tuple[int, ...] = ()) -> None:
        """Starts repairing `receiver` (an aiortc video `RTCRtpReceiver`) unless it is already."""
        running = self._running.get(id(receiver))
        if running is not None:
            if ssrcs:
                running[0].ssrc = ssrcs[0]  # the server reused the m-section for another feed
            return
        state = video_receive_state(receiver)
        if state is None:
            log.warning("aiortc receiver internals not found: video loss repair is off")
            return
        repair = VideoRepair(state, ssrcs[0] if ssrcs else 0)
        task = asyncio.create_task(repair.run(), name="client_sdk.repair")
        self._running[id(receiver)] = (repair, task)

    def stop(self, receiver: object) -> None:
        running = self._running.pop(id(receiver), None)
        if running is not None:
            running[1].cancel()
            self._done.add(running[0].stats)

    async def close(self) -> None:
        running, self._running = self._running, {}
        for repair, task in running.values():
            task.cancel()
            self._done.add(repair.stats)
        for _, task in running.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats(self) -> RepairStats:
        """What every repair of this transport did, running or stopped."""
        total = RepairStats()
        total.add(self._done)
        for repair, _ in self._running.values():
            total.add(repair.stats)
        return total
