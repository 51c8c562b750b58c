"""RTSP ingest: one PyAV pull per camera, in its own thread, with reconnect.

The demux loop runs in a dedicated daemon thread (never the event loop, never the small
default executor) and hands finished access units to the hub with
``call_soon_threadsafe``. Nothing is decoded, except the first keyframe of each
connection, once, to learn the picture size.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from fractions import Fraction

import av

from gateway.config import IngestConfig
from gateway.media.h26x import ParameterSetKeeper, has_picture, is_annexb, length_prefixed_to_annexb, parameter_sets_from_extradata
from gateway.media.hub import StreamHub
from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo
from gateway.media.timestamps import TimestampSanitizer
from gateway.rtsp.client import RtspClient, RtspClientError
from gateway.rtsp.depacketizer import MAX_ACCESS_UNIT
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

SUPPORTED_CODECS = ("h264", "hevc")


class SourceState(enum.StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SourceStatus:
    state: SourceState
    since: float  #: wall clock of the last state change
    last_error: str | None = None
    reconnects: int = 0


class IngestError(Exception):
    """The camera's stream cannot be used (unsupported codec, no video)."""


class _Connection:
    """One connection's demux loop. Runs entirely in the source's thread."""

    def __init__(self, source: RtspSource, url: str, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        self.source = source
        self.url = url
        self.loop = loop
        self.stop = stop

    def _call(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone: the gateway is exiting
            self.stop.set()

    def run(self) -> None:
        src = self.source
        cfg = src.ingest
        if cfg.client == "native":
            self._run_native()
            return
        options = {
            "rtsp_transport": "tcp",
            "rtsp_flags": "prefer_tcp",
            # Fast open: the SDP already says what the stream is.
            "analyzeduration": "0",
            "probesize": "32",
            "fflags": "nobuffer",
            # Socket-level timeout (microseconds) as a second line of defence.
            "timeout": str(int(cfg.read_timeout * 1_000_000)),
        }
        opened = time.monotonic()
        try:
            container = av.open(self.url, options=options, timeout=(cfg.open_timeout, cfg.read_timeout))
        except av.FFmpegError as exc:
            if time.monotonic() - opened >= 0.95 * cfg.open_timeout:
                # Interrupted at the open timeout, FFmpeg's RTSP layer reports whatever it made
                # of the half-read answer ("Invalid data found ..."): a camera answering byte by
                # byte, announcing a body it never sends, or redirecting for ever. Say so.
                raise TimeoutError(
                    f"the camera did not complete the RTSP handshake within the open timeout ({cfg.open_timeout:g} s; "
                    f"FFmpeg: {_ffmpeg_reason(exc)})"
                ) from None
            if isinstance(exc, av.error.InvalidDataError):
                raise IngestError(f"the camera's RTSP answers are malformed (FFmpeg: {_ffmpeg_reason(exc)})") from None
            raise
        try:
            if not container.streams.video:
                raise IngestError("the stream has no video track")
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            if codec not in SUPPORTED_CODECS:
                raise IngestError(f"unsupported video codec {codec!r} (supported: H.264, H.265)")
            self._demux(container, stream, codec)
        finally:
            container.close()

    def _run_native(self) -> None:
        """The native RTSP client: each picture leaves on its RTP marker bit."""
        cfg = self.source.ingest
        client = RtspClient(
            self.url, transport=cfg.transport, open_timeout=cfg.open_timeout, read_timeout=cfg.read_timeout, stop=self.stop
        )
        try:
            try:
                track = client.open()
            except RtspClientError as exc:
                if str(exc).startswith("unsupported video codec"):
                    raise IngestError(str(exc)) from exc
                raise
            emit = self._emitter(track.codec, ParameterSetKeeper(track.codec, track.parameter_sets), track.framerate, None)
            for unit in client.access_units():
                if self.stop.is_set():
                    return
                emit(unit.data, unit.timestamp * CLOCK_RATE // track.clock_rate, False)
        finally:
            client.close()
        if not self.stop.is_set():
            raise ConnectionError("the camera ended the stream")

    def _emitter(
        self, codec: str, keeper: ParameterSetKeeper, declared: float | None, stream: av.VideoStream | None
    ) -> Callable[[bytes, int | None, bool], None]:
        """Turns one connection's access units into hub packets (parameter sets, first
        keyframe, stream info, sanitised timestamps, wall clock of arrival)."""
        src = self.source
        info: StreamInfo | None = None
        first = True
        asked = False  # for a keyframe, on this connection
        waiting_since: float | None = None  # the first picture before any keyframe
        noted = False
        jumps = src._sanitizer.jumps

        def emit(data: bytes, raw: int | None, key: bool) -> None:
            nonlocal info, first, asked, waiting_since, noted, jumps
            if len(data) > MAX_ACCESS_UNIT:
                # No hub, recorder or viewer queue is sized for this; a broken camera.
                raise IngestError(f"the camera sent a picture of {len(data)} bytes (at most {MAX_ACCESS_UNIT} accepted)")
            data, key = keeper.process(data)
            if not has_picture(codec, data):
                return  # a lone delimiter or SEI (seen around reconnects): no frame for anyone
            if info is None:
                if not key:
                    if not asked:  # pictures flow, none decodable: ask rather than wait out the GOP
                        asked = True
                        self._call(src._ask_for_keyframe)
                    # Pictures that never include a keyframe (damaged or garbage data) would
                    # leave the camera "connecting" without a word: say so, without giving up
                    # (a long-GOP camera gets there in the end).
                    now = time.monotonic()
                    waiting_since = waiting_since or now
                    if not noted and now - waiting_since > 2 * src.ingest.read_timeout:
                        noted = True
                        self._call(
                            src._note_while_connecting,
                            f"pictures from the camera but no keyframe for {now - waiting_since:.0f} s "
                            "(damaged data, or a very long GOP)",
                        )
                    return  # nothing is decodable before the first keyframe
                info = self._probe_info(codec, data, keeper.parameter_sets, declared, stream)
                self._call(src._went_online, info)
            elif key and keeper.parameter_sets != info.parameter_sets:
                info = self._probe_info(codec, data, keeper.parameter_sets, declared, stream)
            ts = src._sanitize(raw, time.monotonic())
            if src._sanitizer.jumps != jumps:
                jumps = src._sanitizer.jumps
                logger.log(
                    logging.WARNING if jumps == 1 or jumps % 100 == 0 else logging.DEBUG,
                    "camera %s: its clock jumped %+.1fs against the arrival time (%d jumps); timestamps re-based",
                    src.name, src._sanitizer.last_jump / CLOCK_RATE, jumps,
                )
            packet = MediaPacket(
                data=data, pts=ts, dts=ts, keyframe=key, wallclock=time.time(), info=info, discontinuity=first
            )
            first = False
            self._call(src.hub.publish, packet)

        return emit

    def _demux(self, container: av.container.InputContainer, stream: av.VideoStream, codec: str) -> None:
        tb = stream.time_base or Fraction(1, CLOCK_RATE)
        to_clock = tb * CLOCK_RATE
        keeper = ParameterSetKeeper(codec, parameter_sets_from_extradata(codec, stream.codec_context.extradata))
        declared = float(stream.average_rate) if stream.average_rate else None
        held: tuple[bytes, int | None, bool] | None = None  # a keyframe waiting for its other slices
        emit = self._emitter(codec, keeper, declared, stream)

        for packet in container.demux(stream):
            if self.stop.is_set():
                return
            if packet.size == 0:
                continue
            data = bytes(packet)
            if not is_annexb(data):
                data = length_prefixed_to_annexb(data)
            raw_ts = packet.pts if packet.pts is not None else packet.dts
            raw = int(raw_ts * to_clock) if raw_ts is not None else None
            if held is not None:
                h_data, h_raw, h_key = held
                if raw is not None and raw == h_raw:
                    # The rest of a sliced keyframe: same picture, so one access unit.
                    held = (h_data + data, h_raw, True)
                    continue
                held = None
                emit(h_data, h_raw, h_key)
            if packet.is_keyframe:
                held = (data, raw, True)
            else:
                emit(data, raw, False)
        if held is not None:
            emit(*held)
        raise ConnectionError("the camera ended the stream")

    def _probe_info(
        self, codec: str, keyframe: bytes, parameter_sets: bytes, declared: float | None, stream: av.VideoStream | None
    ) -> StreamInfo:
        width, height, pix_fmt, profile = 0, 0, None, None
        if stream is not None:
            width, height, profile = stream.codec_context.width, stream.codec_context.height, stream.codec_context.profile
        frames: list[av.VideoFrame] = []
        reason = "no picture came out"
        try:
            ctx = av.CodecContext.create(codec, "r")
            frames = ctx.decode(av.Packet(keyframe)) + ctx.decode(None)
            width, height = ctx.width or width, ctx.height or height
            profile = ctx.profile or profile
            if frames:
                width, height, pix_fmt = frames[0].width, frames[0].height, frames[0].format.name
        except av.FFmpegError as exc:
            reason = _ffmpeg_reason(exc)
        if not frames:
            # Garbage or corrupted data that merely looks like a keyframe: going online with it
            # would serve viewers and the recorder nothing decodable, under a 0x0 size.
            raise IngestError(f"the camera's keyframe does not decode ({reason})")
        epoch = self.source._epoch
        return StreamInfo(
            codec=codec,
            width=width,
            height=height,
            parameter_sets=parameter_sets,
            profile=profile,
            pix_fmt=pix_fmt,
            declared_fps=declared,
            epoch=epoch,
        )


class RtspSource:
    """Pulls one RTSP stream into a hub for as long as it runs; reconnects forever."""

    def __init__(
        self,
        name: str,
        hub: StreamHub,
        url: Callable[[], Awaitable[str]],
        ingest: IngestConfig,
        request_keyframe: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.name = name
        self.hub = hub
        self.ingest = ingest
        self._url = url
        #: Asks the camera for a keyframe (CameraVendor.request_keyframe); None: just wait.
        self._request_keyframe = request_keyframe
        self._keyframe_task: asyncio.Task[None] | None = None
        #: Keyframe requests the camera took (for tests and the curious).
        self.keyframe_requests = 0
        self._status = SourceStatus(SourceState.STOPPED, time.time())
        self._listeners: list[Callable[[SourceStatus], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._sanitizer = TimestampSanitizer()
        self._epoch = 0
        self._offline_since: float | None = None
        self._thread: threading.Thread | None = None

    # -- status ------------------------------------------------------------------------
    @property
    def status(self) -> SourceStatus:
        return self._status

    def add_listener(self, listener: Callable[[SourceStatus], None]) -> None:
        self._listeners.append(listener)

    def _set_status(self, status: SourceStatus) -> None:
        previous = self._status
        self._status = status
        if previous.state != status.state:
            level = logging.WARNING if status.state == SourceState.OFFLINE else logging.INFO
            logger.log(level, "camera %s: %s%s", self.name, status.state, f" ({status.last_error})" if status.last_error else "")
        for listener in list(self._listeners):
            try:
                listener(status)
            except Exception:
                logger.exception("camera %s: status listener failed", self.name)

    def _went_online(self, info: StreamInfo) -> None:
        self._set_status(replace(self._status, state=SourceState.ONLINE, since=time.time(), last_error=None))
        logger.info("camera %s: %s %dx%d", self.name, info.codec, info.width, info.height)

    def _note_while_connecting(self, text: str) -> None:
        """Show why a connection does not come online yet, without ending it."""
        if self._status.state == SourceState.CONNECTING:
            self._set_status(replace(self._status, last_error=text))

    def _ask_for_keyframe(self) -> None:
        if self._request_keyframe is None or self._stop.is_set():
            return
        if self._keyframe_task is None or self._keyframe_task.done():
            self._keyframe_task = asyncio.get_running_loop().create_task(self._keyframe_request(), name=f"keyframe:{self.name}")

    async def _keyframe_request(self) -> None:
        assert self._request_keyframe is not None
        try:
            granted = await asyncio.wait_for(self._request_keyframe(), self.ingest.open_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the camera's next keyframe comes anyway; it only takes longer
            reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            logger.info("camera %s: asking for a keyframe failed: %s", self.name, reason)
            return
        if granted:
            self.keyframe_requests += 1
            logger.info("camera %s: no keyframe yet on the new connection; asked the camera for one", self.name)

    def _sanitize(self, raw: int | None, arrival: float | None = None) -> int:
        return self._sanitizer(raw, arrival)

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> RtspSource:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name=f"source:{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        keyframe_task, self._keyframe_task = self._keyframe_task, None
        await cancel_and_wait(keyframe_task)
        thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            # Live cameras send a packet every few tens of ms, so the thread sees the stop
            # flag at once; a stalled one is abandoned (daemon) and ends at its read timeout.
            await asyncio.to_thread(thread.join, 1.0)
        self._set_status(SourceStatus(SourceState.STOPPED, time.time(), reconnects=self._status.reconnects))

    async def _run(self) -> None:
        backoff = self.ingest.backoff_initial
        attempt = 0
        while not self._stop.is_set():
            self._set_status(replace(self._status, state=SourceState.CONNECTING, since=self._status.since if attempt else time.time()))
            started = time.monotonic()
            error: str
            try:
                url = await self._url()
                await self._pull(url)
                error = "stream ended"
            except asyncio.CancelledError:
                raise
            except IngestError as exc:
                error = str(exc)
            except av.FFmpegError as exc:
                error = _describe_ffmpeg_error(exc)
            except (OSError, ConnectionError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
            except Exception as exc:  # a camera must never take the gateway down
                logger.exception("camera %s: unexpected ingest failure", self.name)
                error = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                return
            if time.monotonic() - started > 10.0:
                backoff = self.ingest.backoff_initial  # it worked for a while: start over
            attempt += 1
            if self._status.state != SourceState.OFFLINE:
                self._set_status(SourceStatus(SourceState.OFFLINE, time.time(), error, self._status.reconnects + 1))
            else:
                self._set_status(replace(self._status, last_error=error, reconnects=self._status.reconnects + 1))
            delay = min(backoff, self.ingest.backoff_max) * random.uniform(0.8, 1.2)
            logger.info("camera %s: reconnecting in %.1fs", self.name, delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, self.ingest.backoff_max)

    async def _pull(self, url: str) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        # Stopped while connecting, nobody awaits the thread's outcome: retrieve it anyway, or
        # asyncio logs "Future exception was never retrieved" at every such stop.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        gap = time.time() - self._offline_since if self._offline_since else 0.0
        self._epoch += 1
        self._sanitizer.new_epoch(gap)
        connection = _Connection(self, url, loop, self._stop)

        def target() -> None:
            try:
                connection.run()
            except BaseException as exc:  # noqa: BLE001 - handed to the loop as is
                outcome: BaseException | None = exc
            else:
                outcome = None
            try:
                loop.call_soon_threadsafe(_settle, done, outcome)
            except RuntimeError:  # the loop closed while we were blocked in a read
                pass

        thread = threading.Thread(target=target, name=f"ingest-{self.name}", daemon=True)
        self._thread = thread
        thread.start()
        try:
            # Shielded: on cancel the thread notices the stop flag at its next packet or
            # read timeout; we do not wait for it (it is a daemon thread).
            await asyncio.shield(done)
        finally:
            self._offline_since = time.time()


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def _ffmpeg_reason(exc: av.FFmpegError) -> str:
    """FFmpeg's reason without the file name: for a camera that is the URL, credentials included."""
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


def _describe_ffmpeg_error(exc: av.FFmpegError) -> str:
    # Never str(exc): it ends with the URL, user and password included, and this text is
    # shown to every viewer of the camera (``last_error``).
    text = _ffmpeg_reason(exc)
    if "Immediate exit requested" in text or "Exit requested" in text:
        return "no data from the camera within the read timeout"
    if "Connection refused" in text:
        return "connection refused"
    if "401" in text or "Unauthorized" in text:
        return "the camera refused our credentials (401)"
    if "404" in text or "Not Found" in text:
        return "the camera has no such stream (404)"
    return text
