"""The server's own ICE consent-freshness checks (RFC 7675), one scheduler per event loop.

aioice 0.13 runs `Connection.query_consent` per connection: a task sleeping 4-6 s, then a STUN
transaction (message objects, a `Transaction` and its timer, a parsed response) that fails unless its
answer is processed within 0.5 s; 6 failures in a row close the connection. With 1,000 peers that is
~200 transactions a second, and after an event-loop stall longer than 0.5 s every check in flight fails
although its answer sits in the socket buffer (libuv runs due timers before it polls the sockets).

Here one `ConsentScheduler` per event loop keeps a heap of `ConsentCheck`s and wakes on one timer for
every check due within `BATCH_S`. A check is a Binding request built with struct + hmac, the bytes of
aioice's `Connection.build_request(pair, nominate=False)` with MESSAGE-INTEGRITY (the remote password)
and FINGERPRINT. A Binding success response with an outstanding transaction id, from the pair's remote
address on its socket, whose MESSAGE-INTEGRITY verifies, refreshes consent (`response_received`).

RFC 7675 section 5.1: a check every 4-6 s (0.8-1.2 x `CHECK_INTERVAL_S`, randomized), consent expires
`CONSENT_TIMEOUT_S` after the last authenticated response. A check unanswered after `RETRY_S` is
followed by another one (checks are retransmitted, not judged one by one), and a check whose timer ran
more than `RETRY_S` late (the loop was stalled) never expires consent: its answer may be waiting in the
socket buffer, the next round reads it. The aioice side (which socket, which credentials, how to close)
is `bridge.start_consent_checks`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import os
import random
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any, Final

from sfu.media.consent import (
    COOKIE,
    FINGERPRINT,
    ICE_CONTROLLED,
    ICE_CONTROLLING,
    MESSAGE_INTEGRITY,
    USERNAME,
    integrity_matches,
    signed_message,
)

log = logging.getLogger("sfu.media.freshness")

# Module constants read at each use, so tests can lower them.
CHECK_INTERVAL_S = 5.0  # RFC 7675 section 5.1: each interval is 0.8-1.2 x this (4-6 s)
RETRY_S = 1.0  # a check still unanswered after this is followed by another one
CONSENT_TIMEOUT_S = 30.0  # RFC 7675 section 5.1: consent expires this long after the last response
BATCH_S = 0.05  # one wakeup sends every check due within 50 ms: at most 20 wakeups a second per loop
MAX_PENDING: Final = 64  # transaction ids remembered per connection since its last response

PRIORITY: Final = 0x0024
BINDING_SUCCESS: Final = b"\x01\x01"
_BINDING_REQUEST: Final = 0x0001
_HEAD: Final = struct.Struct("!HHI12s")
_ATTR: Final = struct.Struct("!HH")
_U32_ATTR: Final = struct.Struct("!HHI")
_U64_ATTR: Final = struct.Struct("!HHQ")
_FINGERPRINT_XOR: Final = 0x5354554E

_monotonic = time.monotonic


def now_s() -> float:
    """The checks' clock (monotonic seconds; tests replace `_monotonic`)."""
    return _monotonic()


class FreshnessTotals:
    """Process-wide counts of the server's consent checks (`/metrics`)."""

    __slots__ = ("checks_sent", "expired", "responses")

    def __init__(self) -> None:
        self.checks_sent = 0
        self.responses = 0  # authenticated responses matched to a check
        self.expired = 0  # connections closed because consent expired


TOTALS: Final = FreshnessTotals()


def request_attributes(username: str, priority: int, ice_controlling: bool, tie_breaker: int) -> bytes:
    """USERNAME, PRIORITY and ICE-CONTROLLING/ICE-CONTROLLED in aioice's order (RFC 8445 section 7.1.1)."""
    name = username.encode()
    role = ICE_CONTROLLING if ice_controlling else ICE_CONTROLLED
    return (
        _ATTR.pack(USERNAME, len(name)) + name + bytes(-len(name) % 4)
        + _U32_ATTR.pack(PRIORITY, 4, priority)
        + _U64_ATTR.pack(role, 8, tie_breaker)
    )  # fmt: skip


