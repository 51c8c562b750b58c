"""Retention sweeps with an injected clock: expiry per camera, evidence holds, the size cap,
the free-space watermark, crash leftovers, and the receipts in the audit log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from citygate_plugins.storage.local import LocalOptions, LocalStorage
from gateway.access.audit import AuditLog
from gateway.db import Database, audit
from gateway.events import EventBus
from gateway.interfaces import Event
from gateway.recording.index import Catalogue, Segment
from gateway.recording.recorder import segment_key
from gateway.recording.retention import DAY, RetentionSweeper

NOW = 1_800_000_000.0


@dataclass
class Rig:
    db: Database
    audit: AuditLog
    storage: LocalStorage
    catalogue: Catalogue
    events: list[Event]

    async def segment(self, camera: str, start: float, size: int = 1000, length: float = 60.0) -> Segment:
        key = segment_key(camera, start)
        await self.storage.write_segment(key, b"s" * size)
        return await self.catalogue.add_segment(
            camera=camera, start=start, end=start + length, bytes=size, sha256="0" * 64, storage_key=key,
            backend="local", codec="h264", width=320, height=240,
        )

    def sweeper(self, **kw) -> RetentionSweeper:
        days = {"cam1": 2, "cam2": 45}
        return RetentionSweeper(
            self.catalogue, [self.storage], retention_days=lambda c: days.get(c, 45),
            audit=self.audit, events=EventBus(sink=self.events.append), clock=lambda: NOW, **kw,
        )

    async def keys(self) -> set[str]:
        return {s.storage_key for s in await self.catalogue.all_segments()}

    def stored(self, seg: Segment) -> bool:
        return self.storage.path_of(seg.storage_key).exists()

    async def audit_rows(self, action: str) -> list[dict]:
        await self.audit.flush()
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(audit).where(audit.c.action == action).order_by(audit.c.id))).all()
        return [{**r._mapping, "detail": json.loads(r.detail)} for r in rows]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}") as db, AuditLog(db) as log:
        async with LocalStorage(LocalOptions(), data_dir=str(tmp_path)) as storage:
            yield Rig(db, log, storage, Catalogue(db, log, clock=lambda: NOW), [])


async def test_expired_deleted_held_kept_with_receipts(rig: Rig) -> None:
    old_held = await rig.segment("cam1", NOW - 10 * DAY)
    old = await rig.segment("cam1", NOW - 3 * DAY)
    old2 = await rig.segment("cam1", NOW - 3 * DAY + 60)
    recent = await rig.segment("cam1", NOW - 1 * DAY)
    other = await rig.segment("cam2", NOW - 10 * DAY)  # cam2 keeps 45 days
    hold = await rig.catalogue.place_hold("cam1", NOW - 10 * DAY + 30, NOW - 10 * DAY + 40, "incident 4711", "alice", "export:12")

    report = await rig.sweeper().sweep()

    assert report.deleted == 2 and report.bytes == 2000 and report.failed == 0
    assert await rig.keys() == {old_held.storage_key, recent.storage_key, other.storage_key}
    assert not rig.stored(old) and not rig.stored(old2)
    assert rig.stored(old_held) and rig.stored(recent) and rig.stored(other)
    [receipt] = await rig.audit_rows("retention.delete")
    assert receipt["camera"] == "cam1"
    assert (receipt["range_from"], receipt["range_to"]) == (old.start, old2.end)
    assert receipt["detail"] == {"count": 2, "bytes": 2000, "reason": "retention"}
    [placed] = await rig.audit_rows("hold.place")
    assert placed["user"] == "alice" and placed["detail"]["source"] == "export:12"

    # A second sweep finds nothing more; releasing the hold lets the old segment go.
    assert (await rig.sweeper().sweep()).deleted == 0
    assert [h.id for h in await rig.catalogue.active_holds()] == [hold.id]
    released = await rig.catalogue.release_hold(hold.id, "bob")
    assert released.released_by == "bob" and not released.active
    assert await rig.catalogue.active_holds() == []
    assert (await rig.sweeper().sweep()).deleted == 1
    assert not rig.stored(old_held)
    assert len(await rig.audit_rows("hold.release")) == 1
    assert len(await rig.audit_rows("retention.delete")) == 2


async def test_row_whose_object_is_gone_is_just_removed(rig: Rig) -> None:
    """A crash between deleting the object and the row leaves such a row behind."""
    seg = await rig.segment("cam1", NOW - 5 * DAY)
    await rig.storage.delete(seg.storage_key)
    report = await rig.sweeper().sweep()
    assert report.deleted == 1 and report.failed == 0
    assert await rig.keys() == set()


async def test_size_cap_deletes_oldest_unheld_first(rig: Rig) -> None:
    segs = [await rig.segment(cam, NOW - 3600 + i * 60, size=1000) for i in range(5) for cam in ("cam2",)]
    await rig.catalogue.place_hold("cam2", segs[0].start, segs[0].end, "keep", "alice")
    report = await rig.sweeper(size_cap_bytes=2500).sweep()
    # 5000 bytes; cap 2500; the held oldest stays, so segs 1..3 go (leaving 2000).
    assert report.deleted == 3 and report.by_reason == {"size cap": 3}
    assert await rig.keys() == {segs[0].storage_key, segs[4].storage_key}


async def test_free_space_watermark_deletes_early_and_alarms(rig: Rig) -> None:
    segs = [await rig.segment("cam2", NOW - 3600 + i * 60) for i in range(3)]
    await rig.catalogue.place_hold("cam2", segs[2].start, segs[2].end, "keep", "alice")
    # Ask for more free space than any disk has: everything unheld goes, with an alarm.
    report = await rig.sweeper(free_space_min_bytes=1 << 60).sweep()
    assert report.by_reason == {"free space": 2}
    assert await rig.keys() == {segs[2].storage_key}
    assert [e.kind for e in rig.events] == ["recording.alarm"]
    assert rig.events[0].detail["reason"] == "low free space"
    assert len(await rig.audit_rows("recording.alarm")) == 1


async def test_sweep_is_idempotent(rig: Rig) -> None:
    await rig.segment("cam1", NOW - 5 * DAY)
    first = await rig.sweeper().sweep()
    second = await rig.sweeper().sweep()
    assert (first.deleted, second.deleted) == (1, 0)
    assert len(await rig.audit_rows("retention.delete")) == 1
