"""Test hosts in network namespaces this test run creates itself, with bandwidth caps and random loss.

Loss uses `tc netem` where the kernel has it and falls back to an nftables `numgen random` drop rule
(measured here: this VM's kernel has no netem, but nftables and tbf work). Everything is torn down in
`close()`; addresses are in 10.231.0.0/16 and exist only between this host and the namespace.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=10)


def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    name = f"probe{uuid.uuid4().hex[:6]}"
    probe = _run("ip", "netns", "add", name, check=False)
    if probe.returncode != 0:
        return f"the kernel refused a network namespace: {probe.stderr.strip()}"
    _run("ip", "netns", "del", name, check=False)
    return None


@dataclass
class NetHost:
    """A namespace `name` reachable at `address`; this machine is `gateway` on the veth link."""

    name: str
    index: int
    address: str
    gateway: str
    host_if: str
    peer_if: str
    loss_via: str | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(cls, index: int = 1) -> NetHost:
        tag = uuid.uuid4().hex[:6]
        name, host_if, peer_if = f"sfut{tag}", f"vh{tag}", f"vp{tag}"
        gateway, address = f"10.231.{index}.1", f"10.231.{index}.2"
        _run("ip", "netns", "add", name)
        host = cls(name, index, address, gateway, host_if, peer_if)
        try:
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if)
            _run("ip", "link", "set", peer_if, "netns", name)
            _run("ip", "addr", "add", f"{gateway}/24", "dev", host_if)
            _run("ip", "link", "set", host_if, "up")
            host.exec_ok("ip", "addr", "add", f"{address}/24", "dev", peer_if)
            host.exec_ok("ip", "link", "set", peer_if, "up")
            host.exec_ok("ip", "link", "set", "lo", "up")
        except BaseException:
            host.close()
            raise
        return host

    def exec_ok(self, *args: str) -> str:
        return _run("ip", "netns", "exec", self.name, *args).stdout

    def popen(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """A process inside the namespace; killed in close()."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            ["ip", "netns", "exec", self.name, *args], **kwargs
        )
        self._procs.append(proc)
        return proc

    def set_rate(self, kbit: int) -> None:
        """Caps what this machine sends to the host (the host's downlink) with a token bucket."""
        _run("tc", "qdisc", "replace", "dev", self.host_if, "root", "tbf", "rate", f"{kbit}kbit",
             "burst", "16kb", "latency", "100ms")

    def clear_rate(self) -> None:
        _run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)

    def set_loss(self, percent: float) -> str:
        """Random loss on the host's downlink; returns the mechanism used ('netem' or 'nftables')."""
        netem = _run("tc", "qdisc", "replace", "dev", self.host_if, "root", "netem", "loss",
                     f"{percent}%", check=False)
        if netem.returncode == 0:
            self.loss_via = "netem"
            return self.loss_via
        if shutil.which("nft") is None:
            raise RuntimeError("neither tc netem nor nftables is available for loss")
        # NOTE: dropped on arrival inside the namespace; a drop on this side's output would fail the
        # sender's sendto() with EPERM, which no real network does.
        self.exec_ok("nft", "add", "table", "inet", "loss")
        hook = "{ type filter hook prerouting priority 0; }"
        self.exec_ok("nft", "add", "chain", "inet", "loss", "in", hook)
        threshold = round(percent * 100)
        self.exec_ok("nft", "add", "rule", "inet", "loss", "in", "iifname", self.peer_if, "meta", "l4proto",
                     "udp", "numgen", "random", "mod", "10000", "<", str(threshold), "drop")
        self.loss_via = "nftables"
        return self.loss_via

    def clear_loss(self) -> None:
        if self.loss_via == "netem":
            _run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)
        elif self.loss_via == "nftables":
            _run("ip", "netns", "exec", self.name, "nft", "delete", "table", "inet", "loss", check=False)
        self.loss_via = None

    async def run_module_json(self, module: str, *args: str, timeout_s: float) -> dict[str, Any]:
        """Runs `python -m module args` inside the namespace (this checkout on PYTHONPATH) and returns the
        JSON object on its last stdout line; the process is killed if it outlives `timeout_s`."""
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.name, sys.executable, "-m", module, *args,
            cwd=REPO, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, f"{module} failed in namespace {self.name}"
        result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
        return result

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=5)
        self._procs.clear()
        self.clear_loss()
        _run("ip", "link", "del", self.host_if, check=False)
        _run("ip", "netns", "del", self.name, check=False)
