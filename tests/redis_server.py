"""Debian's redis-server for tests: a private one on a free loopback port in a temporary directory, with no
persistence, killed (and its directory removed) at the end. `scripts/test.sh` installs the package."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REDIS_SERVER = "redis-server"


def redis_missing() -> str | None:
    """Why the Redis tests cannot run here, or None."""
    if shutil.which(REDIS_SERVER) is None:
        return "redis-server is not installed (scripts/test.sh installs Debian's redis-server)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Starts redis-server on 127.0.0.1 (retrying if the free port was taken meanwhile)."""
    workdir = Path(tempfile.mkdtemp(prefix="sfu-redis-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(5):
            port = _free_port()
            process = subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning",
                 "--logfile", str(workdir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and process.poll() is None and not _ping(port):
                time.sleep(0.02)
            if process.poll() is None and _ping(port):
                yield RedisServer(f"redis://127.0.0.1:{port}/0", port, process)
                return
            process.kill()
            process.wait()
        log = (workdir / "redis.log").read_text(errors="replace") if (workdir / "redis.log").exists() else ""
        raise RuntimeError(f"redis-server did not start: {log[-500:]}")
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