def binding_request(attributes: bytes, key: bytes, transaction_id: bytes) -> bytes:
    """A Binding request with `attributes`, MESSAGE-INTEGRITY keyed with `key` and FINGERPRINT."""
    return signed_message(_BINDING_REQUEST, transaction_id, attributes, key)


def authenticated(data: bytes, key: bytes) -> bool:
    """Whether STUN message `data` carries a MESSAGE-INTEGRITY that verifies with `key` (and a valid
    FINGERPRINT, if one follows it)."""
    end = len(data)
    if end < 20:
        return False
    _, length, cookie, _ = _HEAD.unpack_from(data)
    if cookie != COOKIE or length + 20 != end:
        return False
    offset = 20
    while offset + 4 <= end:
        kind, size = _ATTR.unpack_from(data, offset)
        if kind == MESSAGE_INTEGRITY:
            break
        offset += 4 + size + (-size % 4)
    else:
        return False
    if size != 20 or not integrity_matches(data, offset, key):
        return False
    after = offset + 24
    if after + 8 <= end and _ATTR.unpack_from(data, after) == (FINGERPRINT, 4):
        crc = int.from_bytes(data[after + 4 : after + 8], "big")
        head = data[:2] + (after + 8 - 20).to_bytes(2, "big") + data[4:after]
        return crc == (zlib.crc32(head) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
    return True


class ConsentCheck:
    """Consent of one ICE connection on its nominated pair: what to send where, and when it expires."""

    __slots__ = (
        "_attributes",
        "_is_closing",
        "_key",
        "_on_expired",
        "_sendto",
        "fresh_at",
        "next_regular_at",
        "pending",
        "protocol",
        "remote_addr",
        "scheduler",
        "stopped",
    )

    def __init__(
        self,
        *,
        sendto: Callable[[bytes, Any], None],
        protocol: object,
        remote_addr: tuple[str, int],
        attributes: bytes,
        remote_password: str,
        is_closing: Callable[[], bool],
        on_expired: Callable[[], None],
        now: float,
    ) -> None:
        self._sendto = sendto
        self.protocol = protocol  # the nominated pair's socket: responses count only there
        self.remote_addr = remote_addr
        self._attributes = attributes
        self._key = remote_password.encode()
        self._is_closing = is_closing
        self._on_expired = on_expired
        self.fresh_at = now  # ICE has just verified the pair (the nomination is a consent check)
        self.next_regular_at = now
        self.pending: dict[bytes, None] = {}  # transaction ids sent since the last response, oldest first
        self.scheduler: ConsentScheduler | None = None
        self.stopped = False

    def tick(self, now: float, late: bool) -> float | None:
        """Does what is due at `now`; returns when to come back, or None when this check is over.

        `late`: the scheduler woke more than RETRY_S after the due time, the loop was stalled."""
        if self.stopped or self._is_closing():
            return None
        if self.pending:
            if now - self.fresh_at >= CONSENT_TIMEOUT_S and not late:
                self.stopped = True
                TOTALS.expired += 1
                log.info("consent to send expired for %s (no response for %.0f s)", self.remote_addr,
                         now - self.fresh_at)  # fmt: skip
                self._on_expired()
                return None
        elif self.next_regular_at > now + BATCH_S:
            return self.next_regular_at
        self.send(now)
        return now + RETRY_S

    def send(self, now: float) -> None:
        transaction_id = os.urandom(12)
        pending = self.pending
        if len(pending) >= MAX_PENDING:
            del pending[next(iter(pending))]
        pending[transaction_id] = None
        self._sendto(binding_request(self._attributes, self._key, transaction_id), self.remote_addr)
        self.next_regular_at = now + CHECK_INTERVAL_S * (0.8 + 0.4 * random.random())
        TOTALS.checks_sent += 1

    def response_received(self, data: bytes, addr: Any, protocol: object) -> bool:
        """True if `data` is an authenticated Binding success response to an outstanding check, from the
        pair's remote address on its socket (RFC 7675 section 5.1): consent refreshed, datagram consumed."""
        pending = self.pending
        if (
            not pending
            or data[:2] != BINDING_SUCCESS
            or data[8:20] not in pending
            or addr != self.remote_addr
            or protocol is not self.protocol
            or not authenticated(data, self._key)
        ):
            return False
        pending.clear()
        self.fresh_at = _monotonic()
        TOTALS.responses += 1
        return True

    def stop(self) -> None:
        """No more checks (the connection is closing); idempotent."""
        self.stopped = True
        if self.scheduler is not None:
            self.scheduler.remove(self)


class ConsentScheduler:
    """Every ConsentCheck of one event loop on one timer: a heap of (due, order, check).

    Without a loop it is driven by `run_due(now)` (the tests' clock)."""

    __slots__ = ("_checks", "_handle", "_heap", "_loop", "_order", "_wake_at")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, ConsentCheck]] = []
        self._order = itertools.count()
        self._checks: set[ConsentCheck] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._wake_at = math.inf

    def __len__(self) -> int:
        return len(self._checks)

    def add(self, check: ConsentCheck, now: float) -> None:
        """First check at a random phase within one interval: peers that connected together spread out."""
        check.scheduler = self
        self._checks.add(check)
        due = now + CHECK_INTERVAL_S * random.random()
        check.next_regular_at = due
        heapq.heappush(self._heap, (due, next(self._order), check))
        self._arm(due, now)

    def remove(self, check: ConsentCheck) -> None:
        check.stopped = True  # its heap entry is skipped when it comes up
        self._checks.discard(check)
        if not self._checks:
            self._idle()

    def due_times(self) -> list[float]:
        """When each live check comes up next (tests)."""
        return sorted(due for due, _, check in self._heap if not check.stopped)

    def run_due(self, now: float) -> float | None:
        """Runs every check due by `now` + BATCH_S; returns the next due time (None: nothing left)."""
        heap = self._heap
        limit = now + BATCH_S
        again: list[tuple[float, ConsentCheck]] = []
        while heap and heap[0][0] <= limit:
            due, _, check = heapq.heappop(heap)
            if check.stopped:
                continue
            try:
                next_due = check.tick(now, now - due > RETRY_S)
            except Exception:  # one broken connection must not stop the others' checks
                log.exception("consent check failed")
                next_due = None
            if next_due is None:
                self._checks.discard(check)
            else:
                again.append((next_due, check))
        for next_due, check in again:  # after the loop: each check runs once per wakeup
            heapq.heappush(heap, (next_due, next(self._order), check))
        return heap[0][0] if heap else None

    def _arm(self, due: float, now: float) -> None:
        if self._loop is None or due >= self._wake_at:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._wake_at = due
        self._handle = self._loop.call_later(max(0.0, due - now), self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._wake_at = math.inf
        now = _monotonic()
        next_due = self.run_due(now)
        if self._checks and next_due is not None:
            self._arm(next_due, now)
        else:
            self._idle()

    def _idle(self) -> None:
        """No check left: no timer, and the next `scheduler_for` on this loop starts afresh."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._wake_at = math.inf
        self._heap.clear()
        if self._loop is not None and _SCHEDULERS.get(self._loop) is self:
            del _SCHEDULERS[self._loop]


_SCHEDULERS: dict[asyncio.AbstractEventLoop, ConsentScheduler] = {}


def scheduler_for(loop: asyncio.AbstractEventLoop) -> ConsentScheduler:
    """The scheduler of `loop` (one per event loop, dropped when its last check ends)."""
    scheduler = _SCHEDULERS.get(loop)
    if scheduler is None:
        scheduler = _SCHEDULERS[loop] = ConsentScheduler(loop)
    return scheduler
