"""The server's consent checks (sfu/media/freshness.py, wired by `bridge.start_consent_checks`): the
requests are aioice's bytes, only an authenticated answer from the right place refreshes consent,
consent expires after the (lowered) timeout but not because the loop was stalled, checks spread out
(aioice 0.13.0 as the peer and as the reference)."""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Iterator
from typing import Any

import aioice.ice
import pytest
from aioice import stun

from sfu.media import bridge, freshness
from sfu.media.freshness import TOTALS, ConsentCheck, ConsentScheduler

SERVER = ("127.0.0.1", 40000)
CLIENT = ("127.0.0.1", 50123)


class Clock:
    """The checks' clock (`freshness._monotonic`), advanced by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    clock = Clock()
    monkeypatch.setattr(freshness, "_monotonic", clock)
    yield clock


class Socket:
    """Stands in for the nominated pair's asyncio datagram transport: what was sent where."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.closing = False

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return self.closing

    def send_stun(self, message: stun.Message, addr: Any) -> None:  # aioice's answers, in `answer`
        self.sent.append((bytes(message), addr))


class Protocol:
    def __init__(self) -> None:
        self.transport = Socket()
        self.passed: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.passed.append(data)


def peers(server_controlling: bool) -> tuple[aioice.ice.Connection, aioice.ice.Connection, Protocol]:
    """The server's aioice connection with a nominated pair (on a fake socket) and the client's."""
    server = aioice.ice.Connection(ice_controlling=server_controlling)
    client = aioice.ice.Connection(ice_controlling=not server_controlling)
    server.remote_username, server.remote_password = client.local_username, client.local_password
    client.remote_username, client.remote_password = server.local_username, server.local_password
    protocol = Protocol()
    server._protocols.append(protocol)  # type: ignore[arg-type]
    server._nominated[1] = type("Pair", (), {"protocol": protocol, "remote_addr": CLIENT, "component": 1})()
    return server, client, protocol


def answer(client: aioice.ice.Connection, request: bytes) -> bytes:
    """What the client's aioice sends back for `request` (RFC 8445 section 7.3)."""
    socket = Socket()
    client.request_received(stun.parse_message(request), SERVER, socket)  # type: ignore[arg-type]
    assert len(socket.sent) == 1
    return socket.sent[0][0]


def aioice_request(server: aioice.ice.Connection, transaction_id: bytes) -> bytes:
    """What aioice's `query_consent` sends for the same check."""
    message = server.build_request(server._nominated[1], nominate=False)
    message.transaction_id = transaction_id
    assert server.remote_password is not None
    message.add_message_integrity(server.remote_password.encode())
    return bytes(message)


@pytest.mark.parametrize("server_controlling", [True, False])
async def test_the_request_is_byte_for_byte_what_aioice_sends(server_controlling: bool) -> None:
    server, client, protocol = peers(server_controlling)
    check = bridge.start_consent_checks(server)
    assert check is not None and bridge.start_consent_checks(server) is check  # once per connection
    try:
        for _ in range(3):
            check.send(freshness._monotonic())
        assert len(check.pending) == 3 and len(set(check.pending)) == 3  # fresh transaction ids
        for (data, addr), transaction_id in zip(protocol.transport.sent, check.pending, strict=True):
            assert addr == CLIENT and data == aioice_request(server, transaction_id)
            parsed = stun.parse_message(data)  # raises on a bad FINGERPRINT
            assert parsed.message_method == stun.Method.BINDING and parsed.message_class == stun.Class.REQUEST
            assert parsed.transaction_id == transaction_id
            assert parsed.attributes["USERNAME"] == f"{client.local_username}:{server.local_username}"
            assert parsed.attributes["PRIORITY"] == aioice.candidate.candidate_priority(1, "prflx")
            role = "ICE-CONTROLLING" if server_controlling else "ICE-CONTROLLED"
            assert parsed.attributes[role] == server._tie_breaker and "USE-CANDIDATE" not in parsed.attributes
            assert "FINGERPRINT" in parsed.attributes
            assert parsed.check_message_integrity(client.local_password.encode())  # the remote password
            assert not parsed.check_message_integrity(server.local_password.encode())
    finally:
        check.stop()


