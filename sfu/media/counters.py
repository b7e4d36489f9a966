"""Why packets are dropped or repaired, as plain lists of ints the per-packet path can bump cheaply."""

from __future__ import annotations

import enum


class DropReason(enum.IntEnum):
    """One counter per reason; the per-packet path never raises or logs, it counts (STYLE.md section 5)."""

    TOO_SHORT = 0
    BAD_VERSION = 1
    UNKNOWN_SSRC = 2
    UNKNOWN_PAYLOAD_TYPE = 3
    NOT_CONNECTED = 4
    WAITING_FOR_KEY_FRAME = 5
    PAUSED = 6
    MUTED = 7
    BEFORE_START = 8
    DUPLICATE = 9
    NACK_MISS = 10
    BAD_RTCP = 11
    SEND_FAILED = 12
    PADDING_ONLY = 13


def new_drops() -> list[int]:
    """A zeroed counter list indexed by DropReason."""
    return [0] * len(DropReason)


def drops_as_dict(drops: list[int]) -> dict[str, int]:
    """Non-zero counters by lowercase reason name, for metrics and tests."""
    return {reason.name.lower(): drops[reason] for reason in DropReason if drops[reason]}
