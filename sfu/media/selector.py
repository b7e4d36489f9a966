"""Simulcast layer selection for one forwarder: `current_layer`, `target_layer`, `max_layer`.

The policy is pure (no clock, no I/O) so it can be tested as tables [ms SimulcastConsumer][lk
forwarder.go]: the target is the highest layer that arrives and is at most `max_layer` (the lowest one
arriving when none fits, so a subscriber never sees nothing while something arrives). The forwarder
switches `current_layer` to the target only on a key frame of the target (a decoder cannot start a new
stream mid-GOP, RFC 7741 section 4.3) and keeps forwarding the current layer until then, so a switch never
freezes the picture. Layers are indices, 0 = lowest (PROTOCOL.md: rids q/h/f lowest first); -1 = none.
"""

from __future__ import annotations

from typing import Final

REASON_PREFERENCE: Final = "preference"  # set_quality (max size, layer) or the initial choice
REASON_PUBLISHER: Final = "publisher"  # a layer started or stopped arriving
REASON_BANDWIDTH: Final = "bandwidth"  # reserved for the allocator


class SimulcastSelector:
    """Which layer of a feed one subscriber gets; `Forwarder` asks it per packet through two ints."""

    __slots__ = (
        "available_mask",
        "bandwidth_layer",
        "current_layer",
        "layer_count",
        "max_layer",
        "reason",
        "target_layer",
    )

    def __init__(self, layer_count: int) -> None:
        self.layer_count = max(1, layer_count)
        self.max_layer = self.layer_count - 1  # the subscriber's preference; default the highest
        self.bandwidth_layer = self.layer_count - 1  # the allocator's cap (allocator.py)
        self.available_mask = 1 if layer_count <= 1 else 0  # bit i: layer i arrives
        self.current_layer = 0 if layer_count <= 1 else -1
        self.target_layer = 0 if layer_count <= 1 else -1
        self.reason = REASON_PREFERENCE

    @property
    def simulcast(self) -> bool:
        return self.layer_count > 1

    def set_max_layer(self, layer: int) -> bool:
        """A subscriber preference; returns True if the target changed (ask for a key frame then)."""
        self.max_layer = min(max(layer, 0), self.layer_count - 1)
        return self._retarget(REASON_PREFERENCE)

    def set_bandwidth_layer(self, layer: int) -> bool:
        """The allocator's cap for this subscriber's budget; returns True if the target changed."""
        self.bandwidth_layer = min(max(layer, 0), self.layer_count - 1)
        return self._retarget(REASON_BANDWIDTH)

    def set_available(self, mask: int) -> bool:
        """The layers that arrive now (bit i = layer i); returns True if the target changed."""
        self.available_mask = mask
        return self._retarget(REASON_PUBLISHER)

    def _retarget(self, reason: str) -> bool:
        best = -1
        cap = min(self.max_layer, self.bandwidth_layer)
        for layer in range(cap, -1, -1):
            if self.available_mask >> layer & 1:
                best = layer
                break
        if best < 0:
            for layer in range(cap + 1, self.layer_count):
                if self.available_mask >> layer & 1:
                    best = layer
                    break
        if best < 0 or best == self.target_layer:
            return False  # nothing arrives: keep the old target, it may come back
        self.target_layer = best
        self.reason = reason
        return True

    def should_switch(self, layer: int, key_frame: bool) -> bool:
        """True if a packet of `layer` makes it the current one (the forwarder inlines this test)."""
        return layer != self.current_layer and layer == self.target_layer and key_frame

    def switched(self, layer: int) -> None:
        self.current_layer = layer

    def reset(self) -> None:
        """Forget the current layer (source switch): the next key frame of the target starts it."""
        if self.simulcast:
            self.current_layer = -1


def layer_for_size(sizes: list[tuple[int, int]], max_width: int | None, max_height: int | None) -> int:
    """The highest layer whose (width, height) fits both limits; unknown sizes (0) assume 1/4, 1/2, 1
    of the top layer (Chrome's scaleResolutionDownBy 4/2/1), or of 1280x720 if nothing is known."""
    count = len(sizes)
    top_w, top_h = sizes[-1] if sizes and sizes[-1][0] else (1280, 720)
    best = 0
    for layer, (width, height) in enumerate(sizes):
        scale = 1 << (count - 1 - layer)
        w = width or top_w // scale
        h = height or top_h // scale
        if (max_width is None or w <= max_width) and (max_height is None or h <= max_height):
            best = layer
    return best
