"""Per-subscriber layer budget [lk streamallocator, simplified]: the highest simulcast layers whose
measured bitrates fit the subscriber's bandwidth estimate (`bwe.py`), video paused when even the lowest
layers do not fit, and padding probes (`probe.py`) before going up.

Off the packet path: the subscriber transport calls `StreamAllocator.allocate` once a second and `tick`
every 50 ms from its RTCP timer. Audio is never paused; its bitrate comes off the budget first. Video
feeds are taken in priority order: screen shares, then the video of active speakers (`Forwarder.speaking`,
set by the session when the speakers change), then the others, each group in subscription order. When
the lowest layers of all of them do not fit, the last ones are paused first, and a paused feed resumes
only with `RESUME_HEADROOM` of spare budget (a feed without simulcast has one layer, measured the same
way). Then every unpaused feed gets its lowest arriving layer, and the feeds of the first group are
raised one layer at a time, round robin, as far as the budget allows, then those of the next group;
going above the layer a feed has now needs `UPGRADE_HEADROOM` of spare budget, so an estimate hovering
at a layer's bitrate does not flip it. A pause and a resume are announced (`layer_changed`, reason
`bandwidth`, `Forwarder.set_bandwidth_paused`/`announce_resumed`).

Going up needs an estimate above what is sent now, which nothing shows without sending more: after
`PROBE_INTERVAL_NS` without a decrease, a capped or paused subscriber gets a padding probe at the rate
the next step needs. With transport-cc feedback the estimator lifts its estimate to what the probe
proved; with REMB, the subscriber's own estimator sees the higher arrival rate. A probe that did not
raise the estimate doubles the wait before the next (up to `PROBE_BACKOFF_MAX_NS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from sfu.media.bwe import BandwidthEstimator
from sfu.media.probe import BANDWIDTH_TOTALS, SLICE_S, SPREAD, Prober, probe_carrier

if TYPE_CHECKING:
    from sfu.media.forwarder import Forwarder, RtpSink

UPGRADE_HEADROOM: Final = 1.25
RESUME_HEADROOM: Final = 1.3
PAUSE_AFTER: Final = 3  # allocations (seconds) in a row below the lowest layers before video pauses
# A feed without simulcast pauses only when the estimate is below this share of its rate: its rate
# includes key-frame bursts, a receiver's REMB (aiortc) tracks the incoming rate from just below, and
# pausing the only layer is drastic (a simulcast feed steps down first). Measured: with "just below",
# an aiortc subscriber on a link with 5% random loss had its only video paused at start for good.
SINGLE_LAYER_PAUSE_SHARE: Final = 0.5
PROBE_INTERVAL_NS: Final = 2_000_000_000
DECREASE_HOLD_NS: Final = 5_000_000_000  # after going down, let queues drain and repairs finish first
LOSS_QUIET: Final = 0.02  # no probe while the link loses more than this
PROBE_BACKOFF_MAX_NS: Final = 4_000_000_000
PROBE_DURATION_NS: Final = 500_000_000  # transport-cc: outlasts a shaper's burst, costs little
PROBE_DURATION_REMB_NS: Final = 2_000_000_000  # the subscriber's estimator grows ~8%/s: give it time
PROBE_SETTLE_NS: Final = 400_000_000  # feedback for the probe's last packets arrives after it
AUDIO_DEFAULT_BPS: Final = 40_000
UNKNOWN_LAYER_RATIO: Final = 3  # a layer never measured: 3x the one below (q/h/f are 1/4, 1/2, 1 in size)


def choose_layers(
    budget_bps: int,
    demands: Sequence[tuple[Sequence[int | None], int, int]],
    tiers: Sequence[int] | None = None,
) -> list[int]:
    """Per demand (bitrate per layer or None if it does not arrive, max layer, layer it has now), the
    layer cap to use; -1 when no layer of that feed arrives (no cap). Every feed gets its lowest layer;
    then the feeds of the first tier (`tiers`, lowest value first: screen share, speakers, others) are
    raised one layer at a time, round robin, as far as the budget goes, then those of the next tier."""
    candidates = [
        [layer for layer, bps in enumerate(bitrates) if bps is not None and layer <= max(max_layer, 0)]
        or [layer for layer, bps in enumerate(bitrates) if bps is not None][:1]
        for bitrates, max_layer, _now in demands
    ]
    chosen = [c[0] if c else -1 for c in candidates]
    pairs = zip(demands, chosen, strict=True)
    remaining = budget_bps - sum((bitrates[layer] or 0) for (bitrates, _m, _n), layer in pairs if layer >= 0)
    order = tiers if tiers is not None else [0] * len(demands)
    for tier in sorted(set(order)):
        members = [i for i, t in enumerate(order) if t == tier]
        raised = True
        while raised:
            raised = False
            for i in members:
                bitrates, _max_layer, now_layer = demands[i]
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


def choose_paused(budget_bps: int, lowest: Sequence[int], paused: Sequence[bool]) -> list[bool]:
    """Per video feed in priority order (its lowest layer's bitrate, paused now), whether to pause it:
    keep feeds in order while their lowest layers fit, so the last (lowest priority) go first; a paused
    feed comes back only with `RESUME_HEADROOM` of room."""
    out: list[bool] = []
    used = 0
    full = False
    for bps, was_paused in zip(lowest, paused, strict=True):
        need = int(bps * RESUME_HEADROOM) if was_paused else bps
        if full or used + need > budget_bps:
            full = True  # later feeds never jump the queue of an earlier paused one
            out.append(True)
            continue
        used += bps
        out.append(False)
    return out


def _bandwidth_cap(layer: int, max_layer: int, bitrates: Sequence[int | None], spare: int) -> int:
    """The cap to give the forwarder: `layer`, or above it when the preference (`max_layer`), not the
    budget, stopped it there, as far as the spare budget would carry it, so a later `set_quality` going
    up switches at once instead of waiting for the next allocation."""
    if layer < max_layer:
        return layer
    cap = layer
    for above in range(layer + 1, len(bitrates)):
        bps = bitrates[above]
        if bps is None or int((bps - (bitrates[layer] or 0)) * UPGRADE_HEADROOM) > spare:
            break
        cap = above
    return cap


def _priority(f: Forwarder) -> int:
    return f.priority


def _uncap(video: list[Forwarder], now_ns: int) -> None:
    for f in video:
        if f.set_bandwidth_paused(False):
            f.announce_resumed()
        if f.selector.simulcast:
            f.set_bandwidth_layer(f.selector.layer_count - 1, now_ns)


class StreamAllocator:
    """One per subscriber transport: its estimate, the layer caps and pauses it sets, its probes."""

    __slots__ = (
        "_audio_sample",
        "_backoff_ns",
        "_layer_bps",
        "_next_probe_ns",
        "_pause_votes",
        "_probe_before_bps",
        "_probe_packets_before",
        "_settle_until_ns",
        "allocations",
        "bwe",
        "pauses",
        "probe_successes",
        "prober",
        "probes",
    )

    def __init__(self) -> None:
        self.bwe = BandwidthEstimator()
        self.prober = Prober()
        self.allocations = 0
        self.probes = 0
        self.probe_successes = 0
        self.pauses = 0
        self._backoff_ns = PROBE_INTERVAL_NS
        self._next_probe_ns = 0
        self._settle_until_ns = 0
        self._probe_before_bps = 0
        self._probe_packets_before = 0
        self._pause_votes = 0
        self._audio_sample = (0, 0)  # (audio octets sent, when)
        self._layer_bps: dict[int, int] = {}  # id(layer receiver) -> last bitrate measured while it arrived

    @property
    def probing(self) -> bool:
        return self.prober.sending or self._settle_until_ns > 0

    def allocate(self, forwarders: Sequence[Forwarder], now_ns: int) -> None:
        budget = self.bwe.estimate_bps(now_ns // 1_000_000)
        # priority order (screen share, active speakers, others); subscription order within each
        video = sorted((f for f in forwarders if f.video and not f.user_paused), key=_priority)
        if not video:
            return
        if budget <= 0:  # no estimate yet: nothing is capped
            _uncap(video, now_ns)
            return
        self.allocations += 1
        audio_bps = self._audio_bps([f for f in forwarders if not f.video], now_ns)
        video_budget = budget - audio_bps
        rates = self._bitrates(video)
        lowest = [next((bps for bps in r if bps), 0) for r in rates]
        was_paused = [f for f in video if f.bandwidth_paused]
        decreased = self._apply_pauses(video, lowest, video_budget)
        simulcast = [
            (f, r) for f, r in zip(video, rates, strict=True) if f.selector.simulcast and not f.paused
        ]
        demands = [(r, f.selector.max_layer, f.selector.current_layer) for f, r in simulcast]
        plain_bps = sum(
            low for f, low in zip(video, lowest, strict=True) if not f.selector.simulcast and not f.paused
        )
        media_bps = audio_bps + plain_bps
        upgrade_bps = 0  # the smallest step up a capped feed could take
        layers = choose_layers(video_budget - plain_bps, demands, [f.priority for f, _r in simulcast])
        chosen_bps = [(d[0][k] or 0) if k >= 0 else 0 for k, d in zip(layers, demands, strict=True)]
        spare = video_budget - plain_bps - sum(chosen_bps)
        for (f, _r), layer, (bitrates, max_layer, _now) in zip(simulcast, layers, demands, strict=True):
            if layer < 0:
                continue
            decreased |= layer < f.selector.bandwidth_layer
            f.set_bandwidth_layer(_bandwidth_cap(layer, max_layer, bitrates, spare), now_ns)
            media_bps += bitrates[layer] or 0
            above = [bps for bps in bitrates[layer + 1 : max_layer + 1] if bps is not None]
            if above:
                step = above[0] - (bitrates[layer] or 0)
                upgrade_bps = min(upgrade_bps, step) if upgrade_bps else step
        for f in was_paused:
            if not f.bandwidth_paused:
                f.announce_resumed()  # now that its layer is chosen
        if decreased:
            self._next_probe_ns = now_ns + DECREASE_HOLD_NS
            return
        if self.probing or now_ns < self._next_probe_ns or self.bwe.loss_fraction > LOSS_QUIET:
            return
        paused = [low for f, low in zip(video, lowest, strict=True) if low and f.bandwidth_paused]
        if paused:
            target = media_bps + int(paused[0] * RESUME_HEADROOM)
        elif upgrade_bps:
            target = media_bps + int(upgrade_bps * UPGRADE_HEADROOM)
        else:
            return
        # at least 1.5x the estimate (libwebrtc probes at 2x): a probe that only just reaches the next
        # step proves less than it after the 5% margin and the slices the event loop delays
        self._start_probe(forwarders, max(target, budget * 3 // 2), media_bps, now_ns)

    def _audio_bps(self, audio: list[Forwarder], now_ns: int) -> int:
        """What the audio forwarders sent since the last allocation (their octets), or a default."""
        total = sum(f.octets for f in audio)
        last_octets, last_ns = self._audio_sample
        self._audio_sample = (total, now_ns)
        if not audio or not last_ns or now_ns <= last_ns or total < last_octets:
            return AUDIO_DEFAULT_BPS * len(audio)
        return (total - last_octets) * 8_000_000_000 // (now_ns - last_ns)

    def _apply_pauses(self, video: list[Forwarder], lowest: list[int], video_budget: int) -> bool:
        """Pauses/resumes video feeds (in priority order, with their lowest layers' bitrates); True if
        one was paused. A pause needs `PAUSE_AFTER` allocations in a row that say so: one overuse cuts
        the estimate to 85% of what was acked, below the lowest layer that was going through fine."""
        known = [(f, low) for f, low in zip(video, lowest, strict=True) if low]
        for f, low in zip(video, lowest, strict=True):
            if not low:  # nothing measured (or remembered) to judge by: a pause must not outlive that
                f.set_bandwidth_paused(False)
        lowest = [
            low if f.selector.simulcast or f.bandwidth_paused else int(low * SINGLE_LAYER_PAUSE_SHARE)
            for f, low in known
        ]
        pauses = choose_paused(video_budget, lowest, [f.bandwidth_paused for f, _low in known])
        wanted = any(pause and not f.bandwidth_paused for (f, _low), pause in zip(known, pauses, strict=True))
        self._pause_votes = self._pause_votes + 1 if wanted else 0
        paused_one = False
        for (f, _low), pause in zip(known, pauses, strict=True):
            if pause and not f.bandwidth_paused and self._pause_votes < PAUSE_AFTER:
                continue
            if f.set_bandwidth_paused(pause) and pause:
                self.pauses += 1
                BANDWIDTH_TOTALS.bandwidth_pauses += 1
                paused_one = True
        if paused_one:
            self._pause_votes = 0
        return paused_one

    def _bitrates(self, video: list[Forwarder]) -> list[list[int | None]]:
        """Per feed, the bitrate per layer (one layer without simulcast). A layer that does not arrive
        now: the last bitrate measured while it did, or 3x the layer below if never. Paused feeds keep
        theirs too: when every subscriber of a simulcast feed is paused, dynacast stops all its layers at
        the publisher, and only the remembered rate tells when it would fit again."""
        remembered: dict[int, int] = {}
        out: list[list[int | None]] = []
        for f in video:
            mask = f.receiver.active_mask if f.selector.simulcast else 1
            bitrates: list[int | None] = []
            for r in f.layers:
                bps = (
                    int(r.bitrate_bps)
                    if mask >> r.layer & 1 and r.bitrate_bps
                    else self._layer_bps.get(id(r))
                )
                bitrates.append(bps)
                if bps is not None:
                    remembered[id(r)] = bps
            for k in range(1, len(bitrates)):  # never measured (dynacast stopped it at once): guess
                if bitrates[k] is None and bitrates[k - 1] is not None:
                    bitrates[k] = (bitrates[k - 1] or 0) * UNKNOWN_LAYER_RATIO
            out.append(bitrates)
        self._layer_bps = remembered
        return out

    def _start_probe(self, forwarders: Sequence[Forwarder], target: int, media_bps: int, now_ns: int) -> None:
        if probe_carrier(forwarders) is None:
            self._next_probe_ns = now_ns + PROBE_BACKOFF_MAX_NS
            return
        self.probes += 1
        BANDWIDTH_TOTALS.probes += 1
        self._probe_before_bps = self.bwe.estimate_bps(now_ns // 1_000_000)
        self._probe_packets_before = self.prober.packets_sent
        gcc = self.bwe.gcc
        duration = PROBE_DURATION_NS if gcc is not None else PROBE_DURATION_REMB_NS
        self.prober.start(target, media_bps, now_ns, duration)

    def tick(self, forwarders: Sequence[Forwarder], sink: RtpSink, now_ns: int) -> None:
        """Every RTCP timer period: the probe's padding, then its result once its feedback is in."""
        gcc = self.bwe.gcc
        if self.prober.sending:
            if gcc is not None and self.prober.packets_sent == self._probe_packets_before:
                gcc.probe_started(now_ns // 1000)  # measured from its first padding burst on
            if gcc is not None and gcc.probe_failed:
                self.prober.sending = False  # overuse or loss already: stop adding to the queue
            else:
                self.prober.tick(probe_carrier(forwarders), sink, now_ns)
            if not self.prober.sending:
                self._settle_until_ns = now_ns + PROBE_SETTLE_NS
                if gcc is not None:
                    gcc.probe_sent(now_ns // 1000 + int(SLICE_S * SPREAD * 1_000_000))  # paced slices
            return
        if not self._settle_until_ns or now_ns < self._settle_until_ns:
            return
        self._settle_until_ns = 0
        if gcc is not None:
            gcc.probe_finished()
        after = self.bwe.estimate_bps(now_ns // 1_000_000)
        if after > self._probe_before_bps * 1.05:
            self.probe_successes += 1
            BANDWIDTH_TOTALS.probe_successes += 1
            self._backoff_ns = PROBE_INTERVAL_NS
            self._next_probe_ns = now_ns  # the next allocate may upgrade, then probe further
        else:
            self._backoff_ns = min(self._backoff_ns * 2, PROBE_BACKOFF_MAX_NS)
            self._next_probe_ns = now_ns + self._backoff_ns
        self.allocate(forwarders, now_ns)

    def stats(self, now_ns: int) -> dict[str, object]:
        return {
            **self.bwe.stats(now_ns // 1_000_000),
            "allocations": self.allocations,
            "probes": self.probes,
            "probe_successes": self.probe_successes,
            "probe_bytes": self.prober.bytes_sent,
            "pauses": self.pauses,
        }
