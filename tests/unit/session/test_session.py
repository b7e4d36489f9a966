"""Session state changes and the events they cause, with fakes instead of sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sfu.auth.identity import Grants, Identity, Policy
from sfu.config import Config
from sfu.errors import Forbidden, NotFound
from sfu.session.resume import ResumeTokens
from sfu.session.session import Session
from sfu.store.sqlite import SqliteStore
from tests.support import wait_until
from tests.unit.session.fakes import FakeConnection, FakeListener, FakeWebhooks, RecordingObserver


@pytest.fixture
def webhooks() -> FakeWebhooks:
    return FakeWebhooks()


@pytest.fixture
def listener() -> FakeListener:
    return FakeListener()


@pytest.fixture
async def session(
    store: SqliteStore, webhooks: FakeWebhooks, listener: FakeListener,
) -> AsyncIterator[Session]:
    config = Config(session_linger_s=0.05, resume_window_s=0.05)
    created = Session(config, store, webhooks, listener, ResumeTokens(), "c_1", "room")
    yield created
    await created.close()


def identity(uid: str, **kwargs: object) -> Identity:
    return Identity(cid="c_1", key_id="k_1", via="jwt", uid=uid, sid="room", **kwargs)  # type: ignore[arg-type]


async def join(session: Session, uid: str, **kwargs: object) -> FakeConnection:
    connection = FakeConnection()
    result = await session.join(identity(uid, **kwargs), connection)
    result.participant.release({"type": "joined", **result.body}, result.seen)
    return connection


async def test_a_feed_outside_the_publish_grant_is_forbidden(session: Session) -> None:
    await join(session, "a", grants=Grants(publish=("microphone",)))
    session.add_feed("a", kind="audio", source="microphone")
    with pytest.raises(Forbidden):
        session.add_feed("a", kind="video", source="camera")
    with pytest.raises(NotFound):
        session.add_feed("ghost", kind="audio", source="microphone")


async def test_losing_publish_removes_the_participants_feeds(
    session: Session, webhooks: FakeWebhooks,
) -> None:
    observer = RecordingObserver()
    session.observers.append(observer)
    await join(session, "a")
    other = await join(session, "b")
    feed = session.add_feed("a", kind="video", source="camera")
    session.update_participant(session.participant("a"), grants=Grants(publish=False))
    assert observer.removed_feeds == [feed.feed_id]
    assert other.types()[-3:] == ["feed_published", "feed_unpublished", "participant_updated"]
    assert "feed_unpublished" in webhooks.names()


async def test_feed_events_follow_the_receivers_subscribe_policy(session: Session) -> None:
    await join(session, "host")
    picky = await join(session, "picky", policy=Policy(subscribe=("nobody",)))
    feed = session.add_feed("host", kind="audio", source="microphone")
    session.update_feed(feed.feed_id, muted=True)
    assert "feed_published" not in picky.types() and "feed_updated" not in picky.types()


async def test_a_replaced_participant_is_closed_4010(session: Session) -> None:
    first = await join(session, "a")
    await join(session, "a")
    assert first.closed_with == (4010, "replaced")


async def test_a_resumed_participant_gets_missed_messages_but_not_stale_presence(session: Session) -> None:
    await join(session, "a")
    bob_conn = FakeConnection()
    result = await session.join(identity("b"), bob_conn)
    result.participant.release({"type": "joined", **result.body}, result.seen)
    bob = result.participant
    session.disconnect(bob, bob_conn)
    await join(session, "c")
    await session.pipelines.send("a", None, "hello", to=None, pipeline="default", persist=False)
    again = FakeConnection()
    resumed = await session.join(identity("b"), again, resume=result.body["resume"])
    assert resumed.resumed and resumed.participant is bob
    bob.release({"type": "joined", **resumed.body}, resumed.seen)
    assert again.types() == ["joined", "message"]
    assert {p["uid"] for p in resumed.body["participants"]} == {"a", "c"}


async def test_the_last_leave_ends_the_session_after_the_linger(session: Session, listener: FakeListener,
                                                                 webhooks: FakeWebhooks) -> None:
    await join(session, "a")
    await session.remove_participant(session.participant("a"), "left")
    await wait_until(lambda: listener.closed == [session])
    assert webhooks.names() == ["participant_joined", "participant_left", "session_ended"]


async def test_a_dropped_participant_leaves_with_timeout_after_the_resume_window(session: Session) -> None:
    watcher = await join(session, "w")
    conn = await join(session, "a")
    session.disconnect(session.participant("a"), conn)
    await wait_until(lambda: "participant_left" in watcher.types())
    assert watcher.sent[-1] == {"type": "participant_left", "uid": "a", "reason": "timeout"}
