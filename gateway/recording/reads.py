"""Reads of recorded video: audited, and capped per session and hour.

The playlist request says which range a user looks at; the segment requests are what
actually leaves the gateway. Each segment read is therefore audited too, merged the way
HLS live views are: the reads of one session on one camera collect into time ranges, and
one ``playback.segments`` entry (ranges, segments, seconds of video, bytes) is written when
the session has read nothing of that camera for ``idle`` seconds, after at most
``max_open`` seconds of reading, and at shutdown.

Outside an approved export (which reads storage itself, never through these routes) one
session may pull at most ``recording.max-playback-seconds-per-hour`` seconds of recorded
video per hour (a sliding hour; each segment counted once per session, however many range
requests fetch it). A read beyond that is refused with 429 and the reason, audited as
``playback.segments`` with outcome ``refused``, and raises the alarm event
``playback.alarm`` once per session until the hour frees up again.

The hour is counted in the database (``playback_budgets``, ``playback_counted``), not in
the memory of one process: in a cluster a session may be served by any node, and its cap
is the same whichever nodes it reaches. Each admission takes the session's budget row
first (an upsert, which holds that row on PostgreSQL and the write lock on SQLite until
the transaction ends), so two nodes admitting segments of one session at once are counted
one after the other and never both slip under the cap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from gateway.access.audit import AuditLog
from gateway.access.guard import Principal
from gateway.appkeys import AUDIT, CONFIG, DATABASE, EVENTS, PLAYBACK_READS
from gateway.db import Database, playback_budgets, playback_counted
from gateway.errors import TooManyRequests
from gateway.events import EventBus
from gateway.recording.index import CONTIGUOUS, Segment
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

ACTION = "playback.segments"
ALARM = "playback.alarm"
#: The cap's window.
HOUR = 3600.0
#: A session's reads of a camera end this long after its last segment request (players
#: fetch one segment per segment length, 60 s by default, so this is longer).
IDLE = 90.0
#: ... and are written at least this often while they go on.
MAX_OPEN = 300.0
#: How often a node deletes the counts that left the hour (any node may; it is idempotent).
PURGE_EVERY = 300.0


@dataclass(slots=True)
class _Reads:
    """One session's segment reads of one camera since its last audit entry."""

    user: str
    client: str
    camera: str
    first_at: float
    last_at: float
    ranges: list[list[float]] = field(default_factory=list)
    segment_ids: set[int] = field(default_factory=set)
    seconds: float = 0.0
    bytes: int = 0

    def add(self, seg: Segment, now: float) -> None:
        self.last_at = now
        if seg.id in self.segment_ids:
            return
        self.segment_ids.add(seg.id)
        self.seconds += seg.duration
        self.bytes += seg.bytes
        _merge(self.ranges, seg.start, seg.end)


def _merge(ranges: list[list[float]], start: float, end: float) -> None:
    """Insert ``[start, end]`` into sorted, disjoint ``ranges``, joining what touches."""
    i = 0
    while i < len(ranges) and ranges[i][1] < start - CONTIGUOUS:
        i += 1
    j = i
    while j < len(ranges) and ranges[j][0] <= end + CONTIGUOUS:
        start, end = min(start, ranges[j][0]), max(end, ranges[j][1])
        j += 1
    ranges[i:j] = [[start, end]]


@dataclass(frozen=True, slots=True)
class _Hour:
    """What one session pulled in the last hour, as counted in the database."""

    counted: tuple[tuple[float, int, float], ...]  #: (when, segment id, seconds), oldest first

    @property
    def used(self) -> float:
        return sum(seconds for _, _, seconds in self.counted)

    def has(self, segment_id: int) -> bool:
        return any(seg == segment_id for _, seg, _ in self.counted)

    def free_in(self, needed: float, limit: float, now: float) -> float:
        """Seconds until ``needed`` more fits under ``limit``."""
        used = self.used
        if used + needed <= limit:
            return 0.0
        for at, _, seconds in self.counted:  # oldest first: the order they leave the hour
            used -= seconds
            if used + needed <= limit:
                return max(0.0, at + HOUR - now)
        return HOUR  # more than the whole limit at once


