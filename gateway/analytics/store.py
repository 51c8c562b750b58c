"""Where observations are kept: counts per minute, other observations as rows.

``count`` observations (payload ``line``, ``lane``, ``direction``, optional ``count``) are
summed in memory per camera, line, lane, direction and minute and written every
``flush_seconds`` as upserts, so a busy road costs a few writes a minute, not one per
vehicle. Other observations (``wrong-direction`` and the like) are written as rows in the
same batches; plate reads are left to their own store (it listens to the runner too).
Reads sum the minutes into hours, days or weeks (local time of the gateway).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from gateway.db import Database, analytics_counts, analytics_observations
from gateway.interfaces import Observation

logger = logging.getLogger(__name__)

COUNT_KIND = "count"
#: Observation kinds another store keeps (plate reads carry personal data and crops).
NOT_STORED_HERE = frozenset({"plate"})
INTERVALS = ("minute", "hour", "day", "week")
_KeyT = tuple[str, str, str, str, int]


@dataclass(frozen=True, slots=True)
class CountRow:
    camera: str
    line: str
    lane: str
    direction: str
    start: float  #: the interval's start, epoch seconds
    count: int


def bucket_start(at: float, interval: str, tz: dt.tzinfo | None = None) -> float:
    """The start of the ``interval`` holding ``at`` (local time unless ``tz``); weeks start
    on Monday."""
    if interval == "minute":
        return float(int(at // 60) * 60)
    moment = dt.datetime.fromtimestamp(at, tz).astimezone(tz)
    if interval == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
    elif interval == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    elif interval == "week":
        start = (moment - dt.timedelta(days=moment.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}")
    return start.timestamp()


class AnalyticsStore:
    """Buffers observations and writes them in batches; an async context manager."""

    def __init__(self, db: Database, *, flush_seconds: float = 2.0) -> None:
        self.db = db
        self.flush_seconds = flush_seconds
        self._counts: Counter[_KeyT] = Counter()
        self._rows: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    async def __aenter__(self) -> AnalyticsStore:
        self._task = asyncio.create_task(self._run(), name="analytics-store")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()

    # -- writing ------------------------------------------------------------------------
    def add(self, obs: Observation) -> None:
        """Take one observation (on the event loop; never blocks)."""
        if obs.kind in NOT_STORED_HERE:
            return
        if obs.kind == COUNT_KIND:
            p = obs.payload
            try:
                n = int(p.get("count", 1))
            except (TypeError, ValueError):
                n = 1
            key = (obs.camera, str(p.get("line", "")), str(p.get("lane") or ""), str(p.get("direction", "")), int(obs.at // 60) * 60)
            self._counts[key] += max(n, 0)
            return
        self._rows.append(
            {"camera": obs.camera, "analyzer": obs.analyzer, "kind": obs.kind, "at": obs.at,
             "confidence": float(obs.confidence), "payload": dict(obs.payload)}
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:
                logger.exception("analytics: writing counts failed; keeping them for the next try")

    async def flush(self) -> None:
        async with self._flush_lock:
            counts, self._counts = self._counts, Counter()
            rows, self._rows = self._rows, []
            if not counts and not rows:
                return
            try:
                async with self.db.begin() as conn:
                    for (camera, line, lane, direction, bucket), n in counts.items():
                        await conn.execute(self._upsert(camera, line, lane, direction, bucket, n))
                    if rows:
                        await conn.execute(analytics_observations.insert(), rows)
            except Exception:
                self._counts.update(counts)  # retried at the next flush
                self._rows[:0] = rows
                raise

    def _upsert(self, camera: str, line: str, lane: str, direction: str, bucket: int, n: int) -> Any:
        values = {"camera": camera, "line": line, "lane": lane, "direction": direction, "bucket": bucket, "count": n}
        insert = sqlite.insert if self.db.is_sqlite else postgresql.insert
        stmt = insert(analytics_counts).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=["camera", "line", "lane", "direction", "bucket"],
            set_={"count": analytics_counts.c.count + stmt.excluded.count},
        )

    # -- reading ------------------------------------------------------------------------
    async def counts(
        self,
        cameras: Iterable[str],
        *,
        start: float,
        end: float,
        interval: str = "hour",
        line: str | None = None,
        tz: dt.tzinfo | None = None,
    ) -> list[CountRow]:
        """Counts of ``cameras`` in ``[start, end)``, summed per ``interval``, camera, line,
        lane and direction; ordered by camera, line, lane, direction, time."""
        if interval not in INTERVALS:
            raise ValueError(f"interval must be one of {', '.join(INTERVALS)}")
        cams = sorted(set(cameras))
        if not cams:
            return []
        await self.flush()
        c = analytics_counts.c
        query = sa.select(c.camera, c.line, c.lane, c.direction, c.bucket, c.count).where(
            c.camera.in_(cams), c.bucket >= int(start // 60) * 60, c.bucket < end
        )
        if line is not None:
            query = query.where(c.line == line)
        async with self.db.connect() as conn:
            result = (await conn.execute(query)).all()
        sums: Counter[tuple[str, str, str, str, float]] = Counter()
        for camera, ln, lane, direction, bucket, n in result:
            sums[(camera, ln, lane, direction, bucket_start(bucket, interval, tz))] += n
        return [CountRow(*key, count=n) for key, n in sorted(sums.items())]

    async def observations(
        self, cameras: Sequence[str], *, start: float, end: float, kind: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Stored observations other than counts, newest first."""
        if not cameras:
            return []
        await self.flush()
        o = analytics_observations.c
        query = sa.select(o.camera, o.analyzer, o.kind, o.at, o.confidence, o.payload).where(
            o.camera.in_(list(cameras)), o.at >= start, o.at < end
        )
        if kind is not None:
            query = query.where(o.kind == kind)
        async with self.db.connect() as conn:
            result = (await conn.execute(query.order_by(o.at.desc()).limit(limit))).all()
        return [dict(row._mapping) for row in result]
