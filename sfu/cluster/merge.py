"""Sums of the workers' `/metrics` (Prometheus text) and `/v1/stats` (JSON) for the front.

Counters, histograms and most gauges add up across workers; event-loop lag and the longest GC pause (the
worst loop) and the UDP socket buffer size are maxima.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


def _is_max(name: str) -> bool:
    """Gauges that describe each worker, not an amount: the cluster's value is the worst/largest one."""
    return "lag" in name or name.startswith(("sfu_udp_socket_buffer", "sfu_gc_pause_max"))


def merge_prometheus(texts: Sequence[str], extra: Iterable[str] = ()) -> bytes:
    """One exposition from several: samples with the same name and labels are summed (lag: max)."""
    order: list[str] = []
    meta: dict[str, tuple[str, str]] = {}
    samples_by_family: dict[str, dict[tuple[str, Labels], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in meta:
                order.append(family.name)
                meta[family.name] = (family.type, family.documentation)
                samples_by_family[family.name] = {}
            samples = samples_by_family[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = samples.get(key)
                if old is None:
                    samples[key] = sample.value
                elif _is_max(sample.name):
                    samples[key] = max(old, sample.value)
                else:
                    samples[key] = old + sample.value
    lines: list[str] = []
    for name in order:
        kind, doc = meta[name]
        header = name + "_total" if kind == "counter" else name  # as prometheus_client writes 0.0.4
        lines.append(f"# HELP {header} {_escape_help(doc)}")
        lines.append(f"# TYPE {header} {kind}")
        for (sample_name, labels), value in samples_by_family[name].items():
            lines.append(f"{sample_name}{format_labels(labels)} {format_value(value)}")
    lines.extend(extra)
    return ("\n".join(lines) + "\n").encode()


def format_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
    return "{" + inner + "}"


def format_value(value: float) -> str:
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def merge_stats(bodies: Sequence[Any]) -> Any:
    """Adds numbers key by key through nested objects; `event_loop_lag_seconds` and `max_*` keys take the
    maximum."""
    return _merge(list(bodies), maximum=False)


def _merge(values: list[Any], *, maximum: bool) -> Any:
    first = values[0]
    if isinstance(first, bool) or not isinstance(first, int | float | dict):
        return first
    if isinstance(first, dict):
        keys: dict[str, None] = {}
        for value in values:
            if isinstance(value, dict):
                keys.update(dict.fromkeys(value))
        out: dict[str, Any] = {}
        for key in keys:
            present = [v[key] for v in values if isinstance(v, dict) and key in v]
            out[key] = _merge(present, maximum=maximum or "lag" in key or key.startswith("max_"))
        return out
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(numbers) if maximum else sum(numbers)
