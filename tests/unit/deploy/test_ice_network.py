"""ICE port range and announced (1:1 NAT) addresses in the bridge, including the aioice 0.13.0 internals
they rely on: a contract test fails loudly when an upgrade moves them."""

from __future__ import annotations

import inspect
import socket

import aioice.candidate
import aioice.ice
import aioice.turn
import pytest

from sfu.media import bridge
from sfu.media.bridge import IceNetwork


@pytest.mark.parametrize(
    ("announced", "host", "expected"),
    [
        ((), "10.0.0.5", "10.0.0.5"),
        ((("0.0.0.0", "203.0.113.7"),), "10.0.0.5", "203.0.113.7"),
        ((("0.0.0.0", "203.0.113.7"),), "2001:db8::5", "2001:db8::5"),
        ((("::", "2001:db8::7"),), "2001:db8::5", "2001:db8::7"),
        ((("10.0.0.5", "203.0.113.5"), ("0.0.0.0", "203.0.113.7")), "10.0.0.5", "203.0.113.5"),
        ((("10.0.0.5", "203.0.113.5"), ("0.0.0.0", "203.0.113.7")), "10.0.0.6", "203.0.113.7"),
        ((("10.0.0.5", "203.0.113.5"),), "10.0.0.6", "10.0.0.6"),
    ],
)
def test_a_host_address_is_announced_as_its_exact_mapping_else_its_familys_else_itself(
    announced: tuple[tuple[str, str], ...], host: str, expected: str
) -> None:
    assert IceNetwork(None, announced).announce(host) == expected


def test_the_aioice_internals_the_bridge_wraps_are_where_it_expects_them() -> None:
    method = aioice.ice.Connection.get_component_candidates
    assert list(inspect.signature(method).parameters) == ["self", "component", "addresses", "timeout"]
    gather = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "self.get_component_candidates(" in gather and "get_host_addresses(" in gather
    assert list(inspect.signature(aioice.ice.StunProtocol).parameters) == ["receiver"]
    assert isinstance(aioice.turn.UDP_SOCKET_BUFFER_SIZE, int)
    assert callable(aioice.candidate.candidate_foundation) and callable(aioice.candidate.candidate_priority)
    connection = aioice.ice.Connection(ice_controlling=False)
    assert connection._protocols == [] and connection.turn_server is None


def free_range(width: int) -> tuple[int, int]:
    """A block of UDP ports on 127.0.0.1 that were free a moment ago (above the ephemeral range's start)."""
    for low in range(42000, 48000, width):
        socks = []
        try:
            for port in range(low, low + width):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return low, low + width - 1
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no free UDP port block")


async def gather(
    network: IceNetwork | None, hosts: tuple[str, ...] = ("127.0.0.1",)
) -> aioice.ice.Connection:
    connection = aioice.ice.Connection(ice_controlling=True)
    with bridge.ice_network_scope(network), bridge.ice_hosts_scope(hosts):
        await connection.gather_candidates()
    return connection


async def test_host_sockets_bind_inside_the_port_range_and_announce_the_public_address() -> None:
    low, high = free_range(3)
    network = IceNetwork((low, high), (("0.0.0.0", "203.0.113.7"),))
    connections = [await gather(network) for _ in range(3)]
    try:
        ports = set()
        for connection in connections:
            [candidate] = connection.local_candidates
            assert candidate.type == "host" and candidate.host == "203.0.113.7"
            assert low <= candidate.port <= high
            [protocol] = connection._protocols
            assert protocol.transport.get_extra_info("sockname")[:2] == ("127.0.0.1", candidate.port)
            ports.add(candidate.port)
        assert len(ports) == 3
        exhausted = await gather(network)
        assert exhausted.local_candidates == [] and exhausted._protocols == []
        await exhausted.close()
    finally:
        for connection in connections:
            await connection.close()


async def test_outside_the_scope_aioice_gathers_as_before() -> None:
    connection = await gather(None)
    try:
        [candidate] = connection.local_candidates
        assert candidate.host == "127.0.0.1" and candidate.port > 0
    finally:
        await connection.close()


async def test_an_ipv6_host_address_gets_a_candidate_in_the_range() -> None:
    low, high = free_range(4)
    connection = await gather(IceNetwork((low, high)), ("::1",))
    try:
        [candidate] = connection.local_candidates
        assert candidate.host == "::1" and low <= candidate.port <= high
    finally:
        await connection.close()
