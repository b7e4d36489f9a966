"""Where a session lives: the seam between the front process and whoever owns sessions.

The front asks `Placement.locate(cid, sid)` for the owner of a session when a `join` arrives and relays
the socket to the returned `Target`. `LocalPlacement` places sessions on this node's worker processes (the
least loaded one when the session is new) and remembers the choice while the session lives; a placement
across nodes (Redis) wraps or replaces it behind the same protocol.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sfu.cluster.supervisor import WorkerPool, WorkerProcess
from sfu.session.admission import admits_new_session

PLACEMENT_GRACE_S = 15.0
"""A placement not yet seen in its worker's reports is kept this long (the join may still be on its way)."""
SESSION_WEIGHT = 0.05
"""Load one session adds before the worker's reports show it, so a burst of joins spreads evenly."""
PPS_PER_CORE = 100000.0
"""Forwarded packets/s one worker handles at full load (~92,000-104,000 measured on this VM's cores,
docs/benchmarks.md "Workers"), to put pps next to CPU."""


@dataclass(frozen=True, slots=True)
class Target:
    """An owner of sessions: a local worker or another node. `ws_url` is its `/v1/rtc`."""

    ws_url: str
    http_url: str
    name: str  # "worker-0", or a node id
    headers: Mapping[str, str] = field(default_factory=dict)  # extra headers for relayed requests


class NoTarget(Exception):
    """No owner can take the session now (every worker down or restarting)."""


class AtCapacity(Exception):
    """Every worker is at or above `max_worker_cpu`: a new session is refused (`unavailable`)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A worker as the placement decision sees it."""

    index: int
    cpu: float  # fraction of one core, as reported
    score: float  # lower is less loaded


def choose_worker(candidates: Sequence[Candidate], max_cpu: float | None) -> int | None:
    """Index of the least loaded candidate whose CPU is below `max_cpu` (a fraction; None: no limit)."""
    fit = [c for c in candidates if admits_new_session(c.cpu, max_cpu)]
    if not fit:
        return None
    return min(fit, key=lambda c: (c.score, c.index)).index


class Placement(Protocol):
    async def locate(self, cid: str, sid: str) -> Target:
        """The owner of (cid, sid); a new session is placed (and remembered) first. Raises NoTarget."""
        ...

    async def lost(self, target: Target) -> None:
        """`target` could not be reached: forget what was placed there; the next locate places anew."""
        ...

    def targets(self) -> Sequence[Target]:
        """Every live local owner: the REST API fans out to these and /metrics sums them."""
        ...


@dataclass(slots=True)
class _Placed:
    worker: int
    generation: int
    placed_at: float


class LocalPlacement:
    """Sessions on this node's workers: least loaded by CPU and forwarded packets/s, sticky per session."""

    def __init__(self, pool: WorkerPool, *, max_cpu: float | None = None) -> None:
        self.pool = pool
        self.max_cpu = max_cpu
        """`max_worker_cpu` as a fraction of one core: no new session on a worker at or above it."""
        self.placed_by_key: dict[tuple[str, str], _Placed] = {}
        pool.on_report.append(self._on_report)
        pool.on_death.append(self._on_death)

    async def locate(self, cid: str, sid: str) -> Target:
        key = (cid, sid)
        placed = self.placed_by_key.get(key)
        if placed is not None:
            worker = self.pool.workers[placed.worker]
            if worker.alive and worker.generation == placed.generation:
                return _target(worker)
            del self.placed_by_key[key]
        worker = self.least_loaded(max_cpu=self.max_cpu)
        self.placed_by_key[key] = _Placed(worker.index, worker.generation, time.monotonic())
        return _target(worker)

    async def lost(self, target: Target) -> None:
        """Forgets the worker's sessions only if its process is gone: a live worker that refused one
        connection keeps them (placing them elsewhere would split a live session in two)."""
        for worker in self.pool.workers:
            process = worker.process
            if worker.name == target.name and (process is None or process.returncode is not None):
                self._on_death(worker)

    def targets(self) -> Sequence[Target]:
        return [_target(w) for w in self.pool.workers if w.alive]

    def least_loaded(self, *, max_cpu: float | None = None) -> WorkerProcess:
        """Raises NoTarget when no worker runs, AtCapacity when every one is at or above `max_cpu`."""
        live = [w for w in self.pool.workers if w.alive and not w.draining]
        live = live or [w for w in self.pool.workers if w.alive]  # all draining: they answer the refusal
        if not live:
            raise NoTarget("no worker is running")
        candidates = [Candidate(w.index, w.load.cpu, self.score(w)) for w in live]
        index = choose_worker(candidates, max_cpu)
        if index is None:
            raise AtCapacity("server at capacity, try again later")
        return next(w for w in live if w.index == index)

    def at_capacity(self) -> bool:
        """Whether a new session would be refused now: every running worker at or above `max_cpu`."""
        if self.max_cpu is None:
            return False
        try:
            self.least_loaded(max_cpu=self.max_cpu)
        except AtCapacity:
            return True
        except NoTarget:  # nothing runs: not a capacity question (the join is told to come back)
            return False
        return False

    def score(self, worker: WorkerProcess) -> float:
        load = worker.load
        sessions = set(load.sessions)
        sessions.update(k for k, p in self.placed_by_key.items()
                        if p.worker == worker.index and p.generation == worker.generation)
        return max(load.cpu, load.pps / PPS_PER_CORE) + SESSION_WEIGHT * len(sessions)

    def worker_of(self, cid: str, sid: str) -> WorkerProcess | None:
        """The live worker a session is placed on, if any (REST routing)."""
        placed = self.placed_by_key.get((cid, sid))
        if placed is None:
            return None
        worker = self.pool.workers[placed.worker]
        return worker if worker.alive and worker.generation == placed.generation else None

    def _on_report(self, worker: WorkerProcess) -> None:
        """Sessions the worker reports are (re)confirmed there; ended ones are forgotten after the grace."""
        now = time.monotonic()
        reported = set(worker.load.sessions)
        for key in reported:
            self.placed_by_key.setdefault(key, _Placed(worker.index, worker.generation, now))
        for key, placed in list(self.placed_by_key.items()):
            if placed.worker != worker.index:
                continue
            if key in reported:
                placed.placed_at = now
            elif now - placed.placed_at > PLACEMENT_GRACE_S or placed.generation != worker.generation:
                del self.placed_by_key[key]

    def _on_death(self, worker: WorkerProcess) -> None:
        for key, placed in list(self.placed_by_key.items()):
            if placed.worker == worker.index:
                del self.placed_by_key[key]


def _target(worker: WorkerProcess) -> Target:
    return Target(ws_url=f"ws://127.0.0.1:{worker.port}/v1/rtc", http_url=f"http://127.0.0.1:{worker.port}",
                  name=worker.name)
