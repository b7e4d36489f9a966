"""Routing of binary data-channel messages between the participants of one session.

PROTOCOL.md "Binary data channels": each client opens `reliable` and `lossy` on its publisher transport;
the server opens the same two on the client's subscriber transport and relays every message with a
`from` header, honouring `to`, the sender's `grants.data` and `policy.message`, and the 15 KiB limit.

When subscriber channels are opened: lazily, for the whole session at once. Until some participant
opens a data channel the session is media-only and nobody gets an extra offer (so media-only sessions
negotiate exactly as before). The first publisher data channel makes the session data-active: every
participant then gets `reliable` + `lossy` on its subscriber transport (created if it had none, so a
data-only participant still gets a subscriber transport and an offer), and so does everyone who joins
later, at join. Reliable copies for a recipient whose channel is still opening wait in its backlog.

A slow recipient never blocks others (all sends are synchronous and bounded per recipient):
- lossy copies are dropped (LOSSY_CONGESTED) while the recipient's lossy channel is not open, or aiortc
  buffers more than LOSSY_MAX_BUFFERED_BYTES on either of its channels, or it has a reliable backlog;
- reliable copies go to the channel while it buffers at most RELIABLE_MAX_BUFFERED_BYTES, else into a
  per-recipient backlog drained on `bufferedamountlow`; when the backlog would pass
  RELIABLE_MAX_BACKLOG_BYTES, the backlog is dropped (RELIABLE_OVERFLOW), the recipient's `reliable`
  channel is closed and a new one opened in its place (no renegotiation: SCTP is already up), and the
  recipient is told on its socket: `{"type":"data_reset","channel":"reliable","dropped":<messages>}`.
  A reliable stream is therefore in order with none missing, or visibly reset.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from sfu.media.datachannels import (
    LOSSY_LABEL,
    RELIABLE_LABEL,
    TOTALS,
    ClientMessage,
    DataCounters,
    DataDropReason,
    encode_server_message,
    parse_client_message,
)

if TYPE_CHECKING:
    from sfu.media.subscriber import SubscriberTransport
    from sfu.session.participant import Participant
    from sfu.session.session_media import SessionMedia

log = logging.getLogger("sfu.session.data")

LOSSY_MAX_BUFFERED_BYTES = 64 * 1024
RELIABLE_MAX_BUFFERED_BYTES = 256 * 1024
RELIABLE_MAX_BACKLOG_BYTES = 1024 * 1024


class Outbox:
    """One recipient's two server channels (on its subscriber transport) and its reliable backlog."""

    __slots__ = ("_relay", "_subscriber", "backlog", "backlog_bytes", "lossy", "participant", "reliable",
                 "resets")

    def __init__(self, relay: DataRelay, participant: Participant, subscriber: SubscriberTransport) -> None:
        self._relay = relay
        self._subscriber = subscriber
        self.participant = participant
        self.backlog: deque[tuple[bytes, int]] = deque()  # (wire bytes, payload bytes)
        self.backlog_bytes = 0
        self.resets = 0
        self.lossy = subscriber.create_data_channel(LOSSY_LABEL, ordered=False, max_retransmits=0)
        self.reliable: Any = None
        self._open_reliable()

    def _open_reliable(self) -> None:
        channel = self._subscriber.create_data_channel(RELIABLE_LABEL, ordered=True)
        channel.bufferedAmountLowThreshold = RELIABLE_MAX_BUFFERED_BYTES // 2
        channel.on("open", self.drain)
        channel.on("bufferedamountlow", self.drain)
        self.reliable = channel

    def send_lossy(self, wire: bytes, size: int) -> None:
        channel = self.lossy
        # NOTE: both channels share one SCTP association, so a reliable backlog is congestion too:
        # lossy copies go first, long before any reliable one is dropped.
        if (channel.readyState != "open" or channel.bufferedAmount > LOSSY_MAX_BUFFERED_BYTES
                or self.backlog or self.reliable.bufferedAmount > LOSSY_MAX_BUFFERED_BYTES):
            self._relay.count_drop(DataDropReason.LOSSY_CONGESTED, size)
            return
        self._relay.count_relayed(size)
        channel.send(wire)

    def send_reliable(self, wire: bytes, size: int) -> None:
        channel = self.reliable
        if channel.readyState in ("closing", "closed"):
            self._relay.count_drop(DataDropReason.CHANNEL_CLOSED, size)
            return
        if (not self.backlog and channel.readyState == "open"
                and channel.bufferedAmount <= RELIABLE_MAX_BUFFERED_BYTES):
            self._relay.count_relayed(size)
            channel.send(wire)
            return
        if self.backlog_bytes + len(wire) > RELIABLE_MAX_BACKLOG_BYTES:
            self._relay.count_drop(DataDropReason.RELIABLE_OVERFLOW, size)
            self.reset()
            return
        self.backlog.append((wire, size))
        self.backlog_bytes += len(wire)

    def drain(self) -> None:
        """Moves backlog into the channel while aiortc buffers little (on open and bufferedamountlow)."""
        channel = self.reliable
        while self.backlog and channel.readyState == "open" and (
            channel.bufferedAmount <= RELIABLE_MAX_BUFFERED_BYTES
        ):
            wire, size = self.backlog.popleft()
            self.backlog_bytes -= len(wire)
            self._relay.count_relayed(size)
            channel.send(wire)

    def reset(self) -> None:
        """The recipient cannot keep up: drop its backlog, replace its `reliable` channel, tell it."""
        dropped = len(self.backlog) + 1  # the copy that overflowed is counted by the caller
        for _wire, size in self.backlog:
            self._relay.count_drop(DataDropReason.RELIABLE_OVERFLOW, size)
        self.backlog.clear()
        self.backlog_bytes = 0
        self.resets += 1
        self._relay.count_reset()
        old = self.reliable
        old.remove_all_listeners()
        old.close()
        self._open_reliable()  # on the SCTP association already up: no renegotiation
        log.info("data channel reset", extra={"uid": self.participant.uid, "dropped": dropped})
        self.participant.send({"type": "data_reset", "channel": RELIABLE_LABEL, "dropped": dropped})

    def close(self) -> None:
        """Forgets the channels: they close with the subscriber transport (its participant is leaving)."""
        for _wire, size in self.backlog:
            self._relay.count_drop(DataDropReason.CHANNEL_CLOSED, size)
        self.backlog.clear()
        self.backlog_bytes = 0
        for channel in (self.reliable, self.lossy):
            channel.remove_all_listeners()


