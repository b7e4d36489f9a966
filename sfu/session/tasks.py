"""Helpers for the rule that every task lives on its owner and is cancelled and awaited in `close()`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancels and awaits `task`; a task closing its own owner is left to finish by itself."""
    if task is None or task is asyncio.current_task() or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def call_later(delay_s: float, action: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
    """A task that awaits `action()` after `delay_s` seconds; the caller stores and cancels it."""

    async def run() -> None:
        await asyncio.sleep(max(0.0, delay_s))
        await action()

    return asyncio.get_running_loop().create_task(run(), name=name)
