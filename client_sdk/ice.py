"""ICE configuration rules of the SDK: only `joined.ice_servers`, and loopback candidates on one machine.

aioice gathers host candidates from every interface *except* loopback (`aioice.ice.get_host_addresses`,
aioice 0.13.0, called by `Connection.gather_candidates`). Against a server on 127.0.0.1 that leaves no
working pair, so `loopback_candidates(host)` wraps that function, once per process, behind a ContextVar:
only candidates gathered inside the scope (the SDK's own `setLocalDescription` calls, including the tasks
aioice starts from them, which copy the context) see the loopback address; everyone else in the process,
such as a server running in the same interpreter, keeps aioice's behaviour or its own wrapper's.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy

from client_sdk.wire import IceServer

_HOSTS: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "client_sdk_ice_hosts", default=None
)
_wrapped: Callable[[bool, bool], list[str]] | None = None


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    assert _wrapped is not None
    hosts = _HOSTS.get()
    if hosts is None:
        return _wrapped(use_ipv4, use_ipv6)
    versions = {4} if use_ipv4 and not use_ipv6 else {6} if use_ipv6 and not use_ipv4 else {4, 6}
    return [h for h in hosts if ipaddress.ip_address(h).version in versions]


def _install() -> None:
    global _wrapped
    if _wrapped is None:
        _wrapped = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = _get_host_addresses


def loopback_host(url_host: str | None) -> str | None:
    """The loopback address to gather on when the server's host is loopback (or `localhost`), else None."""
    if not url_host:
        return None
    if url_host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(url_host.strip("[]"))
    except ValueError:
        with contextlib.suppress(OSError):
            resolved = socket.getaddrinfo(url_host, None)[0][4][0]
            if ipaddress.ip_address(resolved).is_loopback:
                return str(resolved)
        return None
    return str(address) if address.is_loopback else None


@contextlib.contextmanager
def gather_on(hosts: Sequence[str]) -> Iterator[None]:
    """Host candidates gathered inside are exactly `hosts`; with no hosts, aioice's default applies."""
    if not hosts:
        yield
        return
    _install()
    token = _HOSTS.set(tuple(hosts))
    try:
        yield
    finally:
        _HOSTS.reset(token)


def rtc_configuration(servers: Sequence[IceServer]) -> RTCConfiguration:
    """Always an explicit list (possibly empty): aiortc adds Google's public STUN server when given None.

    max-bundle: one ICE/DTLS transport per peer connection, as the server uses.
    """
    ice_servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in servers
    ]
    return RTCConfiguration(iceServers=ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


async def _consent_not_started() -> None:
    return None


def _aioice_connections(pc: RTCPeerConnection) -> list[Any]:
    found: list[Any] = []
    dtls_transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls_transports.append(pc.sctp.transport)
    for dtls in dtls_transports:
        connection = getattr(getattr(dtls, "transport", None), "_connection", None)
        if connection is not None and connection not in found:
            found.append(connection)
    return found


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """`pc.close()` without leaving a task behind.

    NOTE: aioice 0.13.0 race: when `close()` comes while `Connection.connect()` is between the completed
    check list and its `await self._check_list_state.get()`, `connect()` resumes after the close and
    starts `self.query_consent()`, a task that then sleeps forever. `query_consent` is looked up on the
    instance, so before closing we put a coroutine there that returns at once (a consent task already
    running is cancelled by aioice's own close).
    """
    connections = _aioice_connections(pc)
    for connection in connections:
        connection.query_consent = _consent_not_started  # before: connect() may resume during close()
    await pc.close()
