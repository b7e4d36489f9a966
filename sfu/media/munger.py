"""Per-subscriber SSRC, sequence number and timestamp rewriting (RFC 3550 sections 5.1 and 8.2).

A subscriber sees one SSRC per forwarder whose seq and timestamp never jump backwards or leap, across
mute, pause and unsubscribe/resubscribe: each (re)start continues at `last seq + 1` and at the last
timestamp plus the wall-clock time elapsed since, in the stream's clock rate.
"""

from __future__ import annotations

from sfu.media.rtp import SEQ_MASK, TS_MASK


class Munger:
    """Offsets from a feed's (seq, ts) space into one subscriber's; `Forwarder` extends it."""

    __slots__ = (
        "clock_rate",
        "last_out_ns",
        "last_seq_out",
        "last_ts_out",
        "seq_off",
        "ssrc",
        "start_seq",
        "started",
        "ts_off",
    )

    def __init__(self, ssrc: int, clock_rate: int, initial_seq: int, initial_ts: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.seq_off = 0
        self.ts_off = 0
        self.last_seq_out = (initial_seq - 1) & SEQ_MASK
        self.last_ts_out = initial_ts & TS_MASK
        self.last_out_ns = 0
        self.start_seq = 0
        self.started = False

    def resync(self, seq: int, ts: int, now_ns: int) -> None:
        """Makes (seq, ts) the next packet: seq continues by one, ts by the wall time since the last one."""
        self.seq_off = (self.last_seq_out + 1 - seq) & SEQ_MASK
        if self.last_out_ns:
            elapsed = max(1, (now_ns - self.last_out_ns) * self.clock_rate // 1_000_000_000)
        else:
            elapsed = 0
        self.ts_off = (self.last_ts_out + elapsed - ts) & TS_MASK
        self.start_seq = seq
        self.started = True

    def stop(self) -> None:
        """The next forwarded packet resyncs (mute, pause, unsubscribe, source switch)."""
        self.started = False

    def munge(self, seq: int, ts: int, now_ns: int) -> tuple[int, int]:
        """(out seq, out ts) for a packet after `start_seq`, remembering the newest one sent.

        The forwarder inlines this on its hot path; this method is for tests and retransmissions.
        """
        out_seq = (seq + self.seq_off) & SEQ_MASK
        out_ts = (ts + self.ts_off) & TS_MASK
        if (out_seq - self.last_seq_out) & SEQ_MASK < 0x8000:
            self.last_seq_out = out_seq
            self.last_ts_out = out_ts
            self.last_out_ns = now_ns
        return out_seq, out_ts

    def feed_seq(self, out_seq: int) -> int:
        """The feed's seq for a subscriber's seq in the current epoch, or -1 (RFC 4585 NACK mapping)."""
        if not self.started:
            return -1
        seq = (out_seq - self.seq_off) & SEQ_MASK
        if (seq - self.start_seq) & SEQ_MASK >= 0x8000:
            return -1
        return seq
