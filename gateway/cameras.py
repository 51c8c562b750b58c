"""Camera runtimes: each camera owns its vendor, its source and its hub.

This is the seam the architecture asks for: nothing outside a ``Camera`` touches its hub
directly; readers are opened through ``Camera.open_reader``. When cameras move to worker
processes or other nodes, this is the class that becomes a proxy.

Privacy masks. The source publishes into a private ``_Inlet``, which keeps the camera's
*unmasked* hub. A camera without masks is passthrough: the inlet forwards every packet to
the public hub (``Camera.hub``) untouched. A camera with masks runs a ``MaskStage`` that
reads the unmasked hub and publishes masked packets to the public hub; the inlet then
forwards nothing. Every reader (live, LL-HLS, recorder, snapshot, export, re-stream) is
opened on the public hub, so none can see the unmasked picture of a masked camera. The
unmasked hub is deliberately not an attribute, property or method result of ``Camera``
(nor of ``RtspSource``, which only sees the inlet): code outside this module has no name
by which to reach it, and a future reader cannot be wired to it by mistake.

Changing masks switches live. Public hub and viewers stay; the masked path starts with a
new ``StreamInfo`` and a keyframe marked as a discontinuity, and the public hub's
timestamps keep increasing across the switch (the inlet drops anything that would not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import msgspec

from gateway.config import CameraConfig, Config, IngestConfig, LiveConfig, MaskingConfig, PtzConfig
from gateway.errors import CameraUnavailable, Conflict, NotFound
from gateway.events import EventBus
from gateway.interfaces import CameraVendor, MaskFilter, MaskShape, PtzCapabilities, StreamProfile
from gateway.media.hub import HubReader, HubStats, StreamHub
from gateway.media.mask_projection import MaskProjector
from gateway.media.masking import MaskStage, PictureTap, StageStats, instantiate_filters
from gateway.media.on_demand import OnDemandStream
from gateway.media.packet import MediaPacket, StreamInfo
from gateway.media.source import RtspSource, SourceState, SourceStatus
from gateway.ptz_positions import PositionLog
from gateway.ptz_tracking import PoseTracker, TrackingSettings
from gateway.scene import Optics

if TYPE_CHECKING:
    import av

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CameraSnapshot:
    """A camera's state at one instant, for the API."""

    config: CameraConfig
    status: SourceStatus
    info: StreamInfo | None
    stats: HubStats
    ptz: PtzCapabilities
    #: Privacy masks applied now (config and database together).
    masks: int = 0
    #: The streams a viewer may ask for now.
    profiles: tuple[StreamProfile, ...] = (StreamProfile.MAIN,)
    #: Scene masks of a PTZ camera: whether its position is known (None: no scene masks).
    mask_position_known: bool | None = None


def config_shapes(config: CameraConfig) -> tuple[MaskShape, ...]:
    """The masks a camera's config declares, as shapes for the mask stage."""
    return tuple(
        MaskShape(points=tuple(m.points), filter=m.filter, options=dict(m.options), drawn_at=m.drawn_at)
        for m in config.masks
    )


