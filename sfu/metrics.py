"""Server metrics read from the live counters at scrape time: nothing is added to the per-packet path.

Receivers, forwarders and transports already count packets, octets, drops, NACKs, PLIs and
retransmissions (`sfu/media/counters.py`). A scrape walks the media engine's transports and sums them.
Objects that close take their counters with them, so a `CounterLedger` remembers the last values of
objects gone since the previous scrape and folds them into a base: the exported totals never go down
(Prometheus counters must be monotonic). Counts made between an object's last scrape and its close are
not seen. `LoopLagMonitor` is the one task this module owns: it measures how late the event loop wakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from sfu import gc_tuning
from sfu.media.consent import TOTALS as CONSENT_TOTALS
from sfu.media.counters import DropReason
from sfu.media.datachannels import TOTALS as DATA_TOTALS
from sfu.media.datachannels import DataDropReason
from sfu.media.freshness import TOTALS as FRESHNESS_TOTALS
from sfu.media.histogram import ARRIVAL_TO_SEND
from sfu.media.probe import BANDWIDTH_TOTALS
from sfu.session.participant_media import TOTALS as NEGOTIATION_TOTALS

if TYPE_CHECKING:
    from sfu.server import Server

LAG_INTERVAL_S: Final = 0.1
LAG_WINDOW: Final = 100  # samples: the max is over the last 10 s
FOLD_AFTER_S: Final = 300.0  # a closed object that does not come back within 5 min is folded into the base
KINDS: Final = ("audio", "video")
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# Flat vectors per object; the drop counters follow these fields, one per DropReason.
RECEIVER_FIELDS: Final = ("packets", "octets", "key_frames", "repaired", "nacks_out", "plis_out")
FORWARDER_FIELDS: Final = ("packets", "octets", "retransmissions", "nacks_in", "plis_in")
TRANSPORT_FIELDS: Final = ("rtcp_packets_in", "rtcp_packets_out")
DROP_NAMES: Final = tuple(reason.name.lower() for reason in DropReason)

_F = TypeVar("_F", CounterMetricFamily, GaugeMetricFamily)
Group = tuple[str, str]  # ("receiver", kind) | ("forwarder", kind) | ("transport", role)
Vector = tuple[int, ...]
Live = dict[tuple[Any, ...], tuple[Group, Vector]]  # stable identity of an object -> (group, counters)


class CounterLedger:
    """Totals per group that survive the objects they were counted on (see the module docstring)."""

    def __init__(self, fold_after_s: float = FOLD_AFTER_S) -> None:
        self.fold_after_s = fold_after_s
        self._base: dict[Group, list[int]] = {}
        self._live: Live = {}
        self._retired: dict[tuple[Any, ...], tuple[Group, Vector, float]] = {}
        self._last_totals: dict[Group, list[int]] = {}

    def update(self, live: Live, now_s: float) -> dict[Group, list[int]]:
        """Totals per group, given the current vectors of live objects keyed by a stable identity."""
        for key, (group, vector) in self._live.items():
            if key not in live:
                self._retired[key] = (group, vector, now_s)
        for key in live:
            self._retired.pop(key, None)  # a resubscribe brings a forwarder back with its counters
        for key, (group, vector, since) in list(self._retired.items()):
            if now_s - since >= self.fold_after_s:
                _add(self._base.setdefault(group, [0] * len(vector)), vector)
                del self._retired[key]
        self._live = dict(live)
        totals: dict[Group, list[int]] = {g: list(v) for g, v in self._base.items()}
        for group, vector, _ in self._retired.values():
            _add(totals.setdefault(group, [0] * len(vector)), vector)
        for group, vector in live.values():
            _add(totals.setdefault(group, [0] * len(vector)), vector)
        for group, summed in totals.items():  # NOTE: monotonic even if an object's counters were reset
            last = self._last_totals.get(group)
            if last is not None and len(last) == len(summed):
                totals[group] = [max(a, b) for a, b in zip(summed, last, strict=True)]
        self._last_totals = {g: list(v) for g, v in totals.items()}
        return totals


def _add(into: list[int], vector: Vector) -> None:
    for i, value in enumerate(vector):
        into[i] += value


class LoopLagMonitor:
    """How late `asyncio.sleep` wakes up: the event loop's backlog, the first sign of an overloaded core."""

    def __init__(self, interval_s: float = LAG_INTERVAL_S, window: int = LAG_WINDOW) -> None:
        self.interval_s = interval_s
        self.samples: deque[float] = deque(maxlen=window)
        self.last_s = 0.0
        self.total_s = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def max_s(self) -> float:
        return max(self.samples, default=0.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sfu.metrics.loop_lag")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - started - self.interval_s)
            self.last_s = lag
            self.total_s += lag
            self.samples.append(lag)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def process_rss_bytes() -> int:
    """Resident set size from /proc (0 where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


class Metrics:
    """The server's counters as one JSON-able snapshot (`/v1/stats`) and as Prometheus text (`/metrics`)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ledger = CounterLedger()
        self.lag = LoopLagMonitor()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    async def start(self) -> None:
        self.lag.start()
        gc_tuning.PAUSES.install()

    async def close(self) -> None:
        await self.lag.close()

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Everything `/metrics` exports, as nested dicts of plain numbers."""
        live, forwarders = self._walk_media()
        totals = self.ledger.update(live, time.monotonic())
        sessions = list(self.server.registry.sessions_by_key.values())
        feeds = {kind: 0 for kind in KINDS}
        for session in sessions:
            for feed in session.feeds_by_id.values():
                feeds[feed.kind] = feeds.get(feed.kind, 0) + 1
        out: dict[str, Any] = {
            "sessions": len(sessions),
            "participants": sum(len(s.participants_by_uid) for s in sessions),
            "feeds": feeds,
            "forwarders": forwarders,
            "transports": len(self.server.media.transports),
        }
        receivers = {k: _named(RECEIVER_FIELDS, totals.get(("receiver", k))) for k in KINDS}
        senders = {k: _named(FORWARDER_FIELDS, totals.get(("forwarder", k))) for k in KINDS}
        out["packets_in"] = {k: receivers[k]["packets"] for k in KINDS}
        out["bytes_in"] = {k: receivers[k]["octets"] for k in KINDS}
        out["packets_out"] = {k: senders[k]["packets"] for k in KINDS}
        out["bytes_out"] = {k: senders[k]["octets"] for k in KINDS}
        out["key_frames"] = sum(receivers[k]["key_frames"] for k in KINDS)
        out["repaired"] = sum(receivers[k]["repaired"] for k in KINDS)
        out["nacks_out"] = sum(receivers[k]["nacks_out"] for k in KINDS)
        out["plis_out"] = sum(receivers[k]["plis_out"] for k in KINDS)
        out["nacks_in"] = sum(senders[k]["nacks_in"] for k in KINDS)
        out["plis_in"] = sum(senders[k]["plis_in"] for k in KINDS)
        out["retransmissions"] = sum(senders[k]["retransmissions"] for k in KINDS)
        out["drops"] = _drops(totals)
        rtcp = [totals.get(("transport", role)) for role in ("publisher", "subscriber")]
        out["rtcp_packets_in"] = sum(v[0] for v in rtcp if v)
        out["rtcp_packets_out"] = sum(v[1] for v in rtcp if v)
        out["event_loop_lag_seconds"] = {
            "last": self.lag.last_s,
            "max_10s": self.lag.max_s,
            "total": self.lag.total_s,
        }
        out["process"] = {"cpu_seconds": time.process_time(), "rss_bytes": process_rss_bytes()}
        out["gc"] = gc_tuning.PAUSES.snapshot()
        out["ice_consent_fast_answers"] = CONSENT_TOTALS.answered
        out["ice_consent_checks"] = {  # the server's own checks (sfu/media/freshness.py)
            "sent": FRESHNESS_TOTALS.checks_sent,
            "answered": FRESHNESS_TOTALS.responses,
            "expired": FRESHNESS_TOTALS.expired,
        }
        out["arrival_to_send"] = _arrival_to_send()
        granted = [t.udp_buffers for t in self.server.media.transports if t.udp_buffers[0]]
        out["udp_buffer_bytes"] = {  # what the kernel granted an ICE socket (Transport.udp_buffers)
            "receive": max((g[0] for g in granted), default=0),
            "send": max((g[1] for g in granted), default=0),
        }
        out["data"] = _data_channels()
        out["bandwidth"] = dataclasses.asdict(BANDWIDTH_TOTALS)  # probes, padding, TWCC (probe.py)
        out["subscriber_answer_timeouts"] = NEGOTIATION_TOTALS.answer_timeouts
        out["subscriber_transports_abandoned"] = NEGOTIATION_TOTALS.subscribers_closed
        return out

    def _walk_media(self) -> tuple[Live, dict[str, int]]:
        live: Live = {}
        forwarders = {kind: 0 for kind in KINDS}
        for transport in self.server.media.transports:
            role = "publisher" if hasattr(transport, "receivers_by_mid") else "subscriber"
            vector = (transport.rtcp_packets_in, transport.rtcp_packets_out, *transport.drops)
            live[("t", id(transport), transport.rtcp_ssrc)] = (("transport", role), vector)
            for receiver in getattr(transport, "receivers_by_mid", {}).values():
                vector = (
                    receiver.packets,
                    receiver.octets,
                    receiver.key_frames,
                    receiver.repaired,
                    receiver.nacks_out,
                    receiver.plis_out,
                    *receiver.drops,
                )
                live[("r", id(receiver), receiver.sender_ssrc)] = (("receiver", receiver.kind), vector)
            for forwarder in getattr(transport, "forwarders", ()):
                vector = (
                    forwarder.packets,
                    forwarder.octets,
                    forwarder.retransmissions,
                    forwarder.nacks_in,
                    forwarder.plis_in,
                    *forwarder.drops,
                )
                live[("f", id(forwarder), forwarder.ssrc)] = (("forwarder", forwarder.kind), vector)
                forwarders[forwarder.kind] = forwarders.get(forwarder.kind, 0) + 1
        return live, forwarders


def _named(fields: tuple[str, ...], vector: list[int] | None) -> dict[str, int]:
    values = vector or [0] * len(fields)
    return dict(zip(fields, values[: len(fields)], strict=True))


def _data_channels() -> dict[str, Any]:
    """Binary data-channel totals of the process (`sfu.media.datachannels.TOTALS`, kept by every relay)."""
    data = DATA_TOTALS
    return {
        "messages_in": data.messages_in,
        "bytes_in": data.bytes_in,
        "messages_relayed": data.messages_relayed,
        "bytes_relayed": data.bytes_relayed,
        "channel_resets": data.channel_resets,
        "dropped": {r.name.lower(): data.drops[r] for r in DataDropReason},
        "dropped_bytes": {r.name.lower(): data.drop_bytes[r] for r in DataDropReason},
    }


def _drops(totals: dict[Group, list[int]]) -> dict[str, dict[str, int]]:
    """Non-zero drops by stage (receiver, forwarder, transport) and reason."""
    offsets = {
        "receiver": len(RECEIVER_FIELDS),
        "forwarder": len(FORWARDER_FIELDS),
        "transport": len(TRANSPORT_FIELDS),
    }
    out: dict[str, dict[str, int]] = {stage: {} for stage in offsets}
    for (stage, _), vector in totals.items():
        counts = vector[offsets[stage] :]
        for name, value in zip(DROP_NAMES, counts, strict=False):
            if value:
                out[stage][name] = out[stage].get(name, 0) + value
    return out


class _Collector:
    """A prometheus_client collector: one snapshot per scrape, turned into metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self._metrics.snapshot()
        yield _gauge("sfu_sessions", "live sessions", snap["sessions"])
        yield _gauge("sfu_participants", "participants in live sessions", snap["participants"])
        yield _gauge("sfu_transports", "publisher and subscriber transports", snap["transports"])
        yield _by_kind(GaugeMetricFamily("sfu_feeds", "published feeds", labels=["kind"]), snap["feeds"])
        yield _by_kind(
            GaugeMetricFamily("sfu_forwarders", "active forwarders (feed x subscriber)", labels=["kind"]),
            snap["forwarders"],
        )
        for name, help_text in (
            ("packets_in", "RTP packets received from publishers"),
            ("bytes_in", "RTP bytes received from publishers"),
            ("packets_out", "RTP packets forwarded to subscribers"),
            ("bytes_out", "RTP bytes forwarded to subscribers"),
        ):
            yield _by_kind(CounterMetricFamily(f"sfu_{name}", help_text, labels=["kind"]), snap[name])
        for name, help_text in (
            ("nacks_in", "NACKed packets requested by subscribers"),
            ("nacks_out", "NACKed packets requested from publishers"),
            ("plis_in", "key frame requests from subscribers"),
            ("plis_out", "key frame requests sent to publishers"),
            ("retransmissions", "packets retransmitted to subscribers"),
            ("repaired", "lost packets repaired by a publisher retransmission"),
            ("key_frames", "key frames received from publishers"),
            ("rtcp_packets_in", "RTCP compound packets received"),
            ("rtcp_packets_out", "RTCP compound packets sent"),
        ):
            yield CounterMetricFamily(f"sfu_{name}", help_text, value=snap[name])
        drops = CounterMetricFamily(
            "sfu_drops", "packets dropped, by stage and reason", labels=["stage", "reason"]
        )
        for stage, reasons in snap["drops"].items():
            for reason, value in reasons.items():
                drops.add_metric([stage, reason], value)
        yield drops
        yield from _data_families(snap["data"])
        for name, value in snap["bandwidth"].items():  # probe.BandwidthTotals: probes, padding, TWCC
            help_text = f"bandwidth estimation: {name.replace('_', ' ')}"
            yield CounterMetricFamily(f"sfu_{name}", help_text, value=value)
        yield CounterMetricFamily(
            "sfu_subscriber_answer_timeouts",
            "subscriber offers replaced because no answer came in time",
            value=snap["subscriber_answer_timeouts"],
        )
        yield CounterMetricFamily(
            "sfu_subscriber_transports_abandoned",
            "subscriber transports closed after every re-offer went unanswered",
            value=snap["subscriber_transports_abandoned"],
        )
        lag = snap["event_loop_lag_seconds"]
        yield _gauge("sfu_event_loop_lag_seconds", "event loop wake-up delay, last sample", lag["last"])
        yield _gauge(
            "sfu_event_loop_lag_max_seconds", "event loop wake-up delay, max over 10 s", lag["max_10s"]
        )
        yield CounterMetricFamily(
            "sfu_event_loop_lag_sum_seconds", "event loop wake-up delay, summed", value=lag["total"]
        )
        yield from _gc_families(snap["gc"])
        yield CounterMetricFamily(
            "sfu_ice_consent_fast_answers",
            "peers' consent checks on a nominated pair answered without aioice (sfu/media/consent.py)",
            value=snap["ice_consent_fast_answers"],
        )
        checks = snap["ice_consent_checks"]
        for name, help_text in (
            ("sent", "consent checks (RFC 7675) the server sent on nominated pairs (sfu/media/freshness.py)"),
            ("answered", "authenticated responses to the server's consent checks"),
            ("expired", "ICE connections the server closed because consent expired (no response for 30 s)"),
        ):
            yield CounterMetricFamily(f"sfu_ice_consent_checks_{name}", help_text, value=checks[name])
        yield _arrival_to_send_family(snap["arrival_to_send"])
        yield _by_kind(
            GaugeMetricFamily(
                "sfu_udp_socket_buffer_bytes",
                "buffer size the kernel reports for an ICE UDP socket (Linux: twice the granted request)",
                labels=["direction"],
            ),
            snap["udp_buffer_bytes"],
        )
        process = snap["process"]
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "user and system CPU time of the server process",
            value=process["cpu_seconds"],
        )
        yield _gauge(
            "process_resident_memory_bytes", "resident memory of the server process", process["rss_bytes"]
        )


