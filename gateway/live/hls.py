"""LL-HLS live output: one muxer per camera, started on demand, stopped when idle.

No re-encoding: hub packets are cut into CMAF parts by ``fmp4.Fragmenter``; a segment is
the concatenation of its parts. Routes, under ``/api/cameras/{id}/hls/``:

    index.m3u8                 multivariant playlist (CODECS, RESOLUTION, BANDWIDTH)
    stream.m3u8                media playlist; ``_HLS_msn``/``_HLS_part`` block until ready
    init.mp4, init-{n}.mp4     init segment (the current one / of stream epoch n)
    seg/{msn}.m4s              whole segment
    part/{msn}.{part}.m4s      partial segment; the preload-hinted one blocks until ready

Every request (playlist, init, segment, part) is authorized for ``live.view`` on the
camera, so a revoked grant stops a player at its next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.api.openapi import Media, api, enum_of, whole
from gateway.access.middleware import client_address
from gateway.appkeys import ACCESS, CAMERAS, CONFIG
from gateway.cameras import Camera
from gateway.config import HlsConfig
from gateway.errors import BadRequest, CameraUnavailable, NotFound, StreamClosed, Unavailable
from gateway.live import playlist
from gateway.live.fmp4 import Fragmenter, InitSegment, Part
from gateway.live.hls_viewers import HlsViewers
from gateway.media.hub import HubReader
from gateway.media.packet import CLOCK_RATE
from gateway.media.source import SourceState

logger = logging.getLogger(__name__)

#: Complete segments whose parts stay listed (and fetchable) behind the live edge.
PART_SEGMENTS = 3
#: How long a first request waits for the first complete segment (a GOP at most).
FIRST_SEGMENT_TIMEOUT = 10.0
#: A blocking request may ask for a segment at most this far beyond the last one.
MAX_MSN_AHEAD = 2
SEGMENT_TYPE = "video/mp4"


@dataclass(slots=True)
class Segment:
    msn: int
    data: bytes
    duration: int  #: ticks
    start_time: float
    discontinuity: bool
    init: InitSegment
    parts: list[Part] | None  #: None once it is too old to list its parts


class HlsMuxer:
    """One camera's live window: the fragmenter, recent segments and parts, and waiters."""

    def __init__(self, camera: Camera, reader: HubReader, config: HlsConfig, on_stop: Callable[[HlsMuxer], None]) -> None:
        self.camera = camera
        self.config = config
        self._reader = reader
        self._on_stop = on_stop
        self._fragmenter = Fragmenter(round(config.segment_duration * CLOCK_RATE), round(config.part_duration * CLOCK_RATE))
        self.segments: deque[Segment] = deque()
        self.open_parts: list[Part] = []
        self._discontinuity_sequence = 0
        self._max_segment = 0  # ticks, over the muxer's life: TARGETDURATION never shrinks
        self._max_part = 0
        self._changed = asyncio.Event()
        self._closed = False
        self._active = 0
        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        self.started_at = loop.time()
        #: Event-loop thread CPU seconds spent cutting packets into parts.
        self.cpu_seconds = 0.0
        self.packets = 0
        #: Times the window restarted because the camera's hub forgot its GOP (a mask added).
        self.restarts = 0
        self._unlisten = camera.hub.add_forget_listener(self._restart_window)
        self._task = asyncio.create_task(self._run(), name=f"hls-{camera.id}")
        self._watchdog = asyncio.create_task(self._watch_idle(), name=f"hls-idle-{camera.id}")

    # -- life --------------------------------------------------------------------------
    async def _run(self) -> None:
        fragmenter = self._fragmenter
        try:
            async for packet in self._reader:
                started = time.thread_time()
                parts = fragmenter.push(packet)
                if parts:
                    self._add(parts)
                self.cpu_seconds += time.thread_time() - started
                self.packets += 1
                if parts:
                    self._notify()
        except Exception:
            logger.exception("camera %s: HLS muxer failed", self.camera.id)
        finally:
            self._stop()

    async def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.config.idle_timeout
        while not self._closed:
            idle = loop.time() - self._last_used
            if idle >= timeout and self._active == 0:
                logger.info("camera %s: HLS muxer idle for %.1fs, stopping", self.camera.id, idle)
                self._reader.close()  # ends _run, which stops the muxer
                return
            await asyncio.sleep(max(0.05, timeout - idle))

    def _stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unlisten()
        self._reader.close()
        self._watchdog.cancel()
        self._notify()
        self._on_stop(self)
        elapsed = asyncio.get_running_loop().time() - self.started_at
        logger.info(
            "camera %s: HLS muxer stopped after %.1fs, %d packets, %.3fs CPU (%.3f%% of a core)",
            self.camera.id, elapsed, self.packets, self.cpu_seconds, 100 * self.cpu_seconds / max(elapsed, 1e-9),
        )

    async def aclose(self) -> None:
        self._reader.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._stop()

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Mark a request in progress: the muxer is not idle while one is served."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._last_used = asyncio.get_running_loop().time()

    # -- window ------------------------------------------------------------------------
    def _add(self, parts: list[Part]) -> None:
        for part in parts:
            if part.index == 0:
                self.open_parts = []
            self.open_parts.append(part)
            self._max_part = max(self._max_part, part.duration)
            if part.final:
                self._close_segment()

    def _close_segment(self) -> None:
        parts = self.open_parts
        self.open_parts = []
        first = parts[0]
        duration = sum(p.duration for p in parts)
        self._max_segment = max(self._max_segment, duration)
        self.segments.append(
            Segment(first.msn, b"".join(p.data for p in parts), duration, first.start_time, first.discontinuity, first.init, parts)
        )
        while len(self.segments) > self.config.segments:
            self.segments.popleft()
            if self.segments[0].discontinuity:
                self._discontinuity_sequence += 1
        if len(self.segments) > PART_SEGMENTS + 1:
            self.segments[-PART_SEGMENTS - 2].parts = None

    def _restart_window(self) -> None:
        """Drop every segment and part made so far, and what the reader still queues; the
        window starts again at the hub's next keyframe (a privacy mask was just added: a
        playlist fetched from now on lists nothing from before it). Media sequence numbers
        keep counting, and the next segment follows a discontinuity."""
        listed = bool(self.segments) or bool(self.open_parts)
        shown = sum(1 for i, s in enumerate(self.segments) if s.discontinuity and i > 0)
        if self.open_parts and self.segments and self.open_parts[0].discontinuity:
            shown += 1
        self._fragmenter.flush()  # closes the open segment; its parts are thrown away
        self._reader.skip_to_keyframe()
        self.segments.clear()
        self.open_parts = []
        if listed:
            self._discontinuity_sequence += shown + 1
        self.restarts += 1
        logger.info("camera %s: LL-HLS window restarted (privacy mask added)", self.camera.id)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``ready()`` holds; False on timeout. Raises once the muxer stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            if self._closed:
                raise Unavailable(f"camera {self.camera.id}: HLS stream ended")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    @property
    def last_msn(self) -> int | None:
        return self.segments[-1].msn if self.segments else None

    @property
    def target_duration(self) -> int:
        return playlist.target_duration(self._max_segment / CLOCK_RATE, self.config.segment_duration)

    @property
    def part_target(self) -> float:
        return max(self.config.part_duration, self._max_part / CLOCK_RATE)

    def segment(self, msn: int) -> Segment | None:
        if not self.segments or msn < self.segments[0].msn or msn > self.segments[-1].msn:
            return None
        return self.segments[msn - self.segments[0].msn]

    def part(self, msn: int, index: int) -> Part | None:
        if self.open_parts and self.open_parts[0].msn == msn:
            parts: list[Part] | None = self.open_parts
        else:
            seg = self.segment(msn)
            parts = seg.parts if seg else None
        if parts is None or index >= len(parts):
            return None
        return parts[index]

    def init(self, number: int | None = None) -> InitSegment | None:
        current = self._fragmenter.init
        if number is None or (current is not None and current.number == number):
            return current
        for seg in self.segments:
            if seg.init.number == number:
                return seg.init
        return None

    def reached(self, msn: int, part: int | None) -> bool:
        """True once segment ``msn`` is complete, or (with ``part``) that part exists."""
        last = self.last_msn
        if last is not None and last >= msn:
            return True
        return part is not None and self.part(msn, part) is not None

    def bandwidth(self) -> int:
        """Peak bits per second over the window's segments."""
        return max((len(s.data) * 8 * CLOCK_RATE // max(s.duration, 1) for s in self.segments), default=0)

    def snapshot(self) -> playlist.MediaPlaylist:
        segments = list(self.segments)
        entries = [
            playlist.SegmentEntry(
                msn=s.msn,
                uri=f"seg/{s.msn}.m4s",
                duration=s.duration / CLOCK_RATE,
                start_time=s.start_time,
                discontinuity=s.discontinuity,
                init_uri=_init_uri(s.init),
                parts=_part_entries(s.parts) if s.parts is not None and i >= len(segments) - PART_SEGMENTS else (),
            )
            for i, s in enumerate(segments)
        ]
        if self.open_parts:
            first = self.open_parts[0]
            entries.append(
                playlist.SegmentEntry(
                    msn=first.msn,
                    uri=None,
                    duration=sum(p.duration for p in self.open_parts) / CLOCK_RATE,
                    start_time=first.start_time,
                    discontinuity=first.discontinuity,
                    init_uri=_init_uri(first.init),
                    parts=_part_entries(self.open_parts),
                )
            )
        hint = None
        open_msn = self._fragmenter.open_msn
        if open_msn is not None and not self._closed:
            hint = f"part/{open_msn}.{self._fragmenter.open_parts}.m4s"
        return playlist.MediaPlaylist(
            target_duration=self.target_duration,
            part_target=self.part_target,
            media_sequence=segments[0].msn if segments else 0,
            discontinuity_sequence=self._discontinuity_sequence,
            segments=tuple(entries),
            preload_hint=hint,
        )

    def parts_ahead(self, msn: int, index: int) -> int | None:
        """How many parts part ``index`` of segment ``msn`` lies beyond the newest one made (at
        least that many, for a segment not started yet); None for a part of the past."""
        open_msn = self._fragmenter.open_msn
        if open_msn is None or msn < open_msn:
            return None
        if msn == open_msn:
            return index - (self._fragmenter.open_parts - 1)
        return index + 1

    def is_upcoming(self, msn: int, index: int) -> bool:
        """Is the part not made yet but due soon (the preload hint, or just after it)?"""
        open_msn = self._fragmenter.open_msn
        if open_msn is None:
            return False
        if msn == open_msn:
            return index >= self._fragmenter.open_parts and index <= self._fragmenter.open_parts + MAX_MSN_AHEAD
        return msn == open_msn + 1 and index == 0


def _init_uri(init: InitSegment) -> str:
    return f"init-{init.number}.mp4"


def _part_entries(parts: list[Part]) -> tuple[playlist.PartEntry, ...]:
    return tuple(playlist.PartEntry(f"part/{p.msn}.{p.index}.m4s", p.duration / CLOCK_RATE, p.independent) for p in parts)


class HlsManager:
    """Muxers keyed by camera id: created on the first request, dropped when they stop."""

    def __init__(self, config: HlsConfig) -> None:
        self.config = config
        self._muxers: dict[str, HlsMuxer] = {}
        self._closed = False

    def get(self, camera: Camera) -> HlsMuxer:
        muxer = self._muxers.get(camera.id)
        if muxer is not None and not muxer.closed:
            return muxer
        if self._closed:
            raise Unavailable("the gateway is shutting down")
        status = camera.status
        if status.state != SourceState.ONLINE:
            reason = f": {status.last_error}" if status.last_error else ""
            raise CameraUnavailable(f"camera {camera.id} is {status.state}{reason}")
        try:
            reader = camera.open_reader(f"hls-{camera.id}")
        except StreamClosed as exc:
            raise CameraUnavailable(f"camera {camera.id} is stopped") from exc
        muxer = HlsMuxer(camera, reader, self.config, self._forget)
        self._muxers[camera.id] = muxer
        logger.info("camera %s: HLS muxer started", camera.id)
        return muxer

    def running(self, camera_id: str) -> HlsMuxer | None:
        muxer = self._muxers.get(camera_id)
        return muxer if muxer is not None and not muxer.closed else None

    def _forget(self, muxer: HlsMuxer) -> None:
        if self._muxers.get(muxer.camera.id) is muxer:
            del self._muxers[muxer.camera.id]

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.gather(*(m.aclose() for m in list(self._muxers.values())), return_exceptions=True)


HLS = web.AppKey("hls", HlsManager)
HLS_VIEWERS = web.AppKey("hls_viewers", HlsViewers)


# --------------------------------------------------------------------------------------
# routes


#: Media sequence and part numbers: what a 64-bit counter can hold.
HLS_MAX = 2**63 - 1
HlsNumber = whole(0, HLS_MAX)
#: ``_HLS_skip`` values of the LL-HLS spec. We offer no delta updates (no CAN-SKIP-UNTIL), so
#: either gets the whole playlist, as the spec allows; anything else is a client's mistake.
HLS_SKIP = ("YES", "v2")


def _number(name: str, raw: str) -> int:
    """An ASCII decimal from 0 to ``HLS_MAX``; ``BadRequest`` otherwise. Not ``int()`` alone,
    which takes '+1', ' 1', '1_0' and other scripts' digits, and raises ValueError (a 500 in a
    path parameter) on more than 4300 digits."""
    if not (raw.isascii() and raw.isdigit()) or len(raw.lstrip("0")) > 19 or int(raw) > HLS_MAX:
        raise BadRequest(f"{name} must be an integer from 0 to {HLS_MAX}, got {raw[:40]!r}{'...' if len(raw) > 40 else ''}")
    return int(raw)


def _query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    return None if raw is None else _number(name, raw)


def _path_int(request: web.Request, name: str) -> int:
    return _number(name, request.match_info[name])


def _advance_part_limit(part_target: float) -> int:
    """How far beyond the last listed part a blocking request may ask (RFC 8216bis 6.2.5.2)."""
    return max(3, int(3 / part_target)) if part_target < 1 else 3


@contextlib.asynccontextmanager
async def _muxer(request: web.Request, *, start: bool) -> AsyncIterator[HlsMuxer]:
    camera = request.app[CAMERAS].get(request.match_info["camera_id"])
    with request.app[HLS_VIEWERS].request(principal(request), camera.id, client_address(request)):
        manager = request.app[HLS]
        muxer = manager.get(camera) if start else manager.running(camera.id)
        if muxer is None:
            raise NotFound(f"camera {camera.id}: no HLS stream running")
        with muxer.in_use():
            yield muxer


def _unavailable(muxer: HlsMuxer, what: str) -> Unavailable:
    status = muxer.camera.status
    reason = f" (camera {status.state}" + (f": {status.last_error})" if status.last_error else ")")
    return CameraUnavailable(f"camera {muxer.camera.id}: {what}{reason}")


async def _wait_first_segment(muxer: HlsMuxer) -> None:
    if not await muxer.wait_until(lambda: muxer.last_msn is not None, FIRST_SEGMENT_TIMEOUT):
        raise _unavailable(muxer, f"no HLS segment within {FIRST_SEGMENT_TIMEOUT:.0f}s")


def _playlist_response(text: str) -> web.Response:
    return web.Response(body=text.encode(), content_type=playlist.MEDIA_TYPE, headers={"Cache-Control": "no-cache"})


def _media_response(request: web.Request, data: bytes) -> web.Response:
    config = request.app[HLS].config
    max_age = max(1, int(min(config.idle_timeout, config.segments * config.segment_duration)))
    return web.Response(body=data, content_type=SEGMENT_TYPE, headers={"Cache-Control": f"max-age={max_age}"})


@api(summary="LL-HLS multivariant playlist", responses={200: Media(playlist.MEDIA_TYPE)}, extra_errors=(503,), tag="live")
@requires("live.view")
async def multivariant(request: web.Request) -> web.Response:
    async with _muxer(request, start=True) as muxer:
        await _wait_first_segment(muxer)
        init = muxer.segments[-1].init
        info = init.info
        text = playlist.render_multivariant(
            uri="stream.m3u8",
            codecs=init.codecs,
            width=info.width,
            height=info.height,
            bandwidth=muxer.bandwidth(),
            frame_rate=info.declared_fps,
        )
    return _playlist_response(text)


@api(summary="LL-HLS media playlist (blocking reload with _HLS_msn/_HLS_part)", query={"_HLS_msn": HlsNumber, "_HLS_part": HlsNumber, "_HLS_skip": enum_of(*HLS_SKIP)}, responses={200: Media(playlist.MEDIA_TYPE)}, extra_errors=(503,), tag="live")
@requires("live.view")
async def media_playlist(request: web.Request) -> web.Response:
    msn = _query_int(request, "_HLS_msn")
    part = _query_int(request, "_HLS_part")
    if part is not None and msn is None:
        raise BadRequest("_HLS_part needs _HLS_msn")
    skip = request.query.get("_HLS_skip")
    if skip is not None and skip not in HLS_SKIP:
        raise BadRequest(f"_HLS_skip must be YES or v2, got {skip[:40]!r}")
    async with _muxer(request, start=True) as muxer:
        await _wait_first_segment(muxer)
        if msn is not None:
            last = muxer.last_msn
            assert last is not None
            if msn > last + MAX_MSN_AHEAD:
                raise BadRequest(f"_HLS_msn={msn} is too far ahead of the last segment {last}")
            # A part far beyond the live edge would be waited for until the timeout and then
            # answered 503; the spec says 400 at once.
            limit = _advance_part_limit(muxer.part_target)
            ahead = muxer.parts_ahead(msn, part) if part is not None else None
            if ahead is not None and ahead > limit:
                raise BadRequest(f"_HLS_part={part} of segment {msn} is too far ahead of the last part (at most {limit} parts ahead)")
            timeout = 3 * muxer.target_duration
            if not await muxer.wait_until(lambda: muxer.reached(msn, part), timeout):
                raise _unavailable(muxer, f"segment {msn} not ready within {timeout}s")
        text = playlist.render_media(muxer.snapshot())
    return _playlist_response(text)


@api(summary="LL-HLS init segment", path={"number": HlsNumber}, responses={200: Media(SEGMENT_TYPE, binary=True)}, extra_errors=(503,), tag="live")
@requires("live.view")
async def init_segment(request: web.Request) -> web.Response:
    number = _path_int(request, "number") if "number" in request.match_info else None
    async with _muxer(request, start=True) as muxer:
        if number is None:
            await _wait_first_segment(muxer)
        init = muxer.init(number)
        if init is None:
            raise NotFound(f"camera {muxer.camera.id}: no init segment {number}")
        return _media_response(request, init.data)


@api(summary="LL-HLS media segment", path={"msn": HlsNumber}, responses={200: Media(SEGMENT_TYPE, binary=True)}, extra_errors=(503,), tag="live")
@requires("live.view")
async def media_segment(request: web.Request) -> web.Response:
    msn = _path_int(request, "msn")
    async with _muxer(request, start=False) as muxer:
        seg = muxer.segment(msn)
        if seg is None:
            raise NotFound(f"camera {muxer.camera.id}: no segment {msn}")
        return _media_response(request, seg.data)


@api(summary="LL-HLS partial segment", path={"msn": HlsNumber, "part": HlsNumber}, responses={200: Media(SEGMENT_TYPE, binary=True)}, extra_errors=(503,), tag="live")
@requires("live.view")
async def partial_segment(request: web.Request) -> web.Response:
    msn, index = _path_int(request, "msn"), _path_int(request, "part")
    async with _muxer(request, start=False) as muxer:
        found = muxer.part(msn, index)
        if found is None and muxer.is_upcoming(msn, index):
            timeout = 3 * muxer.target_duration
            done = await muxer.wait_until(lambda: muxer.part(msn, index) is not None or muxer.reached(msn, None), timeout)
            if not done:
                raise _unavailable(muxer, f"part {msn}.{index} not ready within {timeout}s")
            found = muxer.part(msn, index)
        if found is None:
            raise NotFound(f"camera {muxer.camera.id}: no part {msn}.{index}")
        return _media_response(request, found.data)


async def hls_ctx(app: web.Application) -> AsyncIterator[None]:
    manager = HlsManager(app[CONFIG].hls)
    app[HLS] = manager
    async with HlsViewers(app[ACCESS]) as viewers:
        app[HLS_VIEWERS] = viewers
        yield
        await manager.aclose()


async def close_on_shutdown(app: web.Application) -> None:
    """``on_shutdown``: before aiohttp waits for open requests, blocked playlist requests end at once."""
    if HLS in app:
        await app[HLS].aclose()


def setup(app: web.Application) -> None:
    base = "/api/cameras/{camera_id}/hls"
    app.router.add_get(f"{base}/index.m3u8", multivariant, name="hls-index")
    app.router.add_get(f"{base}/stream.m3u8", media_playlist, name="hls-stream")
    app.router.add_get(f"{base}/init.mp4", init_segment, name="hls-init")
    app.router.add_get(f"{base}/init-{{number:\\d+}}.mp4", init_segment, name="hls-init-n")
    app.router.add_get(f"{base}/seg/{{msn:\\d+}}.m4s", media_segment, name="hls-segment")
    app.router.add_get(f"{base}/part/{{msn:\\d+}}.{{part:\\d+}}.m4s", partial_segment, name="hls-part")
