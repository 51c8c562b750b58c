"""The gateway's internal event bus: notices for the events channel and event-sink plugins.

Publishing never blocks: each subscriber has a bounded queue, and sinks run as tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.interfaces import Event

logger = logging.getLogger(__name__)


class EventBus:
    def __init__(self, sink: Callable[[Event], Any] | None = None, *, queue_size: int = 1000) -> None:
        self._sink = sink
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._queue_size = queue_size
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Where this node's own events go for the other nodes (the cluster's outbox).
        self.relay: Callable[[Event], None] | None = None

    def emit(self, kind: str, *, camera: str | None = None, user: str | None = None, **detail: Any) -> Event:
        event = Event(kind=kind, at=time.time(), camera=camera, user=user, detail=detail)
        self.publish(event)
        return event

    def publish(self, event: Event, *, remote: bool = False) -> None:
        """Hand an event to every subscriber. A ``remote`` event happened on another node:
        it reaches this node's subscribers (events channel, access checks) only — its own
        node already gave it to the sinks (a webhook fires once in the cluster)."""
        for queue in list(self._subscribers):
            if queue.full():
                logger.warning("events: a subscriber is not keeping up; dropping %s", event.kind)
                continue
            queue.put_nowait(event)
        if remote:
            return
        if self.relay is not None:
            self.relay(event)
        if self._sink is not None:
            result = self._sink(event)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def subscribe(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
