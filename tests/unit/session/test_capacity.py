"""`max_participants`: a session refuses the join that would exceed it; re-joins and hidden joiners fit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sfu.auth.identity import Grants, Identity
from sfu.config import Config
from sfu.errors import Forbidden
from sfu.session.resume import ResumeTokens
from sfu.session.session import Session
from sfu.store.sqlite import SqliteStore
from tests.unit.session.fakes import FakeConnection, FakeListener, FakeWebhooks


@pytest.fixture
async def session(store: SqliteStore) -> AsyncIterator[Session]:
    config = Config(session_linger_s=0.05, resume_window_s=0.05, max_participants=2)
    created = Session(config, store, FakeWebhooks(), FakeListener(), ResumeTokens(), "c_1", "room")
    yield created
    await created.close()


async def join(session: Session, uid: str, *, hidden: bool = False,
               resume: str | None = None) -> tuple[FakeConnection, str]:
    connection = FakeConnection()
    identity = Identity(cid="c_1", key_id="k_1", via="jwt", uid=uid, sid="room", grants=Grants(hidden=hidden))
    result = await session.join(identity, connection, resume=resume)
    result.participant.release({"type": "joined", **result.body}, result.seen)
    return connection, str(result.body["resume"])


async def test_a_join_beyond_the_cap_is_forbidden_and_the_others_stay(session: Session) -> None:
    alice, _ = await join(session, "alice")
    await join(session, "bob")
    with pytest.raises(Forbidden, match="session is full: 2 participants"):
        await join(session, "carol")
    assert sorted(session.participants_by_uid) == ["alice", "bob"]
    assert alice.closed_with is None
    joined = [m["participant"]["uid"] for m in alice.sent if m["type"] == "participant_joined"]
    assert joined == ["bob"]


async def test_a_participant_replacing_its_own_uid_is_not_refused(session: Session) -> None:
    first, _ = await join(session, "alice")
    await join(session, "bob")
    await join(session, "alice")
    assert sorted(session.participants_by_uid) == ["alice", "bob"]
    assert first.closed_with is not None and first.closed_with[0] == 4010


async def test_a_resuming_participant_is_not_counted_twice(session: Session) -> None:
    connection, token = await join(session, "alice")
    await join(session, "bob")
    session.disconnect(session.participant("alice"), connection)
    await join(session, "alice", resume=token)
    assert sorted(session.participants_by_uid) == ["alice", "bob"]


async def test_hidden_participants_are_not_counted_and_always_fit(session: Session) -> None:
    await join(session, "recorder", hidden=True)
    await join(session, "alice")
    await join(session, "bob")
    await join(session, "recorder-2", hidden=True)
    assert len(session.participants_by_uid) == 4
    with pytest.raises(Forbidden):
        await join(session, "carol")


async def test_without_a_cap_any_number_joins(store: SqliteStore) -> None:
    session = Session(Config(), store, FakeWebhooks(), FakeListener(), ResumeTokens(), "c_1", "room")
    try:
        for n in range(5):
            await join(session, f"p{n}")
        assert len(session.participants_by_uid) == 5
    finally:
        await session.close()
