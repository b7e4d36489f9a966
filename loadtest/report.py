"""The numbers of one run, from worker snapshots and `/metrics` at the start and end of the window."""

from __future__ import annotations

import math
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.stats import percentile


@dataclass(frozen=True, slots=True)
class Report:
    publishers: int
    subscribers: int
    workers: int
    feeds: int
    streams: int  # feeds x subscribers
    duration_s: float
    # clients (workers)
    sent_pps: float
    received_pps: float
    received_payload_mbps: float
    expected: int
    lost: int
    loss_pct: float
    reordered: int
    duplicates: int
    jitter_ms: float  # mean over streams, RFC 3550 interarrival jitter
    delivered_pct: float  # packets received / (packets sent x subscribers): also counts what a server drops
    latency_samples: int
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    worker_cpu_pct: list[float]
    # server (/metrics deltas); NaN when /metrics could not be read
    server_pps_in: float
    server_pps_out: float
    server_mbps_in: float
    server_mbps_out: float
    server_cpu_pct: float
    server_cpu_us_per_packet: float
    server_rss_bytes: float
    server_loop_lag_max_s: float
    # sfu_arrival_to_send_seconds over the window (sampled 1 in 64 packets per receiver), microseconds
    server_fwd_samples: float = math.nan
    server_fwd_us_p50: float = math.nan
    server_fwd_us_p99: float = math.nan
    machine_cpu_pct: float = math.nan  # every process on the machine, 100 per busy core
    udp_rcvbuf_errors: float = math.nan  # datagrams the kernel dropped on full receive buffers (all sockets)
    server_drops: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    target: str = "sfu"  # or "aiortc-relay"
    # all load workers' CPU (publishers included) per packet their subscribers received, microseconds
    client_cpu_us_per_packet: float = math.nan
    subscriber_path: str = "socket"  # how subscribers counted: socket, kernel or aiortc (loadtest/worker.py)
    sessions: int = 1  # publishers and subscribers are per session
    unmatched: int = 0  # socket path: datagrams of SSRCs no subscribed feed announced (dropped)

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    if name not in after or name not in before:
        return math.nan
    return after[name] - before[name]


def build_report(
    publishers: int,
    subscribers: int,
    workers: int,
    feeds: int,
    snaps: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    metrics: tuple[dict[str, float], dict[str, float]],
    duration_s: float,
    errors: list[str],
    machine_cpu_s: float = math.nan,
    udp_rcvbuf_errors: float = math.nan,
    target: str = "sfu",
    subscriber_path: str = "socket",
    sessions: int = 1,
) -> Report:
    """Window deltas; latency comes from the end snapshots, which carry the window's samples."""
    s0 = {s["worker"]: s for s in snaps[0]}
    s1 = {s["worker"]: s for s in snaps[1]}
    span = max(duration_s, 1e-6)

    def client(name: str) -> int:
        return sum(s1[w][name] - s0[w][name] for w in s1 if w in s0)

    expected, lost = client("expected"), client("lost")
    latency = sorted(x for s in s1.values() for x in s.get("latency_ms", []))
    jitters = [j for s in s1.values() for j in s["jitter_ms"]]
    m0, m1 = metrics
    fwd_buckets = histogram_delta(m0, m1, "sfu_arrival_to_send_seconds")
    cpu_s = _delta(m0, m1, "process_cpu_seconds_total")
    out_packets = _delta(m0, m1, "sfu_packets_out_total")
    if target != "sfu":  # the aiortc relay counts no packets: use what its subscribers received
        out_packets = float(client("received"))
    sent = client("pub_packets")
    client_cpu_s = sum(s1[w]["cpu_s"] - s0[w]["cpu_s"] for w in s1 if w in s0)
    received = client("received")
    if subscriber_path == "kernel":  # no sequence numbers: what should have arrived vs what did
        expected = sent * subscribers
        lost = max(0, expected - received)
    drops = {
        k.removeprefix("sfu_drops_total"): m1[k] - m0.get(k, 0.0)
        for k in m1
        if k.startswith("sfu_drops_total{") and m1[k] - m0.get(k, 0.0) > 0
    }
    return Report(
        target=target,
        publishers=publishers,
        subscribers=subscribers,
        workers=workers,
        feeds=feeds,
        streams=feeds * subscribers,
        duration_s=round(duration_s, 2),
        sent_pps=client("pub_packets") / span,
        received_pps=client("received") / span,
        received_payload_mbps=client("received_bytes") * 8 / span / 1e6,
        expected=expected,
        lost=lost,
        loss_pct=100.0 * lost / expected if expected else math.nan,
        reordered=client("reordered"),
        duplicates=client("duplicates"),
        jitter_ms=sum(jitters) / len(jitters) if jitters else math.nan,
        delivered_pct=100.0 * client("received") / (sent * subscribers) if sent and subscribers else math.nan,
        latency_samples=len(latency),
        latency_ms_p50=percentile(latency, 0.50),
        latency_ms_p95=percentile(latency, 0.95),
        latency_ms_p99=percentile(latency, 0.99),
        worker_cpu_pct=[
            round(100 * (s1[w]["cpu_s"] - s0[w]["cpu_s"]) / span, 1) for w in sorted(s1) if w in s0
        ],
        server_pps_in=_delta(m0, m1, "sfu_packets_in_total") / span,
        server_pps_out=out_packets / span,
        server_mbps_in=_delta(m0, m1, "sfu_bytes_in_total") * 8 / span / 1e6,
        server_mbps_out=_delta(m0, m1, "sfu_bytes_out_total") * 8 / span / 1e6,
        server_cpu_pct=100 * cpu_s / span,
        server_cpu_us_per_packet=cpu_s * 1e6 / out_packets if out_packets else math.nan,
        server_rss_bytes=m1.get("process_resident_memory_bytes", math.nan),
        server_loop_lag_max_s=m1.get("sfu_event_loop_lag_max_seconds", math.nan),
        server_fwd_samples=fwd_buckets[-1][1] if fwd_buckets else math.nan,
        server_fwd_us_p50=histogram_quantile(fwd_buckets, 0.50) * 1e6,
        server_fwd_us_p99=histogram_quantile(fwd_buckets, 0.99) * 1e6,
        machine_cpu_pct=100 * machine_cpu_s / span,
        udp_rcvbuf_errors=udp_rcvbuf_errors,
        server_drops=drops,
        errors=errors,
        client_cpu_us_per_packet=client_cpu_s * 1e6 / received if received else math.nan,
        subscriber_path=subscriber_path,
        sessions=sessions,
        unmatched=sum(s1[w].get("unmatched", 0) - s0[w].get("unmatched", 0) for w in s1 if w in s0),
    )


