"""The recorder: one per recorded camera, turning the hub's packets into stored segments.

It is the hub's one *lossless* reader. Packets go through the LL-HLS ``Fragmenter``
(``gateway.live.fmp4``): segments start on a keyframe and are cut on the first keyframe
at least ``segment_seconds`` after their start, each made of about one-second
``moof``+``mdat`` fragments. Every stored segment carries its own init (``ftyp``+``moov``),
so it plays on its own.

Three tasks per camera: the *reader* feeds the fragmenter and hands finished segments and
gaps to a short queue; the *writer* joins and hashes each segment in a worker thread and
stores it; the *cataloguer* then inserts its catalogue row. A crash at any moment therefore
leaves only complete segments in the catalogue. While the database is locked or unreachable
the stored segments' rows wait (``CATALOGUE_BACKLOG``) and are written in order when it
answers; the outage is a fault (``gateway.faults``). A full storage first makes room (the
oldest recordings no hold keeps go), else the segment is a gap "disk full"; a storage that
refuses for good (``StorageFailed``) is a gap "storage failed" at once, without retries. When storage is slow the queue fills,
the reader waits, the hub's deep lossless buffer fills, and at its end the hub skips the
recorder ahead: an alarm (``recording.alarm``), an audit entry and a gap
"recorder fell behind" say so.

Each segment records the privacy masks in force for its first picture (``mask_state``: the
database mask version and the digest of the complete mask set), so playback and exports
know which segments to re-mask (``gateway.recording.remask``).

Gaps are explicit: the first segment after a start records the time since the camera's
last catalogued segment ("gateway down"); a new stream epoch or a silence longer than
``idle_flush`` closes the open segment and the next one records "camera offline".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from gateway.access.audit import AuditLog
from gateway.cluster.role import Fence
from gateway.db import is_unavailable
from gateway.errors import CameraUnavailable, LeaseLost, StorageFailed, StorageFull, StreamClosed
from gateway.events import EventBus
from gateway.faults import DATABASE, STORAGE, FaultBoard
from gateway.interfaces import StorageBackend
from gateway.live.fmp4 import Fragmenter, InitSegment, Part
from gateway.media.hub import HubReader
from gateway.media.packet import CLOCK_RATE, MediaPacket
from gateway.recording.index import CONTIGUOUS, Catalogue, Segment
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

#: Fragment (moof+mdat) length inside a segment.
FRAGMENT_TICKS = CLOCK_RATE
#: Finished segments waiting for storage before the reader waits too.
WRITE_QUEUE = 4
#: Attempts to store one segment before it is given up (and a gap recorded).
WRITE_ATTEMPTS = 4
WRITE_BACKOFF = 1.0
#: Poll interval while the camera has no picture yet.
WAIT_FOR_PICTURE = 0.5

#: Stored segments (and gaps) waiting for their catalogue row while the database is locked or
#: unreachable: a few bytes each, so hours of segments; beyond it the writer waits too.
CATALOGUE_BACKLOG = 2000
CATALOGUE_BACKOFF = 0.2
CATALOGUE_BACKOFF_MAX = 2.0
#: On stop, how long the rows still waiting for the database are given before they are dropped.
CATALOGUE_STOP_WAIT = 10.0

GATEWAY_DOWN = "gateway down"
CAMERA_OFFLINE = "camera offline"
FELL_BEHIND = "recorder fell behind"
STORAGE_FAILED = "storage failed"
DISK_FULL = "disk full"


class RecordedCamera(Protocol):
    """What the recorder needs of a camera (``gateway.cameras.Camera``)."""

    id: str

    def open_reader(
        self, name: str, *, lossless: bool = False, on_overflow: Callable[[HubReader], None] | None = None
    ) -> HubReader: ...


def segment_key(camera: str, start: float) -> str:
    """``<camera>/<YYYY>/<MM>/<DD>/<camera>-<start epoch ms>.mp4`` (UTC date)."""
    day = datetime.fromtimestamp(start, UTC)
    return f"{camera}/{day:%Y/%m/%d}/{camera}-{round(start * 1000)}.mp4"


def assemble(init: bytes, fragments: list[bytes]) -> tuple[bytes, str]:
    """The segment's bytes and their SHA-256 (blocking: run in a worker thread)."""
    data = b"".join([init, *fragments])
    return data, hashlib.sha256(data).hexdigest()


#: (database mask version, mask digest) in force for pictures captured at a wall-clock time.
MaskState = Callable[[float], tuple[int, str]]


@dataclass(slots=True)
class _Building:
    init: InitSegment
    start: float
    fragments: list[bytes] = field(default_factory=list)
    ticks: int = 0
    gap_before: str | None = None
    mask: tuple[int, str] = (0, "")


