"""Subscribers whose media the kernel counts and drops: the load tool's cheapest receive path.

A load tool on the server's machine competes with the server for CPU: even counting at the UDP socket
(`loadtest.taps.SocketTap`) costs a subscriber about as much per packet as the server spends forwarding
it, so two cores saturate on the clients before a server worker does. With `--subscriber-path kernel`
each load worker process gives its subscribers their own loopback address (`address_for(pid)`, gathered
through `client_sdk.Session(ice_hosts=...)`) and an nftables table with two rules on that address, at
the prerouting hook, for UDP datagrams whose first byte says RTP or RTCP (128-191, RFC 7983): RTCP
(second byte 192-223, RFC 5761 section 4: the server's sender reports) is dropped, RTP is counted per
(destination port, SSRC) and dropped, before any socket; SRTP leaves both bytes and the SSRC in the
clear (RFC 3711 section 3.1). STUN and DTLS still reach aioice and aiortc, so ICE, consent freshness
and the DTLS handshake work as for any subscriber; the subscribers send no receiver feedback.

Measured on this machine: a subscriber woken for every datagram cost the load tool ~20 us per packet
(socket path), mostly the kernel waking a sleeping process; a subscriber woken for nothing costs ~0.
What the server pays is nearly unchanged (delivery over loopback runs in its own system call, as before;
a drop in prerouting skips the socket queue and the wakeup of a receiver). What is lost: per-stream
sequence numbers (loss is packets sent x subscribers vs packets counted) and latency. Needs
CAP_NET_ADMIN (root, or a network namespace of one's own) and `nft`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

NFT: Final = "nft"
TABLE_PREFIX: Final = "pysfu_loadtest_"


def address_for(pid: int) -> str:
    """A loopback address of this process's own (any 127/8 address is local on Linux), never .0/.255."""
    return f"127.{64 + pid // 62500 % 64}.{1 + pid // 250 % 250}.{1 + pid % 250}"


def _nft(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run([NFT, *args], input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _elements(listing: dict[str, Any], table: str | None) -> Iterator[tuple[tuple[int, int], int, int]]:
    """((port, SSRC), packets, bytes) of every `rx` element in `nft -j` output, of `table` or of every
    load-tool table (None)."""
    for item in listing.get("nftables", []):
        found = item.get("set")
        if not found or found.get("name") != "rx":
            continue
        name = found.get("table", "")
        if name != table if table is not None else not name.startswith(TABLE_PREFIX):
            continue
        for elem in found.get("elem", []):
            entry = elem.get("elem", {})
            port, ssrc = entry["val"]["concat"]
            counter = entry.get("counter", {})
            yield (int(port), int(ssrc)), int(counter.get("packets", 0)), int(counter.get("bytes", 0))


def counted_everywhere() -> int:
    """Packets counted so far by every load-tool table of this network namespace (all runs at once):
    what a benchmark reads at both ends of its own window."""
    return sum(packets for _, packets, _ in _elements(json.loads(_nft("-j", "list", "ruleset")), None))


@dataclass(slots=True)
class KernelSink:
    """One nftables table counting and dropping the media sent to `address`; `close()` removes it."""

    address: str
    table: str
    installed: bool = field(default=False)

    @classmethod
    def for_process(cls, pid: int | None = None) -> KernelSink:
        pid = os.getpid() if pid is None else pid
        return cls(address_for(pid), f"{TABLE_PREFIX}{pid}")

    def install(self) -> None:
        """Creates the table (replacing a stale one of the same name, from a killed run of this pid)."""
        self.close()
        _nft(
            "-f",
            "-",
            stdin=f"""table ip {self.table} {{
  set rx {{ typeof udp dport . @th,128,32; size 65535; flags dynamic; counter; }}
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    ip daddr {self.address} udp length > 20 @th,64,8 >= 128 @th,64,8 < 192 @th,72,8 192-223 drop
    ip daddr {self.address} udp length > 20 @th,64,8 >= 128 @th,64,8 < 192 \
add @rx {{ udp dport . @th,128,32 }} drop
  }}
}}
""",
        )
        self.installed = True

    def counts(self) -> dict[tuple[int, int], tuple[int, int]]:
        """{(local port, SSRC): (packets, bytes)} dropped so far; bytes are whole IP datagrams."""
        if not self.installed:
            return {}
        listing = json.loads(_nft("-j", "list", "set", "ip", self.table, "rx"))
        return {key: (packets, size) for key, packets, size in _elements(listing, self.table)}

    def close(self) -> None:
        """Deletes the table if it exists (idempotent)."""
        subprocess.run([NFT, "delete", "table", "ip", self.table], capture_output=True, check=False)
        self.installed = False
