"""The segment catalogue: stored segments, recorded gaps and evidence holds.

A segment row is inserted only after its bytes were durably stored, so every row names a
complete, playable segment. Gaps are explicit rows with a reason ("camera offline",
"gateway down", "recorder fell behind"); ``timeline`` also reports a gap between any two
segments that do not touch, so a player never has to guess.

Evidence holds keep segments that overlap them from retention until released. Placing
and releasing a hold is audited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.access.audit import AuditLog
from gateway.cluster.role import Fence
from gateway.db import Database, evidence_holds, leases, recording_gaps, segments, RUN_TOLERANCE, recording_runs
from gateway.errors import BadRequest, LeaseLost, NotFound

logger = logging.getLogger(__name__)

#: Two segments closer than this are contiguous (timestamps are rounded to the frame).
CONTIGUOUS = RUN_TOLERANCE
#: No segment is longer than this; bounds index range scans by start time.
MAX_SEGMENT_SECONDS = 3600.0
#: Reason of a gap between segments that no recorded gap row explains.
UNEXPLAINED = "no recording"


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    camera: str
    start: float
    end: float
    duration: float
    bytes: int
    sha256: str
    storage_key: str
    backend: str
    codec: str
    width: int
    height: int
    created_at: float
    replicated_at: float | None = None
    init_bytes: int = 0
    #: The privacy masks in force when it started: database version, digest of the whole set.
    mask_version: int = 0
    mask_digest: str = ""

    kind = "segment"


@dataclass(frozen=True, slots=True)
class Span:
    """Contiguous recording made of ``segments`` segments."""

    camera: str
    start: float
    end: float
    segments: int
    bytes: int

    kind = "span"

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Gap:
    camera: str
    start: float
    end: float
    reason: str
    #: The recorded gap row, or None for a gap found between segments.
    id: int | None = None

    kind = "gap"

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Hold:
    id: int
    camera: str
    start: float
    end: float
    reason: str
    placed_by: str
    placed_at: float
    source: str
    released_at: float | None = None
    released_by: str | None = None

    @property
    def active(self) -> bool:
        return self.released_at is None


@dataclass(frozen=True, slots=True)
class ReplicationLag:
    pending: int  #: catalogued segments not yet on the replica
    oldest_age: float  #: seconds since the oldest of them was catalogued (0 when none)


#: The segment columns in the order of ``Segment``'s fields, so a row maps positionally:
#: a 45-day timeline maps ~65,000 rows, and ``Segment(**row._mapping)`` cost 3x the query.
SEGMENT_COLUMNS = tuple(segments.c[f.name] for f in fields(Segment))


def _segment(row: Any) -> Segment:
    return Segment(*row)


async def _fetch_segments(conn: AsyncConnection, query: sa.Select[Any]) -> list[Segment]:
    return [Segment(*row) for row in (await conn.execute(query)).all()]


def _hold(row: Any) -> Hold:
    return Hold(**row._mapping)


def hold_overlaps(seg: sa.Table = segments) -> sa.ColumnElement[bool]:
    """SQL: an active hold overlaps the segment row."""
    return sa.exists().where(
        evidence_holds.c.camera == seg.c.camera,
        evidence_holds.c.released_at.is_(None),
        evidence_holds.c.start < seg.c.end,
        evidence_holds.c.end > seg.c.start,
    )


class Catalogue:
    def __init__(self, db: Database, audit: AuditLog | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.audit = audit
        self.clock = clock
        #: Awaited with the ids of segments just removed (copies derived from them go too).
        self.on_removed: list[Callable[[Sequence[int]], Awaitable[None]]] = []

    # -- segments ----------------------------------------------------------------------
    async def add_segment(
        self,
        *,
        camera: str,
        start: float,
        end: float,
        bytes: int,  # noqa: A002 - the column's name
        sha256: str,
        storage_key: str,
        backend: str,
        codec: str,
        width: int,
        height: int,
        init_bytes: int = 0,
        mask_version: int = 0,
        mask_digest: str = "",
        fence: Fence | None = None,
    ) -> Segment:
        values = dict(
            camera=camera, start=start, end=end, duration=end - start, bytes=bytes, sha256=sha256,
            storage_key=storage_key, backend=backend, codec=codec, width=width, height=height,
            created_at=self.clock(), replicated_at=None, init_bytes=init_bytes,
            mask_version=mask_version, mask_digest=mask_digest,
        )
        async with self.db.begin() as conn:
            await _hold_fence(conn, fence)
            result = await conn.execute(segments.insert().values(**values))
            await _extend_run(conn, camera, start, end, bytes)
        return Segment(id=result.inserted_primary_key[0], **values)

    async def segment(self, camera: str, segment_id: int) -> Segment:
        async with self.db.connect() as conn:
            row = (await conn.execute(
                sa.select(*SEGMENT_COLUMNS).where(segments.c.id == segment_id, segments.c.camera == camera)
            )).first()
        if row is None:
            raise NotFound(f"camera {camera}: no segment {segment_id}")
        return _segment(row)

    async def segments(self, camera: str, start: float, end: float, *, limit: int | None = None) -> list[Segment]:
        """Segments of ``camera`` overlapping ``[start, end)``, by start time; the first
        ``limit`` of them if given."""
        query = (
            sa.select(*SEGMENT_COLUMNS)
            .where(
                segments.c.camera == camera,
                segments.c.start >= start - MAX_SEGMENT_SECONDS,  # lets the (camera, start) index bound the scan
                segments.c.start < end,
                segments.c.end > start,
            )
            .order_by(segments.c.start)
        )
        if limit is not None:
            query = query.limit(limit)
        async with self.db.connect() as conn:
            return await _fetch_segments(conn, query)

    async def last_end(self, camera: str) -> float | None:
        async with self.db.connect() as conn:
            return (await conn.execute(
                sa.select(segments.c.end).where(segments.c.camera == camera).order_by(segments.c.start.desc()).limit(1)
            )).scalar()

    async def all_segments(self, camera: str | None = None) -> list[Segment]:
        query = sa.select(*SEGMENT_COLUMNS).order_by(segments.c.camera, segments.c.start)
        if camera is not None:
            query = query.where(segments.c.camera == camera)
        async with self.db.connect() as conn:
            return await _fetch_segments(conn, query)

    async def cameras(self) -> list[str]:
        async with self.db.connect() as conn:
            return list((await conn.execute(sa.select(segments.c.camera).distinct())).scalars())

    async def remove_segments(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self.db.begin() as conn:
            extents = (
                await conn.execute(
                    sa.select(segments.c.camera, sa.func.min(segments.c.start), sa.func.max(segments.c.end))
                    .where(segments.c.id.in_(list(ids)))
                    .group_by(segments.c.camera)
                )
            ).all()
            await conn.execute(segments.delete().where(segments.c.id.in_(list(ids))))
            for camera, lo, hi in extents:
                await _rebuild_runs(conn, camera, lo, hi)
        for listener in self.on_removed:
            try:
                await listener(ids)
            except Exception:  # the rows are gone; a derived copy left behind is only space
                logger.exception("catalogue: cleaning up after removed segments failed")

    async def total_bytes(self) -> int:
        async with self.db.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(segments.c.bytes), 0)))).scalar())

    async def expired(self, camera: str, before: float, limit: int) -> list[Segment]:
        """Segments of ``camera`` that ended before ``before`` and no active hold keeps."""
        query = (
            sa.select(*SEGMENT_COLUMNS)
            .where(segments.c.camera == camera, segments.c.start < before, segments.c.end <= before, ~hold_overlaps())
            .order_by(segments.c.start)
            .limit(limit)
        )
        async with self.db.connect() as conn:
            return await _fetch_segments(conn, query)

    async def oldest_unheld(self, limit: int) -> list[Segment]:
        """The oldest segments of any camera that no active hold keeps."""
        query = sa.select(*SEGMENT_COLUMNS).where(~hold_overlaps()).order_by(segments.c.start).limit(limit)
        async with self.db.connect() as conn:
            return await _fetch_segments(conn, query)

    # -- replication -------------------------------------------------------------------
    async def unreplicated(self, limit: int) -> list[Segment]:
        query = sa.select(*SEGMENT_COLUMNS).where(segments.c.replicated_at.is_(None)).order_by(segments.c.id).limit(limit)
        async with self.db.connect() as conn:
            return await _fetch_segments(conn, query)

    async def mark_replicated(self, segment_id: int, at: float | None = None) -> None:
        async with self.db.begin() as conn:
            await conn.execute(segments.update().where(segments.c.id == segment_id).values(replicated_at=at or self.clock()))

    async def replication_lag(self) -> ReplicationLag:
        query = sa.select(sa.func.count(), sa.func.min(segments.c.created_at)).where(segments.c.replicated_at.is_(None))
        async with self.db.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return ReplicationLag(pending=count, oldest_age=max(0.0, self.clock() - oldest) if oldest is not None else 0.0)

    # -- gaps --------------------------------------------------------------------------
    async def check_fence(self, fence: Fence) -> None:
        """Raise ``LeaseLost`` unless the fence's lease is still held as it names."""
        async with self.db.connect() as conn:
            await _hold_fence(conn, fence)

    async def add_gap(self, camera: str, start: float, end: float, reason: str, *, fence: Fence | None = None) -> Gap:
        async with self.db.begin() as conn:
            await _hold_fence(conn, fence)
            result = await conn.execute(recording_gaps.insert().values(camera=camera, start=start, end=end, reason=reason))
        logger.info("camera %s: recording gap of %.1fs (%s)", camera, end - start, reason)
        return Gap(camera, start, end, reason, id=result.inserted_primary_key[0])

    async def gaps(self, camera: str, start: float, end: float) -> list[Gap]:
        query = (
            sa.select(recording_gaps)
            .where(recording_gaps.c.camera == camera, recording_gaps.c.start < end, recording_gaps.c.end > start)
            .order_by(recording_gaps.c.start)
        )
        async with self.db.connect() as conn:
            return [Gap(r.camera, r.start, r.end, r.reason, id=r.id) for r in await conn.execute(query)]

    async def remove_gaps_before(self, camera: str, before: float) -> None:
        async with self.db.begin() as conn:
            await conn.execute(recording_gaps.delete().where(recording_gaps.c.camera == camera, recording_gaps.c.end < before))

    async def spans(self, camera: str, start: float, end: float) -> list[Span | Gap]:
        """Like ``timeline`` but with contiguous runs of segments merged into spans.

        For long ranges (weeks of 60 s segments): read from the runs the catalogue keeps
        as it adds and removes segments, so a handful of rows instead of tens of thousands.
        """
        return (await self.spans_page(camera, start, end, None))[0]

    async def spans_page(self, camera: str, start: float, end: float, limit: int | None) -> tuple[list[Span | Gap], float | None]:
        """``spans`` with at most ``limit`` spans: see ``timeline_page``."""
        if end <= start:
            raise BadRequest("the end of the range must be after its start")
        query = (
            sa.select(recording_runs.c.start, recording_runs.c.end, recording_runs.c.segments, recording_runs.c.bytes)
            .where(recording_runs.c.camera == camera, recording_runs.c.start < end, recording_runs.c.end > start)
            .order_by(recording_runs.c.start)
        )
        if limit is not None:
            query = query.limit(limit + 1)
        async with self.db.connect() as conn:
            runs = (await conn.execute(query)).all()
        return await self._page(camera, start, end, [Span(camera, r[0], r[1], r[2], r[3]) for r in runs], limit)

    async def timeline(self, camera: str, start: float, end: float) -> list[Segment | Gap]:
        """Segments and gaps covering ``[start, end)`` in order; gaps are clipped to the range.

        Between two segments that do not touch there is always a gap entry: the recorded
        gap's reason where one overlaps it, else ``"no recording"``. Leading and trailing
        stretches without segments are gaps too.
        """
        if end <= start:
            raise BadRequest("the end of the range must be after its start")
        return await self._with_gaps(camera, start, end, await self.segments(camera, start, end))

    async def timeline_page(self, camera: str, start: float, end: float, limit: int) -> tuple[list[Segment | Gap], float | None]:
        """``timeline`` with at most ``limit`` segments, and where the next page starts.

        When more segments follow, the page covers ``[start, next)``, where ``next`` is the
        start of the first segment left off, and the next page is ``[next, end)``: every
        segment left off overlaps it, so none is skipped (and as segments of one camera do
        not overlap, none comes twice). Bounding the rows bounds the work on the event
        loop, however long the range."""
        if end <= start:
            raise BadRequest("the end of the range must be after its start")
        return await self._page(camera, start, end, await self.segments(camera, start, end, limit=limit + 1), limit)

    async def _page(self, camera: str, start: float, end: float, items: list[Any], limit: int | None) -> tuple[list[Any], float | None]:
        if limit is None or len(items) <= limit:
            return await self._with_gaps(camera, start, end, items), None
        following = items[limit].start
        items = items[:limit]
        if following <= start:  # only overlapping recordings start that early: go on after them
            following = max(i.end for i in items)
        if following >= end:
            return await self._with_gaps(camera, start, end, items), None
        return await self._with_gaps(camera, start, following, items), following

    async def _with_gaps(self, camera: str, start: float, end: float, items: list[Any]) -> list[Any]:
        """Put a gap between recorded items that do not touch, and at both ends."""
        recorded = await self.gaps(camera, start, end)
        out: list[Any] = []
        cursor = start

        def hole(until: float) -> None:
            if until - cursor <= CONTIGUOUS:
                return
            reason, best = UNEXPLAINED, 0.0
            gap_id = None
            for g in recorded:  # few rows: gaps are rare
                overlap = min(g.end, until) - max(g.start, cursor)
                if overlap > best:
                    reason, best, gap_id = g.reason, overlap, g.id
            out.append(Gap(camera, cursor, until, reason, id=gap_id))

        for item in items:
            hole(item.start)
            out.append(item)
            cursor = max(cursor, item.end)
        hole(end)
        return out

    # -- holds -------------------------------------------------------------------------
    async def place_hold(
        self, camera: str, start: float, end: float, reason: str, by: str, source: str = "manual"
    ) -> Hold:
        if end <= start:
            raise BadRequest("a hold's end must be after its start")
        if not reason.strip():
            raise BadRequest("a hold needs a reason")
        values = dict(camera=camera, start=start, end=end, reason=reason, placed_by=by, placed_at=self.clock(), source=source)
        async with self.db.begin() as conn:
            result = await conn.execute(evidence_holds.insert().values(**values))
        hold = Hold(id=result.inserted_primary_key[0], **values)
        if self.audit is not None:
            await self.audit.record(
                "hold.place", user=by, camera=camera, range_from=start, range_to=end,
                detail={"hold": hold.id, "reason": reason, "source": source},
            )
        return hold

    async def release_hold(self, hold_id: int, by: str) -> Hold:
        now = self.clock()
        async with self.db.begin() as conn:
            row = (await conn.execute(sa.select(evidence_holds).where(evidence_holds.c.id == hold_id))).first()
            if row is None:
                raise NotFound(f"no evidence hold {hold_id}")
            if row.released_at is None:
                await conn.execute(
                    evidence_holds.update().where(evidence_holds.c.id == hold_id).values(released_at=now, released_by=by)
                )
        hold = _hold(row)
        if hold.released_at is not None:  # already released: nothing changes, nothing to audit
            return hold
        if self.audit is not None:
            await self.audit.record(
                "hold.release", user=by, camera=hold.camera, range_from=hold.start, range_to=hold.end,
                detail={"hold": hold.id, "source": hold.source},
            )
        return Hold(**{**row._mapping, "released_at": now, "released_by": by})

    async def active_holds(self, camera: str | None = None) -> list[Hold]:
        query = sa.select(evidence_holds).where(evidence_holds.c.released_at.is_(None)).order_by(evidence_holds.c.id)
        if camera is not None:
            query = query.where(evidence_holds.c.camera == camera)
        async with self.db.connect() as conn:
            return [_hold(r) for r in await conn.execute(query)]


