"""The analytics runner: decodes a camera's public stream once and feeds its analyzers.

Per camera with ``[[camera.analytics]]`` entries, a ``CameraAnalytics``:

- reads the camera's *public* hub (``Camera.open_reader``), so privacy masks apply to every
  analyzer exactly as to every viewer; analyzers configured with ``stream = "sub"`` read the
  camera's sub stream instead (a quarter of the decoding at 360p) while the camera offers it,
  which it never does while masked: then they get the masked main stream like the others;
- hands packet references to one decode thread (PyAV), never decoding on the event loop;
  when the thread falls behind it skips to the next keyframe, like the mask stage;
- offers each decoded picture to every analyzer whose rate is due (by the picture's 90 kHz
  timestamp), through a one-picture mailbox per analyzer: a busy analyzer's waiting picture
  is replaced by the newer one, so a slow analyzer sees fewer pictures and holds up nobody;
- runs each analyzer in a thread of its own. An analyzer that raises, or takes longer than
  its ``max_seconds`` on one picture (hung), is counted, logged, reported as an
  ``analyzer.failed`` event and replaced by a fresh instance after a back-off (1 s doubling
  to a minute). The camera, its recording and its other analyzers carry on.

Observations come back to the event loop, where the runner names their camera and
analyzer and hands them to its listeners (the count store, plate reading's store) and to
the event bus as ``analytics.<kind>`` events.

Cameras start and stop at run time (the cluster moves them between nodes): ``attach`` a
``Camera`` object, ``detach`` it by id. The runner never starts or stops cameras.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
import msgspec
import numpy as np

from gateway.config import AnalyticsConfig, analytics_entries
from gateway.errors import CameraUnavailable, ConfigError, StreamClosed
from gateway.interfaces import Analyzer, AnalyzerFrame, Event, Observation, StreamProfile
from gateway.media.decoding import STOP, FrameDecoder, drain, forward, serve
from gateway.media.packet import CLOCK_RATE, MediaPacket

if TYPE_CHECKING:
    from gateway.cameras import Camera
    from gateway.media.hub import HubReader
    from gateway.events import EventBus

logger = logging.getLogger(__name__)

#: Packets waiting for the decode thread (a cached GOP fits).
INBOX_PACKETS = 256
#: A picture older than this when the decode thread reaches it: skip to the next keyframe.
MAX_LAG = 2.0
#: Seconds between tries to open a reader on a camera that has no picture yet.
OPEN_RETRY = 0.5
#: Back-off before a crashed analyzer is started again: doubles per crash up to the max.
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
#: An analyzer that ran this long without crashing starts from the initial back-off again.
BACKOFF_RESET = 60.0
#: How often hung analyzers are looked for.
WATCHDOG_INTERVAL = 0.5
#: How long a camera's stop waits for its analyzers to finish the picture in hand.
STOP_WAIT = 2.0

Listener = Callable[[Observation], Any]


@dataclass(slots=True)
class AnalyzerStats:
    """One analyzer of one camera, since it was attached."""

    analyzer: str
    fps: float
    frames: int = 0  #: pictures analysed
    dropped: int = 0  #: pictures replaced in the mailbox while the analyzer was busy
    observations: int = 0
    crashes: int = 0  #: raised, hung, or failed to start
    restarts: int = 0
    cpu_seconds: float = 0.0  #: thread CPU of ``analyze`` calls
    state: str = "starting"  #: starting, running, backoff, hung, stopped
    last_error: str | None = None


@dataclass(slots=True)
class DecodeStats:
    packets: int = 0
    frames: int = 0
    skipped: int = 0  #: packets skipped because the decode thread fell behind
    cpu_seconds: float = 0.0  #: thread CPU of decoding (conversions are the analyzers')
    #: Masked pictures taken from the camera's mask stage, which decoded them already.
    shared: int = 0


@dataclass(slots=True)
class CameraStats:
    camera: str
    decode: DecodeStats  #: the main stream's (or the one stream read)
    analyzers: list[AnalyzerStats] = field(default_factory=list)
    #: Per stream asked for ("main", "sub").
    streams: dict[str, DecodeStats] = field(default_factory=dict)


def frame_converter(frame: av.VideoFrame) -> Callable[[str], np.ndarray]:
    def convert(kind: str) -> np.ndarray:
        if kind == "gray":
            if frame.format.name in ("yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"):
                plane = frame.planes[0]
                luma = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
                return np.ascontiguousarray(luma[: frame.height, : frame.width])
            return frame.to_ndarray(format="gray")
        if kind == "bgr":
            return frame.to_ndarray(format="bgr24")
        raise ValueError(f"unknown picture kind {kind!r}")

    return convert


class AnalyzerSlot:
    """One configured analyzer of one camera: its mailbox, its worker thread, its restarts."""

    def __init__(
        self,
        camera: str,
        index: int,
        cls: type[Analyzer],
        entry: AnalyticsConfig,
        deliver: Callable[[AnalyzerSlot, Sequence[Observation]], None],
        failed: Callable[[AnalyzerSlot, str], None],
    ) -> None:
        self.camera = camera
        self.index = index
        self.cls = cls
        self.entry = entry
        self.fps = float(entry.fps or cls.default_fps)
        self.stream = entry.stream or cls.default_stream
        self.period = round(CLOCK_RATE / self.fps)
        self.stats = AnalyzerStats(analyzer=cls.id(), fps=self.fps)
        self._deliver = deliver
        self._failed = failed
        self._cond = threading.Condition()
        self._pending: AnalyzerFrame | None = None
        self._stopped = False
        self._generation = 0
        self._busy_since: float | None = None
        self._backoff = BACKOFF_INITIAL
        self._not_before = 0.0
        self._next_pts: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"{self.camera}/{self.cls.id()}[{self.index}]"

    # -- decode thread --------------------------------------------------------------------
    def due(self, pts: int) -> bool:
        """Whether the picture at ``pts`` should go to this analyzer (its rate)."""
        nxt = self._next_pts
        if nxt is not None and pts < nxt - self.period // 4:
            return False
        # keep the cadence; a gap (a reconnect, skipped pictures) starts it afresh
        self._next_pts = nxt + self.period if nxt is not None and pts - nxt < self.period else pts + self.period
        return True

    def offer(self, frame: AnalyzerFrame) -> None:
        with self._cond:
            if self._stopped:
                return
            if self._pending is not None:
                self.stats.dropped += 1
            self._pending = frame
            self._cond.notify()

    # -- control (event loop) -------------------------------------------------------------
    def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        generation = self._generation
        self._thread = threading.Thread(
            target=self._work, args=(generation,), name=f"analyzer-{self.name}", daemon=True
        )
        self._thread.start()

    def check_hung(self, now: float) -> None:
        """Called by the camera's watchdog: a call running past ``max_seconds`` is a hang.
        Its thread cannot be killed; it is abandoned (its results are dropped when it returns)
        and a fresh instance starts in a new thread after the back-off."""
        busy = self._busy_since
        if busy is None or now - busy <= self.cls.max_seconds:
            return
        with self._cond:
            if self._busy_since is not busy or self._stopped:
                return
            self._generation += 1
            self._busy_since = None
            self.stats.state = "hung"
            reason = f"hung: no answer for {now - busy:.1f}s (max {self.cls.max_seconds:g}s)"
            self._crashed_locked(reason)
        logger.error("analyzer %s: %s; starting a fresh one in %.0fs", self.name, reason, self._not_before - time.monotonic())
        self._failed(self, reason)
        self._spawn()

    def stop(self) -> threading.Thread | None:
        with self._cond:
            self._stopped = True
            self._pending = None
            self._generation += 1
            self._cond.notify_all()
        self.stats.state = "stopped"
        return self._thread

    # -- worker thread --------------------------------------------------------------------
    def _crashed_locked(self, reason: str) -> None:
        self.stats.crashes += 1
        self.stats.last_error = reason
        self._not_before = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _take(self, generation: int) -> AnalyzerFrame | None:
        with self._cond:
            while True:
                if self._stopped or generation != self._generation:
                    return None
                if self._pending is not None and time.monotonic() >= self._not_before:
                    frame, self._pending = self._pending, None
                    self._busy_since = time.monotonic()
                    return frame
                wait = max(self._not_before - time.monotonic(), 0.0) if self._pending is not None else None
                self._cond.wait(wait)

    def _work(self, generation: int) -> None:
        instance: Analyzer | None = None
        started_at = 0.0
        try:
            while True:
                frame = self._take(generation)
                if frame is None:
                    return
                if instance is None:
                    try:
                        instance = self.cls(self.camera, self.entry.options)
                    except Exception as exc:
                        self._crash(generation, f"failed to start: {type(exc).__name__}: {exc}", exc)
                        continue
                    if self.stats.crashes:
                        self.stats.restarts += 1
                    started_at = time.monotonic()
                    self.stats.state = "running"
                t0 = time.thread_time()
                try:
                    found = list(instance.analyze(frame) or ())
                    observations = [o for o in found if isinstance(o, Observation)]
                    if len(observations) != len(found):
                        logger.warning("analyzer %s: ignoring results that are not Observations", self.name)
                except Exception as exc:
                    self.stats.cpu_seconds += time.thread_time() - t0
                    _close(instance, self.name)
                    instance = None
                    self._crash(generation, f"{type(exc).__name__}: {exc}", exc)
                    continue
                self.stats.cpu_seconds += time.thread_time() - t0
                with self._cond:
                    if generation != self._generation:
                        return  # abandoned as hung while it ran: its findings are stale
                    self._busy_since = None
                self.stats.frames += 1
                if time.monotonic() - started_at > BACKOFF_RESET:
                    self._backoff = BACKOFF_INITIAL
                if observations:
                    self.stats.observations += len(observations)
                    self._deliver(self, observations)
        finally:
            if instance is not None:
                _close(instance, self.name)

    def _crash(self, generation: int, reason: str, exc: BaseException) -> None:
        with self._cond:
            if generation != self._generation:
                return
            self._busy_since = None
            self._crashed_locked(reason)
            self.stats.state = "backoff"
        logger.error("analyzer %s crashed (%s); starting a fresh one in %.0fs", self.name, reason,
                     self._not_before - time.monotonic(), exc_info=exc)
        self._failed(self, reason)


def _close(instance: Analyzer, name: str) -> None:
    try:
        instance.close()
    except Exception:
        logger.exception("analyzer %s: close failed", name)


class _Feed:
    """The pictures of one camera stream for the analyzers that asked for it: a hub reader
    (pump on the loop), a decode thread, and the mask stage's pictures when it has them.

    ``profile`` is the stream asked for. The sub stream is read only while the camera
    offers it, which it never does while privacy-masked (``Camera.profiles``): a masked
    camera's sub-stream analyzers get the masked main stream, from the mask stage."""

    def __init__(self, camera: Camera, profile: StreamProfile, slots: list[AnalyzerSlot]) -> None:
        self.camera = camera
        self.id = camera.id
        self.profile = profile
        self.slots = slots
        self.decode = DecodeStats()
        #: The stream read now (the sub stream's analyzers read the main one while it is
        #: not offered).
        self.reading: StreamProfile | None = None
        self._inbox: queue.Queue[Any] = queue.Queue(INBOX_PACKETS)
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"analytics-decode-{self.id}-{profile}", daemon=True)
        self._pump_task: asyncio.Task[None] | None = None
        self._reader: Any = None
        # decode-thread state
        self._frames = FrameDecoder()
        self._dropping = False
        #: When the mask stage last handed a picture over (monotonic; thread-safe float).
        self._shared_at = 0.0
        self._recheck = 0.0  #: when to look again whether the sub stream is offered

    def start(self) -> None:
        self._thread.start()
        self._pump_task = asyncio.create_task(self._pump(), name=f"analytics-pump:{self.id}:{self.profile}")

    async def aclose(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.close()
        if self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
        drain(self._inbox)
        self._inbox.put(STOP)

    def join(self, timeout: float) -> None:
        _join_all([self._thread], timeout)

    async def _open(self) -> HubReader:
        name = f"analytics {self.id}"
        if self.profile == StreamProfile.SUB:
            reader, self.reading = await self.camera.open_live_reader(name, StreamProfile.SUB)
            return reader
        self.reading = StreamProfile.MAIN
        return self.camera.open_reader(name)

    async def _pump(self) -> None:
        """Move packet references from the camera's public hub to the decode thread."""
        while not self._closed:
            try:
                self._reader = await self._open()
            except CameraUnavailable:
                await asyncio.sleep(OPEN_RETRY)
                continue
            except StreamClosed:
                return  # the camera stopped
            self._recheck = time.monotonic() + SUB_RECHECK
            try:
                await forward(self._reader, self._inbox, skipped=self._skipped, behind=self._behind, until=self._sub_offered)
                self._reader.close()  # the sub stream is offered again: read it
            except StreamClosed:
                if self.camera.hub.closed:
                    return
                await asyncio.sleep(OPEN_RETRY)  # our reader was closed, not the hub: reopen

    def _sub_offered(self, packet: MediaPacket) -> bool:
        """Whether analyzers that asked for the sub stream but read the main one (masked, or
        the sub stream failed) may read the sub stream again (looked at every SUB_RECHECK s)."""
        if self.reading == self.profile or time.monotonic() < self._recheck:
            return False
        self._recheck = time.monotonic() + SUB_RECHECK
        return StreamProfile.SUB in self.camera.profiles  # offered again (masks removed)

    def _skipped(self) -> None:
        self.decode.skipped += 1

    def _behind(self) -> None:
        logger.warning("camera %s: analytics decoding falls behind; skipping to the next keyframe", self.id)

    # -- decode thread --------------------------------------------------------------------
    def _work(self) -> None:
        serve(self._inbox, self._process, self._frames.reset, logger, f"camera {self.id}: analytics decoding")

    def expect_mask_stage(self) -> None:
        """The camera is masked: its mask stage will hand its pictures over, so the public
        stream (the GOP it starts with too) is not decoded unless they stop coming."""
        self._shared_at = time.monotonic()

    def from_mask_stage(self, pts: int, wallclock: float, picture: av.VideoFrame) -> None:
        """The mask stage's worker hands over a masked picture: the same picture the public
        hub carries (before its re-encoding), without decoding it a second time."""
        if self._closed:
            return
        self._shared_at = time.monotonic()
        self.decode.shared += 1
        wanted = [slot for slot in self.slots if slot.due(pts)]
        if wanted:
            frame = AnalyzerFrame(self.id, pts, wallclock, picture.width, picture.height, frame_converter(picture))
            for slot in wanted:
                slot.offer(frame)

    def _process(self, packet: MediaPacket) -> None:
        stats = self.decode
        stats.packets += 1
        if time.monotonic() - self._shared_at < SHARED_FRESH:
            self._frames.reset()  # the mask stage supplies the pictures; decode afresh when it stops
            return
        if self._dropping and not packet.keyframe:
            stats.skipped += 1
            return
        self._dropping = False
        if time.time() - packet.wallclock > MAX_LAG and not packet.keyframe:
            self._dropping = True
            stats.skipped += 1
            logger.warning("camera %s: analytics is %.1fs behind; skipping to the next keyframe", self.id, time.time() - packet.wallclock)
            return
        t0 = time.thread_time()
        frames = self._frames.decode(packet)
        stats.cpu_seconds += time.thread_time() - t0
        for frame, pts, wallclock in frames or ():
            stats.frames += 1
            wanted = [slot for slot in self.slots if slot.due(pts)]
            if not wanted:
                continue
            picture = AnalyzerFrame(self.id, pts, wallclock, frame.width, frame.height, frame_converter(frame))
            for slot in wanted:
                slot.offer(picture)


class CameraAnalytics:
    """The analyzers of one camera: a feed (hub reader and decode thread) per stream they
    asked for, a thread per analyzer."""

    def __init__(
        self,
        camera: Camera,
        slots: list[AnalyzerSlot],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.camera = camera
        self.id = camera.id
        self.slots = slots
        self._loop = loop
        profiles = sorted({StreamProfile(slot.stream) for slot in slots}, key=lambda p: p != StreamProfile.MAIN)
        self.feeds = [
            _Feed(camera, profile, [slot for slot in slots if slot.stream == profile]) for profile in profiles
        ]
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def decode(self) -> DecodeStats:
        """The decoding of the first feed (the main stream's, if any analyzer reads it)."""
        return self.feeds[0].decode

    def stats(self) -> CameraStats:
        return CameraStats(
            self.id, self.decode, [s.stats for s in self.slots],
            streams={str(feed.profile): feed.decode for feed in self.feeds},
        )

    async def start(self) -> None:
        for feed in self.feeds:
            feed.start()
        for slot in self.slots:
            slot.start()
        # a masked camera's mask stage decodes every picture already: take its masked ones
        self.camera.tap_masked_pictures(self._from_mask_stage)
        if self.camera.masked:  # its pictures are coming: do not decode the cached GOP meanwhile
            for feed in self.feeds:
                feed.expect_mask_stage()
        self._watchdog = asyncio.create_task(self._watch(), name=f"analytics-watchdog:{self.id}")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.camera.tap_masked_pictures(None)
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
        for feed in self.feeds:
            await feed.aclose()
        analyzers = [t for t in (slot.stop() for slot in self.slots) if t is not None]
        # The decode threads end at once; an analyzer gets a moment to finish its picture,
        # and one that does not (hung) is left behind: its thread is a daemon.
        for feed in self.feeds:
            await asyncio.to_thread(feed.join, 5.0)
        await asyncio.to_thread(_join_all, analyzers, STOP_WAIT)

    def _from_mask_stage(self, pts: int, wallclock: float, picture: av.VideoFrame) -> None:
        # A masked camera offers no sub stream: every feed reads the masked main stream.
        for feed in self.feeds:
            feed.from_mask_stage(pts, wallclock, picture)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            now = time.monotonic()
            for slot in self.slots:
                slot.check_hung(now)


#: The mask stage handed a picture over this recently (s): the public stream is not decoded.
SHARED_FRESH = 1.0
#: How often analyzers that asked for the sub stream but read the main one (masked, or the
#: sub stream failed) look whether it is offered again (s).
SUB_RECHECK = 30.0


def _join_all(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        if thread.is_alive():
            thread.join(max(deadline - time.monotonic(), 0.0))


class AnalyticsRunner:
    """Runs the analyzers of the cameras attached to it; an async context manager.

    ``analyzers``: the registry (``Plugins.analyzers()``). ``events``: where observations
    are published as ``analytics.<kind>`` and failures as ``analyzer.failed``. Listeners
    added with ``add_listener`` get every observation on the event loop (a coroutine
    result is awaited in a task the runner keeps and waits for at shutdown).
    """

    def __init__(self, analyzers: Mapping[str, type[Analyzer]], events: EventBus | None = None) -> None:
        self._analyzers = dict(analyzers)
        self._events = events
        self._cameras: dict[str, CameraAnalytics] = {}
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AnalyticsRunner:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for camera_id in list(self._cameras):
            await self.detach(camera_id)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    # -- listeners ------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(observation)`` for every observation; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # -- cameras --------------------------------------------------------------------------
    @property
    def cameras(self) -> list[str]:
        return sorted(self._cameras)

    def stats(self, camera_id: str | None = None) -> list[CameraStats]:
        return [c.stats() for cid, c in sorted(self._cameras.items()) if camera_id is None or cid == camera_id]

    def entries(self, camera: Camera) -> list[tuple[type[Analyzer], AnalyticsConfig]]:
        """The camera's ``[[camera.analytics]]`` entries with their analyzer classes; entries
        naming an unknown analyzer or with bad options are logged and left out."""
        errors: list[ConfigError] = []
        tables = camera.config.analytics
        checked = analytics_entries(
            tables, self._analyzers, file="cameras.toml", key=f"camera {camera.id}: analytics", env={}, errors=errors
        )
        for error in errors:
            logger.error("camera %s: analytics not started: %s", camera.id, error.message)
        return [(self._analyzers[e.analyzer], e) for e in checked]

    async def attach(self, camera: Camera) -> bool:
        """Start the analyzers of ``camera`` (no-op without ``[[camera.analytics]]``, or if
        already attached). The camera may still be connecting: analysis begins with its
        first picture. Returns whether analyzers run for it now."""
        if self._loop is None:
            raise RuntimeError("the analytics runner is not started")
        async with self._lock:
            if camera.id in self._cameras:
                return True
            entries = self.entries(camera)
            if not entries:
                return False
            slots = [
                AnalyzerSlot(camera.id, index, cls, entry, self._from_worker, self._failed_from_worker)
                for index, (cls, entry) in enumerate(entries)
            ]
            runtime = CameraAnalytics(camera, slots, self._loop)
            self._cameras[camera.id] = runtime
            await runtime.start()
            logger.info("camera %s: analytics started (%s)", camera.id, ", ".join(f"{s.cls.id()} at {s.fps:g} fps" for s in slots))
            return True

    async def detach(self, camera_id: str) -> None:
        """Stop the analyzers of a camera (idempotent)."""
        async with self._lock:
            runtime = self._cameras.pop(camera_id, None)
        if runtime is not None:
            await runtime.aclose()
            logger.info("camera %s: analytics stopped", camera_id)

    # -- from worker threads --------------------------------------------------------------
    def _from_worker(self, slot: AnalyzerSlot, observations: Sequence[Observation]) -> None:
        self._call_soon(self._deliver, slot, observations)

    def _failed_from_worker(self, slot: AnalyzerSlot, reason: str) -> None:
        self._call_soon(self._publish_failure, slot, reason)

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone: the gateway is exiting
            pass

    # -- on the loop ----------------------------------------------------------------------
    def _deliver(self, slot: AnalyzerSlot, observations: Sequence[Observation]) -> None:
        if self._cameras.get(slot.camera) is None:
            return  # detached meanwhile
        for found in observations:
            obs = msgspec.structs.replace(found, camera=slot.camera, analyzer=slot.cls.id())
            for listener in list(self._listeners):
                try:
                    result = listener(obs)
                    if inspect.isawaitable(result):
                        task = asyncio.ensure_future(result)
                        self._tasks.add(task)
                        task.add_done_callback(self._task_done)
                except Exception:
                    logger.exception("analytics: a listener failed on %s from %s", obs.kind, slot.name)
            if self._events is not None:
                self._events.publish(observation_event(obs))

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("analytics: a listener failed", exc_info=task.exception())

    def _publish_failure(self, slot: AnalyzerSlot, reason: str) -> None:
        if self._events is not None:
            self._events.emit(
                "analyzer.failed", camera=slot.camera, analyzer=slot.cls.id(), index=slot.index, reason=reason,
                crashes=slot.stats.crashes,
            )


def observation_event(obs: Observation) -> Event:
    """An observation as the event bus carries it: ``analytics.<kind>``, without crop bytes."""
    return Event(
        kind=f"analytics.{obs.kind}",
        at=obs.at,
        camera=obs.camera,
        detail={"analyzer": obs.analyzer, "confidence": obs.confidence, "payload": obs.payload, "crop": obs.crop is not None},
    )
