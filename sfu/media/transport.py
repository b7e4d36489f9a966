"""What a publisher and a subscriber transport share: one aiortc peer connection used for SDP, ICE,
DTLS and SRTP keys only, our packet hooks on its DTLS transport, and a batched RTCP timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import RTCSessionDescription

from sfu.media import bridge
from sfu.media.counters import new_drops

log = logging.getLogger("sfu.media.transport")

_DEFAULT_NETWORK = bridge.IceNetwork()
_clamp_logged = False
RTCP_INTERVAL_S = 0.05  # feedback (PLI, NACK) goes out within 50 ms, batched per peer
REPORT_EVERY_TICKS = 20  # SR/RR/REMB once a second (RFC 3550 6.2 allows 5% of the bandwidth)


class Transport:
    """Base of PublisherTransport and SubscriberTransport; `close()` is idempotent."""

    def __init__(
        self, ice_hosts: Sequence[str], on_closed: Callable[[Transport], None] | None = None
    ) -> None:
        self._ice_hosts = tuple(ice_hosts)
        self.ice_network: bridge.IceNetwork | None = None  # set by the engine: ICE port range, public address
        self._on_closed = on_closed
        bridge.install_stun_parse_guard()
        self._pc = bridge.new_peer_connection()
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._pc.on("datachannel", self._on_datachannel)
        self.sink = bridge.SrtpSink(on_connected=self._on_connected)
        self.rtcp_ssrc = random.getrandbits(32) or 1
        self.drops = new_drops()
        self.rtcp_packets_in = 0
        self.rtcp_packets_out = 0
        self.on_state_change: Callable[[str], None] | None = None
        self.on_data_channel: Callable[[Any], None] | None = None
        self._hooked: list[Any] = []
        self.udp_buffers = (0, 0)  # (receive, send) bytes the kernel granted our ICE socket (set_udp_buffers)
        self._task: asyncio.Task[None] | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._closed = False
        self._tick = 0

    @property
    def state(self) -> str:
        """aiortc's connectionState: new, connecting, connected, failed or closed."""
        state: str = self._pc.connectionState
        return state

    @property
    def closed(self) -> bool:
        return self._closed

    async def add_ice_candidate(
        self, candidate: str, sdp_mid: str | None = None, index: int | None = None
    ) -> None:
        """A trickled remote candidate line; "" ends the remote candidates."""
        await bridge.add_ice_candidate(self._pc, candidate, sdp_mid, index)

    def create_data_channel(
        self, label: str, *, ordered: bool = True, max_retransmits: int | None = None
    ) -> Any:
        """An aiortc RTCDataChannel on this transport (add before the next offer on a subscriber)."""
        return self._pc.createDataChannel(label, ordered=ordered, maxRetransmits=max_retransmits)

    async def _set_local(self, description: RTCSessionDescription) -> str:
        with bridge.ice_network_scope(self.ice_network):
            if self._ice_hosts:
                with bridge.ice_hosts_scope(self._ice_hosts):
                    await self._pc.setLocalDescription(description)
            else:
                await self._pc.setLocalDescription(description)
        self._hook()
        sdp: str = self._pc.localDescription.sdp
        return sdp

    def _hook(self) -> None:
        """Hooks every DTLS transport of the peer connection (one with BUNDLE) and starts the RTCP timer."""
        bridge.disable_aiortc_media(self._pc)
        transports = bridge.dtls_transports(self._pc)
        for dtls in transports:
            bridge.disarm_aioice_consent(dtls)  # before aioice's connect() ends: the server checks consent
            if dtls not in self._hooked:
                bridge.hook_dtls(dtls, self._on_rtp_data, self._on_rtcp_data)
                self._hooked.append(dtls)
                self._size_udp_buffers(dtls)
        if transports:
            self.sink.attach(transports[0])
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run_rtcp(), name=f"{type(self).__name__}.rtcp")

    def _size_udp_buffers(self, dtls: Any) -> None:
        """A bigger send buffer than the kernel default: a fan-out burst must not hit EAGAIN."""
        size = (self.ice_network or _DEFAULT_NETWORK).udp_buffer_bytes
        granted = bridge.set_udp_buffers(dtls, size)
        if granted != (0, 0):
            self.udp_buffers = granted
        global _clamp_logged
        if granted != (0, 0) and granted[1] < 2 * size and not _clamp_logged:
            _clamp_logged = True  # once per process: every socket gets the same
            log.warning(
                "UDP socket send buffer: asked %d bytes, the kernel granted receive %d / send %d (reported "
                "doubled); raise net.core.wmem_max to allow more",
                size, *granted,
            )  # fmt: skip

    async def _run_rtcp(self) -> None:
        while True:
            await asyncio.sleep(RTCP_INTERVAL_S)
            self._tick += 1
            if self.sink.connected:
                try:
                    self._flush(self._tick % REPORT_EVERY_TICKS == 1)
                except Exception:  # the control plane must not die with one bad report
                    log.exception("%s rtcp flush failed", type(self).__name__)

    def _schedule_flush(self) -> None:
        """Sends pending feedback on the next loop iteration instead of waiting for the timer."""
        if self._flush_handle is None and not self._closed:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        if self.sink.connected:
            self._flush(False)

    def _send_rtcp(self, parts: list[bytes]) -> None:
        if parts and self.sink.send_rtcp(b"".join(parts)):
            self.rtcp_packets_out += 1

    def _on_connected(self) -> None:
        for dtls in self._hooked:
            bridge.bypass_ice_queue(dtls, self._on_rtp_data, self._on_rtcp_data, check_consent=True)
        self._on_sink_connected()

    def _on_connection_state(self) -> None:
        state = self.state
        log.debug("%s connection %s", type(self).__name__, state)
        if self.on_state_change is not None:
            self.on_state_change(state)

    def _on_datachannel(self, channel: Any) -> None:
        if self.on_data_channel is not None:
            self.on_data_channel(channel)

    async def close(self) -> None:
        """Stops the RTCP timer, the packet hooks and the peer connection; notifies the engine once."""
        if self._closed:
            return
        self._closed = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._close_media()
        self.sink.detach()
        await bridge.close_peer_connection(self._pc)
        if self._on_closed is not None:
            self._on_closed(self)

    # overridden by the subclasses
    def _on_rtp_data(self, data: bytes, arrival_time_ms: int = 0) -> bridge._Done:
        return bridge.DONE

    def _on_rtcp_data(self, data: bytes) -> bridge._Done:
        return bridge.DONE

    def _flush(self, report: bool) -> None:
        pass

    def _on_sink_connected(self) -> None:
        pass

    def _close_media(self) -> None:
        pass
