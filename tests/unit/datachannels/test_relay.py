"""DataRelay routing and per-recipient backpressure against fake channels (no network)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sfu.auth.identity import Grants, Policy
from sfu.media.datachannels import DataDropReason, encode_client_message
from sfu.session.data_relay import (
    LOSSY_MAX_BUFFERED_BYTES,
    RELIABLE_MAX_BACKLOG_BYTES,
    RELIABLE_MAX_BUFFERED_BYTES,
    DataRelay,
)


class FakeChannel:
    def __init__(self, label: str) -> None:
        self.label = label
        self.readyState = "connecting"
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent: list[bytes] = []
        self.handlers: dict[str, list[Callable[..., None]]] = {}

    def on(self, event: str, handler: Callable[..., None]) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    def send(self, data: bytes) -> None:
        self.sent.append(data)  # a fast peer: the buffer drains at once (tests set bufferedAmount)

    def remove_all_listeners(self) -> None:
        self.handlers.clear()

    def close(self) -> None:
        self.readyState = "closed"


class FakeSubscriber:
    def __init__(self) -> None:
        self.channels: list[FakeChannel] = []

    def create_data_channel(
        self, label: str, *, ordered: bool = True, max_retransmits: int | None = None
    ) -> Any:
        channel = FakeChannel(label)
        self.channels.append(channel)
        return channel


@dataclass(eq=False)
class FakeParticipant:
    uid: str
    grants: Grants = field(default_factory=Grants)
    policy: Policy = field(default_factory=Policy)
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


class FakeMedia:
    def __init__(self) -> None:
        self.closed = False
        self.subscriber = FakeSubscriber()
        self.offers = 0

    def subscriber_transport(self) -> FakeSubscriber:
        return self.subscriber

    def renegotiate(self) -> None:
        self.offers += 1


class FakeSessionMedia:
    def __init__(self, *participants: FakeParticipant) -> None:
        self.session = type("S", (), {})()
        self.session.participants_by_uid = {p.uid: p for p in participants}
        self.media_by_uid: dict[str, FakeMedia] = {}

    def media_for(self, participant: FakeParticipant) -> FakeMedia:
        return self.media_by_uid.setdefault(participant.uid, FakeMedia())


def setup(*participants: FakeParticipant) -> tuple[DataRelay, FakeSessionMedia]:
    session_media = FakeSessionMedia(*participants)
    relay = DataRelay(cast(Any, session_media))
    relay.on_publisher_channel(cast(Any, participants[0]), FakeChannel("reliable"))
    return relay, session_media


def open_all(session_media: FakeSessionMedia) -> None:
    for media in session_media.media_by_uid.values():
        for channel in media.subscriber.channels:
            channel.readyState = "open"
            channel.emit("open")


def reliable_of(session_media: FakeSessionMedia, uid: str) -> FakeChannel:
    return [c for c in session_media.media_by_uid[uid].subscriber.channels if c.label == "reliable"][-1]


def test_first_publisher_channel_opens_both_channels_for_every_participant() -> None:
    alice, bob = FakeParticipant("alice"), FakeParticipant("bob")
    relay, sm = setup(alice, bob)
    assert relay.active
    for uid in ("alice", "bob"):
        assert sorted(c.label for c in sm.media_by_uid[uid].subscriber.channels) == ["lossy", "reliable"]
        assert sm.media_by_uid[uid].offers == 1
    carol = FakeParticipant("carol")
    relay.on_participant_added(cast(Any, carol))
    assert sm.media_by_uid["carol"].offers == 1


def test_reliable_messages_wait_for_the_channel_to_open_then_go_in_order() -> None:
    alice, bob = FakeParticipant("alice"), FakeParticipant("bob")
    relay, sm = setup(alice, bob)
    for i in range(3):
        relay.on_message(cast(Any, alice), encode_client_message(bytes([i])), reliable=True)
    assert reliable_of(sm, "bob").sent == []
    open_all(sm)
    assert [m[-1] for m in reliable_of(sm, "bob").sent] == [0, 1, 2]
    assert relay.counters.messages_relayed == 3


def test_lossy_copies_are_dropped_for_a_congested_recipient_only() -> None:
    alice, bob, carol = FakeParticipant("alice"), FakeParticipant("bob"), FakeParticipant("carol")
    relay, sm = setup(alice, bob, carol)
    open_all(sm)
    bob_lossy = next(c for c in sm.media_by_uid["bob"].subscriber.channels if c.label == "lossy")
    bob_lossy.bufferedAmount = LOSSY_MAX_BUFFERED_BYTES + 1
    relay.on_message(cast(Any, alice), encode_client_message(b"x" * 10), reliable=False)
    assert relay.counters.drops[DataDropReason.LOSSY_CONGESTED] == 1
    assert relay.counters.messages_relayed == 1  # carol


def test_a_slow_reliable_recipient_is_reset_and_told_while_others_keep_receiving() -> None:
    alice, bob, carol = FakeParticipant("alice"), FakeParticipant("bob"), FakeParticipant("carol")
    relay, sm = setup(alice, bob, carol)
    open_all(sm)
    slow = reliable_of(sm, "bob")
    slow.bufferedAmount = RELIABLE_MAX_BUFFERED_BYTES + 1
    payload = b"p" * 10_000
    count = RELIABLE_MAX_BACKLOG_BYTES // 10_000 + 5
    for _ in range(count):
        relay.on_message(cast(Any, alice), encode_client_message(payload), reliable=True)
    assert len(reliable_of(sm, "carol").sent) == count
    assert relay.counters.channel_resets >= 1
    assert slow.readyState == "closed" and reliable_of(sm, "bob") is not slow
    assert bob.sent[0]["type"] == "data_reset" and bob.sent[0]["channel"] == "reliable"
    dropped = relay.counters.drops[DataDropReason.RELIABLE_OVERFLOW]
    assert dropped == sum(m["dropped"] for m in bob.sent)


def test_backlog_drains_on_buffered_amount_low() -> None:
    alice, bob = FakeParticipant("alice"), FakeParticipant("bob")
    relay, sm = setup(alice, bob)
    open_all(sm)
    channel = reliable_of(sm, "bob")
    channel.bufferedAmount = RELIABLE_MAX_BUFFERED_BYTES + 1
    relay.on_message(cast(Any, alice), encode_client_message(b"later"), reliable=True)
    assert channel.sent == []
    channel.bufferedAmount = 0
    channel.emit("bufferedamountlow")
    assert channel.sent[0].endswith(b"later")


def test_to_policy_and_grants_are_enforced_and_counted() -> None:
    alice = FakeParticipant("alice", policy=Policy(message=("bob",)))
    bob, carol = FakeParticipant("bob"), FakeParticipant("carol")
    relay, sm = setup(alice, bob, carol)
    open_all(sm)
    relay.on_message(cast(Any, alice), encode_client_message(b"all"), reliable=True)  # only bob allowed
    relay.on_message(cast(Any, alice), encode_client_message(b"c", to=["carol", "nobody"]), reliable=True)
    assert len(reliable_of(sm, "bob").sent) == 1 and reliable_of(sm, "carol").sent == []
    assert relay.counters.drops[DataDropReason.POLICY] == 2  # carol, and "nobody" (not allowed either)
    mute = FakeParticipant("dave", grants=Grants(data=False))
    sm.session.participants_by_uid["dave"] = mute
    relay.on_message(cast(Any, mute), encode_client_message(b"x"), reliable=True)
    relay.on_message(cast(Any, bob), b"\x00", reliable=True)
    assert relay.counters.drops[DataDropReason.FORBIDDEN] == 1
    assert relay.counters.drops[DataDropReason.MALFORMED] == 1


def test_lossy_copies_go_first_when_the_recipients_reliable_channel_is_congested() -> None:
    alice, bob = FakeParticipant("alice"), FakeParticipant("bob")
    relay, sm = setup(alice, bob)
    open_all(sm)
    reliable_of(sm, "bob").bufferedAmount = LOSSY_MAX_BUFFERED_BYTES + 1  # below the reliable limit
    relay.on_message(cast(Any, alice), encode_client_message(b"l"), reliable=False)
    relay.on_message(cast(Any, alice), encode_client_message(b"r"), reliable=True)
    assert relay.counters.drops[DataDropReason.LOSSY_CONGESTED] == 1
    assert reliable_of(sm, "bob").sent[-1].endswith(b"r")
