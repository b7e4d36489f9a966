"""bench_workers' capacity summary: the most forwarded at a loss-free point, per worker count."""

from __future__ import annotations

import pytest

from loadtest.bench_workers import Point, _print_capacity


def _point(workers: int, sessions: int, forwarded: float, loss: float, client_loss: float) -> Point:
    return Point(workers, sessions, sessions * 40, forwarded, forwarded, forwarded, loss, client_loss,
                 90.0, [90.0], 10.0, 1.0, 100.0, 1.0, 0.0, 0)  # fmt: skip


def test_capacity_is_the_best_loss_free_point_per_worker_count(capsys: pytest.CaptureFixture[str]) -> None:
    points = [
        _point(1, 30, 92000, 0.0, 0.0),
        _point(2, 56, 171000, 0.05, 0.5),  # loss-free by the window, not by the load tool's own count
        _point(1, 32, 97000, 0.3, 0.0),  # lossy: not the capacity although it forwarded more
        _point(2, 54, 160000, 0.0, 0.0),
        _point(2, 60, 175000, 9.0, 8.0),
    ]
    _print_capacity(points, "")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("capacity (loss % <= 0.1): 1 worker(s) 92000 (30 sessions), "
                        "2 worker(s) 171000 (56 sessions); ratio 1.86")  # fmt: skip
    assert lines[1] == ("capacity (loss % and client loss % <= 0.1): 1 worker(s) 92000 (30 sessions), "
                        "2 worker(s) 160000 (54 sessions); ratio 1.74")  # fmt: skip


def test_no_loss_free_point_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    _print_capacity([_point(1, 40, 80000, 12.0, 11.0)], "round 1: ")
    assert capsys.readouterr().out.splitlines()[0] == "round 1: capacity (loss % <= 0.1): no loss-free point"
