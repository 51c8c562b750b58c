"""Camera health: state changes, uptime, bitrate and frame-rate history, and alarms.

One monitor for all cameras, started by the composition root after the recording service.
Every tick it looks at each camera's source status, hub statistics and newest keyframe:

- a state change (online, offline, ...) is written to ``camera_states``, so uptime over
  24 h and 7 d survives restarts;
- bitrate and frame rate go into an in-memory ring (``[health] history-minutes``);
- at most every ``frozen-check-seconds`` the newest keyframe is decoded *off the event loop*
  and its picture hashed (a coarse luma thumbnail, so encoder noise does not count as motion);
  the same hash for ``frozen-seconds`` is a frozen picture;
- alarms (offline, frozen, bitrate collapse, recording stopped) are raised and cleared as
  events (``camera.alarm`` / ``camera.alarm_cleared``), which reach the webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
import msgspec
import sqlalchemy as sa

from gateway.config import HealthConfig
from gateway.db import Database, camera_states
from gateway.events import EventBus
from gateway.media.packet import CLOCK_RATE, MediaPacket
from gateway.media.source import SourceState

if TYPE_CHECKING:
    from gateway.cameras import Camera, CameraManager
    from gateway.recording.service import RecordingService

logger = logging.getLogger(__name__)

OFFLINE = "offline"
FROZEN = "frozen"
BITRATE_COLLAPSE = "bitrate_collapse"
RECORDING_STOPPED = "recording_stopped"
#: How much each alarm weighs when sorting the worst cameras to the top.
ALARM_WEIGHT = {OFFLINE: 1000, RECORDING_STOPPED: 500, FROZEN: 400, BITRATE_COLLAPSE: 200}
DAY = 86400.0
WEEK = 7 * DAY
#: State changes older than this are deleted (uptime looks back 7 days).
KEEP_STATES = 8 * DAY
PRUNE_EVERY = 3600.0
#: Samples needed before a bitrate collapse can be judged.
MIN_BITRATE_SAMPLES = 6
THUMB = (64, 36)


def picture_hash(packet: MediaPacket) -> str | None:
    """Hash of a keyframe's picture: luma scaled to 64x36, quantized to 32 levels.

    Blocking (decodes one picture): call through ``asyncio.to_thread``."""
    try:
        decoder = av.CodecContext.create(packet.info.codec, "r")
        frames = decoder.decode(av.Packet(packet.data)) + decoder.decode(None)
    except av.error.FFmpegError:
        return None
    if not frames:
        return None
    thumb = frames[0].reformat(width=THUMB[0], height=THUMB[1], format="gray").to_ndarray()
    return hashlib.blake2b((thumb >> 3).tobytes(), digest_size=16).hexdigest()


class Alarm(msgspec.Struct, kw_only=True):
    kind: str
    since: float
    detail: str


class Sample(msgspec.Struct, array_like=True):
    at: float
    bitrate: int
    fps: float


class GapView(msgspec.Struct, kw_only=True):
    start: float
    end: float
    reason: str


class CameraHealth(msgspec.Struct, kw_only=True):
    id: str
    name: str
    area: str
    state: str
    since: float
    last_error: str | None
    uptime_24h: float | None
    uptime_7d: float | None
    reconnects: int
    bitrate: int
    fps: float
    keyframe_interval: float | None
    last_keyframe_at: float | None
    frozen_for: float
    recording: bool
    last_segment_end: float | None
    gaps_24h: list[GapView]
    gap_seconds_24h: float
    alarms: list[Alarm]
    #: Higher is worse; the list is sorted on it by default.
    score: float
    history: list[Sample] | None = None


@dataclass
class _Track:
    state: str | None = None
    since: float | None = None
    history: deque[Sample] = field(default_factory=deque)
    last_history: float = 0.0
    keyframe_pts: int | None = None
    keyframe_at: float | None = None
    keyframe_interval: float | None = None
    hash: str | None = None
    hash_since: float | None = None  #: wall clock of the first keyframe with this picture
    hash_seen: float | None = None  #: wall clock of the newest keyframe with this picture
    last_hash_check: float = 0.0
    alarms: dict[str, Alarm] = field(default_factory=dict)

    @property
    def frozen_for(self) -> float:
        if self.hash_since is None or self.hash_seen is None:
            return 0.0
        return self.hash_seen - self.hash_since


class HealthMonitor:
    """``async with HealthMonitor(...)`` samples every camera until closed."""

    def __init__(
        self,
        config: HealthConfig,
        cameras: CameraManager,
        db: Database,
        events: EventBus,
        recording: RecordingService | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.cameras = cameras
        self.db = db
        self.events = events
        self.recording = recording
        self.clock = clock
        self._tracks: dict[str, _Track] = {c.id: _Track() for c in cameras}
        self._task: asyncio.Task[None] | None = None
        self._hashing: set[str] = set()
        self._hash_tasks: set[asyncio.Task[None]] = set()
        self._last_prune = 0.0
        self._history_len = max(2, int(config.history_minutes * 60 / config.sample_seconds))

    async def __aenter__(self) -> HealthMonitor:
        await self.sample()
        self._task = asyncio.create_task(self._run(), name="camera-health")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [self._task, *self._hash_tasks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None

    @property
    def tick(self) -> float:
        return min(self.config.sample_seconds, self.config.frozen_check_seconds, 1.0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.sample()
            except Exception:
                logger.exception("camera health: sampling failed")

    # -- sampling ----------------------------------------------------------------------
    async def sample(self) -> None:
        now = self.clock()
        changes: list[dict[str, Any]] = []
        for camera in self.cameras.running():
            track = self._tracks.setdefault(camera.id, _Track())
            status = camera.status
            state = str(status.state)
            if state != track.state or status.since != track.since:
                if state != track.state:
                    changes.append({"camera": camera.id, "state": state, "at": status.since})
                track.state, track.since = state, status.since
            if now - track.last_history >= self.config.sample_seconds:
                stats = camera.hub.stats()
                online = status.state == SourceState.ONLINE
                track.history.append(Sample(now, int(stats.bitrate) if online else 0, round(stats.fps, 2) if online else 0.0))
                while len(track.history) > self._history_len:
                    track.history.popleft()
                track.last_history = now
            self._watch_keyframe(camera, track, now)
            self._judge(camera, track, now)
        if changes:
            async with self.db.begin() as conn:
                await conn.execute(camera_states.insert(), changes)
        if now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            async with self.db.begin() as conn:
                await conn.execute(camera_states.delete().where(camera_states.c.at < now - KEEP_STATES))

    def _watch_keyframe(self, camera: Camera, track: _Track, now: float) -> None:
        keyframe = camera.latest_keyframe()
        if keyframe is None or keyframe.pts == track.keyframe_pts:
            return
        if track.keyframe_pts is not None and keyframe.pts > track.keyframe_pts and not keyframe.discontinuity:
            track.keyframe_interval = round((keyframe.pts - track.keyframe_pts) / CLOCK_RATE, 3)
        track.keyframe_pts, track.keyframe_at = keyframe.pts, keyframe.wallclock
        if camera.id in self._hashing or now - track.last_hash_check < self.config.frozen_check_seconds:
            return
        track.last_hash_check = now
        self._hashing.add(camera.id)
        task = asyncio.create_task(self._hash(camera.id, track, keyframe), name=f"health-hash-{camera.id}")
        self._hash_tasks.add(task)
        task.add_done_callback(self._hash_tasks.discard)

    async def _hash(self, camera_id: str, track: _Track, keyframe: MediaPacket) -> None:
        try:
            digest = await asyncio.to_thread(picture_hash, keyframe)
        finally:
            self._hashing.discard(camera_id)
        if digest is None:
            return
        if digest != track.hash:
            track.hash, track.hash_since = digest, keyframe.wallclock
        track.hash_seen = keyframe.wallclock

    def _judge(self, camera: Camera, track: _Track, now: float) -> None:
        cfg = self.config
        status = camera.status
        online = status.state == SourceState.ONLINE
        found: dict[str, str] = {}
        if status.state == SourceState.OFFLINE and now - status.since >= cfg.offline_seconds:
            found[OFFLINE] = status.last_error or "no picture from the camera"
        if online and track.frozen_for >= cfg.frozen_seconds:
            found[FROZEN] = f"the same picture for {track.frozen_for:.0f} s"
        if online and len(track.history) >= MIN_BITRATE_SAMPLES:
            median = statistics.median(s.bitrate for s in track.history)
            current = track.history[-1].bitrate
            if median > 0 and current < cfg.bitrate_collapse_ratio * median:
                found[BITRATE_COLLAPSE] = f"{current / 1000:.0f} kbit/s against a median of {median / 1000:.0f} kbit/s"
        recorder = self.recording.recorders.get(camera.id) if self.recording is not None else None
        if recorder is not None and online and now - status.since >= cfg.recording_stalled_seconds:
            last = recorder.stats.last_segment_end
            if last is None or now - last >= cfg.recording_stalled_seconds:
                found[RECORDING_STOPPED] = "no segment stored for %.0f s" % (now - (last if last is not None else status.since))
        if recorder is not None and recorder.stats.failing is not None:  # "disk full", "storage failed"
            found[recorder.stats.failing.replace(" ", "_")] = recorder.stats.failing_detail or recorder.stats.failing
        for kind in list(track.alarms):
            if kind not in found:
                alarm = track.alarms.pop(kind)
                logger.info("camera %s: alarm %s cleared after %.0fs", camera.id, kind, now - alarm.since)
                self.events.emit("camera.alarm_cleared", camera=camera.id, alarm=kind, since=alarm.since)
        for kind, detail in found.items():
            if kind in track.alarms:
                track.alarms[kind].detail = detail
                continue
            track.alarms[kind] = Alarm(kind=kind, since=now, detail=detail)
            logger.warning("camera %s: alarm %s (%s)", camera.id, kind, detail)
            self.events.emit("camera.alarm", camera=camera.id, alarm=kind, reason=detail)

    # -- reporting ---------------------------------------------------------------------
    async def uptimes(self, camera_ids: Iterable[str], now: float) -> dict[str, tuple[float | None, float | None]]:
        """Share of known time online over the last 24 h and 7 d, per camera."""
        ids = list(camera_ids)
        start = now - WEEK
        async with self.db.connect() as conn:
            rows = (await conn.execute(
                sa.select(camera_states.c.camera, camera_states.c.state, camera_states.c.at)
                .where(camera_states.c.camera.in_(ids), camera_states.c.at >= start)
                .order_by(camera_states.c.camera, camera_states.c.at, camera_states.c.id)
            )).all()
            latest = sa.select(camera_states.c.camera, sa.func.max(camera_states.c.at).label("at")).where(
                camera_states.c.camera.in_(ids), camera_states.c.at < start
            ).group_by(camera_states.c.camera).subquery()
            before = (await conn.execute(
                sa.select(camera_states.c.camera, camera_states.c.state).join(
                    latest, sa.and_(latest.c.camera == camera_states.c.camera, latest.c.at == camera_states.c.at)
                )
            )).all()
        changes: dict[str, list[tuple[float, str]]] = {c: [] for c in ids}
        for camera, state in before:
            changes[camera] = [(start, state)]
        for camera, state, at in rows:
            changes[camera].append((at, state))
        return {c: (_online_share(changes[c], now - DAY, now), _online_share(changes[c], start, now)) for c in ids}

    async def gaps(self, camera: Camera, track: _Track, now: float) -> list[GapView]:
        """Recording gaps of the last 24 h, from the catalogue (since this camera was first seen)."""
        if self.recording is None or not camera.config.record:
            return []
        from gateway.recording.index import Gap  # the recording package imports the app's modules

        first = await self._first_seen(camera.id)
        start = max(now - DAY, first if first is not None else now)
        if now - start < 1:
            return []
        spans = await self.recording.spans(camera.id, start, now)
        gaps = [GapView(start=g.start, end=g.end, reason=g.reason) for g in spans if isinstance(g, Gap)]
        segment = self.recording.config.recording.segment_seconds
        if gaps and camera.status.state == SourceState.ONLINE and now - gaps[-1].end < 1 and gaps[-1].end - gaps[-1].start <= segment * 1.5 + 5:
            gaps.pop()  # the segment being written now
        return gaps

    async def _first_seen(self, camera_id: str) -> float | None:
        async with self.db.connect() as conn:
            return (await conn.execute(sa.select(sa.func.min(camera_states.c.at)).where(camera_states.c.camera == camera_id))).scalar()

    async def report(self, camera_ids: Iterable[str], *, history: bool = False) -> list[CameraHealth]:
        now = self.clock()
        cameras = [self.cameras.get(c) for c in camera_ids]
        uptimes = await self.uptimes([c.id for c in cameras], now)
        out = []
        for camera in cameras:
            track = self._tracks.setdefault(camera.id, _Track())
            self._judge(camera, track, now)  # alarms as of now, not of the last tick
            status = camera.status
            stats = camera.hub.stats()
            online = status.state == SourceState.ONLINE
            recorder = self.recording.recorders.get(camera.id) if self.recording is not None else None
            last_segment_end = recorder.stats.last_segment_end if recorder is not None else None
            gaps = await self.gaps(camera, track, now)
            up24, up7 = uptimes[camera.id]
            alarms = list(track.alarms.values())
            score = sum(ALARM_WEIGHT.get(a.kind, 100) for a in alarms) + (1 - (up24 if up24 is not None else 1)) * 100
            score += min(len(gaps), 50) + min(status.reconnects, 50) * 0.1
            out.append(CameraHealth(
                id=camera.id, name=camera.config.title, area=camera.config.area, state=str(status.state),
                since=status.since, last_error=status.last_error, uptime_24h=up24, uptime_7d=up7,
                reconnects=status.reconnects, bitrate=int(stats.bitrate) if online else 0,
                fps=round(stats.fps, 2) if online else 0.0, keyframe_interval=track.keyframe_interval,
                last_keyframe_at=track.keyframe_at, frozen_for=round(track.frozen_for, 1),
                recording=recorder is not None,
                last_segment_end=last_segment_end,
                gaps_24h=gaps, gap_seconds_24h=round(sum(g.end - g.start for g in gaps), 1), alarms=alarms,
                score=round(score, 2), history=list(track.history) if history else None,
            ))
        return out


def _online_share(changes: list[tuple[float, str]], start: float, end: float) -> float | None:
    """Share of ``[start, end)`` online, over the part of it whose state is known."""
    known = online = 0.0
    for i, (at, state) in enumerate(changes):
        until = changes[i + 1][0] if i + 1 < len(changes) else end
        lo, hi = max(at, start), min(until, end)
        if hi <= lo:
            continue
        if state == str(SourceState.STOPPED):
            continue
        known += hi - lo
        if state == str(SourceState.ONLINE):
            online += hi - lo
    return round(online / known, 4) if known > 0 else None


async def health_ctx(app: Any) -> AsyncIterator[None]:
    """aiohttp cleanup context, appended by the composition root after the recording service's."""
    from gateway.appkeys import CAMERAS, CONFIG, DATABASE, EVENTS, HEALTH, RECORDING

    async with HealthMonitor(app[CONFIG].health, app[CAMERAS], app[DATABASE], app[EVENTS], app.get(RECORDING)) as monitor:
        app[HEALTH] = monitor
        yield
