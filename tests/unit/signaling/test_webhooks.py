"""The webhook sender never blocks or raises, counts what it drops, and leaves no task behind."""

from __future__ import annotations

from typing import cast

from sfu.signaling.webhooks import WebhookSender
from sfu.store.base import Store, WebhookRecord


class NoHooks:
    """The one Store method the sender's worker calls before a delivery."""

    async def list_webhooks(self, cid: str) -> list[WebhookRecord]:
        return []


async def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    sender = WebhookSender(cast(Store, NoHooks()), queue_size=2)
    for _ in range(5):
        sender.emit("c", "participant_joined", {"sid": "s"})  # no await in between: the worker cannot run
    assert sender.dropped == 3
    await sender.close()


async def test_emit_after_close_is_ignored_and_close_is_idempotent() -> None:
    sender = WebhookSender(cast(Store, NoHooks()))
    sender.emit("c", "session_started", {"sid": "s"})
    await sender.close()
    await sender.close()
    sender.emit("c", "session_ended", {"sid": "s"})
    assert sender.dropped == 0


async def test_an_unencodable_payload_is_dropped_without_raising() -> None:
    sender = WebhookSender(cast(Store, NoHooks()))
    sender.emit("c", "feed_published", {"feed": object()})
    assert sender.dropped == 1
    await sender.close()
