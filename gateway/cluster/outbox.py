"""Events across nodes: every node appends its events to ``cluster_events`` and polls for
the others', so a push made on node A opens on a station connected to node B, and a
revocation made on node C ends a view node A serves.

A durable table rather than PostgreSQL's LISTEN/NOTIFY alone: it works the same on SQLite
(``--workers N``), and a node that was briefly cut off reads what it missed instead of
losing it. Polling every quarter second costs one indexed query per node per poll.

On PostgreSQL the table is also the wake-up: each insert sends ``NOTIFY citygate_events``
(delivered at commit) and every node LISTENs on a connection of its own, reading at once
when another node wrote instead of at its next poll. The poll stays as the fallback: while
the listening connection is down (it is re-opened after a second) nothing is lost, only
later. SQLite has no notifications: its nodes poll.

Ids are handed out at insert but committed in any order (two nodes insert at once), so a
row with a smaller id can appear after a larger one was read: each poll reads back a
window below the highest id seen and skips the ids it already delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
import sqlalchemy as sa

from gateway.db import Database, cluster_events
from gateway.events import EventBus
from gateway.interfaces import Event

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.25
#: The PostgreSQL channel of the wake-ups (the payload: the node that wrote).
CHANNEL = "citygate_events"
#: How often the listening connection is checked, and how soon it is re-opened when lost.
LISTEN_CHECK_SECONDS = 30.0
RELISTEN_SECONDS = 1.0
FLUSH_SECONDS = 0.05
#: Ids below the highest seen that a poll reads again (rows committed late).
REREAD_WINDOW = 500
KEEP_SECONDS = 3600.0
MAX_PENDING = 10_000
#: Events whose arrival from another node means someone's rights changed there: sessions
#: ended, accounts disabled, grants revoked. Views served here are re-checked at once.
ACCESS_EVENTS = (
    "audit.grant.", "audit.user.", "audit.session.", "audit.logout", "audit.password.", "audit.push.", "audit.access.",
    "audit.rtsp.",
)


class ClusterEvents:
    """The outbox writer and reader of one node. An async context manager."""

    def __init__(
        self,
        db: Database,
        node: str,
        bus: EventBus,
        *,
        on_access_change: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self._db = db
        self._node = node
        self._bus = bus
        self._on_access_change = on_access_change
        self._clock = clock
        self._pending: list[dict] = []
        self._wake = asyncio.Event()
        self._last_id = 0
        self._seen: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.delivered = 0
        self._poll_seconds = poll_seconds
        self._notified = asyncio.Event()
        #: Whether this node listens for wake-ups now (PostgreSQL only).
        self.listening = False

    async def __aenter__(self) -> ClusterEvents:
        async with self._db.connect() as conn:
            self._last_id = (await conn.execute(sa.select(sa.func.max(cluster_events.c.id)))).scalar() or 0
        self._bus.relay = self._append
        self._tasks = [
            asyncio.create_task(self._write_forever(), name="cluster-events-write"),
            asyncio.create_task(self._read_forever(), name="cluster-events-read"),
        ]
        if not self._db.is_sqlite:
            self._tasks.append(asyncio.create_task(self._listen_forever(), name="cluster-events-listen"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._bus.relay = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._flush()

    # -- out ----------------------------------------------------------------------------
    def _append(self, event: Event) -> None:
        if len(self._pending) >= MAX_PENDING:
            logger.warning("cluster events: the database is not keeping up; dropping %s", event.kind)
            return
        self._pending.append({"node": self._node, "at": event.at, "event": msgspec.to_builtins(event)})
        self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_SECONDS)  # gather what comes together into one insert
            try:
                await self._flush()
            except Exception as exc:
                logger.warning("cluster events: writing failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                self._wake.set()

    async def _flush(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            async with self._db.begin() as conn:
                await conn.execute(cluster_events.insert(), rows)
                if not self._db.is_sqlite:  # the other nodes read at once (sent at commit)
                    await conn.execute(sa.text("SELECT pg_notify(:channel, :node)"), {"channel": CHANNEL, "node": self._node})
        except Exception:
            self._pending[:0] = rows
            raise

    # -- in -----------------------------------------------------------------------------
    async def _read_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notified.wait(), self._poll_seconds)
            self._notified.clear()
            try:
                await self.poll()
            except Exception as exc:
                logger.warning("cluster events: reading failed: %s", exc)

    async def _listen_forever(self) -> None:
        """PostgreSQL: LISTEN on a connection held for it; re-open it when it is lost."""
        while True:
            try:
                await self._listen()
            except Exception as exc:
                logger.warning(
                    "cluster events: listening for other nodes' events failed (%s); polling every %.2f s meanwhile",
                    exc, self._poll_seconds,
                )
            finally:
                self.listening = False
            await asyncio.sleep(RELISTEN_SECONDS)

    async def _listen(self) -> None:
        lost = asyncio.Event()

        def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            if payload != self._node:
                self._notified.set()

        def on_lost(_conn: object) -> None:
            lost.set()

        async with self._db.engine.connect() as conn:
            pg = (await conn.get_raw_connection()).driver_connection
            assert pg is not None
            pg.add_termination_listener(on_lost)
            await pg.add_listener(CHANNEL, on_notify)
            try:
                self.listening = True
                self._notified.set()  # read what came while nobody listened
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_CHECK_SECONDS)
                    if not lost.is_set():  # a connection cut without a word: find out
                        await asyncio.wait_for(pg.execute("SELECT 1"), 10)
                raise ConnectionError("the listening connection closed")
            finally:
                self.listening = False
                pg.remove_termination_listener(on_lost)
                if not pg.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pg.remove_listener(CHANNEL, on_notify), 5)

    async def poll(self) -> int:
        c = cluster_events.c
        low = max(0, self._last_id - REREAD_WINDOW)
        async with self._db.connect() as conn:
            rows = (
                await conn.execute(sa.select(c.id, c.node, c.event).where(c.id > low).order_by(c.id))
            ).all()
        access_changed = False
        delivered = 0
        for row_id, node, raw in rows:
            if row_id in self._seen:
                continue
            self._seen.add(row_id)
            self._last_id = max(self._last_id, row_id)
            if node == self._node:
                continue
            try:
                event = msgspec.convert(raw, Event)
            except msgspec.ValidationError:
                logger.warning("cluster events: row %d is not an event; skipped", row_id)
                continue
            self._bus.publish(event, remote=True)
            delivered += 1
            access_changed = access_changed or event.kind.startswith(ACCESS_EVENTS)
        floor = self._last_id - REREAD_WINDOW
        self._seen = {i for i in self._seen if i > floor}
        self.delivered += delivered
        if access_changed and self._on_access_change is not None:
            await self._on_access_change()
        return delivered

    async def sweep(self) -> int:
        """Delete rows older than an hour (a cluster-wide job: one node does it)."""
        async with self._db.begin() as conn:
            result = await conn.execute(cluster_events.delete().where(cluster_events.c.at < self._clock() - KEEP_SECONDS))
        return result.rowcount or 0

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                logger.warning("cluster events: sweeping failed: %s", exc)
            await asyncio.sleep(300)