async def test_aioice_stops_its_own_checks_where_the_server_checks() -> None:
    server, _, _ = peers(True)

    async def aioice_checks() -> None:
        await asyncio.sleep(3600)

    server._query_consent_task = asyncio.create_task(aioice_checks())  # as if connect() had started it
    check = bridge.start_consent_checks(server)
    assert check is not None
    try:
        assert "query_consent" in vars(server)  # aioice looks it up on the instance (contract test)
        await server.query_consent()  # returns at once
        await asyncio.sleep(0)
        assert server._query_consent_task.cancelled()
        loop = asyncio.get_running_loop()
        assert freshness.scheduler_for(loop).due_times() == [check.next_regular_at]
    finally:
        check.stop()
    assert loop not in freshness._SCHEDULERS  # the last check gone: no timer left on the loop


@pytest.mark.parametrize("change", ["none", "transaction", "integrity", "fingerprint", "address", "socket"])
async def test_only_an_authenticated_answer_to_an_outstanding_check_refreshes(
    clock: Clock, change: str
) -> None:
    server, client, protocol = peers(False)
    check = bridge.start_consent_checks(server)
    assert check is not None
    try:
        check.send(clock.now)
        request = protocol.transport.sent[0][0]
        response = answer(client, request)
        addr, on = CLIENT, protocol
        if change == "transaction":  # a genuine answer, but to a check that is not ours
            response = answer(client, aioice_request(server, b"\x07" * 12))
        elif change == "integrity":  # a success response from someone who does not know the password
            forged = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=request[8:20])
            forged.attributes["XOR-MAPPED-ADDRESS"] = SERVER
            forged.add_message_integrity(b"not-the-client-password")
            response = bytes(forged)
        elif change == "fingerprint":
            response = response[:-1] + bytes([response[-1] ^ 1])
        elif change == "address":
            addr = ("127.0.0.1", CLIENT[1] + 1)
        elif change == "socket":
            on = Protocol()
        clock.now += 0.5
        before = TOTALS.responses
        refreshed = check.response_received(response, addr, on)
        assert refreshed == (change == "none")
        assert (check.fresh_at, len(check.pending), TOTALS.responses - before) == (
            (clock.now, 0, 1) if refreshed else (clock.now - 0.5, 1, 0)
        )
    finally:
        check.stop()


async def test_the_hook_consumes_the_answers_and_passes_the_rest_to_aioice(clock: Clock) -> None:
    server, client, protocol = peers(True)

    class Srtp:
        @staticmethod
        def unprotect(data: bytes) -> bytes:
            return data

        unprotect_rtcp = unprotect

    ice = type("Ice", (), {"_connection": server})()
    dtls: Any = type("Dtls", (), {"_rx_srtp": Srtp(), "transport": ice})()
    rtp: list[bytes] = []

    def on_packet(data: bytes) -> Any:
        rtp.append(data)
        return bridge.DONE

    assert bridge.bypass_ice_queue(dtls, on_packet, on_packet, check_consent=True) == 1
    check = server._sfu_consent  # type: ignore[attr-defined]
    try:
        check.send(clock.now)
        response = answer(client, protocol.transport.sent[0][0])
        stray = answer(client, aioice_request(server, b"\x01" * 12))
        media = b"\x80\x60" + bytes(30)
        for data in (stray, response, response, media):
            protocol.datagram_received(data, CLIENT)  # the instance attribute the event loop calls
        assert protocol.passed == [stray, response] and rtp == [media]  # the second one: nothing pending
        assert check.pending == {} and check.fresh_at == clock.now
    finally:
        check.stop()