async def _extend_run(conn: Any, camera: str, start: float, end: float, size: int) -> None:
    """Add a stored segment to the camera's run it continues, or start a new run."""
    last = (
        await conn.execute(
            sa.select(recording_runs.c.id, recording_runs.c.end)
            .where(recording_runs.c.camera == camera, recording_runs.c.start <= start)
            .order_by(recording_runs.c.start.desc())
            .limit(1)
        )
    ).first()
    if last is not None and start - last.end <= CONTIGUOUS:
        await conn.execute(
            recording_runs.update()
            .where(recording_runs.c.id == last.id)
            .values(
                end=sa.func.max(recording_runs.c.end, end) if conn.dialect.name == "sqlite" else sa.func.greatest(recording_runs.c.end, end),
                segments=recording_runs.c.segments + 1,
                bytes=recording_runs.c.bytes + size,
            )
        )
    else:
        await conn.execute(recording_runs.insert().values(camera=camera, start=start, end=end, segments=1, bytes=size))


async def _rebuild_runs(conn: Any, camera: str, lo: float, hi: float) -> None:
    """Recompute the runs touching ``[lo, hi]`` from the segments that remain there."""
    touching = recording_runs.c.camera == camera, recording_runs.c.start <= hi + CONTIGUOUS, recording_runs.c.end >= lo - CONTIGUOUS
    extent = (await conn.execute(sa.select(sa.func.min(recording_runs.c.start), sa.func.max(recording_runs.c.end)).where(*touching))).first()
    if extent is not None and extent[0] is not None:
        lo, hi = min(lo, extent[0]), max(hi, extent[1])
    await conn.execute(recording_runs.delete().where(*touching))
    rows = (
        await conn.execute(
            sa.select(segments.c.start, segments.c.end, segments.c.bytes)
            .where(segments.c.camera == camera, segments.c.start >= lo - MAX_SEGMENT_SECONDS, segments.c.start <= hi, segments.c.end >= lo)
            .order_by(segments.c.start)
        )
    ).all()
    runs: list[dict[str, Any]] = []
    for start, end, size in rows:
        if runs and start - runs[-1]["end"] <= CONTIGUOUS:
            run = runs[-1]
            run["end"] = max(run["end"], end)
            run["segments"] += 1
            run["bytes"] += size
        else:
            runs.append({"camera": camera, "start": start, "end": end, "segments": 1, "bytes": size})
    if runs:
        await conn.execute(recording_runs.insert(), runs)


async def _hold_fence(conn: AsyncConnection, fence: Fence | None) -> None:
    """In the write's transaction: the lease row still names this holder and epoch, and
    stays so until the write commits (PostgreSQL: a share lock on the row, which a
    takeover's UPDATE waits for; SQLite: one writer at a time, the whole database)."""
    if fence is None:
        return
    c = leases.c
    query = (
        sa.select(c.name)
        .where(c.name == fence.name, c.holder == fence.node, c.epoch == fence.epoch)
        .with_for_update(read=True)
    )
    if (await conn.execute(query)).first() is None:
        raise LeaseLost(f"{fence.name}: no longer held by {fence.node} at epoch {fence.epoch}")
