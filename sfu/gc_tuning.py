"""Garbage-collector settings for a media process, and a record of its pauses.

A worker with ~1,000 peers holds ~750,000 GC-tracked objects (aiortc's and aioice's per-peer state).
With CPython's default thresholds (700, 10, 10) every periodic task's sleep (a Future, a timer handle, a
coroutine frame living ~1 s) outlives two young collections and is promoted to the oldest generation;
promoted objects pass 25 % of the long-lived ones every ~15 s and trigger a full collection, which on
this VM stopped the event loop for 0.35-1.1 s (measured with `gc.callbacks`, docs/benchmarks.md
"Workers"): every socket backs up, publishers' packets overflow the receive buffers, consent checks go
unanswered. With a young generation of `GEN0_THRESHOLD` objects, a young collection runs every few
seconds instead of several times a second, so objects that live a second or two die young and are
never promoted; full collections become rare (growth and churn of sessions still trigger them, which is
what frees dead peers' reference cycles). `gc.freeze()` at start moves what the imports and the
application built (never garbage) out of every collection's way.

`GcPauses` records every collection's duration (`gc.callbacks`) for `/metrics`: a stop-the-world pause
is invisible in CPU figures and only shows as loss and jitter.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any, Final

GEN0_THRESHOLD: Final = 50_000  # CPython default 700
GEN1_THRESHOLD: Final = 20  # default 10: young collections per middle one
GEN2_THRESHOLD: Final = 10  # default; full collections also wait for 25 % growth of the long-lived
GENERATIONS: Final = 3
RECENT_S: Final = 10.0


def tune() -> None:
    """Freezes what exists now and raises the young-generation threshold; call once the process has
    started its application (imports and app objects are never garbage). `sfu serve --default-gc`
    skips it (to compare, or if a workload proves CPython's defaults better)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)


class GcPauses:
    """Collections and their stop-the-world time per generation, and the longest pause of the last
    `RECENT_S` seconds. Installed once per process (`install`); the callback is two clock reads."""

    def __init__(self) -> None:
        self.collections = [0] * GENERATIONS
        self.pause_s = [0.0] * GENERATIONS
        self.recent: deque[tuple[float, float]] = deque(maxlen=512)  # (ended at, pause)
        self._started = 0.0
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._on_gc)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._on_gc)
            self._installed = False

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        generation = info.get("generation", 0)
        if 0 <= generation < GENERATIONS and self._started:
            pause = now - self._started
            self.collections[generation] += 1
            self.pause_s[generation] += pause
            self.recent.append((now, pause))

    def max_recent_s(self, now: float | None = None) -> float:
        since = (time.perf_counter() if now is None else now) - RECENT_S
        return max((pause for ended, pause in self.recent if ended >= since), default=0.0)

    def snapshot(self) -> dict[str, Any]:
        return {
            "collections": {str(g): n for g, n in enumerate(self.collections)},
            "pause_seconds": {str(g): s for g, s in enumerate(self.pause_s)},
            "max_pause_10s": self.max_recent_s(),
        }


PAUSES: Final = GcPauses()  # the process's one record (gc.callbacks is process-wide)
