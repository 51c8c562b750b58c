"""Small helpers for the background tasks that long-lived resources own."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[object] | None) -> None:
    """Cancel ``task`` and wait until it has finished. Idempotent; ``None`` is fine.

    ``asyncio.wait`` rather than ``await task`` + suppressing ``CancelledError``: the
    latter would also swallow a cancellation of the caller itself.
    """
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])