COLUMNS = (
    "server", "pubs", "subs", "pkt/s in", "pkt/s out", "Mbit/s in", "Mbit/s out", "delivered %", "loss %",
    "latency p50/p95/p99 ms", "arrival->send p50/p99 us", "server CPU %", "CPU us/fwd pkt",
    "server RSS MB", "machine CPU %",
)  # fmt: skip


def _f(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def table_row(r: Report) -> str:
    latency = "/".join(_f(v, 1) for v in (r.latency_ms_p50, r.latency_ms_p95, r.latency_ms_p99))
    cells = [
        "pysfu" if r.target == "sfu" else r.target,
        str(r.publishers) if r.sessions == 1 else f"{r.sessions} x {r.publishers}", str(r.subscribers),
        _f(r.server_pps_in), _f(r.server_pps_out), _f(r.server_mbps_in, 2), _f(r.server_mbps_out, 2),
        _f(r.delivered_pct, 1), _f(r.loss_pct, 3), latency,
        f"{_f(r.server_fwd_us_p50)}/{_f(r.server_fwd_us_p99)}",
        _f(r.server_cpu_pct), _f(r.server_cpu_us_per_packet, 1), _f(r.server_rss_bytes / 1e6, 0),
        _f(r.machine_cpu_pct),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def table(reports: list[Report]) -> str:
    """A markdown table, one row per run."""
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    return "\n".join([head, rule, *(table_row(r) for r in reports)])


def details(r: Report) -> str:
    """What the table leaves out: the clients' view and anything that went wrong."""
    lines = [
        f"clients: sent {r.sent_pps:.0f} pkt/s, received {r.received_pps:.0f} pkt/s "
        f"({r.received_payload_mbps:.2f} Mbit/s payload) over {r.streams} streams in {r.duration_s} s; "
        f"lost {r.lost}/{r.expected}, reordered {r.reordered}, duplicates {r.duplicates}, "
        f"jitter {_f(r.jitter_ms, 2)} ms, latency samples {r.latency_samples}",
        f"worker CPU %: {r.worker_cpu_pct} ({_f(r.client_cpu_us_per_packet, 1)} us per received packet, "
        f"subscribers count on the {r.subscriber_path} path); "
        f"server loop lag max {_f(r.server_loop_lag_max_s * 1e3, 1)} ms; "
        f"machine CPU {_f(r.machine_cpu_pct)}% of {100 * (os.cpu_count() or 1)}% "
        f"(others: {_f(r.machine_cpu_pct - r.server_cpu_pct - sum(r.worker_cpu_pct))}%); "
        f"UDP receive buffer overflows {_f(r.udp_rcvbuf_errors)}",
    ]
    if r.server_drops:
        lines.append("server drops: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(r.server_drops.items())))
    lines.extend(f"error: {e.strip().splitlines()[-1] if e.strip() else e}" for e in r.errors[:5])
    return "\n".join(lines)


def histogram_delta(
    before: dict[str, float], after: dict[str, float], name: str
) -> list[tuple[float, float]]:
    """(le, cumulative count gained in the window) of a Prometheus histogram, sorted by le; [] if absent."""
    prefix = f'{name}_bucket{{le="'
    out = []
    for key, value in after.items():
        if key.startswith(prefix):
            out.append((float(key[len(prefix) : -2]), value - before.get(key, 0.0)))
    return sorted(out)


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """As PromQL's histogram_quantile: linear inside the bucket holding rank q; NaN without samples."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bound: report that bound
            inside = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / inside if inside else 1.0)
        lower_bound, lower_count = bound, count
    return math.nan


def machine_busy_s() -> float:
    """CPU seconds all processes spent busy since boot (/proc/stat), to see who else used the machine."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def udp_rcvbuf_errors() -> float:
    """The kernel's count of UDP datagrams dropped because a socket's receive buffer was full."""
    try:
        with open("/proc/net/snmp") as snmp:
            rows = [line.split() for line in snmp if line.startswith("Udp:")]
        return float(dict(zip(rows[0][1:], rows[1][1:], strict=True))["RcvbufErrors"])
    except (OSError, IndexError, KeyError, ValueError):
        return math.nan


def machine() -> dict[str, Any]:
    """nproc, CPU model and Python version, for the record."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
