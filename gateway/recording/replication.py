"""Backup to the city data centre: proof that the replica holds every segment, and the way back.

``recording.replicate-to`` copies every stored segment to a second backend (the city data
centre's S3, say). Copying is not proof: an object can be deleted or damaged there later.
``ReplicaVerifier`` reads each replicated segment's object back from the replica, hashes
it and compares the SHA-256 with the catalogue's; the finding per segment ("ok",
"missing", "corrupted") is kept in ``replica_checks`` (migration 15), so the report
survives restarts and any node can serve it. It runs every
``recording.replicate-to.verify-interval-hours`` in the background and on demand
(``POST /api/recordings/replication/verify``); each run is audited
(``replication.verify``) and a run that found missing or corrupted objects emits a
``replication.alarm`` event (webhooks, syslog).

``restore`` is the way back (``citygate recordings restore``): for each catalogued segment
of a camera and time range whose primary copy is gone or does not match its SHA-256, the
replica's copy is read, checked against the same SHA-256 and only then written to the
primary storage. A replica copy that does not match is never written; the segment is
reported as unrecoverable. Every restore is audited (``recording.restore``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from gateway.access.audit import AuditLog
from gateway.db import Database, replica_checks, segments
from gateway.errors import NotFound
from gateway.events import EventBus
from gateway.interfaces import StorageBackend
from gateway.recording.index import SEGMENT_COLUMNS, Catalogue, Segment
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

OK, MISSING, CORRUPTED = "ok", "missing", "corrupted"
STATES = (OK, MISSING, CORRUPTED)
BATCH = 200
#: Problem segments listed in a report (the counts are always complete).
PROBLEMS_LISTED = 100


async def stored_digest(backend: StorageBackend, key: str) -> tuple[str, bytes] | None:
    """SHA-256 (hex) and bytes of the object under ``key``, or None when there is none.
    Hashing runs in a worker thread."""
    try:
        chunks = [chunk async for chunk in backend.open_segment(key)]
    except NotFound:
        return None
    data = b"".join(chunks)
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    return digest, data


@dataclass(frozen=True, slots=True)
class CameraReplication:
    camera: str
    #: Catalogued segments: what the replica should hold.
    expected: int
    #: Not yet copied (the replicator is behind); not counted as missing.
    pending: int
    #: Read back from the replica with the catalogue's SHA-256 at the last verification.
    verified: int
    missing: int
    corrupted: int
    #: Copied since the last verification, not yet read back.
    unverified: int
    last_verified: float | None


@dataclass(frozen=True, slots=True)
class VerifyRun:
    started_at: float
    finished_at: float
    checked: int
    ok: int
    missing: int
    corrupted: int
    by: str | None
    error: str | None = None


@dataclass(slots=True)
class ReplicationReport:
    replica: str
    verify_interval_hours: float
    cameras: list[CameraReplication]
    problems: list[dict[str, Any]]
    last_run: VerifyRun | None
    running: bool

    @property
    def complete(self) -> bool:
        """Every catalogued segment verified on the replica with the same SHA-256."""
        return all(c.verified == c.expected for c in self.cameras)


class ReplicaVerifier:
    """Reads the replica back and records what it holds; one run at a time."""

    def __init__(
        self,
        db: Database,
        replica: StorageBackend,
        *,
        audit: AuditLog | None = None,
        events: EventBus | None = None,
        interval_hours: float = 24.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.replica = replica
        self.audit = audit
        self.events = events
        self.interval_hours = interval_hours
        self.clock = clock
        self.last_run: VerifyRun | None = None
        self._lock = asyncio.Lock()
        self._on_demand: asyncio.Task[VerifyRun] | None = None
        self._cached: tuple[float, ReplicationReport] | None = None

    def start(self, camera: str | None = None, *, by: str | None = None, client: str | None = None) -> bool:
        """Start a verification in the background (``POST .../verify``); False if one runs."""
        if self.running or (self._on_demand is not None and not self._on_demand.done()):
            return False
        self._on_demand = asyncio.create_task(self.verify(camera, by=by, client=client), name="replica-verify-now")
        return True

    async def aclose(self) -> None:
        await cancel_and_wait(self._on_demand)

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def verify(self, camera: str | None = None, *, by: str | None = None, client: str | None = None) -> VerifyRun:
        """Read every replicated segment (of ``camera``, or all) back from the replica."""
        async with self._lock:
            started = self.clock()
            counts = dict.fromkeys(STATES, 0)
            error = None
            try:
                await self._verify_all(camera, counts)
            except Exception as exc:  # the replica unreachable: no segment is called missing for it
                logger.warning("replication: verifying the replica %s failed: %s", self.replica.id(), exc)
                error = str(exc) or type(exc).__name__
            run = VerifyRun(
                started_at=started, finished_at=self.clock(), checked=sum(counts.values()), ok=counts[OK],
                missing=counts[MISSING], corrupted=counts[CORRUPTED], by=by, error=error,
            )
            self.last_run = run
            self._cached = None
        problems = run.missing + run.corrupted
        if problems:
            logger.warning(
                "replication: the replica %s lacks %d segments and holds %d corrupted ones", self.replica.id(), run.missing, run.corrupted
            )
        if self.audit is not None:
            await self.audit.record(
                "replication.verify", outcome="failed" if error else "ok", user=by, client=client, camera=camera,
                detail={"replica": self.replica.id(), "checked": run.checked, "ok": run.ok, "missing": run.missing,
                        "corrupted": run.corrupted, "seconds": round(run.finished_at - run.started_at, 3), "error": error},
            )
        if self.events is not None and (problems or error):
            self.events.emit(
                "replication.alarm", camera=camera, replica=self.replica.id(), missing=run.missing, corrupted=run.corrupted, error=error
            )
        return run

    async def _verify_all(self, camera: str | None, counts: dict[str, int]) -> None:
        after = 0
        while True:
            query = (
                sa.select(*SEGMENT_COLUMNS)
                .where(segments.c.replicated_at.is_not(None), segments.c.id > after)
                .order_by(segments.c.id)
                .limit(BATCH)
            )
            if camera is not None:
                query = query.where(segments.c.camera == camera)
            async with self.db.connect() as conn:
                batch = [Segment(*row) for row in (await conn.execute(query)).all()]
            if not batch:
                return
            for seg in batch:
                state, found = await self._check(seg)
                counts[state] += 1
                await self._store(seg, state, found)
            after = batch[-1].id

    async def _check(self, seg: Segment) -> tuple[str, str | None]:
        stored = await stored_digest(self.replica, seg.storage_key)
        if stored is None:
            return MISSING, None
        digest = stored[0]
        return (OK if digest == seg.sha256 else CORRUPTED), digest

    async def _store(self, seg: Segment, state: str, found: str | None) -> None:
        values = dict(camera=seg.camera, checked_at=self.clock(), state=state, found_sha256=found)
        async with self.db.begin() as conn:
            done = (await conn.execute(replica_checks.update().where(replica_checks.c.segment_id == seg.id).values(**values))).rowcount
            if not done:
                exists = (await conn.execute(sa.select(segments.c.id).where(segments.c.id == seg.id))).first()
                if exists is not None:  # not removed by retention meanwhile
                    await conn.execute(replica_checks.insert().values(segment_id=seg.id, **values))

    async def run_forever(self) -> None:
        """Verify once per interval, the first time one interval after the newest check."""
        interval = self.interval_hours * 3600
        while True:
            async with self.db.connect() as conn:
                newest = (await conn.execute(sa.select(sa.func.max(replica_checks.c.checked_at)))).scalar()
            due = interval if newest is None else max(0.0, newest + interval - self.clock())
            if self.last_run is not None:
                due = max(0.0, self.last_run.finished_at + interval - self.clock())
            await asyncio.sleep(due)
            try:
                await self.verify()
            except Exception:
                logger.exception("replication: verification failed")

    async def cached_report(self, max_age: float = 60.0) -> ReplicationReport:
        """``report()`` at most every ``max_age`` seconds (for metrics scrapes)."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > max_age:
            self._cached = (now, await self.report())
        return self._cached[1]

    async def report(self) -> ReplicationReport:
        s, c = segments, replica_checks

        def count(condition: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        query = (
            sa.select(
                s.c.camera,
                sa.func.count(),
                count(s.c.replicated_at.is_(None)),
                count(c.c.state == OK),
                count(c.c.state == MISSING),
                count(c.c.state == CORRUPTED),
                count(sa.and_(s.c.replicated_at.is_not(None), c.c.state.is_(None))),
                sa.func.max(c.c.checked_at),
            )
            .select_from(s.outerjoin(c, c.c.segment_id == s.c.id))
            .group_by(s.c.camera)
            .order_by(s.c.camera)
        )
        problems_q = (
            sa.select(s.c.id, s.c.camera, s.c.start, s.c.end, s.c.storage_key, s.c.sha256, c.c.state, c.c.found_sha256, c.c.checked_at)
            .join(c, c.c.segment_id == s.c.id)
            .where(c.c.state != OK)
            .order_by(s.c.camera, s.c.start)
            .limit(PROBLEMS_LISTED)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
            problems = [dict(r._mapping) for r in (await conn.execute(problems_q)).all()]
        cameras = [
            CameraReplication(
                camera=r[0], expected=int(r[1]), pending=int(r[2]), verified=int(r[3]), missing=int(r[4]), corrupted=int(r[5]),
                unverified=int(r[6]), last_verified=r[7],
            )
            for r in rows
        ]
        for p in problems:
            p["segment"] = p.pop("id")
        return ReplicationReport(
            replica=self.replica.id(), verify_interval_hours=self.interval_hours, cameras=cameras, problems=problems,
            last_run=self.last_run, running=self.running,
        )


# -- restore ------------------------------------------------------------------------------


@dataclass(slots=True)
class RestoreReport:
    camera: str
    start: float
    end: float
    #: Segments of the range whose primary copy matched the catalogue already.
    intact: list[int] = field(default_factory=list)
    #: Copied back from the replica (checked before and after writing).
    restored: list[int] = field(default_factory=list)
    #: Lost on the primary and missing or corrupted on the replica: ``{id, reason}``.
    unrecoverable: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checked(self) -> int:
        return len(self.intact) + len(self.restored) + len(self.unrecoverable)


async def restore(
    catalogue: Catalogue,
    primary: StorageBackend,
    replica: StorageBackend,
    camera: str,
    start: float,
    end: float,
    *,
    audit: AuditLog | None = None,
    by: str | None = None,
    dry_run: bool = False,
) -> RestoreReport:
    """Bring back every segment of ``camera`` in ``[start, end)`` the primary lost or holds
    damaged, from the replica, each checked by the catalogue's SHA-256."""
    report = RestoreReport(camera, start, end)
    for seg in await catalogue.segments(camera, start, end):
        primary_copy = await stored_digest(primary, seg.storage_key)
        if primary_copy is not None and primary_copy[0] == seg.sha256:
            report.intact.append(seg.id)
            continue
        replica_copy = await stored_digest(replica, seg.storage_key)
        if replica_copy is None:
            report.unrecoverable.append({"segment": seg.id, "storage_key": seg.storage_key, "reason": "missing on the replica"})
            continue
        digest, data = replica_copy
        if digest != seg.sha256:
            report.unrecoverable.append({
                "segment": seg.id, "storage_key": seg.storage_key,
                "reason": f"the replica's copy is corrupted (SHA-256 {digest}, catalogue {seg.sha256})",
            })
            continue
        if dry_run:
            report.restored.append(seg.id)
            continue
        await primary.write_segment(seg.storage_key, data)
        written = await stored_digest(primary, seg.storage_key)
        if written is None or written[0] != seg.sha256:
            report.unrecoverable.append({"segment": seg.id, "storage_key": seg.storage_key, "reason": "the primary copy did not read back intact"})
            continue
        report.restored.append(seg.id)
        logger.info("restore: camera %s: segment %d (%s) restored from %s", camera, seg.id, seg.storage_key, replica.id())
    if audit is not None:
        await audit.record(
            "recording.restore", outcome="failed" if report.unrecoverable else "ok", user=by, camera=camera,
            range_from=start, range_to=end,
            detail={"primary": primary.id(), "replica": replica.id(), "dry_run": dry_run, "intact": len(report.intact),
                    "restored": report.restored, "unrecoverable": report.unrecoverable},
        )
    return report
