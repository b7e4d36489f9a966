"""Key frame requests to a publisher, coalesced per feed (mediasoup's KeyFrameRequestManager, simplified).

Every subscriber that joins, switches layer or loses packets wants a key frame. Relaying each PLI would
make the publisher send key frames back to back (each is 5-10x a delta frame), so one feed asks at most
once per `min_interval_ms`. A request inside the interval is remembered and sent when the interval ends,
unless a key frame arrives first (it serves that subscriber too). Time is a parameter: `now_ms`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from sfu.media.rtcp import build_fir, build_pli

MIN_INTERVAL_MS: Final = 500


class KeyFrameRequester:
    """Coalesces key frame requests for one feed (one media SSRC) into PLI or FIR packets to send.

    `request_key_frame` and `poll` return the RTCP packet to send now, or None. PLI (RFC 4585 section
    6.3.1) is preferred; FIR (RFC 5104 section 4.3.1) is used when only `ccm fir` was negotiated, with a
    command sequence number that increases for every new request (RFC 5104 section 4.3.1.2).
    """

    __slots__ = (
        "_fir_seq",
        "_last_sent_ms",
        "_pli_packet",
        "min_interval_ms",
        "pending",
        "requests_coalesced",
        "requests_in",
        "requests_sent",
        "retry_ms",
        "sender_ssrc",
        "ssrc",
        "use_fir",
        "waiting_for_key_frame",
    )

    def __init__(
        self,
        sender_ssrc: int,
        ssrc: int,
        *,
        use_fir: bool = False,
        min_interval_ms: int = MIN_INTERVAL_MS,
        retry_ms: int = 0,
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.ssrc = ssrc
        self.use_fir = use_fir
        self.min_interval_ms = min_interval_ms
        # NOTE: 0 disables retries; otherwise a request is repeated when no key frame came within retry_ms
        self.retry_ms = retry_ms
        self.pending = False
        self.waiting_for_key_frame = False
        self.requests_in = 0
        self.requests_sent = 0
        self.requests_coalesced = 0
        self._last_sent_ms: int | None = None
        self._fir_seq = 0
        self._pli_packet = build_pli(sender_ssrc, ssrc)

    @classmethod
    def from_rtcp_fb(
        cls, sender_ssrc: int, ssrc: int, rtcp_fb: Iterable[str], **kwargs: int
    ) -> KeyFrameRequester | None:
        """For a codec's negotiated `a=rtcp-fb` values ("nack pli", "ccm fir"); None if it has neither."""
        values = {" ".join(v.lower().split()) for v in rtcp_fb}
        if "nack pli" in values:
            return cls(sender_ssrc, ssrc, use_fir=False, **kwargs)
        if "ccm fir" in values:
            return cls(sender_ssrc, ssrc, use_fir=True, **kwargs)
        return None

    def set_ssrc(self, ssrc: int) -> None:
        """The media SSRC changed (learned from RTP, or the publisher restarted)."""
        self.ssrc = ssrc
        self._pli_packet = build_pli(self.sender_ssrc, ssrc)

    def request_key_frame(self, now_ms: int) -> bytes | None:
        """A subscriber needs a key frame: the packet to send now, or None if coalesced into a later one."""
        self.requests_in += 1
        if self._can_send(now_ms):
            return self._send(now_ms)
        self.pending = True
        self.requests_coalesced += 1
        return None

    def poll(self, now_ms: int) -> bytes | None:
        """Called from the RTCP timer: the remembered (or retried) request once its interval has ended."""
        if self.pending:
            return self._send(now_ms) if self._can_send(now_ms) else None
        if (
            self.retry_ms
            and self.waiting_for_key_frame
            and self._last_sent_ms is not None
            and now_ms - self._last_sent_ms >= max(self.retry_ms, self.min_interval_ms)
        ):
            return self._send(now_ms)
        return None

    def next_due_ms(self) -> int | None:
        """When `poll` will next have something to send, so a timer can sleep until then; None if idle."""
        if self._last_sent_ms is None:
            return None
        if self.pending:
            return self._last_sent_ms + self.min_interval_ms
        if self.retry_ms and self.waiting_for_key_frame:
            return self._last_sent_ms + max(self.retry_ms, self.min_interval_ms)
        return None

    def on_key_frame(self) -> None:
        """A key frame arrived from the publisher: it serves every request made so far."""
        self.pending = False
        self.waiting_for_key_frame = False

    def _can_send(self, now_ms: int) -> bool:
        return self._last_sent_ms is None or now_ms - self._last_sent_ms >= self.min_interval_ms

    def _send(self, now_ms: int) -> bytes:
        self._last_sent_ms = now_ms
        self.pending = False
        self.waiting_for_key_frame = True
        self.requests_sent += 1
        if not self.use_fir:
            return self._pli_packet
        self._fir_seq = (self._fir_seq + 1) & 0xFF
        return build_fir(self.sender_ssrc, self.ssrc, self._fir_seq)
