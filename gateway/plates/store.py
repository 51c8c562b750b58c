"""The plate store: reads kept with their crops, searched, watched for, and deleted with the
recordings.

- ``record`` takes a read from a plate-reading analyzer: the text is normalised again here
  (``gateway.plates.text``; an analyzer's own idea of the plate is not trusted), the row is
  written, the crop JPEG goes to the recordings' storage backend beside the camera's
  segments, and a read matching an active watchlist entry whose areas cover the camera is
  published at once as ``plates.watchlist.hit`` on the event bus (the events channel shows
  it to whoever may view the camera; event sinks such as webhooks pass it on) and audited.
- ``search`` finds reads by a query with wildcards and OCR-confusion tolerance, only on the
  cameras where the user holds ``plates.search`` (role and area, or a grant); a purpose is
  required, and every search, and every refusal, is audited with it.
- Watchlist entries (``plates.watch``) cover the areas of the user who made them; every
  change is audited with its purpose.
- Retention: a read goes when its camera's recordings of that moment go, that is after
  ``retention-days``, or earlier when the size cap or the free-space rule removed the
  camera's oldest segments; a read inside an active evidence hold stays. Crop first, row
  after, a receipt in the audit log (``plates.delete``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from aiohttp import web

from gateway.access.control import AccessControl
from gateway.access.guard import Principal
from gateway.access.policy import Action
from gateway.cluster.role import SINGLE_NODE, Jobs
from gateway.db import Database, plate_reads, plate_watchlist, segments
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.events import EventBus
from gateway.interfaces import Observation, StorageBackend
from gateway.plates.text import Query, QueryError, normalise, parse_query
from gateway.tasks import TaskSet, cancel_and_wait

logger = logging.getLogger(__name__)

DAY = 86400.0
SEARCH_LIMIT = 200
MAX_SEARCH_LIMIT = 1000
SWEEP_BATCH = 500
MAX_PURPOSE = 500
MAX_LABEL = 200
#: Reads up to this long before a camera's oldest stored segment are kept (the first read of
#: a recording may come a moment before its first segment's first sample).
SEGMENT_MARGIN = 120.0
HIT_EVENT = "plates.watchlist.hit"
#: The observation kind plate-reading analyzers report.
PLATE_KIND = "plate"

PLATES = web.AppKey("plates", "PlateStore")


class PlateRead(msgspec.Struct, kw_only=True):
    id: int
    camera: str
    at: float
    plate: str
    display: str
    country: str | None
    raw: str
    confidence: float
    analyzer: str
    has_crop: bool

    def view(self) -> dict[str, Any]:
        """The read as the API shows it, with its crop and the recording at that moment."""
        body = msgspec.to_builtins(self)
        body["links"] = {
            "crop": f"/api/plates/reads/{self.id}/crop" if self.has_crop else None,
            "playback": f"#/playback?camera={self.camera}&at={self.at:.3f}",
            "recordings": f"/api/cameras/{self.camera}/recordings?from={self.at - 30:.3f}&to={self.at + 30:.3f}",
        }
        return body


class WatchEntry(msgspec.Struct, kw_only=True):
    id: int
    pattern: str
    key: str
    label: str
    purpose: str
    areas: list[str]
    all_areas: bool
    expires_at: float | None
    created_by: str
    created_at: float
    updated_by: str
    updated_at: float

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def covers(self, area: str) -> bool:
        return self.all_areas or area in self.areas

    def view(self, now: float) -> dict[str, Any]:
        body = msgspec.to_builtins(self)
        body.pop("key")
        body["active"] = self.active(now)
        return body


@dataclass(frozen=True, slots=True)
class SearchFilters:
    query: str
    purpose: str
    camera: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = SEARCH_LIMIT


def _read(row: Any) -> PlateRead:
    return PlateRead(
        id=row.id, camera=row.camera, at=row.at, plate=row.plate, display=row.display, country=row.country, raw=row.raw,
        confidence=row.confidence, analyzer=row.analyzer, has_crop=row.crop_key is not None,
    )


def _entry(row: Any) -> WatchEntry:
    return WatchEntry(
        id=row.id, pattern=row.pattern, key=row.key, label=row.label, purpose=row.purpose, areas=list(row.areas or []),
        all_areas=bool(row.all_areas), expires_at=row.expires_at, created_by=row.created_by, created_at=row.created_at,
        updated_by=row.updated_by, updated_at=row.updated_at,
    )


def crop_key(camera: str, at: float) -> str:
    """``<camera>/<YYYY>/<MM>/<DD>/plates/<camera>-<epoch ms>-<random>.jpg``: beside the
    camera's segments of that day, never a segment's name."""
    day = datetime.fromtimestamp(at, UTC)
    return f"{camera}/{day:%Y/%m/%d}/plates/{camera}-{round(at * 1000)}-{uuid.uuid4().hex[:8]}.jpg"


def purpose_of(raw: str | None) -> str:
    purpose = (raw or "").strip()
    if not purpose:
        raise BadRequest("purpose is required: say why (case number, request); plate data is personal data")
    if len(purpose) > MAX_PURPOSE:
        raise BadRequest(f"purpose has at most {MAX_PURPOSE} characters")
    return purpose


class PlateStore:
    def __init__(
        self,
        *,
        db: Database,
        access: AccessControl,
        events: EventBus,
        storage: StorageBackend,
        retention_days: Callable[[str], float],
        catalogue: Any = None,
        sweep_interval: float = 300.0,
        jobs: Jobs = SINGLE_NODE.jobs,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.access = access
        self.audit = access.audit
        self.events = events
        self.storage = storage
        self.retention_days = retention_days
        #: The recordings' catalogue: its removals wake the sweep, its holds keep reads.
        self.catalogue = catalogue
        self.sweep_interval = sweep_interval
        #: Retention is a cluster-wide job: it runs on one node (every job on a single node).
        self.jobs = jobs
        self.clock = clock
        self._audits = TaskSet("plates")
        self._wake = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> PlateStore:
        if self.catalogue is not None:
            self.catalogue.on_removed.append(self._segments_removed)
        self._sweeper = asyncio.create_task(self.jobs.run("plates-retention", self._sweep_forever), name="plates-retention")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.catalogue is not None:
            with contextlib.suppress(ValueError):
                self.catalogue.on_removed.remove(self._segments_removed)
        await cancel_and_wait(self._sweeper)
        await self._audits.drain()

    async def _segments_removed(self, _ids: Sequence[int]) -> None:
        self._wake.set()

    # -- reads -----------------------------------------------------------------------------
    async def record(
        self, *, camera: str, at: float, text: str | Sequence[str], confidence: float, analyzer: str,
        crop: bytes | None = None,
    ) -> PlateRead | None:
        """Store one read (None when the text holds no plate at all); publish watchlist hits."""
        plate = normalise(text)
        if len(plate.text) < 2:
            return None
        raw = text if isinstance(text, str) else " / ".join(text)
        area = self.access.camera_area(camera)
        key = crop_key(camera, at) if crop else None
        values = dict(
            camera=camera, at=at, plate=plate.text, display=plate.display[:24], country=plate.country, key=plate.key,
            raw=raw[:100], confidence=float(confidence), analyzer=analyzer[:64], crop_key=key,
            crop_backend=self.storage.id() if key else None, created_at=self.clock(),
        )
        async with self.db.begin() as conn:
            read_id = (await conn.execute(plate_reads.insert().values(**values))).inserted_primary_key[0]
        read = PlateRead(
            id=read_id, camera=camera, at=at, plate=plate.text, display=values["display"], country=plate.country,
            raw=values["raw"], confidence=values["confidence"], analyzer=values["analyzer"], has_crop=key is not None,
        )
        now = self.clock()
        # read from the database each time: an entry added through any node counts at once
        hits = [e for e in await self._entries() if e.active(now) and e.covers(area) and Query(e.pattern, e.key).matches(plate.key)]
        for entry in hits:  # first, so the hit leaves within the second; the crop follows
            self.events.emit(
                HIT_EVENT, camera=camera, read=read.view(), watch={"id": entry.id, "pattern": entry.pattern, "label": entry.label},
            )
        if key is not None:
            try:
                await self.storage.write_segment(key, crop)  # type: ignore[arg-type]
            except Exception as exc:
                logger.warning("plates: camera %s: storing the crop of read %d failed: %s", camera, read_id, exc)
                async with self.db.begin() as conn:
                    await conn.execute(plate_reads.update().where(plate_reads.c.id == read_id).values(crop_key=None, crop_backend=None))
                read.has_crop = False
        for entry in hits:
            self._audits.spawn(self.audit.record(
                "plates.watch.hit", camera=camera, range_from=at, range_to=at, purpose=entry.purpose,
                detail={"read": read_id, "plate": plate.text, "watch": entry.id, "pattern": entry.pattern},
            ), name="plates-hit-audit")
        return read

    def observe(self, observation: Observation) -> Awaitable[PlateRead | None] | None:
        """An analytics listener: ``plate`` observations become reads (others are not ours)."""
        if observation.kind != PLATE_KIND:
            return None
        payload = observation.payload or {}
        lines = payload.get("lines")
        text: str | list[str] = [str(x) for x in lines] if isinstance(lines, list) and lines else str(payload.get("text", ""))
        return self.record(
            camera=observation.camera, at=observation.at, text=text, confidence=observation.confidence,
            analyzer=observation.analyzer, crop=observation.crop,
        )

    async def get(self, read_id: int) -> tuple[PlateRead, str | None]:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(plate_reads).where(plate_reads.c.id == read_id))).first()
        if row is None:
            raise NotFound(f"no plate read {read_id}")
        return _read(row), row.crop_key

    # -- search ----------------------------------------------------------------------------
    def searchable(self, who: Principal) -> set[str]:
        return self.access.cameras_for(who, (Action.PLATES_SEARCH,))

    async def _refuse(self, who: Principal, action: str, reason: str, client: str | None, *, camera: str | None = None,
                      purpose: str | None = None, detail: dict[str, Any] | None = None, error: type[Exception] = Forbidden) -> None:
        await self.audit.record(action, outcome="refused", user=who.username, client=client, camera=camera, purpose=purpose,
                                detail={"reason": reason, **(detail or {})})
        raise error(reason)

    async def search(self, who: Principal, filters: SearchFilters, client: str | None) -> list[PlateRead]:
        """Reads matching the query on the cameras ``who`` may search; audited with the purpose."""
        asked = {"q": filters.query[:64], "camera": filters.camera, "from": filters.since, "to": filters.until}
        if not filters.purpose.strip():
            await self._refuse(who, "plates.search", "purpose is required: say why (case number, request)", client,
                               camera=filters.camera, detail=asked, error=BadRequest)
        purpose = filters.purpose.strip()[:MAX_PURPOSE]
        try:
            query = parse_query(filters.query)
        except QueryError as exc:
            await self._refuse(who, "plates.search", str(exc), client, camera=filters.camera, purpose=purpose, detail=asked,
                               error=BadRequest)
            raise AssertionError("unreachable") from None
        allowed = self.searchable(who)
        if filters.camera is not None:
            try:
                decision = self.access.decide(who, Action.PLATES_SEARCH, filters.camera)
            except NotFound:
                await self._refuse(who, "plates.search", f"no camera {filters.camera!r}", client, purpose=purpose, detail=asked,
                                   error=NotFound)
                raise AssertionError("unreachable") from None
            if not decision:
                await self._refuse(who, "plates.search", decision.reason, client, camera=filters.camera, purpose=purpose,
                                   detail=asked)
            cameras = {filters.camera}
        elif not allowed:
            await self._refuse(who, "plates.search", f"{who.username} may search the plates of no camera", client,
                               purpose=purpose, detail=asked)
            raise AssertionError("unreachable")
        else:
            cameras = allowed
        stmt = sa.select(plate_reads).where(plate_reads.c.camera.in_(sorted(cameras)))
        stmt = stmt.where(plate_reads.c.key == query.key) if query.exact else stmt.where(plate_reads.c.key.like(query.like))
        if filters.since is not None:
            stmt = stmt.where(plate_reads.c.at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(plate_reads.c.at < filters.until)
        stmt = stmt.order_by(plate_reads.c.at.desc(), plate_reads.c.id.desc()).limit(filters.limit)
        async with self.db.connect() as conn:
            found = [_read(r) for r in await conn.execute(stmt)]
        await self.audit.record(
            "plates.search", user=who.username, client=client, camera=filters.camera, range_from=filters.since,
            range_to=filters.until, purpose=purpose,
            detail={**asked, "query": query.text, "results": len(found), "cameras": len(cameras)},
        )
        return found

    async def crop(self, who: Principal, read_id: int, client: str | None, purpose: str | None = None) -> bytes:
        """The crop JPEG of a read on a camera ``who`` may search; audited."""
        read, key = await self.get(read_id)
        decision = self.access.decide(who, Action.PLATES_SEARCH, read.camera)
        if not decision:
            await self._refuse(who, "plates.crop", decision.reason, client, camera=read.camera, purpose=purpose,
                               detail={"read": read_id})
        if key is None:
            raise NotFound(f"plate read {read_id} has no crop")
        try:
            data = b"".join([chunk async for chunk in self.storage.open_segment(key)])
        except NotFound:
            raise NotFound(f"the crop of plate read {read_id} is no longer stored") from None
        await self.audit.record("plates.crop", user=who.username, client=client, camera=read.camera, range_from=read.at,
                                range_to=read.at, purpose=purpose, detail={"read": read_id, "plate": read.plate})
        return data

    # -- watchlist -------------------------------------------------------------------------
    async def _entries(self) -> list[WatchEntry]:
        async with self.db.connect() as conn:
            return [_entry(r) for r in await conn.execute(sa.select(plate_watchlist).order_by(plate_watchlist.c.id))]

    async def _entry(self, entry_id: int) -> WatchEntry:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(plate_watchlist).where(plate_watchlist.c.id == entry_id))).first()
        if row is None:
            raise NotFound(f"no watchlist entry {entry_id}")
        return _entry(row)

    def may_watch(self, who: Principal) -> bool:
        return Action.PLATES_WATCH in self.access.actions_for(who)

    @staticmethod
    def within(who: Principal, entry: WatchEntry) -> bool:
        """Is the entry inside ``who``'s areas (so they may see and change it)?"""
        if who.all_areas:
            return True
        return not entry.all_areas and set(entry.areas) <= set(who.areas)

    async def _require_watch(self, who: Principal, action: str, client: str | None, purpose: str | None = None,
                             detail: dict[str, Any] | None = None) -> None:
        if not self.may_watch(who):
            await self._refuse(who, action, f"role {who.role} does not allow {Action.PLATES_WATCH}", client, purpose=purpose,
                               detail=detail)

    async def watchlist(self, who: Principal, client: str | None) -> list[WatchEntry]:
        await self._require_watch(who, "plates.watch.list", client)
        return [e for e in await self._entries() if self.within(who, e)]

    async def _entry_for(self, who: Principal, entry_id: int, action: str, client: str | None, purpose: str | None) -> WatchEntry:
        entry = await self._entry(entry_id)
        if not self.within(who, entry):
            await self._refuse(who, action, f"watchlist entry {entry_id} covers areas outside {who.username}'s", client,
                               purpose=purpose, detail={"watch": entry_id})
        return entry

    @staticmethod
    def _pattern(raw: str) -> Query:
        try:
            return parse_query(raw)
        except QueryError as exc:
            raise BadRequest(f"pattern: {exc}") from None

    async def add_watch(self, who: Principal, *, pattern: str, label: str, purpose: str | None,
                        expires_at: float | None, client: str | None) -> WatchEntry:
        await self._require_watch(who, "plates.watch.add", client, purpose, {"pattern": pattern[:64]})
        why = purpose_of(purpose)
        query = self._pattern(pattern)
        now = self.clock()
        values = dict(
            pattern=query.text, key=query.key, label=label.strip()[:MAX_LABEL], purpose=why, areas=sorted(who.areas),
            all_areas=who.all_areas, expires_at=expires_at, created_by=who.username, created_at=now,
            updated_by=who.username, updated_at=now,
        )
        async with self.db.begin() as conn:
            entry_id = (await conn.execute(plate_watchlist.insert().values(**values))).inserted_primary_key[0]
        await self.audit.record("plates.watch.add", user=who.username, client=client, purpose=why,
                                detail={"watch": entry_id, "pattern": query.text, "label": values["label"], "expires_at": expires_at})
        return await self._entry(entry_id)

    async def update_watch(self, who: Principal, entry_id: int, *, pattern: str | None, label: str | None,
                           purpose: str | None, expires_at: float | None, clear_expiry: bool, client: str | None) -> WatchEntry:
        await self._require_watch(who, "plates.watch.update", client, purpose, {"watch": entry_id})
        why = purpose_of(purpose)
        entry = await self._entry_for(who, entry_id, "plates.watch.update", client, why)
        values: dict[str, Any] = {"purpose": why, "updated_by": who.username, "updated_at": self.clock()}
        if pattern is not None:
            query = self._pattern(pattern)
            values.update(pattern=query.text, key=query.key)
        if label is not None:
            values["label"] = label.strip()[:MAX_LABEL]
        if expires_at is not None or clear_expiry:
            values["expires_at"] = expires_at
        async with self.db.begin() as conn:
            await conn.execute(plate_watchlist.update().where(plate_watchlist.c.id == entry.id).values(**values))
        changed = {k: v for k, v in values.items() if k in ("pattern", "label", "expires_at")}
        await self.audit.record("plates.watch.update", user=who.username, client=client, purpose=why,
                                detail={"watch": entry.id, "before": {k: getattr(entry, k) for k in changed}, "after": changed})
        return await self._entry(entry.id)

    async def delete_watch(self, who: Principal, entry_id: int, *, purpose: str | None, client: str | None) -> None:
        await self._require_watch(who, "plates.watch.delete", client, purpose, {"watch": entry_id})
        why = purpose_of(purpose)
        entry = await self._entry_for(who, entry_id, "plates.watch.delete", client, why)
        async with self.db.begin() as conn:
            await conn.execute(plate_watchlist.delete().where(plate_watchlist.c.id == entry.id))
        await self.audit.record("plates.watch.delete", user=who.username, client=client, purpose=why,
                                detail={"watch": entry.id, "pattern": entry.pattern, "label": entry.label})

    # -- retention -------------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_interval)
            self._wake.clear()
            try:
                await self.sweep()
            except Exception:
                logger.exception("plates: retention sweep failed")

    async def sweep(self, now: float | None = None) -> int:
        """Delete the reads (crop, then row) whose recordings are gone; returns how many."""
        now = self.clock() if now is None else now
        deleted = 0
        async with self.db.connect() as conn:
            cameras = list((await conn.execute(sa.select(plate_reads.c.camera).distinct())).scalars())
        for camera in cameras:
            bound = now - self.retention_days(camera) * DAY
            async with self.db.connect() as conn:
                oldest = (await conn.execute(sa.select(sa.func.min(segments.c.start)).where(segments.c.camera == camera))).scalar()
            if oldest is not None:
                bound = max(bound, oldest - SEGMENT_MARGIN)
            holds = await self.catalogue.active_holds(camera) if self.catalogue is not None else []
            while True:
                async with self.db.connect() as conn:
                    rows = (await conn.execute(
                        sa.select(plate_reads.c.id, plate_reads.c.at, plate_reads.c.crop_key)
                        .where(plate_reads.c.camera == camera, plate_reads.c.at < bound)
                        .order_by(plate_reads.c.at).limit(SWEEP_BATCH)
                    )).all()
                doomed = [r for r in rows if not any(h.start <= r.at <= h.end for h in holds)]
                if not doomed:
                    break
                gone = []
                for row in doomed:
                    if row.crop_key is not None:
                        try:
                            await self.storage.delete(row.crop_key)
                        except Exception as exc:
                            logger.warning("plates: could not delete crop %s (%s); the next sweep retries", row.crop_key, exc)
                            continue
                    gone.append(row)
                if gone:
                    async with self.db.begin() as conn:
                        await conn.execute(plate_reads.delete().where(plate_reads.c.id.in_([r.id for r in gone])))
                    deleted += len(gone)
                    await self.audit.record(
                        "plates.delete", camera=camera, range_from=min(r.at for r in gone), range_to=max(r.at for r in gone),
                        detail={"count": len(gone), "reason": "retention"},
                    )
                if len(gone) < len(doomed) or len(rows) < SWEEP_BATCH:
                    break
        return deleted


async def plates_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: after the recording service's (crops go to its storage, its
    catalogue's removals and holds steer retention), before the analyzers'."""
    from gateway.appkeys import ACCESS, ANALYTICS, CAMERAS, CONFIG, DATABASE, EVENTS, RECORDING
    from gateway.cluster.role import CLUSTER_ROLE

    config = app[CONFIG]
    recording = app[RECORDING]

    def retention_days(camera: str) -> float:
        cfg = app[CAMERAS].config(camera) or config.camera(camera)  # the camera's config now
        return cfg.retention_days if cfg is not None else 45

    store = PlateStore(
        db=app[DATABASE], access=app[ACCESS], events=app[EVENTS], storage=recording.storage, retention_days=retention_days,
        catalogue=recording.catalogue, sweep_interval=config.recording.sweep_interval,
        jobs=app.get(CLUSTER_ROLE, SINGLE_NODE).jobs,
    )
    async with store:
        app[PLATES] = store
        runner = app.get(ANALYTICS)
        remove = runner.add_listener(store.observe) if runner is not None else None
        try:
            yield
        finally:
            if remove is not None:
                remove()