def _gc_families(gc: dict[str, Any]) -> Iterator[Metric]:
    """Stop-the-world garbage collections (`sfu.gc_tuning`): a long one stalls every stream of the process."""
    collections = CounterMetricFamily(
        "sfu_gc_collections", "garbage collections, by generation", labels=["generation"]
    )
    pauses = CounterMetricFamily(
        "sfu_gc_pause_seconds", "time the garbage collector stopped the process, by generation",
        labels=["generation"],
    )
    for generation, count in gc["collections"].items():
        collections.add_metric([generation], count)
        pauses.add_metric([generation], gc["pause_seconds"][generation])
    yield collections
    yield pauses
    yield _gauge("sfu_gc_pause_max_seconds", "longest garbage-collection pause, 10 s", gc["max_pause_10s"])


def _data_families(data: dict[str, Any]) -> Iterator[Metric]:
    for name, help_text in (
        ("messages_in", "binary data-channel messages received from clients"),
        ("bytes_in", "binary data-channel bytes received from clients (whole messages)"),
        ("messages_relayed", "binary data-channel message copies sent to recipients"),
        ("bytes_relayed", "payload bytes of the data-channel copies sent to recipients"),
        ("channel_resets", "reliable data channels reset because their recipient fell behind"),
    ):
        yield CounterMetricFamily(f"sfu_data_{name}", help_text, value=data[name])
    dropped = CounterMetricFamily(
        "sfu_data_dropped_messages", "data-channel messages or copies dropped, by reason", labels=["reason"]
    )
    dropped_bytes = CounterMetricFamily(
        "sfu_data_dropped_bytes", "bytes of dropped data-channel messages, by reason", labels=["reason"]
    )
    for reason, value in data["dropped"].items():
        dropped.add_metric([reason], value)
        dropped_bytes.add_metric([reason], data["dropped_bytes"][reason])
    yield dropped
    yield dropped_bytes


def _arrival_to_send() -> dict[str, Any]:
    """The sampled arrival -> send histogram (sfu/media/histogram.py): cumulative [le_s, count] pairs,
    le_s None for +Inf (JSON has no infinity)."""
    return {
        "buckets": [[b if b != float("inf") else None, c] for b, c in ARRIVAL_TO_SEND.cumulative()],
        "sum_seconds": ARRIVAL_TO_SEND.sum_ns / 1e9,
        "count": ARRIVAL_TO_SEND.count,
    }


def _arrival_to_send_family(latency: dict[str, Any]) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        "sfu_arrival_to_send_seconds",
        "packet arrival to after its forwarders' sends, sampled 1 in 64 packets per receiver",
        buckets=[("+Inf" if b is None else repr(b), c) for b, c in latency["buckets"]],
        sum_value=latency["sum_seconds"],
    )


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _by_kind(family: _F, values: dict[str, int]) -> _F:
    for kind in sorted(values):
        family.add_metric([kind], values[kind])
    return family