class _Inlet:
    """Where the source's packets enter a camera; the only holder of the unmasked hub.

    Runs on the event loop (the source hands packets over with ``call_soon_threadsafe``).
    """

    def __init__(self, camera_id: str, public: StreamHub, *, masked: bool) -> None:
        self._unmasked = StreamHub(f"{camera_id} (unmasked)")
        self._public = public
        self._name = camera_id
        #: True while a mask stage feeds the public hub: no source packet goes there then.
        self.masked = masked
        self._need_keyframe = False
        self._on_unmasked: Callable[[], None] | None = None
        self._last_pts: int | None = None

    # -- from the source ---------------------------------------------------------------
    def publish(self, packet: MediaPacket) -> None:
        self._unmasked.publish(packet)
        if self.masked:
            if self._on_unmasked is None or not packet.keyframe or not self._after_last(packet):
                return
            # masks removed: back to passthrough at a keyframe, so viewers decode at once
            self.masked, done, self._on_unmasked = False, self._on_unmasked, None
            self._need_keyframe = False
            done()
            packet = replace(packet, discontinuity=True)
        elif self._need_keyframe:
            if not packet.keyframe:
                return
            self._need_keyframe = False
            packet = replace(packet, discontinuity=True)
        self._to_public(packet)

    # -- from the mask stage -----------------------------------------------------------
    def publish_masked(self, packet: MediaPacket) -> None:
        if self.masked:
            self._to_public(packet)

    def _after_last(self, packet: MediaPacket) -> bool:
        return self._last_pts is None or packet.pts > self._last_pts

    def _to_public(self, packet: MediaPacket) -> None:
        if not self._after_last(packet):
            return  # never let the public timeline run backwards across a switch
        self._last_pts = packet.pts
        self._public.publish(packet)

    # -- from the camera ---------------------------------------------------------------
    def open_unmasked(self) -> HubReader:
        return self._unmasked.open_reader(f"mask stage {self._name}", lossless=False)

    @property
    def last_pts(self) -> int | None:
        return self._last_pts

    def mask_now(self) -> None:
        """From this packet on, only the mask stage feeds the public hub."""
        self.masked = True
        self._on_unmasked = None

    def unmask_at_next_keyframe(self, done: Callable[[], None]) -> None:
        self._on_unmasked = done

    def close(self) -> None:
        self._unmasked.close()


#: Seconds a sub stream that gave no picture is not asked again.
SUB_RETRY = 60


