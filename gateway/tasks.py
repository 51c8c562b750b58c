"""Small helpers for the background tasks that long-lived resources own."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[object] | None) -> None:
    """Cancel ``task`` and wait until it has finished. Idempotent; ``None`` is fine.

    ``asyncio.wait`` rather than ``await task`` + suppressing ``CancelledError``: the
    latter would also swallow a cancellation of the caller itself.
    """
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])


class TaskSet:
    """Background tasks their owner must not lose (audit writes above all).

    Each task is referenced until it ends (the event loop keeps only weak references),
    a failure is logged, and ``drain`` waits for every task, also those started while
    draining, so the owner can flush them before it closes what they write to.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[object]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: background task %s failed", self.name, task.get_name(), exc_info=task.exception())

    async def drain(self) -> None:
        """Wait until no task is left."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
