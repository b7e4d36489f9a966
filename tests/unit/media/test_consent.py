"""Fast consent answers (sfu/media/consent.py) are what aioice would send, and the hooks that install
them (the server's `bridge.bypass_ice_queue`, the load tool's `taps.answer_consent_fast`) leave
everything else to aioice (aioice 0.13.0)."""

from __future__ import annotations

from typing import Any

import aioice.ice
import pytest
from aioice import stun

from loadtest.taps import answer_consent_fast
from sfu.media.consent import BindingAnswerer

ADDR = ("127.0.0.7", 50123)


class Recorder:
    """Stands in for aioice's StunProtocol: what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def send_stun(self, message: stun.Message, addr: Any) -> None:
        self.sent.append((bytes(message), addr))

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


def request(connection: aioice.ice.Connection, *, password: str | None = None, username: str | None = None,
            role: str = "ICE-CONTROLLING") -> bytes:  # fmt: skip
    """A consent check as the server's aioice sends it (RFC 8445 section 7.2.2)."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username or f"{connection.local_username}:server"
    message.attributes["PRIORITY"] = 1853824767
    message.attributes[role] = 0x1234567890
    message.add_message_integrity((password or connection.local_password).encode())
    return bytes(message)


def aioice_answer(connection: aioice.ice.Connection, data: bytes, addr: tuple[str, int]) -> bytes | None:
    recorder = Recorder()
    connection.request_received(stun.parse_message(data), addr, recorder)  # type: ignore[arg-type]
    return recorder.sent[0][0] if recorder.sent else None


def answerer_of(connection: aioice.ice.Connection) -> BindingAnswerer:
    return BindingAnswerer(connection.local_username, connection.local_password, connection.ice_controlling)


def test_the_answer_is_byte_for_byte_what_aioice_sends() -> None:
    connection = aioice.ice.Connection(ice_controlling=False)
    answerer = answerer_of(connection)
    for _ in range(5):  # fresh transaction ids
        data = request(connection)
        ours = answerer.answer(data, ADDR)
        assert ours is not None and ours == aioice_answer(connection, data, ADDR)
        parsed = stun.parse_message(ours)
        assert parsed.attributes["XOR-MAPPED-ADDRESS"] == ADDR
        assert parsed.check_message_integrity(connection.local_password.encode())


@pytest.mark.parametrize(
    "change",
    ["password", "username", "role", "nomination", "ipv6", "truncated", "indication", "not-stun"],
)
def test_what_it_cannot_answer_is_left_to_aioice(change: str) -> None:
    connection = aioice.ice.Connection(ice_controlling=False)
    answerer = answerer_of(connection)
    addr: Any = ADDR
    data = request(connection)
    if change == "password":
        data = request(connection, password="not-the-password-at-all")
    elif change == "username":
        data = request(connection, username="someone:server")
    elif change == "role":  # a role conflict: we are controlled too
        data = request(connection, role="ICE-CONTROLLED")
    elif change == "nomination":
        message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        message.attributes["USERNAME"] = f"{connection.local_username}:server"
        message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(connection.local_password.encode())
        data = bytes(message)
    elif change == "ipv6":
        addr = ("::1", 50123, 0, 0)
    elif change == "truncated":
        data = data[:-12]
    elif change == "indication":
        data = b"\x00\x11" + data[2:]
    else:
        data = b"\x90" + data[1:]
    assert answerer.answer(data, addr) is None


class FakeProtocol:
    def __init__(self) -> None:
        self.transport = Recorder()
        self.passed: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.passed.append(data)


class FakeDtls:
    def __init__(self, connection: aioice.ice.Connection) -> None:
        self.transport = type("IceTransport", (), {"_connection": connection})()


def test_the_hook_answers_consent_checks_and_passes_everything_else_on() -> None:
    connection = aioice.ice.Connection(ice_controlling=False)
    protocol = FakeProtocol()
    connection._protocols.append(protocol)  # type: ignore[arg-type]
    assert answer_consent_fast(FakeDtls(connection)) == 1
    assert answer_consent_fast(FakeDtls(connection)) == 0  # once per socket
    early = request(connection)
    protocol.datagram_received(early, ADDR)  # no pair nominated yet: aioice's (check_incoming nominates)
    assert protocol.passed == [early] and protocol.transport.sent == []
    protocol.passed.clear()
    connection._nominated[1] = type("Pair", (), {"protocol": protocol, "remote_addr": ADDR})()
    check = request(connection)
    protocol.datagram_received(check, ADDR)  # the instance attribute the event loop calls
    assert protocol.passed == []
    assert protocol.transport.sent[0] == (aioice_answer(connection, check, ADDR), ADDR)
    conflict = request(connection, role="ICE-CONTROLLED")
    dtls_record = b"\x16\xfe\xfd" + bytes(20)
    for data in (conflict, dtls_record):
        protocol.datagram_received(data, ADDR)
    assert protocol.passed == [conflict, dtls_record] and len(protocol.transport.sent) == 1


def test_aioice_keeps_what_the_hook_reads() -> None:
    connection = aioice.ice.Connection(ice_controlling=True)
    names = vars(connection)
    assert names["_protocols"] == [] and names["_nominated"] == {} and "ice_controlling" in dir(connection)
    assert isinstance(connection.local_username, str) and isinstance(connection.local_password, str)


class FakeSrtp:
    @staticmethod
    def unprotect(data: bytes) -> bytes:
        return data

    unprotect_rtcp = unprotect


def test_the_server_answers_consent_on_the_nominated_pair_only() -> None:
    from sfu.media import bridge
    from sfu.media.consent import TOTALS

    connection = aioice.ice.Connection(ice_controlling=True)
    protocol = FakeProtocol()
    connection._protocols.append(protocol)  # type: ignore[arg-type]
    dtls = FakeDtls(connection)
    dtls._rx_srtp = FakeSrtp()  # type: ignore[attr-defined]
    rtp: list[bytes] = []

    def on_packet(data: bytes) -> Any:
        rtp.append(data)
        return bridge.DONE

    assert bridge.bypass_ice_queue(dtls, on_packet, on_packet) == 1
    check = request(connection, role="ICE-CONTROLLED")  # the client is the controlled agent here
    protocol.datagram_received(check, ADDR)  # nothing nominated yet
    assert protocol.passed == [check] and protocol.transport.sent == []
    connection._nominated[1] = type("Pair", (), {"protocol": protocol, "remote_addr": ADDR})()
    before = TOTALS.answered
    protocol.datagram_received(check, ADDR)
    assert protocol.transport.sent == [(aioice_answer(connection, check, ADDR), ADDR)]
    assert TOTALS.answered == before + 1
    elsewhere = ("127.0.0.8", 50123)
    protocol.datagram_received(check, elsewhere)  # another address: aioice decides (a new pair?)
    media = b"\x80\x60" + bytes(30)
    protocol.datagram_received(media, ADDR)
    assert protocol.passed == [check, check] and rtp == [media] and len(protocol.transport.sent) == 1
