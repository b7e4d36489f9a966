"""Signed webhook deliveries with retries, off the caller's path: `emit` never blocks and never raises.

Each event is POSTed as JSON `{"id", "event", "ts", "cid", "data"}` to every webhook of its cid; `id` stays
the same across retries so receivers can deduplicate. `X-Sfu-Signature: sha256=<hex>` is the HMAC-SHA256
of the exact body with the secret of the key that registered the webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from typing import Any

import aiohttp
import orjson

from sfu.store.base import Store, WebhookRecord

log = logging.getLogger("sfu.webhooks")

SIGNATURE_HEADER = "X-Sfu-Signature"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    """Events wait in a bounded queue; one task fans each out to delivery tasks, bounded in number."""

    def __init__(self, store: Store, *, backoff_base_s: float = 1.0, max_backoff_s: float = 60.0,
                 max_tries: int = 10, queue_size: int = 1000, max_deliveries: int = 256,
                 timeout_s: float = 10.0) -> None:
        self.store = store
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.max_tries = max_tries
        self.max_deliveries = max_deliveries
        self.timeout_s = timeout_s
        self.dropped = 0  # events or deliveries given up: queue full, too many in flight, out of tries
        self.delivered = 0
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._closed = False

    def emit(self, cid: str, event: str, payload: dict[str, Any]) -> None:
        """Queues one event for every webhook of `cid`; drops it (counted) when the queue is full."""
        if self._closed:
            return
        try:
            ts_ms = int(time.time() * 1000)
            envelope = {"id": uuid.uuid4().hex, "event": event, "ts": ts_ms, "cid": cid, "data": payload}
            body = orjson.dumps(envelope)
            self._queue.put_nowait((cid, body))
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._run(), name="webhook-sender")
        except asyncio.QueueFull:
            self.dropped += 1
        except Exception:
            self.dropped += 1
            log.exception("webhook event %s could not be queued", event)

    async def _run(self) -> None:
        while True:
            cid, body = await self._queue.get()
            try:
                hooks = await self.store.list_webhooks(cid)
            except Exception:
                log.exception("listing webhooks of %s failed", cid)
                continue
            for hook in hooks:
                if len(self._deliveries) >= self.max_deliveries:
                    self.dropped += 1
                    continue
                task = asyncio.get_running_loop().create_task(self._deliver(hook, body), name="webhook")
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, hook: WebhookRecord, body: bytes) -> None:
        for attempt in range(self.max_tries):
            if attempt:
                await asyncio.sleep(min(self.backoff_base_s * 2 ** (attempt - 1), self.max_backoff_s))
            secret = await self.store.key_secret(hook.key_id)
            if secret is None:
                log.warning("webhook %s dropped: its key is gone", hook.webhook_id)
                break
            if await self._post(hook.url, body, sign(secret, body)):
                self.delivered += 1
                return
        self.dropped += 1

    async def _post(self, url: str, body: bytes, signature: str) -> bool:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
        try:
            async with self._http.post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("webhook delivery to %s failed: %s", url, exc.__class__.__name__)
            return False

    async def close(self) -> None:
        """Cancels the sender and every pending delivery; idempotent."""
        self._closed = True
        tasks = [t for t in (self._worker, *self._deliveries) if t is not None]
        self._worker = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()
            self._http = None