class Camera:
    def __init__(
        self,
        config: CameraConfig,
        vendor_cls: type[CameraVendor],
        ingest: IngestConfig,
        events: EventBus,
        *,
        masking: MaskingConfig | None = None,
        filters: Mapping[str, type[MaskFilter]] | None = None,
        live: LiveConfig | None = None,
        ptz: PtzConfig | None = None,
        positions: PositionLog | None = None,
    ) -> None:
        self.config = config
        self._positions = positions
        self.id = config.id
        self.vendor = vendor_cls(config, config.options)
        self.hub = StreamHub(config.id)
        self._events = events
        if config.ingest_client is not None and config.ingest_client != ingest.client:
            ingest = msgspec.structs.replace(ingest, client=config.ingest_client)  # this camera's own client
        self._ingest = ingest
        self._stack = contextlib.AsyncExitStack()
        self._failed: SourceStatus | None = None
        self._masking = masking or MaskingConfig()
        self._filters = instantiate_filters(filters or {})
        self._shapes = config_shapes(config)
        self._stage: MaskStage | None = None
        self._mask_lock = asyncio.Lock()
        self._started = False
        self._retiring: set[asyncio.Task[None]] = set()
        self._picture_tap: PictureTap | None = None
        # Masked from the first packet when the config declares masks: fail closed.
        inlet = _Inlet(config.id, self.hub, masked=bool(self._shapes))
        self._inlet = inlet
        self._source = RtspSource(
            config.id, inlet, lambda: self.vendor.stream_url(StreamProfile.MAIN), ingest,  # type: ignore[arg-type]
            request_keyframe=lambda: self.vendor.request_keyframe(StreamProfile.MAIN),
        )
        self._source.add_listener(self._on_status)
        self._live = live or LiveConfig()
        ptz = ptz or PtzConfig()
        o = config.ptz_optics
        self.tracking = TrackingSettings(
            poll_moving=ptz.position_poll_moving, poll_idle=ptz.position_poll_idle,
            settle_seconds=ptz.position_settle_seconds, stale_seconds=ptz.position_stale_seconds,
            capture_latency=o.capture_latency, position_latency=o.position_latency,
            request_timeout=ptz.command_timeout_seconds,
        )
        self.tracker: PoseTracker | None = None
        self.projector: MaskProjector | None = None
        self._mask_position_known: bool | None = None
        # Never masked, so never served while the camera is: masked cameras serve the
        # masked main stream to every viewer.
        self._sub_broken_until = 0.0
        self.sub = OnDemandStream(
            f"{config.id} (sub)", lambda: self.vendor.stream_url(StreamProfile.SUB), ingest,
            request_keyframe=lambda: self.vendor.request_keyframe(StreamProfile.SUB),
            linger=self._live.sub_stream_linger, allowed=lambda: not self._shapes and not self._inlet.masked,
        )

    # -- PTZ positions, for masks anchored to the scene ----------------------------------
    def _optics(self) -> Optics:
        vendor_optics = self.vendor.ptz_optics()
        if vendor_optics is not None:
            return vendor_optics
        o = self.config.ptz_optics
        return Optics(pan_range=o.pan_range, tilt_range=o.tilt_range, fov_wide=o.fov[0], fov_narrow=o.fov[1], projection=o.projection)

    @property
    def reports_position(self) -> bool:
        """The vendor reports where the camera points (so masks can follow it)."""
        return self.tracker is not None and self.tracker.supported

    @property
    def mask_position_known(self) -> bool | None:
        """For a camera with scene masks: whether the position of its newest picture was
        known (False: the whole picture is masked). None: no scene masks."""
        return self._mask_position_known

    def _on_mask_position(self, known: bool) -> None:
        if known != self._mask_position_known:
            self._mask_position_known = known
            self._events.emit("camera.mask_position", camera=self.id, known=known,
                              reason=None if known else "privacy mask: position unknown")

    async def _start_tracker(self) -> None:
        """Every camera gets a tracker, reading positions for as long as it runs (a mask
        drawn later must be placeable on the pictures recorded before it); it stops at the
        first answer of a vendor that cannot report them (no PTZ, no GetStatus)."""
        log = self._positions
        tracker = PoseTracker(
            self.id, self.vendor.ptz_status, self.tracking,
            on_command=(lambda at: log.command(self.id, at)) if log is not None else None,
            on_reading=(lambda sample: log.reading(self.id, sample)) if log is not None else None,
        )
        self.tracker = tracker
        self.projector = MaskProjector(tracker, self._optics())
        await self._stack.enter_async_context(tracker)

    def _on_status(self, status: SourceStatus) -> None:
        if status.state in (SourceState.ONLINE, SourceState.OFFLINE):
            self._events.emit(f"camera.{status.state}", camera=self.id, error=status.last_error)

    async def start(self) -> None:
        try:
            await self._stack.enter_async_context(self.vendor)
        except Exception as exc:  # one broken vendor must not stop the others
            logger.exception("camera %s: vendor %s failed to start", self.id, self.config.vendor)
            self._failed = SourceStatus(SourceState.OFFLINE, time.time(), f"vendor failed to start: {exc}")
            self._events.emit("camera.offline", camera=self.id, error=self._failed.last_error)
            return
        await self._start_tracker()
        async with self._mask_lock:
            self._started = True
            await self._apply_masks()
        await self._stack.enter_async_context(self._source)

    async def stop(self) -> None:
        async with self._mask_lock:
            self._started = False
            stage, self._stage = self._stage, None
            if stage is not None:
                await stage.aclose()
        for task in list(self._retiring):
            await task
        await self.sub.aclose()
        self.hub.close()
        await self._stack.aclose()
        self._inlet.close()

    @property
    def status(self) -> SourceStatus:
        return self._failed or self._source.status

    # -- masked pictures, decoded once --------------------------------------------------
    def tap_masked_pictures(self, tap: PictureTap | None) -> None:
        """Give ``tap`` every picture the mask stage masks (in its worker thread), so a
        reader that wants decoded pictures (analytics) need not decode the masked stream
        again. None stops it. Pictures come only while the camera is masked."""
        self._picture_tap = tap

    def _masked_picture(self, pts: int, wallclock: float, picture: av.VideoFrame) -> None:
        tap = self._picture_tap
        if tap is not None:
            tap(pts, wallclock, picture)

    # -- privacy masks -----------------------------------------------------------------
    @property
    def masks(self) -> tuple[MaskShape, ...]:
        """The masks applied now (config and database together)."""
        return self._shapes

    @property
    def masked(self) -> bool:
        return bool(self._shapes)

    @property
    def keyframe_requests(self) -> int:
        """Keyframes the camera sent on request for new connections (main and sub stream)."""
        return self._source.keyframe_requests + self.sub.keyframe_requests

    def set_filters(self, filters: Mapping[str, type[MaskFilter]]) -> None:
        """The filter plugins; set before ``start`` (a running stage keeps its own)."""
        self._filters = instantiate_filters(filters)

    async def set_masks(self, shapes: Sequence[MaskShape]) -> None:
        """Apply ``shapes`` live: start, change or stop the mask stage; viewers stay.

        A change that is not a pure removal (a mask added, widened or moved) leaves no
        picture from before it anywhere: the public hub forgets its GOP (new viewers,
        snapshots and the LL-HLS window wait for the next keyframe) and the mask stage
        restarts, so that keyframe comes at once and is masked with the new shapes."""
        async with self._mask_lock:
            previous, self._shapes = self._shapes, tuple(shapes)
            widened = any(shape not in previous for shape in self._shapes)
            if self._started:
                await self._apply_masks(restart=widened)
            else:  # applied at start; until then the inlet already fails closed
                self._inlet.masked = bool(self._shapes)

    async def _apply_masks(self, *, restart: bool = False) -> None:
        stage = self._stage
        if self._shapes:
            self._inlet.mask_now()
            self.sub.close_viewers()  # its viewers reconnect and get the masked main stream
            if stage is not None and not restart:
                stage.set_shapes(self._shapes)
                return
            if restart and self._inlet.last_pts is not None:
                # Synchronously, before anything else runs on the loop: from here on only
                # pictures masked with the new shapes reach the public hub.
                self.hub.forget_gop()
            if stage is not None:
                self._stage = None
                await stage.aclose()  # closed at once: nothing it still holds is published
            self._stage = MaskStage(
                self.id,
                self._inlet.open_unmasked(),
                self._inlet.publish_masked,
                self._shapes,
                self._filters,
                self._masking,
                after_pts=self._inlet.last_pts,
                projector=self.projector,
                on_position=self._on_mask_position,
                on_picture=self._masked_picture,
            )
            await self._stage.__aenter__()
            logger.info("camera %s: masking %d region(s)", self.id, len(self._shapes))
        elif stage is not None:
            # Keep the masked picture flowing until the camera's next keyframe, then switch.
            self._inlet.unmask_at_next_keyframe(lambda: self._retire(stage))
            logger.info("camera %s: masks removed; passthrough from the next keyframe", self.id)
        else:
            self._inlet.masked = False

    def _retire(self, stage: MaskStage) -> None:
        if self._stage is stage:
            self._stage = None
        task = asyncio.get_running_loop().create_task(stage.aclose(), name=f"mask-retire:{self.id}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def mask_stats(self) -> StageStats | None:
        """CPU per step of the running mask stage, if the camera is masked."""
        return self._stage.stats if self._stage is not None else None

    def snapshot(self) -> CameraSnapshot:
        return CameraSnapshot(
            config=self.config,
            status=self.status,
            info=self.hub.info,
            stats=self.hub.stats(),
            ptz=self.vendor.ptz_capabilities(),
            masks=len(self._shapes),
            profiles=self.profiles,
            mask_position_known=self._mask_position_known if any(s.drawn_at is not None for s in self._shapes) else None,
        )

    def latest_keyframe(self) -> MediaPacket | None:
        """The newest keyframe of the main stream (for snapshots), if any."""
        return self.hub.latest_keyframe()

    @property
    def profiles(self) -> tuple[StreamProfile, ...]:
        """The streams a viewer may ask for now: the sub stream only while unmasked."""
        offered = self.vendor.profiles()
        if StreamProfile.SUB in offered and not self.masked and not self._inlet.masked:
            return (StreamProfile.MAIN, StreamProfile.SUB)
        return (StreamProfile.MAIN,)

    async def open_live_reader(self, name: str, profile: StreamProfile) -> tuple[HubReader, StreamProfile]:
        """A reader for a live viewer, on ``profile`` if the camera offers it now, else on
        the main stream; returns the reader and the profile it reads.

        A sub stream that gives no picture sends its viewers to the main stream, and for
        ``SUB_RETRY`` seconds the next ones too: a wrong sub-url must not blank the wall."""
        if profile == StreamProfile.SUB and StreamProfile.SUB in self.profiles and time.monotonic() >= self._sub_broken_until:
            try:
                return await self.sub.open_reader(name, timeout=self._live.sub_stream_timeout), StreamProfile.SUB
            except CameraUnavailable as exc:
                self._sub_broken_until = time.monotonic() + SUB_RETRY
                logger.warning("camera %s: %s; viewers get the main stream for %ds", self.id, exc, SUB_RETRY)
        return self.open_reader(name), StreamProfile.MAIN

    def open_reader(
        self, name: str, *, lossless: bool = False, on_overflow: Callable[[HubReader], None] | None = None
    ) -> HubReader:
        """Open a reader on the camera's main stream. Raises if the camera has no picture.

        ``on_overflow`` is called (on the loop) each time the reader falls behind and skips.
        """
        if self.hub.info is None:
            raise CameraUnavailable(f"camera {self.id} has no picture yet ({self.status.state})")
        return self.hub.open_reader(name, lossless=lossless, on_overflow=on_overflow)


#: The gap in a camera's recording while it restarts with a changed config.
RESTARTED = "camera restarted: its configuration changed"
#: What describes a camera without changing what it runs: changed alone, no restart.
DESCRIPTIVE_FIELDS = ("name", "area", "tags", "owner", "address", "location", "heading", "fov_degrees")


def _described_only(old: CameraConfig, new: CameraConfig) -> bool:
    return msgspec.structs.replace(old, **{f: getattr(new, f) for f in DESCRIPTIVE_FIELDS}) == new


#: Called with a camera object before it starts (masks, filters) or after it started.
CameraHook = Callable[["Camera"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CameraSettings:
    """The parts of ``gateway.toml`` every camera runs with; a change restarts them all."""

    ingest: IngestConfig
    live: LiveConfig
    masking: MaskingConfig
    ptz: PtzConfig

    @classmethod
    def of(cls, config: Config) -> CameraSettings:
        return cls(config.ingest, config.live, config.masking, config.ptz)


@dataclass(frozen=True, slots=True)
class CameraChanges:
    """What a new set of camera configs changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    #: The changed cameras that ran here and restarted (the others took a new name, area
    #: or tags without a restart, or were dormant here).
    restarted: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


class CameraManager:
    """Every configured camera, and which of them run in this process.

    A single node runs them all (``owns_all``). In a cluster the ownership loop decides:
    ``start_camera`` and ``stop_camera`` run one camera here or stop it, and services that
    attach to running cameras (recorders, health, analytics) follow through the
    ``on_started`` / ``on_stopping`` hooks. A ``Camera`` runs once: each start makes a
    fresh object, so nothing of a previous run (hub, readers, mask stage) leaks into the
    next. A camera that does not run here keeps a dormant object, for its config and for
    the API's description of it.
    """

    def __init__(
        self,
        config: Config,
        vendors: dict[str, type[CameraVendor]],
        events: EventBus,
        *,
        filters: Mapping[str, type[MaskFilter]] | None = None,
        positions: PositionLog | None = None,
        owns_all: bool = True,
        cameras: Sequence[CameraConfig] | None = None,
    ) -> None:
        def make(c: CameraConfig) -> Camera:
            s = self.settings
            return Camera(
                c, vendors[c.vendor], s.ingest, events, masking=s.masking, filters=filters, live=s.live,
                ptz=s.ptz, positions=positions,
            )

        self.settings = CameraSettings.of(config)
        self._make = make
        configs = config.cameras if cameras is None else cameras
        self._configs = {c.id: c for c in configs if c.enabled}
        #: The last config of each camera removed since start (its recordings stay, and
        #: their retention still follows it).
        self._removed: dict[str, CameraConfig] = {}
        #: Camera id -> why it is restarting (its recording's gap says so).
        self._restarting: dict[str, str] = {}
        self._cameras = {cid: make(c) for cid, c in self._configs.items()}
        self._running: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {cid: asyncio.Lock() for cid in self._configs}
        self._owns_all = owns_all
        #: Before a camera object starts: give it its filters and current masks.
        self.on_prepare: list[CameraHook] = []
        #: After a camera started here / before it stops here.
        self.on_started: list[CameraHook] = []
        self.on_stopping: list[CameraHook] = []
        #: After a camera was removed from the configuration (stopped first if it ran
        #: here): a cluster node releases its lease.
        self.on_removed: list[Callable[[str], Awaitable[None]]] = []

    async def __aenter__(self) -> CameraManager:
        if self._owns_all:
            await asyncio.gather(*(self.start_camera(cid) for cid in self._configs))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(self.stop_camera(cid) for cid in list(self._running)))

    def __iter__(self) -> Iterator[Camera]:
        """Every configured camera, running here or not."""
        return iter(self._cameras.values())

    def __len__(self) -> int:
        return len(self._cameras)

    def ids(self) -> list[str]:
        return list(self._configs)

    def running(self) -> list[Camera]:
        """The cameras running in this process now."""
        return [self._cameras[cid] for cid in self._configs if cid in self._running]

    def is_running(self, camera_id: str) -> bool:
        return camera_id in self._running

    def get(self, camera_id: str) -> Camera:
        camera = self._cameras.get(camera_id)
        if camera is None:
            raise NotFound(f"no camera {camera_id!r}")
        return camera

    def config(self, camera_id: str) -> CameraConfig | None:
        """A camera's config now, or the last one of a camera removed since start."""
        return self._configs.get(camera_id) or self._removed.get(camera_id)

    def configs(self) -> list[CameraConfig]:
        """Every camera's config now, in order."""
        return list(self._configs.values())

    def restart_reason(self, camera_id: str) -> str | None:
        """While a camera restarts with a new config (for its ``on_started`` hooks): why."""
        return self._restarting.get(camera_id)

    def removed(self) -> list[CameraConfig]:
        """The last config of every camera removed since start (its recordings stay)."""
        return list(self._removed.values())

    async def start_camera(self, camera_id: str) -> Camera:
        """Run a camera here (a no-op if it runs already). NotFound if it is no longer configured."""
        lock = self._locks.get(camera_id)
        if lock is None:
            raise NotFound(f"no camera {camera_id!r}")
        async with lock:
            if camera_id not in self._configs:
                raise NotFound(f"camera {camera_id!r} was removed")
            return await self._start_locked(camera_id)

    async def stop_camera(self, camera_id: str) -> None:
        """Stop a camera running here; a dormant object takes its place."""
        lock = self._locks.get(camera_id)
        if lock is None:
            return
        async with lock:
            await self._stop_locked(camera_id)

    async def _start_locked(self, camera_id: str) -> Camera:
        camera = self._cameras[camera_id]
        if camera_id in self._running:
            return camera
        for prepare in self.on_prepare:
            await prepare(camera)
        await camera.start()
        self._running.add(camera_id)
        await self._notify(self.on_started, camera, "started")
        return camera

    async def _stop_locked(self, camera_id: str) -> None:
        if camera_id not in self._running:
            return
        camera = self._cameras[camera_id]
        await self._notify(self.on_stopping, camera, "stopping")
        self._running.discard(camera_id)
        self._cameras[camera_id] = self._make(self._configs[camera_id])
        try:
            await camera.stop()
        except Exception:
            logger.exception("camera %s: failed to stop cleanly", camera_id)

    # -- changes of the configuration (reload, cameras managed through the API) ----------
    async def add_camera(self, config: CameraConfig) -> None:
        """A new camera: a single node starts it; in a cluster it becomes takeable (the
        ownership loop reads ``ids()`` at every tick)."""
        if config.id in self._configs:
            raise Conflict(f"camera {config.id!r} exists")
        self._removed.pop(config.id, None)
        self._configs[config.id] = config
        self._cameras[config.id] = self._make(config)
        self._locks[config.id] = asyncio.Lock()
        logger.info("camera %s: added", config.id)
        if self._owns_all:
            await self.start_camera(config.id)

    async def remove_camera(self, camera_id: str) -> None:
        """Stop a camera (if it runs here: its recorder stores its last segment) and forget
        it; its recordings stay. ``on_removed`` hooks follow (a cluster node's lease)."""
        lock = self._locks.get(camera_id)
        if lock is None:
            raise NotFound(f"no camera {camera_id!r}")
        async with lock:
            await self._stop_locked(camera_id)
            self._removed[camera_id] = self._configs.pop(camera_id)
            self._cameras.pop(camera_id, None)
            self._locks.pop(camera_id, None)
        logger.info("camera %s: removed", camera_id)
        for hook in list(self.on_removed):
            try:
                await hook(camera_id)
            except Exception:
                logger.exception("camera %s: a removed hook failed", camera_id)

    async def replace_camera(self, config: CameraConfig, *, restart: bool = False) -> bool:
        """A camera's config changed: if it runs here it restarts alone with the new one
        (no other camera is touched), unless only what describes it changed (name, area,
        tags, place): then it keeps running, viewers and recording untouched. A dormant
        one just takes the new config. Returns whether it restarted."""
        lock = self._locks.get(config.id)
        if lock is None:
            raise NotFound(f"no camera {config.id!r}")
        async with lock:
            old = self._configs[config.id]
            was_running = config.id in self._running
            if was_running and not restart and _described_only(old, config):
                self._configs[config.id] = config
                self._cameras[config.id].config = config
                logger.info("camera %s: description changed (no restart)", config.id)
                return False
            await self._stop_locked(config.id)
            self._configs[config.id] = config
            self._cameras[config.id] = self._make(config)
            logger.info("camera %s: config changed%s", config.id, "; restarting" if was_running else "")
            if was_running:
                self._restarting[config.id] = RESTARTED
                try:
                    await self._start_locked(config.id)
                finally:
                    self._restarting.pop(config.id, None)
            return was_running

    async def apply(self, configs: Sequence[CameraConfig], settings: CameraSettings | None = None) -> CameraChanges:
        """Make the cameras ``configs`` (disabled ones count as absent): removed ones stop,
        changed ones restart alone, added ones start; the others are not touched. New
        ``settings`` (ingest, live, masking, PTZ) change every camera."""
        wanted = {c.id: c for c in configs if c.enabled}
        settings_changed = settings is not None and settings != self.settings
        if settings is not None:
            self.settings = settings
        changes = CameraChanges(
            added=tuple(cid for cid in wanted if cid not in self._configs),
            removed=tuple(cid for cid in self._configs if cid not in wanted),
            changed=tuple(
                cid for cid, c in wanted.items() if cid in self._configs and (settings_changed or c != self._configs[cid])
            ),
        )
        results = await asyncio.gather(
            *(self.replace_camera(wanted[cid], restart=settings_changed) for cid in changes.changed),
            *(self.remove_camera(cid) for cid in changes.removed),
        )
        await asyncio.gather(*(self.add_camera(wanted[cid]) for cid in changes.added))
        # keep the configured order (lists, the cluster's shares)
        self._configs = {cid: self._configs[cid] for cid in wanted if cid in self._configs}
        self._cameras = {cid: self._cameras[cid] for cid in self._configs}
        restarted = tuple(cid for cid, r in zip(changes.changed, results, strict=False) if r)
        return replace(changes, restarted=restarted)

    @staticmethod
    async def _notify(hooks: list[CameraHook], camera: Camera, what: str) -> None:
        for hook in list(hooks):
            try:
                await hook(camera)
            except Exception:  # one service's failure must not keep the camera from the others
                logger.exception("camera %s: a %s hook failed", camera.id, what)
