"""SimulcastSelector as tables: events in, (current, target) out after each one."""

from __future__ import annotations

import pytest

from sfu.media.selector import (
    REASON_PREFERENCE,
    REASON_PUBLISHER,
    SimulcastSelector,
    layer_for_size,
)

ALL = 0b111

# events: ("avail", mask) | ("max", layer) | ("pkt", layer, key_frame)
Event = tuple[str, int] | tuple[str, int, bool]


def run(events: list[Event]) -> list[tuple[int, int]]:
    selector = SimulcastSelector(3)
    out: list[tuple[int, int]] = []
    for event in events:
        if event[0] == "avail":
            selector.set_available(event[1])
        elif event[0] == "max":
            selector.set_max_layer(event[1])
        else:
            layer, key_frame = event[1], bool(event[2])  # type: ignore[misc]
            if selector.should_switch(layer, key_frame):
                selector.switched(layer)
        out.append((selector.current_layer, selector.target_layer))
    return out


@pytest.mark.parametrize(
    ("name", "events", "expected"),
    [
        (
            "no switch before a key frame of the target",
            [("avail", ALL), ("pkt", 2, False), ("pkt", 0, True), ("pkt", 2, True)],
            [(-1, 2), (-1, 2), (-1, 2), (2, 2)],
        ),
        (
            "downgrade keeps the current layer until the lower one has a key frame",
            [("avail", ALL), ("pkt", 2, True), ("max", 0), ("pkt", 2, False), ("pkt", 0, False),
             ("pkt", 0, True)],
            [(-1, 2), (2, 2), (2, 0), (2, 0), (2, 0), (0, 0)],
        ),
        (
            "upgrade on the higher layer's key frame only",
            [("avail", ALL), ("max", 1), ("pkt", 1, True), ("max", 2), ("pkt", 2, False), ("pkt", 2, True)],
            [(-1, 2), (-1, 1), (1, 1), (1, 2), (1, 2), (2, 2)],
        ),
        (
            "a disappearing layer falls back to the next one that arrives",
            [("avail", ALL), ("pkt", 2, True), ("avail", 0b011), ("pkt", 1, True)],
            [(-1, 2), (2, 2), (2, 1), (1, 1)],
        ),
        (
            "a returning layer is taken again, up to max",
            [("avail", 0b001), ("pkt", 0, True), ("avail", 0b111), ("pkt", 2, True)],
            [(-1, 0), (0, 0), (0, 2), (2, 2)],
        ),
        (
            "max below everything that arrives picks the lowest arriving layer",
            [("max", 0), ("avail", 0b110), ("pkt", 1, True)],
            [(-1, -1), (-1, 1), (1, 1)],
        ),
        (
            "nothing arriving keeps the old target",
            [("avail", ALL), ("avail", 0), ("pkt", 2, True)],
            [(-1, 2), (-1, 2), (2, 2)],
        ),
    ],
)
def test_selector_sequences(name: str, events: list[Event], expected: list[tuple[int, int]]) -> None:
    assert run(events) == expected, name


def test_selector_remembers_why_the_target_changed() -> None:
    selector = SimulcastSelector(3)
    assert selector.set_available(ALL) and selector.reason == REASON_PUBLISHER
    assert selector.set_max_layer(1) and selector.reason == REASON_PREFERENCE
    assert not selector.set_max_layer(1)


def test_selector_without_simulcast_is_always_on_layer_zero() -> None:
    selector = SimulcastSelector(1)
    assert (selector.current_layer, selector.target_layer) == (0, 0)
    selector.reset()
    assert selector.current_layer == 0


@pytest.mark.parametrize(
    ("sizes", "max_width", "max_height", "expected"),
    [
        ([(320, 180), (640, 360), (1280, 720)], 320, 180, 0),
        ([(320, 180), (640, 360), (1280, 720)], 640, None, 1),
        ([(320, 180), (640, 360), (1280, 720)], 4000, 4000, 2),
        ([(320, 180), (640, 360), (1280, 720)], 100, 100, 0),  # nothing fits: the lowest
        ([(0, 0), (0, 0), (0, 0)], 320, 180, 0),  # unknown: 1/4, 1/2, 1 of 1280x720
        ([(0, 0), (0, 0), (960, 540)], 480, 270, 1),  # unknown lower layers scale from the top
    ],
)
def test_layer_for_size_picks_the_highest_layer_that_fits(
    sizes: list[tuple[int, int]], max_width: int | None, max_height: int | None, expected: int
) -> None:
    assert layer_for_size(sizes, max_width, max_height) == expected