def loose_check(sent: list[float], expired: list[float], clock: Clock) -> ConsentCheck:
    """A check whose requests go nowhere: `sent` and `expired` record when."""
    check: ConsentCheck

    def sendto(data: bytes, addr: Any) -> None:
        sent.append(clock.now)

    def on_expired() -> None:
        expired.append(clock.now)

    check = ConsentCheck(
        sendto=sendto, protocol=None, remote_addr=CLIENT, attributes=b"", remote_password="p" * 22,
        is_closing=lambda: False, on_expired=on_expired, now=clock.now,
    )  # fmt: skip
    return check


def run(scheduler: ConsentScheduler, clock: Clock, until: float, step: float = 0.01) -> None:
    while clock.now < until:
        clock.now = round(clock.now + step, 6)
        scheduler.run_due(clock.now)


def respond(check: ConsentCheck) -> None:
    """The peer answers everything outstanding (as `response_received` does, without the bytes)."""
    if check.pending:
        check.pending.clear()
        check.fresh_at = freshness._monotonic()


def test_unanswered_checks_come_every_retry_and_consent_expires_after_the_timeout(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(freshness, "CONSENT_TIMEOUT_S", 3.0)
    monkeypatch.setattr(freshness, "CHECK_INTERVAL_S", 1.0)  # the first check within a second
    scheduler = ConsentScheduler()
    sent: list[float] = []
    expired: list[float] = []
    check = loose_check(sent, expired, clock)
    start = clock.now
    scheduler.add(check, clock.now)
    before = TOTALS.expired
    run(scheduler, clock, start + 10)
    assert len(expired) == 1 and TOTALS.expired == before + 1 and len(scheduler) == 0
    assert 3.0 <= expired[0] - start <= 3.0 + freshness.RETRY_S + 0.1
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(gaps) >= 2 and all(0.9 <= gap <= 1.05 for gap in gaps)  # unanswered: one more every RETRY_S
    assert sent[-1] < expired[0] and check.stopped


def test_answered_checks_come_every_four_to_six_seconds_and_consent_holds(clock: Clock) -> None:
    scheduler = ConsentScheduler()
    sent: list[float] = []
    expired: list[float] = []
    check = loose_check(sent, expired, clock)
    scheduler.add(check, clock.now)
    end = clock.now + 120
    while clock.now < end:
        run(scheduler, clock, clock.now + 0.05)
        respond(check)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert expired == [] and len(gaps) > 15
    low, high = 0.8 * freshness.CHECK_INTERVAL_S - 0.1, 1.2 * freshness.CHECK_INTERVAL_S + 0.05
    assert all(low <= gap <= high for gap in gaps)
    assert max(gaps) - min(gaps) > 0.5  # randomized, not a fixed period


def test_a_stalled_loop_does_not_expire_consent(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler wakes late (the loop was stalled longer than the timeout): the answers may be in the
    socket buffer, so it checks once more instead of expiring; an answer then keeps the peer."""
    monkeypatch.setattr(freshness, "CONSENT_TIMEOUT_S", 3.0)
    scheduler = ConsentScheduler()
    sent: list[float] = []
    expired: list[float] = []
    check = loose_check(sent, expired, clock)
    scheduler.add(check, clock.now)
    while not sent:  # until the first check went out
        run(scheduler, clock, clock.now + 0.01)
    assert len(sent) == 1 and check.pending
    clock.now += 10.0  # stalled: nothing ran for 10 s
    scheduler.run_due(clock.now)
    assert expired == [] and len(sent) == 2  # late: one more check instead
    respond(check)  # the answers waiting in the buffer are read right after
    run(scheduler, clock, clock.now + 2.0)
    assert expired == [] and len(scheduler) == 1
    clock.now += 10.0  # stalled again, and this time nobody answers
    scheduler.run_due(clock.now)
    run(scheduler, clock, clock.now + 2.0)
    assert len(expired) == 1  # the next, punctual round expires it


def test_checks_of_peers_that_connect_together_are_spread_out(clock: Clock) -> None:
    scheduler = ConsentScheduler()
    sent: list[float] = []
    expired: list[float] = []
    checks = [loose_check(sent, expired, clock) for _ in range(1000)]
    start = clock.now
    for check in checks:
        scheduler.add(check, start)
    firsts = scheduler.due_times()
    assert len(firsts) == 1000 and all(start <= due < start + freshness.CHECK_INTERVAL_S for due in firsts)
    buckets = collections.Counter(int((due - start) / 0.5) for due in firsts)  # 10 half-second buckets
    assert len(buckets) == 10 and max(buckets.values()) < 160  # 100 each on average
    end = start + 60
    while clock.now < end:
        run(scheduler, clock, clock.now + 0.05, step=0.05)
        for check in checks:
            respond(check)
    per_second = collections.Counter(int(t - start) for t in sent)
    assert expired == [] and len(sent) > 10_000
    assert max(per_second.values()) < 320  # ~200 a second (1,000 peers / 5 s), never a burst of all


def test_a_closing_socket_ends_the_checks_silently(clock: Clock) -> None:
    scheduler = ConsentScheduler()
    sent: list[float] = []
    expired: list[float] = []
    closing = [False]
    check = loose_check(sent, expired, clock)
    check._is_closing = lambda: closing[0]
    scheduler.add(check, clock.now)
    run(scheduler, clock, clock.now + 7)
    assert len(sent) >= 1
    closing[0] = True
    count = len(sent)
    run(scheduler, clock, clock.now + 40)
    assert len(sent) == count and expired == [] and len(scheduler) == 0


def test_the_counters_are_exported_and_summed_over_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from prometheus_client.parser import text_string_to_metric_families

    from sfu.cluster.merge import merge_prometheus, merge_stats
    from sfu.metrics import Metrics

    for name, value in (("checks_sent", 7), ("responses", 5), ("expired", 1)):
        monkeypatch.setattr(TOTALS, name, value)
    server: Any = SimpleNamespace(registry=SimpleNamespace(sessions_by_key={}), media=SimpleNamespace())
    server.media.transports = []
    metrics = Metrics(server)
    text = metrics.prometheus_text().decode()
    merged = merge_prometheus([text, text]).decode()

    def samples(exposition: str) -> dict[str, float]:
        return {s.name: s.value for f in text_string_to_metric_families(exposition) for s in f.samples}

    one, two = samples(text), samples(merged)
    expected = {"sent": 7, "answered": 5, "expired": 1}
    for name, value in expected.items():
        assert one[f"sfu_ice_consent_checks_{name}_total"] == value
        assert two[f"sfu_ice_consent_checks_{name}_total"] == 2 * value
    snapshot = metrics.snapshot()["ice_consent_checks"]
    assert snapshot == expected and merge_stats([{"c": snapshot}, {"c": snapshot}])["c"] == {
        name: 2 * value for name, value in expected.items()
    }


def test_aioice_and_aiortc_start_consent_checks_where_the_bridge_expects() -> None:
    """`bridge.disarm_aioice_consent` runs right after `setLocalDescription` returns: aiortc only schedules
    `__connect()` there (no await after it), and aioice starts `query_consent` as connect()'s last step,
    looked up on the instance."""
    import inspect

    from aiortc import RTCPeerConnection

    connect = inspect.getsource(aioice.ice.Connection.connect).rstrip()
    assert connect.endswith("self._query_consent_task = asyncio.create_task(self.query_consent())")
    local = inspect.getsource(RTCPeerConnection.setLocalDescription)
    _, scheduled, after = local.partition("asyncio.ensure_future(self.__connect())")
    assert scheduled and "await" not in after
    built = inspect.getsource(aioice.ice.Connection.build_request)
    assert "self._tie_breaker" in built and '"prflx"' in built
