"""The recording service: storage backends, one recorder per recorded camera, retention
and replication, owned as one async context manager.

Playback routes stay thin: ``timeline``, ``segment`` and ``segment_stream`` are all they
need; evidence exports use ``place_hold``/``release_hold``. ``recording_ctx`` is the
aiohttp cleanup context that puts the service on the app under ``RECORDING``; it must be
entered after the cameras' context, so recorders stop (and store their last segment)
before the cameras do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.access.audit import AuditLog
from gateway.appkeys import AUDIT, CAMERAS, CONFIG, DATABASE, EVENTS, PLUGINS, RECORDING
from gateway.cameras import Camera, CameraManager
from gateway.cluster.role import CLUSTER_ROLE, SINGLE_NODE, ClusterRole
from gateway.config import Config
from gateway.db import Database
from gateway.errors import ConfigError, NotFound, StorageFailed
from gateway.events import EventBus
from gateway.faults import FaultBoard
from gateway.interfaces import StorageBackend, StorageUsage
from gateway.media.masking import instantiate_filters
from gateway.plugins import Plugins
from gateway.recording.index import Catalogue, Gap, Hold, ReplicationLag, Segment, Span
from gateway.recording.recorder import Recorder, RecorderStats
from gateway.recording.remask import MaskPlan, Remasked, Remasker
from gateway.recording.replication import ReplicaVerifier
from gateway.recording.retention import GB, RetentionSweeper, SweepReport

if TYPE_CHECKING:  # gateway.masks imports this package (for MaskPlan)
    from gateway.masks import MaskService

logger = logging.getLogger(__name__)

REPLICATE_BATCH = 50
REPLICATE_BACKOFF_MAX = 30.0
DEFAULT_RETENTION_DAYS = 45
#: Measuring the storage walks every file (lists every object on S3): do it at most this
#: often, and count what is stored in between as it is stored.
USAGE_REFRESH = 300.0
#: Re-masked copies of segments recorded before the current masks, under the data dir.
REMASK_DIR = "remask"
#: On a full disk, room is made for this many segments at a time.
ROOM_SEGMENTS = 3


@dataclass(frozen=True, slots=True)
class RecordingStatus:
    cameras: dict[str, RecorderStats]
    usage: StorageUsage | None
    replication: ReplicationLag | None


def make_backend(plugins: Plugins, backend_id: str, options: Any, data_dir: str, what: str) -> StorageBackend:
    backends = plugins.storage_backends()
    cls = backends.get(backend_id)
    if cls is None:
        known = ", ".join(sorted(backends)) or "none installed"
        raise ConfigError("gateway.toml", what, f"unknown storage backend {backend_id!r} (known: {known})")
    if not isinstance(options, msgspec.Struct):  # config loaded without the registry
        options = msgspec.convert(options or {}, type=cls.Options, str_keys=True)
    return cls(options, data_dir=data_dir)


@contextlib.contextmanager
def refused_storage(prefix: str) -> Iterator[None]:
    """A storage that is permanently unusable (a missing bucket, wrong credentials) as a
    configuration error naming the key: the gateway refuses to start and says why."""
    try:
        yield
    except StorageFailed as exc:
        raise ConfigError("gateway.toml", f"{prefix}.{exc.key}" if exc.key else prefix, exc.message) from exc


async def probe_storage(config: Config, plugins: Plugins) -> list[tuple[str, str, str]]:
    """``citygate check-config --probe``: open each configured storage and try it.
    (section, "ok" | "failed" | "unreachable", detail) per backend."""
    data_dir = str(config.data_dir)
    wanted = [("storage.options", config.storage.backend, config.storage.options)]
    if config.recording.replicate_to is not None:
        r = config.recording.replicate_to
        wanted.append(("recording.replicate-to.options", r.backend, r.options))
    results = []
    for prefix, backend_id, options in wanted:
        backend = make_backend(plugins, backend_id, options, data_dir, prefix.rpartition(".")[0] + ".backend")
        try:
            with refused_storage(prefix):
                async with backend:
                    await backend.probe()
        except ConfigError as exc:
            results.append((prefix, "failed", exc.message))
        except Exception as exc:  # an outage, not a mistake in the configuration
            results.append((prefix, "unreachable", f"{backend_id}: {type(exc).__name__}: {exc}"))
        else:
            results.append((prefix, "ok", f"{backend_id}: writable"))
    return results


class RecordingService:
    def __init__(
        self,
        config: Config,
        plugins: Plugins,
        db: Database,
        audit: AuditLog,
        events: EventBus,
        cameras: CameraManager,
        *,
        clock: Callable[[], float] = time.time,
        idle_flush: float = 5.0,
        masks: MaskService | None = None,
        cluster: ClusterRole = SINGLE_NODE,
    ) -> None:
        self.config = config
        #: Fencing of catalogue writes and cluster-wide jobs (one node: no fencing, every job).
        self.cluster = cluster
        #: The privacy masks in force (None: tests without masks); segments record them.
        self.masks = masks
        self.events = events
        self.audit = audit
        self.cameras = cameras
        self.clock = clock
        self.catalogue = Catalogue(db, audit, clock=clock)
        data_dir = str(config.data_dir)
        rec = config.recording
        self.storage = make_backend(plugins, config.storage.backend, config.storage.options, data_dir, "storage.backend")
        self.replica: StorageBackend | None = None
        #: Reads the replica back and proves it holds every segment (None without a replica).
        self.verifier: ReplicaVerifier | None = None
        if rec.replicate_to is not None:
            self.replica = make_backend(
                plugins, rec.replicate_to.backend, rec.replicate_to.options, data_dir, "recording.replicate-to.backend"
            )
            self.verifier = ReplicaVerifier(
                db, self.replica, audit=audit, events=events, interval_hours=rec.replicate_to.verify_interval_hours, clock=clock
            )
        self.sweeper = RetentionSweeper(
            self.catalogue,
            [s for s in (self.storage, self.replica) if s is not None],
            retention_days=self._retention_days,
            size_cap_bytes=int(rec.size_cap_gb * GB),
            free_space_min_bytes=int(rec.free_space_min_gb * GB),
            audit=audit,
            events=events,
            clock=clock,
        )
        self._idle_flush = idle_flush
        #: Database and storage faults (event, audit, ``GET /api/health``).
        self.faults = FaultBoard(events, audit, clock=clock)
        self._room_lock = asyncio.Lock()
        self.recorders: dict[str, Recorder] = {}
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._replicate_wake = asyncio.Event()
        self._usage: StorageUsage | None = None
        self._usage_at = 0.0
        self._usage_lock = asyncio.Lock()
        self.remasker = Remasker(
            self.read_segment, instantiate_filters(plugins.mask_filters()), config.masking, config.data_dir / REMASK_DIR
        )
        self.catalogue.on_removed.append(self.remasker.forget)

    def _retention_days(self, camera: str) -> float:
        # the camera's config now (a reload or the API may have changed it since start)
        cfg = self.cameras.config(camera) or self.config.camera(camera)
        return cfg.retention_days if cfg is not None else DEFAULT_RETENTION_DAYS

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> RecordingService:
        try:
            with refused_storage("storage.options"):
                await self._stack.enter_async_context(self.storage)
            if self.replica is not None:
                with refused_storage("recording.replicate-to.options"):
                    await self._stack.enter_async_context(self.replica)
            for camera in self.cameras.running():
                await self._attach(camera)
            self.cameras.on_started.append(self._attach)
            self.cameras.on_stopping.append(self._detach)
            # once in the cluster: on whichever node holds the job's lease
            jobs = self.cluster.jobs
            sweep = self.config.recording.sweep_interval
            self._tasks.append(asyncio.create_task(jobs.run("retention", lambda: self.sweeper.run_forever(sweep)), name="retention"))
            if self.replica is not None:
                self._tasks.append(asyncio.create_task(jobs.run("replication", self._replicate_forever), name="replication"))
            verifier = self.verifier
            if verifier is not None and verifier.interval_hours > 0:
                self._tasks.append(asyncio.create_task(jobs.run("replica-verify", verifier.run_forever), name="replica-verify"))
        except BaseException:
            await self._stack.aclose()
            raise
        logger.info("recording: %d cameras to %s", len(self.recorders), self.storage.id())
        return self

    async def _attach(self, camera: Camera) -> None:
        """Record a camera that (now) runs here."""
        if not camera.config.record or camera.id in self.recorders:
            return
        recorder = Recorder(
            camera, self.storage, self.catalogue,
            segment_seconds=self.config.recording.segment_seconds,
            events=self.events, audit=self.audit, on_stored=self._on_stored, idle_flush=self._idle_flush,
            mask_state=self._mask_state(camera.id), fence=self.cluster.fence(camera.id),
            resumed_reason=self.cameras.restart_reason(camera.id) or self.cluster.gap_reason(camera.id),
            faults=self.faults, make_room=self.make_room,
        )
        await recorder.__aenter__()
        self.recorders[camera.id] = recorder

    async def _detach(self, camera: Camera) -> None:
        """Store the last segment of a camera about to stop here."""
        recorder = self.recorders.pop(camera.id, None)
        if recorder is not None:
            await recorder.stop()

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):
            self.cameras.on_started.remove(self._attach)
            self.cameras.on_stopping.remove(self._detach)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.verifier is not None:
            await self.verifier.aclose()
        recorders = list(self.recorders.values())
        self.recorders.clear()
        # recorders first (they store their last segment), then backends
        results = await asyncio.gather(*(r.stop() for r in recorders), return_exceptions=True)
        for recorder, result in zip(recorders, results):
            if isinstance(result, BaseException):
                logger.error("camera %s: the recorder failed to stop cleanly: %s", recorder.camera_id, result)
        await self.faults.aclose()
        await self._stack.aclose()

    # -- what playback needs -----------------------------------------------------------
    async def timeline(self, camera: str, start: float, end: float) -> list[Segment | Gap]:
        return await self.catalogue.timeline(camera, start, end)

    async def spans(self, camera: str, start: float, end: float) -> list[Span | Gap]:
        return await self.catalogue.spans(camera, start, end)

    async def segment(self, camera: str, segment_id: int) -> Segment:
        return await self.catalogue.segment(camera, segment_id)

    async def segment_stream(self, segment: Segment, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of a stored segment; falls back to the replica."""
        backends = [b for b in (self.storage, self.replica) if b is not None]
        backends.sort(key=lambda b: b.id() != segment.backend)
        for i, backend in enumerate(backends):
            try:
                async for chunk in backend.open_segment(segment.storage_key, start, end):
                    yield chunk
                return
            except NotFound:
                if i == len(backends) - 1:
                    raise

    async def read_segment(self, segment: Segment) -> bytes:
        """A stored segment's bytes, whole."""
        return b"".join([chunk async for chunk in self.segment_stream(segment)])

    def _mask_state(self, camera: str) -> Callable[[float], tuple[int, str]] | None:
        masks = self.masks
        return None if masks is None else lambda wallclock: masks.recorded_state(camera, wallclock)

    async def mask_plan(self, camera: str) -> MaskPlan:
        """The masks to apply to the camera's recordings now."""
        if self.masks is None:
            return MaskPlan(camera=camera, version=0, digest="")
        return await self.masks.plan(camera)

    async def masked_segment(self, segment: Segment, plan: MaskPlan) -> Remasked | None:
        """None: serve the stored bytes (recorded under ``plan``'s masks, or none apply now);
        else the segment re-masked with ``plan`` (cached)."""
        if plan.serves_as_recorded(segment):
            return None
        return await self.remasker.masked(segment, plan)

    # -- holds ---------------------------------------------------------------------------
    async def place_hold(self, camera: str, start: float, end: float, reason: str, by: str, source: str = "manual") -> Hold:
        return await self.catalogue.place_hold(camera, start, end, reason, by, source)

    async def release_hold(self, hold_id: int, by: str) -> Hold:
        return await self.catalogue.release_hold(hold_id, by)

    async def active_holds(self, camera: str | None = None) -> list[Hold]:
        return await self.catalogue.active_holds(camera)

    # -- operations ----------------------------------------------------------------------
    async def make_room(self, needed: int) -> int:
        """The storage is full: delete the oldest recordings no hold keeps, enough for a few
        segments of ``needed`` bytes; returns how many were deleted (0: nothing may go)."""
        async with self._room_lock:  # the recorders find the disk full together: one sweep
            deleted = await self.sweeper.make_room(needed * ROOM_SEGMENTS)
        self._usage = None
        return deleted

    async def sweep(self, now: float | None = None) -> SweepReport:
        report = await self.sweeper.sweep(now)
        self._usage = None  # deleted segments: measure again
        return report

    async def replication_lag(self) -> ReplicationLag | None:
        return await self.catalogue.replication_lag() if self.replica is not None else None

    async def usage(self) -> StorageUsage | None:
        """The storage's usage, measured at most every USAGE_REFRESH seconds (concurrent
        callers share one measurement) plus the segments stored since."""
        async with self._usage_lock:
            if self._usage is None or time.monotonic() - self._usage_at > USAGE_REFRESH:
                try:
                    self._usage = await self.storage.usage()
                except (StorageFailed, OSError, TimeoutError) as exc:  # said once by the recorders' fault; no traceback
                    logger.warning("recording: storage usage unavailable: %s", exc)
                    return None
                except Exception:
                    logger.exception("recording: storage usage unavailable")
                    return None
                self._usage_at = time.monotonic()
            return self._usage

    async def status(self) -> RecordingStatus:
        return RecordingStatus(
            cameras={cid: r.stats for cid, r in self.recorders.items()},
            usage=await self.usage(),
            replication=await self.replication_lag(),
        )

    # -- replication ---------------------------------------------------------------------
    def _on_stored(self, segment: Segment) -> None:
        self._replicate_wake.set()
        usage = self._usage
        if usage is not None:  # keep the measurement current without walking the storage again
            free = None if usage.free_bytes is None else max(0, usage.free_bytes - segment.bytes)
            self._usage = StorageUsage(used_bytes=usage.used_bytes + segment.bytes, free_bytes=free)

    async def replicate_pending(self) -> int:
        """Copy unreplicated segments to the replica, oldest first; returns how many."""
        assert self.replica is not None
        copied = 0
        while batch := await self.catalogue.unreplicated(REPLICATE_BATCH):
            for seg in batch:
                try:
                    data = b"".join([c async for c in self.storage.open_segment(seg.storage_key)])
                except NotFound:  # deleted by retention meanwhile
                    logger.warning("replication: %s is gone from %s; skipping", seg.storage_key, self.storage.id())
                    await self.catalogue.mark_replicated(seg.id)
                    continue
                await self.replica.write_segment(seg.storage_key, data)
                await self.catalogue.mark_replicated(seg.id)
                copied += 1
        return copied

    async def _replicate_forever(self) -> None:
        delay = 1.0
        self._replicate_wake.set()
        while True:
            await self._replicate_wake.wait()
            self._replicate_wake.clear()
            try:
                await self.replicate_pending()
                delay = 1.0
            except Exception as exc:
                lag = await self.catalogue.replication_lag()
                logger.warning("replication: %s; %d segments behind, retrying in %.0fs", exc, lag.pending, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, REPLICATE_BACKOFF_MAX)
                self._replicate_wake.set()


async def recording_ctx(app: Any) -> AsyncIterator[None]:
    """aiohttp cleanup context: ``app.cleanup_ctx.append(recording_ctx)`` after the cameras'."""
    from gateway.masks import MASKS  # not at the top: gateway.masks imports this package
    service = RecordingService(
        app[CONFIG], app[PLUGINS], app[DATABASE], app[AUDIT], app[EVENTS], app[CAMERAS], masks=app.get(MASKS),
        cluster=app.get(CLUSTER_ROLE, SINGLE_NODE),
    )
    async with service:
        app[RECORDING] = service
        yield