@dataclass(frozen=True, slots=True)
class _Finished:
    init: InitSegment
    start: float
    end: float
    fragments: list[bytes]
    mask: tuple[int, str] = (0, "")


@dataclass(frozen=True, slots=True)
class _Stored:
    """A segment in storage waiting for its catalogue row."""

    item: _Finished
    key: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class _GapItem:
    start: float
    end: float
    reason: str


@dataclass(slots=True)
class RecorderStats:
    segments: int = 0
    bytes: int = 0
    gaps: int = 0
    overflows: int = 0
    write_failures: int = 0
    #: Segments and gaps refused because another node had taken the camera over.
    fenced: int = 0
    last_segment_end: float | None = None
    #: Why the last segment could not be stored (DISK_FULL, STORAGE_FAILED), until one is.
    failing: str | None = None
    failing_detail: str = ""
    #: Stored segments and gaps waiting for the database.
    uncatalogued: int = 0


class Recorder:
    """Records one camera while entered as an async context manager."""

    def __init__(
        self,
        camera: RecordedCamera,
        storage: StorageBackend,
        catalogue: Catalogue,
        *,
        segment_seconds: float = 60.0,
        events: EventBus | None = None,
        audit: AuditLog | None = None,
        on_stored: Callable[[Segment], Any] | None = None,
        idle_flush: float = 5.0,
        mask_state: MaskState | None = None,
        fence: Fence | None = None,
        resumed_reason: str | None = None,
        faults: FaultBoard | None = None,
        make_room: Callable[[int], Awaitable[int]] | None = None,
    ) -> None:
        self.camera = camera
        #: Where database and storage faults are reported (event, audit, health).
        self.faults = faults
        #: Called with the bytes of a segment the storage had no space for: deletes the oldest
        #: recordings that no hold keeps (returns how many), so the segment can be stored.
        self.make_room = make_room
        #: Catalogue writes are accepted only while this node still owns the camera.
        self.fence = fence
        #: The reason of the gap before this run's first segment (a node took the camera over).
        self.resumed_reason = resumed_reason or GATEWAY_DOWN
        self.storage = storage
        self.catalogue = catalogue
        self.segment_seconds = segment_seconds
        self.events = events
        self.audit = audit
        self.on_stored = on_stored
        self.idle_flush = idle_flush
        #: Which masks were in force for a segment's first picture (None: never masked).
        self.mask_state = mask_state
        self.stats = RecorderStats()
        self._queue: asyncio.Queue[_Finished | _GapItem | None] = asyncio.Queue(WRITE_QUEUE)
        self._reader: HubReader | None = None
        self._stopping = False
        self._overflowed = False
        self._reader_task: asyncio.Task[None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._cataloguer_task: asyncio.Task[None] | None = None
        self._rows: asyncio.Queue[_Stored | _GapItem | None] = asyncio.Queue(CATALOGUE_BACKLOG)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._building: _Building | None = None
        #: End of the last segment handed to the writer (this run), or the catalogue's.
        self._last_end: float | None = None
        self._first = True
        self._pending_reason: str | None = None
        self._drained: list[MediaPacket] = []

    @property
    def camera_id(self) -> str:
        return self.camera.id

    async def __aenter__(self) -> Recorder:
        self._last_end = await self.catalogue.last_end(self.camera_id)
        self._cataloguer_task = asyncio.create_task(self._catalogue_forever(), name=f"recorder-catalogue-{self.camera_id}")
        self._writer_task = asyncio.create_task(self._write_forever(), name=f"recorder-write-{self.camera_id}")
        self._reader_task = asyncio.create_task(self._read_forever(), name=f"recorder-read-{self.camera_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Close the open segment, store everything pending, then stop. Idempotent."""
        self._stopping = True
        if self._reader is not None:
            # Keep what the hub already queued for us; closing the reader would drop it.
            while (packet := self._reader.get_nowait()) is not None:
                self._drained.append(packet)
            self._reader.close()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
        if self._writer_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        if self._cataloguer_task is not None:
            done, _ = await asyncio.wait([self._cataloguer_task], timeout=CATALOGUE_STOP_WAIT)
            if not done:  # the database is still away: what is stored stays, uncatalogued
                logger.error("camera %s: %d stored segments or gaps not catalogued (database unavailable)",
                             self.camera_id, self._rows.qsize() + 1)
                await cancel_and_wait(self._cataloguer_task)
            self._cataloguer_task = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- reading -----------------------------------------------------------------------
    async def _open_reader(self) -> HubReader | None:
        while not self._stopping:
            try:
                return self.camera.open_reader("recorder", lossless=True, on_overflow=self._on_overflow)
            except CameraUnavailable:
                await asyncio.sleep(WAIT_FOR_PICTURE)
            except StreamClosed:
                return None
        return None

    async def _read_forever(self) -> None:
        fragmenter = Fragmenter(round(self.segment_seconds * CLOCK_RATE), FRAGMENT_TICKS, wallclock_timeline=True)
        try:
            self._reader = reader = await self._open_reader()
            if reader is None:
                return
            if self._stopping:
                reader.close()
            logger.info("camera %s: recording (%.0fs segments)", self.camera_id, self.segment_seconds)
            while True:
                try:
                    packet = await asyncio.wait_for(reader.recv(), self.idle_flush)
                except TimeoutError:
                    if self._building is not None:
                        logger.info("camera %s: no packets for %.0fs; closing the segment", self.camera_id, self.idle_flush)
                        await self._take(fragmenter.flush())
                        self._pending_reason = self._pending_reason or CAMERA_OFFLINE
                    continue
                except StreamClosed:
                    for packet in self._drained:
                        await self._take(fragmenter.push(packet))
                    self._drained.clear()
                    break
                if self._overflowed:
                    self._overflowed = False
                    await self._take(fragmenter.flush())
                    self._pending_reason = FELL_BEHIND
                elif packet.discontinuity and self._building is not None:
                    self._pending_reason = self._pending_reason or CAMERA_OFFLINE
                await self._take(fragmenter.push(packet))
            await self._take(fragmenter.flush())
        except Exception:
            logger.exception("camera %s: recorder failed", self.camera_id)
            raise
        finally:
            if self._reader is not None:
                self._reader.close()
            await self._queue.put(None)

    async def _take(self, parts: list[Part]) -> None:
        for part in parts:
            building = self._building
            if part.index == 0 or building is None:
                if building is not None:  # an unfinished segment: never happens with final parts
                    await self._finish(building)
                mask = self.mask_state(part.start_time) if self.mask_state is not None else (0, "")
                building = self._building = _Building(init=part.init, start=part.start_time, mask=mask)
                await self._gap_before(part)
            building.fragments.append(part.data)
            building.ticks += part.duration
            if part.final:
                await self._finish(building)

    async def _gap_before(self, part: Part) -> None:
        start = part.start_time
        reason = None
        if self._first:
            reason = self.resumed_reason
            self._first = False
        elif part.discontinuity:
            reason = self._pending_reason or CAMERA_OFFLINE
        self._pending_reason = None
        if reason is not None and self._last_end is not None and start - self._last_end > CONTIGUOUS:
            await self._queue.put(_GapItem(self._last_end, start, reason))

    async def _finish(self, building: _Building) -> None:
        self._building = None
        end = building.start + building.ticks / CLOCK_RATE
        self._last_end = end
        await self._queue.put(_Finished(building.init, building.start, end, building.fragments, building.mask))

    def _on_overflow(self, reader: HubReader) -> None:
        """Called by the hub, on the loop, when even the deep buffer overflowed."""
        self._overflowed = True
        self.stats.overflows += 1
        logger.error("camera %s: the recorder fell behind; packets were lost", self.camera_id)
        if self.events is not None:
            self.events.emit("recording.alarm", camera=self.camera_id, reason=FELL_BEHIND, skipped=reader.skipped)
        self._background(self._audit("recording.alarm", outcome="failed", detail={"reason": FELL_BEHIND}))

    # -- writing -----------------------------------------------------------------------
    async def _write_forever(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                try:
                    if isinstance(item, _GapItem):
                        await self._rows.put(item)
                        self.stats.uncatalogued += 1
                    else:
                        await self._store(item)
                except LeaseLost:
                    self.stats.fenced += 1
                    logger.warning("camera %s: another node owns the camera now; %s not stored", self.camera_id, type(item).__name__)
                except Exception:
                    logger.exception("camera %s: could not store %s", self.camera_id, type(item).__name__)
        finally:
            await self._rows.put(None)

    async def _store(self, item: _Finished) -> None:
        if self.fence is not None:  # don't even store what we may not catalogue
            await self._with_database(lambda: self.catalogue.check_fence(self.fence))  # type: ignore[arg-type]
        data, sha = await asyncio.to_thread(assemble, item.init.data, item.fragments)
        key = segment_key(self.camera_id, item.start)
        delay = WRITE_BACKOFF
        made_room = False
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await self.storage.write_segment(key, data)
                break
            except StorageFull as exc:
                # the oldest recordings no hold keeps make way (a ring buffer, as a city's
                # recorders have always worked); if none can, this segment is a gap
                if not made_room and self.make_room is not None and await self.make_room(len(data)) > 0:
                    made_room = True
                    continue
                await self._storage_failed(item, key, exc, DISK_FULL)
                return
            except StorageFailed as exc:  # retrying will not help: an operator must act
                await self._storage_failed(item, key, exc, STORAGE_FAILED)
                return
            except Exception as exc:
                if attempt == WRITE_ATTEMPTS:
                    await self._storage_failed(item, key, exc, STORAGE_FAILED)
                    return
                logger.warning("camera %s: storing %s failed (%s); retrying in %.0fs", self.camera_id, key, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        if self.stats.failing is not None:
            logger.warning("camera %s: recording again (%s is over)", self.camera_id, self.stats.failing)
            self.stats.failing, self.stats.failing_detail = None, ""
            if self.events is not None:
                self.events.emit("recording.alarm_cleared", camera=self.camera_id)
            if self.faults is not None:
                self.faults.clear(STORAGE)
        # stored: from here on only its catalogue row is missing, which waits for the database
        await self._rows.put(_Stored(item, key, len(data), sha))
        self.stats.uncatalogued += 1

    async def _storage_failed(self, item: _Finished, key: str, exc: Exception, reason: str) -> None:
        self.stats.write_failures += 1
        logger.error("camera %s: giving up on segment %s (%s): %s", self.camera_id, key, reason, exc)
        news = self.stats.failing != reason
        self.stats.failing, self.stats.failing_detail = reason, str(exc)
        if news:  # one alarm per fault, not one per segment
            if self.events is not None:
                self.events.emit("recording.alarm", camera=self.camera_id, reason=reason, error=str(exc))
            self._background(self._audit(
                "recording.alarm", outcome="failed", range_from=item.start, range_to=item.end,
                detail={"reason": reason, "error": str(exc)},
            ))
            if self.faults is not None:
                key_name = getattr(exc, "key", "")
                kind = "storage.full" if reason == DISK_FULL else "storage.failed"
                self.faults.raise_fault(STORAGE, kind, str(exc), backend=self.storage.id(), **({"key": key_name} if key_name else {}))
        await self._rows.put(_GapItem(item.start, item.end, reason))
        self.stats.uncatalogued += 1

    # -- cataloguing -------------------------------------------------------------------
    async def _catalogue_forever(self) -> None:
        while True:
            row = await self._rows.get()
            if row is None:
                return
            try:
                if isinstance(row, _GapItem):
                    await self._with_database(
                        lambda: self.catalogue.add_gap(self.camera_id, row.start, row.end, row.reason, fence=self.fence)
                    )
                    self.stats.gaps += 1
                else:
                    await self._add_segment(row)
            except LeaseLost:
                self.stats.fenced += 1
                logger.warning("camera %s: another node owns the camera now; %s not catalogued", self.camera_id, type(row).__name__)
            except Exception:
                logger.exception("camera %s: could not catalogue %s", self.camera_id, type(row).__name__)
            self.stats.uncatalogued -= 1

    async def _add_segment(self, row: _Stored) -> None:
        item, info = row.item, row.item.init.info
        segment = await self._with_database(lambda: self.catalogue.add_segment(
            camera=self.camera_id, start=item.start, end=item.end, bytes=row.size, sha256=row.sha256,
            storage_key=row.key, backend=self.storage.id(), codec=info.codec, width=info.width, height=info.height,
            init_bytes=len(item.init.data), mask_version=item.mask[0], mask_digest=item.mask[1], fence=self.fence,
        ))
        self.stats.segments += 1
        self.stats.bytes += row.size
        self.stats.last_segment_end = item.end
        logger.debug("camera %s: stored %s (%.1fs, %d bytes)", self.camera_id, row.key, segment.duration, row.size)
        if self.on_stored is not None:
            self.on_stored(segment)

    async def _with_database(self, write: Callable[[], Awaitable[Any]]) -> Any:
        """``write()``, retried for as long as the database is locked or unreachable (the
        backlog of rows is bounded by CATALOGUE_BACKLOG); other errors pass through."""
        delay, failed = CATALOGUE_BACKOFF, False
        while True:
            try:
                result = await write()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                if not failed:
                    failed = True
                    logger.warning("camera %s: database unavailable (%s); keeping the catalogue rows", self.camera_id, exc)
                    if self.faults is not None:
                        self.faults.raise_fault(DATABASE, "database.unavailable", str(exc).splitlines()[0][:300])
                await asyncio.sleep(delay)
                delay = min(delay * 2, CATALOGUE_BACKOFF_MAX)
                continue
            if failed and self.faults is not None:
                self.faults.clear(DATABASE)
            return result

    async def _audit(self, action: str, **fields: Any) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.record(action, camera=self.camera_id, **fields)
        except Exception:
            logger.exception("camera %s: could not audit %s", self.camera_id, action)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

