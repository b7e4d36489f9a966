"""`max_worker_cpu` in a single process: the CPU meter, and the registry refusing new sessions only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sfu.auth.identity import Identity
from sfu.config import Config
from sfu.errors import Unavailable
from sfu.session.admission import CpuMeter, admits_new_session
from sfu.session.registry import Registry
from sfu.store.sqlite import SqliteStore
from tests.unit.session.fakes import FakeConnection, FakeWebhooks


@pytest.mark.parametrize(
    ("samples", "cpu"),
    [
        ([], 0.0),  # nothing measured yet
        ([(1.0, 0.5)], 0.5),  # (now_s, process_time) after starting at (0, 0)
        ([(1.0, 0.5), (2.0, 1.4)], 0.9),  # the last interval only
        ([(2.0, 3.0)], 1.5),  # more than one core (threads)
        ([(1.0, 0.5), (1.0, 0.9)], 0.5),  # no time passed: keep the reading
        ([(1.0, 0.5), (2.0, 0.4)], 0.0),  # a clock going back never reads negative
    ],
)
def test_cpu_meter_reads_the_last_interval(samples: list[tuple[float, float]], cpu: float) -> None:
    meter = CpuMeter(0.0, 0.0)
    for now_s, cpu_s in samples:
        meter.sample(now_s, cpu_s)
    assert meter.cpu == pytest.approx(cpu)


@pytest.mark.parametrize(
    ("cpu", "max_cpu", "admitted"),
    [(0.99, None, True), (0.84, 0.85, True), (0.85, 0.85, False), (1.3, 0.85, False)],
)
def test_a_new_session_fits_below_the_limit(cpu: float, max_cpu: float | None, admitted: bool) -> None:
    assert admits_new_session(cpu, max_cpu) is admitted


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    store = SqliteStore(tmp_path / "data")
    await store.open()
    created = Registry(Config(session_linger_s=0.05, max_worker_cpu=85.0), store, FakeWebhooks(), None)
    yield created
    await created.close()
    await store.close()


def identity(sid: str, uid: str) -> Identity:
    return Identity(cid="c_1", key_id="k_1", via="jwt", uid=uid, sid=sid)


async def test_a_busy_process_refuses_new_sessions_and_keeps_joining_live_ones(registry: Registry) -> None:
    assert registry.max_cpu == pytest.approx(0.85)
    session, result = await registry.join(identity("live", "ann"), FakeConnection())
    result.participant.release({"type": "joined", **result.body}, result.seen)
    registry.cpu_meter.sample(1e12, 1e12)  # one full core ever since: above 85 %
    with pytest.raises(Unavailable, match="server at capacity, try again later"):
        await registry.join(identity("new", "carol"), FakeConnection())
    assert registry.get("c_1", "new") is None
    again, result = await registry.join(identity("live", "bob"), FakeConnection())
    assert again is session and sorted(session.participants_by_uid) == ["ann", "bob"]
    result.participant.release({"type": "joined", **result.body}, result.seen)


async def test_an_idle_process_admits_new_sessions(registry: Registry) -> None:
    session, result = await registry.join(identity("new", "carol"), FakeConnection())
    result.participant.release({"type": "joined", **result.body}, result.seen)
    assert session.sid == "new"
