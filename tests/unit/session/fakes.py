"""Fakes at the session's role interfaces: a connection, webhooks, a registry listener, an observer."""

from __future__ import annotations

from typing import Any

from sfu.session.feed import Feed
from sfu.session.participant import Participant
from sfu.session.session import Session


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]


class FakeWebhooks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def emit(self, cid: str, event: str, payload: dict[str, Any]) -> None:
        self.events.append((cid, event, payload))

    def names(self) -> list[str]:
        return [event for _, event, _ in self.events]


class FakeListener:
    def __init__(self) -> None:
        self.closed: list[Session] = []

    def on_session_closed(self, session: Session) -> None:
        self.closed.append(session)


class RecordingObserver:
    def __init__(self) -> None:
        self.removed_feeds: list[str] = []
        self.removed_participants: list[str] = []
        self.added_participants: list[str] = []

    def on_participant_added(self, session: Session, participant: Participant) -> None:
        self.added_participants.append(participant.uid)

    def on_feed_removed(self, session: Session, feed: Feed) -> None:
        self.removed_feeds.append(feed.feed_id)

    def on_participant_removed(self, session: Session, participant: Participant) -> None:
        self.removed_participants.append(participant.uid)
