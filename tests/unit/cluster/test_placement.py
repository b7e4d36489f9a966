"""Placing a new session: the least loaded worker below `max_worker_cpu`; existing sessions stay put."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu.cluster.placement import AtCapacity, Candidate, LocalPlacement, NoTarget, choose_worker
from sfu.cluster.supervisor import WorkerLoad, WorkerPool
from sfu.config import Config
from sfu.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("loads", "max_cpu", "chosen"),
    [
        ([(0.2, 0.2), (0.5, 0.5)], None, 0),  # (cpu, score) per worker: least score wins
        ([(0.9, 0.9), (0.5, 0.5)], None, 1),
        ([(0.95, 0.95), (0.99, 0.99)], None, 0),  # no limit: even a saturated worker takes it
        ([(0.9, 0.1), (0.5, 0.6)], 0.85, 1),  # low score (e.g. few pps) but CPU above the limit
        ([(0.85, 0.85), (0.84, 0.9)], 0.85, 1),  # at the limit counts as full
        ([(0.85, 0.85), (0.9, 0.9)], 0.85, None),  # every worker full: refuse
        ([(0.3, 0.4), (0.3, 0.4)], 0.85, 0),  # a tie goes to the lower index
        ([], 0.85, None),
    ],
)
def test_choose_worker_takes_the_least_loaded_below_the_cpu_limit(
    loads: list[tuple[float, float]], max_cpu: float | None, chosen: int | None,
) -> None:
    candidates = [Candidate(i, cpu, score) for i, (cpu, score) in enumerate(loads)]
    assert choose_worker(candidates, max_cpu) == chosen


def pool_with(tmp_path: Path, *cpus: float) -> WorkerPool:
    pool = WorkerPool(Config(), len(cpus), SqliteStore(tmp_path))
    for worker, cpu in zip(pool.workers, cpus, strict=True):
        worker.alive, worker.port, worker.load = True, 9000 + worker.index, WorkerLoad(cpu=cpu)
    return pool


async def test_a_new_session_skips_a_worker_at_the_cpu_limit(tmp_path: Path) -> None:
    placement = LocalPlacement(pool_with(tmp_path, 0.9, 0.95, 0.3), max_cpu=0.85)
    assert (await placement.locate("c", "s1")).name == "worker-2"


async def test_every_worker_full_refuses_new_sessions_but_not_existing_ones(tmp_path: Path) -> None:
    pool = pool_with(tmp_path, 0.2, 0.3)
    placement = LocalPlacement(pool, max_cpu=0.85)
    existing = await placement.locate("c", "live")
    for worker in pool.workers:
        worker.load = WorkerLoad(cpu=0.9, sessions=(("c", "live"),) if worker.name == existing.name else ())
        for callback in pool.on_report:
            callback(worker)
    with pytest.raises(AtCapacity, match="server at capacity, try again later"):
        await placement.locate("c", "new")
    assert await placement.locate("c", "live") == existing
    assert ("c", "new") not in placement.placed_by_key


async def test_without_a_limit_a_busy_node_still_places(tmp_path: Path) -> None:
    placement = LocalPlacement(pool_with(tmp_path, 0.99, 1.0))
    assert (await placement.locate("c", "s")).name == "worker-0"


async def test_no_running_worker_is_no_target_not_at_capacity(tmp_path: Path) -> None:
    pool = pool_with(tmp_path, 0.1)
    pool.workers[0].alive = False
    with pytest.raises(NoTarget):
        await LocalPlacement(pool, max_cpu=0.85).locate("c", "s")


@pytest.mark.parametrize(
    ("cpus", "max_cpu", "full"),
    [
        ((0.9, 0.95), 0.85, True),
        ((0.9, 0.3), 0.85, False),
        ((0.99, 1.0), None, False),  # no limit: never full
    ],
)
def test_a_node_is_at_capacity_when_every_worker_is_at_the_cpu_limit(
    tmp_path: Path, cpus: tuple[float, ...], max_cpu: float | None, full: bool,
) -> None:
    assert LocalPlacement(pool_with(tmp_path, *cpus), max_cpu=max_cpu).at_capacity() is full


def test_a_node_with_no_running_worker_is_not_at_capacity(tmp_path: Path) -> None:
    pool = pool_with(tmp_path, 0.9)
    pool.workers[0].alive = False
    assert LocalPlacement(pool, max_cpu=0.85).at_capacity() is False
