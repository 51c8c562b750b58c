"""Retention: delete what has expired, except what an evidence hold keeps.

Three rules, applied in this order by each sweep:

1. per camera, segments that ended more than ``retention-days`` ago;
2. the global size cap (``size-cap-gb``): the oldest segments of any camera go first;
3. the free-space watermark of storage that has a notion of free space (local disk):
   below ``free-space-min-gb`` the oldest segments go early, and an alarm says so.

A segment overlapping an active evidence hold is never deleted by any rule. Each deletion
removes the stored object first (from every backend: primary and replica) and the
catalogue row after, so a crash in between leaves a row whose object is gone, which the
next sweep simply removes (deleting a missing object is not an error). Each batch leaves
a receipt in the audit log: ``retention.delete`` with the camera, the time range, the
count and the bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.access.audit import AuditLog
from gateway.events import EventBus
from gateway.interfaces import StorageBackend
from gateway.recording.index import Catalogue, Segment

logger = logging.getLogger(__name__)

DAY = 86400.0
GB = 1024**3
BATCH = 500
#: A sweep stops a rule after this many batches (the next sweep continues).
MAX_BATCHES = 100

REASON_EXPIRED = "retention"
REASON_SIZE_CAP = "size cap"
REASON_FREE_SPACE = "free space"
REASON_DISK_FULL = "disk full"


@dataclass(slots=True)
class SweepReport:
    deleted: int = 0
    bytes: int = 0
    failed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class RetentionSweeper:
    def __init__(
        self,
        catalogue: Catalogue,
        storages: Sequence[StorageBackend],
        *,
        retention_days: Callable[[str], float],
        size_cap_bytes: int = 0,
        free_space_min_bytes: int = 0,
        audit: AuditLog | None = None,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.time,
        batch: int = BATCH,
    ) -> None:
        self.catalogue = catalogue
        self.storages = list(storages)
        self.retention_days = retention_days
        self.size_cap_bytes = size_cap_bytes
        self.free_space_min_bytes = free_space_min_bytes
        self.audit = audit
        self.events = events
        self.clock = clock
        self.batch = batch

    async def run_forever(self, interval: float) -> None:
        while True:
            try:
                report = await self.sweep()
                if report.deleted or report.failed:
                    logger.info("retention: deleted %d segments (%d bytes), %d failed", report.deleted, report.bytes, report.failed)
            except Exception:
                logger.exception("retention: sweep failed")
            await asyncio.sleep(interval)

    async def sweep(self, now: float | None = None) -> SweepReport:
        """One sweep over every rule; ``now`` defaults to the clock."""
        now = self.clock() if now is None else now
        report = SweepReport()
        for camera in await self.catalogue.cameras():
            cutoff = now - self.retention_days(camera) * DAY
            for _ in range(MAX_BATCHES):
                expired = await self.catalogue.expired(camera, cutoff, self.batch)
                if not expired or not await self._delete(expired, REASON_EXPIRED, report):
                    break
            await self.catalogue.remove_gaps_before(camera, cutoff)
        if self.size_cap_bytes > 0:
            await self._enforce_size_cap(report)
        if self.free_space_min_bytes > 0:
            await self._enforce_free_space(report)
        return report

    async def _enforce_size_cap(self, report: SweepReport) -> None:
        for _ in range(MAX_BATCHES):
            excess = await self.catalogue.total_bytes() - self.size_cap_bytes
            if excess <= 0:
                return
            chosen: list[Segment] = []
            for seg in await self.catalogue.oldest_unheld(self.batch):
                if excess <= 0:
                    break
                chosen.append(seg)
                excess -= seg.bytes
            if not chosen or not await self._delete(chosen, REASON_SIZE_CAP, report):
                return

    async def _enforce_free_space(self, report: SweepReport) -> None:
        primary = self.storages[0]
        alarmed = False
        for _ in range(MAX_BATCHES):
            usage = await primary.usage()
            if usage.free_bytes is None or usage.free_bytes >= self.free_space_min_bytes:
                return
            if not alarmed:
                alarmed = True
                await self._alarm(usage.free_bytes)
            chosen = await self.catalogue.oldest_unheld(min(self.batch, 50))
            if not chosen or not await self._delete(chosen, REASON_FREE_SPACE, report):
                logger.error("retention: storage below its free-space minimum and nothing left to delete")
                return

    async def make_room(self, needed: int) -> int:
        """The primary storage is full: delete the oldest segments no hold keeps until at least
        ``needed`` bytes (as catalogued) are gone. Returns how many were deleted."""
        report = SweepReport()
        chosen: list[Segment] = []
        for seg in await self.catalogue.oldest_unheld(min(self.batch, 50)):
            if needed <= 0:
                break
            chosen.append(seg)
            needed -= seg.bytes
        deleted = await self._delete(chosen, REASON_DISK_FULL, report) if chosen else 0
        if deleted:
            logger.warning("retention: the storage is full; deleted the %d oldest segments no hold keeps", deleted)
        return deleted

    async def _alarm(self, free: int) -> None:
        logger.warning("retention: only %.1f GB free; deleting the oldest recordings early", free / GB)
        detail = {"reason": "low free space", "free_bytes": free, "minimum_bytes": self.free_space_min_bytes}
        if self.events is not None:
            self.events.emit("recording.alarm", **detail)
        if self.audit is not None:
            await self.audit.record("recording.alarm", outcome="failed", detail=detail)

    async def _delete(self, segments: list[Segment], reason: str, report: SweepReport) -> int:
        """Delete objects, then rows; returns how many were deleted. Leaves a receipt."""
        done: list[Segment] = []
        for seg in segments:
            try:
                for storage in self.storages:
                    await storage.delete(seg.storage_key)
            except Exception as exc:
                report.failed += 1
                logger.warning("retention: could not delete %s (%s); the next sweep retries", seg.storage_key, exc)
                continue
            done.append(seg)
        await self.catalogue.remove_segments([s.id for s in done])
        by_camera: dict[str, list[Segment]] = {}
        for seg in done:
            by_camera.setdefault(seg.camera, []).append(seg)
        for camera, segs in by_camera.items():
            size = sum(s.bytes for s in segs)
            report.deleted += len(segs)
            report.bytes += size
            report.by_reason[reason] = report.by_reason.get(reason, 0) + len(segs)
            if self.audit is not None:
                await self.audit.record(
                    "retention.delete", camera=camera,
                    range_from=min(s.start for s in segs), range_to=max(s.end for s in segs),
                    detail={"count": len(segs), "bytes": size, "reason": reason},
                )
        return len(done)