class DataRelay:
    """Owned by SessionMedia; told about publisher channels and participants coming and going."""

    def __init__(self, session_media: SessionMedia) -> None:
        self.session_media = session_media
        self.counters = DataCounters()
        self.outboxes_by_uid: dict[str, Outbox] = {}
        self.active = False

    # -- counting ----------------------------------------------------------------------------------------

    def count_drop(self, reason: DataDropReason, size: int) -> None:
        for counters in (self.counters, TOTALS):
            counters.drops[reason] += 1
            counters.drop_bytes[reason] += size

    def count_relayed(self, size: int) -> None:
        for counters in (self.counters, TOTALS):
            counters.messages_relayed += 1
            counters.bytes_relayed += size

    def count_reset(self) -> None:
        self.counters.channel_resets += 1
        TOTALS.channel_resets += 1

    # -- participants ------------------------------------------------------------------------------------

    def on_participant_added(self, participant: Participant) -> None:
        if self.active:
            self._open_outbox(participant)

    def on_participant_removed(self, participant: Participant) -> None:
        outbox = self.outboxes_by_uid.get(participant.uid)
        if outbox is not None and outbox.participant is participant:
            del self.outboxes_by_uid[participant.uid]
            outbox.close()

    def _activate(self) -> None:
        """The first data channel of the session: every participant gets its subscriber channels."""
        self.active = True
        for participant in list(self.session_media.session.participants_by_uid.values()):
            self._open_outbox(participant)

    def _open_outbox(self, participant: Participant) -> None:
        current = self.outboxes_by_uid.get(participant.uid)
        if current is not None and current.participant is participant:
            return
        media = self.session_media.media_for(participant)
        if media.closed:
            return
        self.outboxes_by_uid[participant.uid] = Outbox(self, participant, media.subscriber_transport())
        media.renegotiate()  # the channels go into the next subscriber offer

    # -- messages ----------------------------------------------------------------------------------------

    def on_publisher_channel(self, participant: Participant, channel: Any) -> None:
        """A client opened a channel on its publisher transport: relay what it sends."""
        reliable = channel.label != LOSSY_LABEL
        known = channel.label in (RELIABLE_LABEL, LOSSY_LABEL)

        def on_message(raw: bytes | str) -> None:
            self.on_message(participant, raw if known else None, reliable)

        channel.on("message", on_message)
        if not self.active:
            self._activate()

    def on_message(self, sender: Participant, raw: object, reliable: bool) -> None:
        """One client message: parse, check, fan out. Never raises; every outcome is counted."""
        size = len(raw) if isinstance(raw, bytes | bytearray | str) else 0
        for counters in (self.counters, TOTALS):
            counters.messages_in += 1
            counters.bytes_in += size
        session = self.session_media.session
        if session.participants_by_uid.get(sender.uid) is not sender:
            self.count_drop(DataDropReason.CHANNEL_CLOSED, size)
            return
        if not sender.grants.data:
            self.count_drop(DataDropReason.FORBIDDEN, size)
            return
        message = parse_client_message(raw)
        if not isinstance(message, ClientMessage):
            self.count_drop(message, size)
            return
        self._fan_out(sender, message, reliable)

    def _fan_out(self, sender: Participant, message: ClientMessage, reliable: bool) -> None:
        payload_size = len(message.payload)
        wire = encode_server_message(sender.uid, message.topic, message.payload)
        policy = sender.policy
        outboxes = self.outboxes_by_uid
        if message.to is None:
            recipients = [
                o for uid, o in outboxes.items() if uid != sender.uid and policy.allows_message(uid)
            ]
        else:
            recipients = []
            members = self.session_media.session.participants_by_uid
            for uid in message.to:
                if uid == sender.uid:
                    continue
                if not policy.allows_message(uid):
                    self.count_drop(DataDropReason.POLICY, payload_size)
                elif uid not in members:
                    self.count_drop(DataDropReason.UNKNOWN_RECIPIENT, payload_size)
                elif (outbox := outboxes.get(uid)) is None:
                    self.count_drop(DataDropReason.CHANNEL_CLOSED, payload_size)
                else:
                    recipients.append(outbox)
        for outbox in recipients:
            if reliable:
                outbox.send_reliable(wire, payload_size)
            else:
                outbox.send_lossy(wire, payload_size)

    def close(self) -> None:
        for outbox in self.outboxes_by_uid.values():
            outbox.close()
        self.outboxes_by_uid.clear()