def _key(session_id: str) -> str:
    """The budget's key: the session id (a long one by its hash, to fit the column)."""
    if len(session_id) <= 64:
        return session_id
    return "sha256:" + hashlib.sha256(session_id.encode()).hexdigest()


class PlaybackReads:
    def __init__(
        self,
        audit: AuditLog,
        events: EventBus,
        *,
        db: Database,
        max_seconds_per_hour: float,
        idle: float = IDLE,
        max_open: float = MAX_OPEN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audit = audit
        self.events = events
        self.db = db
        self.limit = max_seconds_per_hour
        self.idle = idle
        self.max_open = max_open
        self.clock = clock
        self._reads: dict[tuple[str, str], _Reads] = {}
        self._task: asyncio.Task[None] | None = None
        self._purged_at = 0.0

    async def __aenter__(self) -> PlaybackReads:
        self._task = asyncio.create_task(self._sweep_forever(), name="playback-reads")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        await self.flush()

    async def used(self, session_id: str) -> float:
        """Seconds of video the session pulled in the last hour (on any node)."""
        async with self.db.connect() as conn:
            return (await self._hour(conn, _key(session_id), self.clock())).used

    async def _hour(self, conn: Any, key: str, now: float) -> _Hour:
        c = playback_counted.c
        rows = (await conn.execute(
            sa.select(c.at, c.segment, c.seconds).where(c.session == key, c.at > now - HOUR).order_by(c.at, c.segment)
        )).all()
        return _Hour(tuple((at, seg, seconds) for at, seg, seconds in rows))

    def _take(self, key: str, now: float) -> Any:
        """The upsert that holds the session's budget row until the transaction ends."""
        insert = sqlite.insert if self.db.is_sqlite else postgresql.insert
        stmt = insert(playback_budgets).values(session=key, updated_at=now, alarmed=False)
        return stmt.on_conflict_do_update(index_elements=["session"], set_={"updated_at": now})

    # -- the two requests ----------------------------------------------------------------
    async def admit_playlist(self, who: Principal, client: str, camera: str) -> None:
        """A playlist is refused only once the session has used up its hour: it serves no
        video itself, and the segments it lists are counted as they are fetched."""
        now = self.clock()
        async with self.db.connect() as conn:
            hour = await self._hour(conn, _key(who.session_id), now)
        if hour.used >= self.limit:
            await self._refuse(who, client, camera, hour, now, wait=hour.free_in(1.0, self.limit, now), detail={"request": "playlist"})

    async def admit_segment(self, who: Principal, client: str, seg: Segment) -> None:
        """Count the segment against the session's hour (once) and add it to the session's
        reads of the camera; raises TooManyRequests (audited, alarmed) beyond the cap."""
        now = self.clock()
        key = _key(who.session_id)
        c = playback_counted.c
        async with self.db.begin() as conn:
            await conn.execute(self._take(key, now))  # from here on this session's count is ours alone
            hour = await self._hour(conn, key, now)
            refused = not hour.has(seg.id) and hour.used + seg.duration > self.limit
            if not hour.has(seg.id) and not refused:
                await conn.execute(playback_counted.delete().where(c.session == key, c.segment == seg.id))  # out of the hour
                await conn.execute(playback_counted.insert().values(session=key, segment=seg.id, at=now, seconds=seg.duration))
                await conn.execute(playback_budgets.update().where(playback_budgets.c.session == key).values(alarmed=False))
        if refused:
            wait = hour.free_in(seg.duration, self.limit, now)
            await self._refuse(who, client, seg.camera, hour, now, wait=wait, detail={"request": "segment", "segment": seg.id})
        reads_key = (who.session_id, seg.camera)
        reads = self._reads.get(reads_key)
        if reads is None:
            reads = self._reads[reads_key] = _Reads(who.username, client, seg.camera, now, now)
        reads.add(seg, now)

    async def _refuse(
        self, who: Principal, client: str, camera: str, hour: _Hour, now: float, *, wait: float, detail: dict[str, Any]
    ) -> None:
        used = hour.used
        reason = (
            f"recorded video limit reached: this session has pulled {used / 60:.0f} min of recordings in the "
            f"last hour, at most {self.limit / 60:.0f} min are allowed (recording.max-playback-seconds-per-hour); "
            f"more leaves only through an approved export request. Try again in {max(1, round(wait / 60))} min"
        )
        await self.audit.record(
            ACTION, outcome="refused", user=who.username, client=client, camera=camera,
            detail={"reason": reason, "used_seconds": round(used, 3), "limit_seconds": self.limit, **detail},
        )
        b = playback_budgets.c
        async with self.db.begin() as conn:  # the first refusal of the hour, on whichever node, raises the alarm
            first = (await conn.execute(
                playback_budgets.update().where(b.session == _key(who.session_id), b.alarmed.is_(False)).values(alarmed=True)
            )).rowcount == 1
        if first:
            logger.warning("playback: %s from %s reached the limit of %.0f s per hour (camera %s)", who.username, client, self.limit, camera)
            self.events.emit(
                ALARM, camera=camera, user=who.username, client=client, reason="playback limit reached",
                used_seconds=round(used, 3), limit_seconds=self.limit,
            )
        raise TooManyRequests(reason)

    # -- writing the merged reads ------------------------------------------------------------
    async def flush(self) -> None:
        """Write every open read now (at shutdown)."""
        for key in list(self._reads):
            await self._write(key)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle))
            await self.sweep()

    async def sweep(self) -> None:
        now = self.clock()
        for key, reads in list(self._reads.items()):
            if now - reads.last_at >= self.idle or now - reads.first_at >= self.max_open:
                try:
                    await self._write(key)
                except Exception:
                    logger.exception("playback: auditing the reads of %s on camera %s failed", reads.user, reads.camera)
        if now - self._purged_at >= PURGE_EVERY:
            self._purged_at = now
            try:
                await self.purge(now)
            except Exception as exc:
                logger.warning("playback: deleting the counts that left the hour failed: %s", exc)

    async def purge(self, now: float) -> None:
        """Delete the counts that left the hour (and the budgets of sessions idle for one)."""
        async with self.db.begin() as conn:
            await conn.execute(playback_counted.delete().where(playback_counted.c.at <= now - HOUR))
            await conn.execute(playback_budgets.delete().where(playback_budgets.c.updated_at <= now - HOUR))

    async def _write(self, key: tuple[str, str]) -> None:
        reads = self._reads.pop(key, None)
        if reads is None or not reads.ranges:
            return
        await self.audit.record(
            ACTION, user=reads.user, client=reads.client, camera=reads.camera,
            range_from=reads.ranges[0][0], range_to=reads.ranges[-1][1],
            detail={
                "ranges": [[round(s, 3), round(e, 3)] for s, e in reads.ranges],
                "segments": len(reads.segment_ids),
                "seconds": round(reads.seconds, 3),
                "bytes": reads.bytes,
            },
        )


async def playback_reads_ctx(app: Any) -> AsyncIterator[None]:
    """aiohttp cleanup context: ``app.cleanup_ctx.append(playback_reads_ctx)``, after the
    security core (it writes to the audit log until it stops)."""
    limit = app[CONFIG].recording.max_playback_seconds_per_hour
    async with PlaybackReads(app[AUDIT], app[EVENTS], db=app[DATABASE], max_seconds_per_hour=limit) as reads:
        app[PLAYBACK_READS] = reads
        yield
