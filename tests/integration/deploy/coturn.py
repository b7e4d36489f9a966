"""Debian's coturn on loopback for tests: installed with apt-get when missing (root only), started with
REST-API credentials (`use-auth-secret`) on a free port, and stopped with its log removed afterwards."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aioice.stun

TURNSERVER = "turnserver"


def ensure_coturn() -> str | None:
    """None when `turnserver` is (now) available, else why it cannot be."""
    if shutil.which(TURNSERVER):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "coturn is not installed and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "coturn"],
            env=env, capture_output=True, text=True, timeout=150, check=False,
        )
    except subprocess.TimeoutExpired:
        return "apt-get install coturn took longer than 150 s"
    if done.returncode != 0 or not shutil.which(TURNSERVER):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"apt-get install coturn failed (no network?): {last}"
    if shutil.which("systemctl"):  # the package may start a system-wide turnserver: tests use their own
        stop = ["systemctl", "disable", "--now", "coturn"]
        subprocess.run(stop, capture_output=True, timeout=30, check=False)
    return None


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


@dataclass(frozen=True, slots=True)
class Coturn:
    port: int
    secret: str
    log: Path

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answered = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.answered.done():
            self.answered.set_result(None)


async def _answers_stun(port: int, timeout_s: float) -> bool:
    """True once a STUN binding request to 127.0.0.1:port gets an answer."""
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(_Probe, remote_addr=("127.0.0.1", port))
    try:
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            request = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
            transport.sendto(bytes(request))
            try:
                await asyncio.wait_for(asyncio.shield(probe.answered), 0.2)
                return True
            except TimeoutError:
                continue
        return False
    finally:
        transport.close()


@asynccontextmanager
async def coturn(directory: Path) -> AsyncIterator[Coturn]:
    """turnserver on 127.0.0.1 only, relaying on 127.0.0.1, no TLS/DTLS, loopback peers allowed."""
    port, secret, log = free_port(), secrets.token_hex(16), directory / "turnserver.log"
    proc = await asyncio.create_subprocess_exec(
        TURNSERVER, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=sfu.test",
        "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli", "--simple-log", "--no-stdout-log",
        f"--log-file={log}", f"--pidfile={directory / 'turnserver.pid'}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        if not await _answers_stun(port, 10.0):
            text = log.read_text() if log.exists() else ""
            raise AssertionError(f"turnserver did not answer on {port}: {text}")
        yield Coturn(port, secret, log)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
