"""Events across nodes through the outbox: two nodes' outboxes on one database. On
PostgreSQL the writer's NOTIFY wakes the other node at once — its poll is made a minute
long here, so only the wake-up can bring the event within the deadline — and a listening
connection that the server ends is opened again (the poll carries the events meanwhile).
On SQLite (no notifications) the quarter-second poll brings it."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from gateway.cluster.outbox import ClusterEvents
from gateway.db import Database
from gateway.events import EventBus
from gateway.interfaces import Event

#: Longer than any deadline below: on PostgreSQL an event arriving in time was woken for.
SLOW_POLL = 60.0


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.05)


async def received(bus: EventBus, kind: str, timeout: float) -> Event:
    async def first() -> Event:
        async for event in bus.subscribe():
            if event.kind == kind:
                return event
        raise AssertionError("the bus closed")
    return await asyncio.wait_for(first(), timeout)


async def test_an_event_of_one_node_wakes_the_other(database_url: str) -> None:
    async with Database(database_url) as db:
        poll = 0.25 if db.is_sqlite else SLOW_POLL
        one_bus, two_bus = EventBus(), EventBus()
        async with ClusterEvents(db, "n1", one_bus, poll_seconds=poll) as one, \
                ClusterEvents(db, "n2", two_bus, poll_seconds=poll) as two:
            if not db.is_sqlite:
                await until(lambda: one.listening and two.listening, 10, "both nodes listening")
            waiting = asyncio.ensure_future(received(two_bus, "test.ping", 10))
            await asyncio.sleep(0)  # subscribed
            one_bus.emit("test.ping", camera="cam1", n=1)
            event = await waiting
            assert (event.camera, event.detail) == ("cam1", {"n": 1})
            if db.is_sqlite:
                return
            # the server ends node two's listening connection: it listens again, and the
            # next event still wakes it
            async with db.begin() as conn:
                ended = (await conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
                ))).scalar()
            assert ended == 2  # both nodes' listening connections
            await until(lambda: not two.listening, 10, "node two noticing its connection ended")
            await until(lambda: one.listening and two.listening, 10, "both nodes listening again")
            waiting = asyncio.ensure_future(received(two_bus, "test.pong", 10))
            await asyncio.sleep(0)
            one_bus.emit("test.pong", camera="cam2")
            assert (await waiting).camera == "cam2"
