"""Per-subscriber layer budget [lk streamallocator, simplified]: the highest simulcast layers whose
measured bitrates fit the subscriber's bandwidth estimate (`bwe.py`).

Off the packet path: the subscriber transport calls `StreamAllocator.allocate` once a second from its
RTCP timer. Every feed first gets its lowest arriving layer (a small picture beats none, even over
budget), then feeds are raised one layer at a time, round robin, while the rest of the budget allows;
going above the layer a feed has now needs `UPGRADE_HEADROOM` of spare budget, so an estimate hovering
at a layer's bitrate does not flip it every second.

NOTE: a receive-side REMB never exceeds ~1.5x what arrives (the delay-based estimator's cap), so a
subscriber held on `q` could never show the budget for `h`. Without padding probes, the allocator
probes by switching: after `PROBE_INTERVAL_NS` without lowering anything it lifts one capped feed by
one layer and holds it `PROBE_HOLD_NS`; if the estimate has not grown by then, it is lowered again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from sfu.media.bwe import BandwidthEstimator

if TYPE_CHECKING:
    from sfu.media.forwarder import Forwarder

UPGRADE_HEADROOM: Final = 1.25
PROBE_INTERVAL_NS: Final = 8_000_000_000
PROBE_HOLD_NS: Final = 3_000_000_000  # the estimate needs a few seconds to grow with what arrives


def choose_layers(budget_bps: int, demands: Sequence[tuple[Sequence[int | None], int, int]]) -> list[int]:
    """Per demand (bitrate per layer or None if it does not arrive, max layer, layer it has now), the
    layer cap to use; -1 when no layer of that feed arrives (no cap)."""
    candidates = [
        [layer for layer, bps in enumerate(bitrates) if bps is not None and layer <= max(max_layer, 0)]
        or [layer for layer, bps in enumerate(bitrates) if bps is not None][:1]
        for bitrates, max_layer, _now in demands
    ]
    chosen = [c[0] if c else -1 for c in candidates]
    pairs = zip(demands, chosen, strict=True)
    remaining = budget_bps - sum((bitrates[layer] or 0) for (bitrates, _m, _n), layer in pairs if layer >= 0)
    raised = True
    while raised:
        raised = False
        for i, (bitrates, _max_layer, now_layer) in enumerate(demands):
            options = candidates[i]
            if chosen[i] < 0 or options.index(chosen[i]) + 1 >= len(options):
                continue
            nxt = options[options.index(chosen[i]) + 1]
            extra = (bitrates[nxt] or 0) - (bitrates[chosen[i]] or 0)
            needed = extra if nxt <= now_layer else int(extra * UPGRADE_HEADROOM)
            if remaining >= needed:
                remaining -= extra
                chosen[i] = nxt
                raised = True
    return chosen


class StreamAllocator:
    """One per subscriber transport: its REMB estimate and the layer caps it sets on its forwarders."""

    __slots__ = ("_probe_until_ns", "_probed", "_steady_since_ns", "allocations", "bwe", "probes")

    def __init__(self) -> None:
        self.bwe = BandwidthEstimator()
        self.allocations = 0
        self.probes = 0
        self._steady_since_ns = 0
        self._probed: Forwarder | None = None
        self._probe_until_ns = 0

    def allocate(self, forwarders: Sequence[Forwarder], now_ns: int) -> None:
        budget = self.bwe.estimate_bps(now_ns // 1_000_000)
        simulcast = [f for f in forwarders if f.selector.simulcast and not f.paused]
        if not simulcast:
            return
        if budget <= 0:
            for f in simulcast:
                f.set_bandwidth_layer(f.selector.layer_count - 1, now_ns)
            return
        demands = []
        for f in simulcast:
            mask = f.receiver.active_mask
            bitrates = [r.bitrate_bps if mask >> r.layer & 1 and r.bitrate_bps else None for r in f.layers]
            demands.append((bitrates, f.selector.max_layer, f.selector.current_layer))
        self.allocations += 1
        if not self._steady_since_ns:
            self._steady_since_ns = now_ns
        capped: list[Forwarder] = []
        for f, layer in zip(simulcast, choose_layers(budget, demands), strict=True):
            if layer < 0 or (f is self._probed and now_ns < self._probe_until_ns):
                continue
            if layer < f.selector.bandwidth_layer:
                self._steady_since_ns = now_ns
            f.set_bandwidth_layer(layer, now_ns)
            if layer < f.selector.max_layer:
                capped.append(f)
        if capped and now_ns - self._steady_since_ns >= PROBE_INTERVAL_NS:
            probe = capped[self.probes % len(capped)]
            self.probes += 1
            self._steady_since_ns = now_ns
            self._probed = probe
            self._probe_until_ns = now_ns + PROBE_HOLD_NS
            probe.set_bandwidth_layer(probe.selector.bandwidth_layer + 1, now_ns)
