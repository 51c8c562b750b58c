"""The demo camera: a virtual H.264 camera served over RTSP from inside the gateway.

Each demo camera renders a picture (by default a window over a generated city panorama
that pan, tilt and zoom commands move: a virtual PTZ dome) with a moving box, its name, a
human-readable UTC clock and the machine-readable time code (``gateway.media.timecode``) carrying the capture
time of every frame, encodes it with libx264 in a worker thread paced by the wall clock,
and serves it at ``rtsp://<bind>:<port>/<camera id>`` (TCP interleaved).

With ``preencoded-seconds > 0`` the camera encodes that many seconds once at start and
then loops those packets with fresh timestamps. It then costs almost no CPU, which suits
ingest benchmarks, but the time code shows the time of the pre-encoding, not the present:
do not use that mode to measure latency.

Pattern ``traffic`` (``demo_traffic``) shows a street where synthetic vehicles with number
plates of Ukraine, Poland and Vietnam drive through at times, in lanes and directions that
follow from ``[camera.options.traffic]``, looping and anchored to the wall clock: the
ground truth of vehicle counting and plate reading. Pre-encoded, it encodes one whole loop
(``loop-seconds`` must then be a whole number of frames) and plays it in step with the wall
clock, so the ground truth holds in both modes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from urllib.parse import quote

import av
import msgspec
import numpy as np
from av.video.frame import PictureType

from gateway.plugin_api import (
    CLOCK_RATE,
    STRIP_HEIGHT,
    CameraVendor,
    DeviceInfo,
    MediaPacket,
    NotFound,
    Optics,
    ParameterSetKeeper,
    PtzCapabilities,
    PtzPreset,
    PtzStatus,
    RtspServer,
    StreamHub,
    StreamInfo,
    StreamProfile,
    __version__,
    draw_text,
    draw_timecode,
    hookimpl,
    text_size,
)

from .demo_traffic import TrafficOptions, TrafficScene
from .virtual_ptz import Panorama, PanoramaOptics, VirtualHead

logger = logging.getLogger(__name__)

PATTERNS = ("panorama", "bars", "gradient", "busy", "traffic")
#: 75 % colour bars (white, yellow, cyan, green, magenta, red, blue) as BT.601 limited-range YUV.
BARS_RGB = ((191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191))


class DemoOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    width: int = 1280
    height: int = 720
    fps: float = 25.0
    bitrate: int = 2_000_000  #: bits per second
    keyframe_interval: float = 2.0  #: seconds
    port: int = 0  #: 0 = an ephemeral port
    bind: str = "127.0.0.1"
    #: "panorama" is a virtual PTZ dome over a generated city scene; the others are fixed.
    pattern: str = "panorama"
    #: When > 0, encode this many seconds once and loop them (cheap; the time code is not live).
    #: Pattern "traffic" then encodes one whole loop of its traffic, whatever the number.
    preencoded_seconds: float = 0.0
    #: The vehicles of pattern "traffic" (``demo_traffic.TrafficOptions``).
    traffic: TrafficOptions = msgspec.field(default_factory=TrafficOptions)

    def __post_init__(self) -> None:
        if not (96 <= self.width <= 3840 and 64 <= self.height <= 2160) or self.width % 2 or self.height % 2:
            raise ValueError(f"size {self.width}x{self.height} must be even and within 96x64..3840x2160")
        if not 1 <= self.fps <= 60:
            raise ValueError(f"fps {self.fps} must be between 1 and 60")
        if not 50_000 <= self.bitrate <= 50_000_000:
            raise ValueError(f"bitrate {self.bitrate} must be between 50000 and 50000000 bits/s")
        if not 0.1 <= self.keyframe_interval <= 60:
            raise ValueError(f"keyframe-interval {self.keyframe_interval} must be between 0.1 and 60 s")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} must be between 0 and 65535")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern {self.pattern!r} must be one of {', '.join(PATTERNS)}")
        if not 0 <= self.preencoded_seconds <= 600:
            raise ValueError(f"preencoded-seconds {self.preencoded_seconds} must be between 0 and 600")
        if self.pattern == "traffic" and self.preencoded_seconds > 0:
            frames = self.traffic.loop_seconds * self.fps
            if abs(frames - round(frames)) > 1e-6 or frames > 600 * 60:
                raise ValueError(
                    f"traffic loop-seconds {self.traffic.loop_seconds:g} at fps {self.fps:g} must be a whole number of"
                    " frames (at most 36000) to be pre-encoded"
                )

    @property
    def keyint(self) -> int:
        return max(1, round(self.keyframe_interval * self.fps))


class DemoCamera(CameraVendor):
    """A virtual camera with a live time code; its RTSP server runs in the gateway's loop."""

    Options = DemoOptions

    @staticmethod
    def id() -> str:
        return "demo"

    def __init__(self, camera: Any, options: DemoOptions | None = None) -> None:
        super().__init__(camera, options or DemoOptions())
        self.options: DemoOptions
        self._hub: StreamHub | None = None
        self._server: RtspServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._keyframe_wanted = threading.Event()
        self.frames_skipped = 0
        #: Keyframes encoded on request (request_keyframe), for tests and the curious.
        self.keyframes_requested = 0
        #: The virtual dome's position (pattern "panorama", live encoding only).
        self.head: VirtualHead | None = (
            VirtualHead() if self.options.pattern == "panorama" and self.options.preencoded_seconds == 0 else None
        )

    @property
    def name(self) -> str:
        return getattr(self.camera, "name", None) or self.camera.id

    @property
    def hub(self) -> StreamHub | None:
        return self._hub

    async def __aenter__(self) -> DemoCamera:
        loop = asyncio.get_running_loop()
        self._hub = StreamHub(f"demo {self.camera.id}")
        self._server = RtspServer(self.options.bind, self.options.port)
        await self._server.__aenter__()
        try:
            self._server.add_mount("/" + self.camera.id, self._hub)
            self._stop.clear()
            publish = self._publisher(loop, self._hub)
            self._thread = threading.Thread(
                target=self._run, args=(publish,), name=f"demo-{self.camera.id}", daemon=True
            )
            self._thread.start()
        except BaseException:
            await self._server.close()
            self._server = None
            raise
        logger.info("camera %s: demo camera at %s", self.camera.id, self._url())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            if self._thread.is_alive():
                logger.warning("camera %s: demo encoder thread did not stop in time", self.camera.id)
            self._thread = None
        if self._server is not None:
            await self._server.close()
            self._server = None
        if self._hub is not None:
            self._hub.close()

    async def device_info(self) -> DeviceInfo:
        """The virtual camera describes itself like a device would (for the inventory)."""
        kind = "virtual PTZ dome" if self.head is not None else f"virtual camera ({self.options.pattern})"
        return DeviceInfo(
            manufacturer="Citygate", model=f"demo {kind}", firmware=__version__, serial=f"demo-{self.camera.id}",
        )

    def profiles(self) -> Sequence[StreamProfile]:
        return (StreamProfile.MAIN,)

    async def stream_url(self, profile: StreamProfile = StreamProfile.MAIN) -> str:
        if profile != StreamProfile.MAIN:
            raise NotFound(f"camera {self.camera.id}: the demo camera has no {profile} stream")
        return self._url()

    async def request_keyframe(self, profile: StreamProfile = StreamProfile.MAIN) -> bool:
        """The next frame is encoded as an IDR (live encoding only: a loop of pre-encoded
        frames has its keyframes where they are)."""
        return profile == StreamProfile.MAIN and self.force_keyframe()

    def force_keyframe(self) -> bool:
        """Thread-safe: make the next live-encoded frame a keyframe. False when pre-encoded."""
        if self.options.preencoded_seconds > 0:
            return False
        self._keyframe_wanted.set()
        return True

    # -- virtual PTZ -------------------------------------------------------------------
    def ptz_capabilities(self) -> PtzCapabilities:
        if self.head is None:
            return PtzCapabilities()
        return PtzCapabilities(continuous=True, absolute=True, relative=True, presets=True, home=True)

    def _head(self) -> VirtualHead:
        if self.head is None:
            raise NotImplementedError("this demo camera has no virtual PTZ (pattern is not panorama, or pre-encoded)")
        return self.head

    async def ptz_continuous_move(self, pan: float, tilt: float, zoom: float) -> None:
        self._head().continuous_move(pan, tilt, zoom)

    async def ptz_stop(self) -> None:
        self._head().stop()

    async def ptz_absolute_move(self, pan: float, tilt: float, zoom: float) -> None:
        self._head().absolute_move(pan, tilt, zoom)

    async def ptz_relative_move(self, pan: float, tilt: float, zoom: float) -> None:
        self._head().relative_move(pan, tilt, zoom)

    async def ptz_presets(self) -> list[PtzPreset]:
        return [PtzPreset(token, name) for token, name in self._head().presets()]

    async def ptz_status(self) -> PtzStatus | None:
        """The head's exact position: a virtual dome always knows where it looks."""
        if self.head is None:
            return None
        pan, tilt, zoom = self.head.position()
        return PtzStatus(pan, tilt, zoom, moving=self.head.moving)

    def ptz_optics(self) -> Optics | None:
        return PanoramaOptics(self.options.width, self.options.height) if self.head is not None else None

    async def ptz_goto_preset(self, token: str, speed: float | None = None) -> None:
        if not self._head().goto_preset(token, speed):
            raise NotFound(f"camera {self.camera.id}: no preset {token!r}")

    async def ptz_set_preset(self, name: str) -> PtzPreset:
        return PtzPreset(self._head().set_preset(name), name)

    async def ptz_home(self) -> None:
        self._head().home()

    def _url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"camera {self.camera.id}: demo camera not started")
        return self._server.url("/" + quote(self.camera.id))

    # -- worker thread -----------------------------------------------------------------
    def _publisher(self, loop: asyncio.AbstractEventLoop, hub: StreamHub) -> Callable[[MediaPacket], bool]:
        def publish(packet: MediaPacket) -> bool:
            try:
                loop.call_soon_threadsafe(hub.publish, packet)
            except RuntimeError:  # the loop is closed: nobody is left to watch
                return False
            return True

        return publish

    def _run(self, publish: Callable[[MediaPacket], bool]) -> None:
        try:
            if self.options.preencoded_seconds > 0:
                self._loop_preencoded(publish)
            else:
                self._encode_live(publish)
        except Exception:
            logger.exception("camera %s: demo encoder failed", self.camera.id)

    def _align_traffic(self, frames: int) -> int:
        """Wait for the wall-clock moment of the loop's next keyframe; return its index, so
        the pre-encoded traffic plays in step with ``demo_traffic.passages``."""
        opts = self.options
        loop = opts.traffic.loop_seconds
        phase = (time.time() - opts.traffic.origin) % loop
        first = math.ceil(phase * opts.fps / opts.keyint) * opts.keyint
        wait = first / opts.fps - phase
        if first >= frames:
            first, wait = 0, loop - phase
        self._stop.wait(max(0.0, wait))
        return first

    def _slots(self) -> Iterator[int]:
        """Yield frame slot numbers in real time; slots that are already past are skipped."""
        period = 1.0 / self.options.fps
        start = time.monotonic()
        slot = 0
        while not self._stop.is_set():
            late = time.monotonic() - (start + slot * period)
            if late < 0:
                self._stop.wait(-late)
                continue
            if late >= period:
                behind = int(late / period)
                self.frames_skipped += behind
                slot += behind
            yield slot
            slot += 1

    def _encode_live(self, publish: Callable[[MediaPacket], bool]) -> None:
        renderer = _Renderer(self.options, self.name, self.head)
        encoder = _Encoder(self.options)
        for slot in self._slots():
            captured = time.time()
            pts = round(slot * CLOCK_RATE / self.options.fps)
            frame = renderer.render(slot, captured)
            if self._keyframe_wanted.is_set():
                self._keyframe_wanted.clear()
                frame.pict_type = PictureType.I  # an IDR: libx264 is opened with forced-idr
                self.keyframes_requested += 1
            for packet in encoder.encode(frame, pts, captured):
                if not publish(packet):
                    return

    def _loop_preencoded(self, publish: Callable[[MediaPacket], bool]) -> None:
        opts = self.options
        renderer = _Renderer(opts, self.name)
        encoder = _Encoder(opts)
        traffic = opts.pattern == "traffic"
        if traffic:  # one whole loop of the traffic, frame i showing the loop's second i / fps
            frames = round(opts.traffic.loop_seconds * opts.fps)
        else:
            frames = math.ceil(opts.preencoded_seconds * opts.fps / opts.keyint) * opts.keyint
        cached: list[MediaPacket] = []
        for index in range(frames):
            if self._stop.is_set():
                return
            captured = time.time()
            pts = round(index * CLOCK_RATE / opts.fps)
            scene_at = opts.traffic.origin + index / opts.fps if traffic else None
            cached.extend(encoder.encode(renderer.render(index, captured, scene_at), pts, captured))
        cached.extend(encoder.flush())
        logger.info("camera %s: looping %d pre-encoded frames", self.camera.id, len(cached))
        first = self._align_traffic(len(cached)) if traffic and len(cached) == frames else 0
        for slot in self._slots():
            source = cached[(first + slot) % len(cached)]
            pts = round(slot * CLOCK_RATE / opts.fps)
            packet = MediaPacket(source.data, pts, pts, source.keyframe, time.time(), source.info)
            if not publish(packet):
                return


class _Renderer:
    """Draws frames into a reused YUV 4:2:0 buffer over a background built once."""

    def __init__(self, options: DemoOptions, name: str, head: VirtualHead | None = None) -> None:
        self.width, self.height = options.width, options.height
        self.fps = options.fps
        self.name = name
        self.scale = max(1, self.height // 240)
        self._head = head
        self._panorama = Panorama(self.width, self.height) if options.pattern == "panorama" else None
        self._view_key: object = None
        self._traffic = TrafficScene(options.traffic, self.width, self.height) if options.pattern == "traffic" else None
        self._background = (
            self._traffic.background_i420() if self._traffic is not None else _background(options.pattern, self.width, self.height)
        )
        self._buffer = np.empty_like(self._background)
        # A neutral black panel under the strip for the clock and the name.
        clock_width = text_size("2000-01-01 00:00:00.000 UTC", 1)[0]
        self._text_size = max(1, min(2 * self.scale, (self.width - 4 * self.scale) // clock_width))
        self._line_height = text_size("0", self._text_size)[1] + 3 * self.scale
        self._text_top = STRIP_HEIGHT + 3 * self.scale
        panel = min(self.height, self._text_top + 2 * self._line_height) & ~1
        self._panel = panel
        # "busy": fine detail that pans every frame, so the encoder spends bits the way a
        # street scene makes it (benchmarks at a realistic bitrate).
        self._texture = (
            np.random.default_rng(7).integers(40, 200, (self.height - panel, self.width), dtype=np.uint8)
            if options.pattern == "busy"
            else None
        )
        y, u, v = self._planes(self._background)
        y[:panel] = 16
        u[: panel // 2] = 128
        v[: panel // 2] = 128

    def _planes(self, buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        flat = buffer.reshape(-1)
        y = flat[: w * h].reshape(h, w)
        u = flat[w * h : w * h + w * h // 4].reshape(h // 2, w // 2)
        v = flat[w * h + w * h // 4 :].reshape(h // 2, w // 2)
        return y, u, v

    def _update_view(self) -> str:
        """Redraw the background from the panorama if the dome moved; return its position text."""
        assert self._panorama is not None
        pan, tilt, zoom = self._head.position(time.monotonic()) if self._head is not None else (0.0, 0.0, 0.5)
        key = self._panorama.view_key(pan, tilt, zoom)
        if key != self._view_key:
            self._view_key = key
            y, u, v = self._planes(self._background)
            self._panorama.render(key, y, u, v)
            y[: self._panel] = 16
            u[: self._panel // 2] = 128
            v[: self._panel // 2] = 128
        return f"  pan {pan * 180:+04.0f}  tilt {tilt * 90:+03.0f}  zoom {self._panorama.magnification(zoom):.1f}x"

    def render(self, index: int, captured: float, scene_at: float | None = None) -> av.VideoFrame:
        """Frame ``index``, captured at ``captured``; the traffic shows the moment ``scene_at``
        (default: ``captured``)."""
        heading = self._update_view() if self._panorama is not None else ""
        np.copyto(self._buffer, self._background)
        y, u, v = self._planes(self._buffer)
        if self._texture is not None:
            y[self._panel :] = np.roll(self._texture, (index * 8) % self.width, axis=1)
        if self._traffic is not None:
            self._traffic.draw(y, u, v, captured if scene_at is None else scene_at, top=self._panel)
        else:
            # A box that bounces left and right, so motion (and frame drops) are visible.
            size = (self.height // 8) & ~1
            travel = self.width - size
            position = int(index * self.width / (4 * self.fps)) % (2 * travel)
            x = (position if position < travel else 2 * travel - position) & ~1
            top = (self.height * 5 // 8) & ~1
            y[top : top + size, x : x + size] = 210
            u[top // 2 : (top + size) // 2, x // 2 : (x + size) // 2] = 16
            v[top // 2 : (top + size) // 2, x // 2 : (x + size) // 2] = 146
        # Human-readable clock and name below the strip, then the strip itself.
        stamp = datetime.fromtimestamp(captured, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
        left = 2 * self.scale
        draw_text(y, stamp, left, self._text_top, self._text_size, 235)
        draw_text(y, self.name + heading, left, self._text_top + self._line_height, self._text_size, 235)
        draw_timecode(y, int(captured * 1000))
        return av.VideoFrame.from_ndarray(self._buffer.reshape(self.height * 3 // 2, self.width), format="yuv420p")


def _background(pattern: str, width: int, height: int) -> np.ndarray:
    """The static picture as a flat I420 buffer; chroma is neutral under the time-code strip."""
    columns = np.arange(width // 2)
    if pattern == "panorama":  # drawn per view by the renderer
        return np.full(width * height * 3 // 2, 128, dtype=np.uint8)
    if pattern == "bars":
        rgb = np.array(BARS_RGB, dtype=np.float64)[(columns * len(BARS_RGB)) // (width // 2)]
    else:
        ramp = columns / max(1, width // 2 - 1)
        rgb = np.stack([ramp * 219, np.full_like(ramp, 110.0), (1 - ramp) * 219], axis=1)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    luma_row = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u_row = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v_row = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    y = np.repeat(np.clip(np.round(luma_row), 16, 235).astype(np.uint8), 2)[None, :].repeat(height, axis=0)
    u = np.clip(np.round(u_row), 16, 240).astype(np.uint8)[None, :].repeat(height // 2, axis=0)
    v = np.clip(np.round(v_row), 16, 240).astype(np.uint8)[None, :].repeat(height // 2, axis=0)
    u[: STRIP_HEIGHT // 2] = 128
    v[: STRIP_HEIGHT // 2] = 128
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)])


class _Encoder:
    """libx264 (ultrafast, zerolatency, constrained baseline) producing Annex B access units."""

    def __init__(self, options: DemoOptions) -> None:
        keyint = options.keyint
        context = av.CodecContext.create("libx264", "w")
        context.width = options.width
        context.height = options.height
        context.pix_fmt = "yuv420p"
        context.time_base = Fraction(1, CLOCK_RATE)
        context.framerate = Fraction(options.fps).limit_denominator(1001)
        context.bit_rate = options.bitrate
        context.gop_size = keyint
        context.thread_count = 1
        kbps = options.bitrate // 1000
        context.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "profile": "baseline",
            "forced-idr": "1",
            "x264-params": (
                f"repeat-headers=1:keyint={keyint}:min-keyint={keyint}:scenecut=0"
                f":vbv-maxrate={kbps}:vbv-bufsize={kbps}"
            ),
        }
        context.open()
        self._context = context
        self._keeper = ParameterSetKeeper("h264")
        self._info: StreamInfo | None = None
        self._options = options

    def encode(self, frame: av.VideoFrame | None, pts: int, captured: float) -> list[MediaPacket]:
        if frame is not None:
            frame.pts = pts
        return [self._packet(p, captured) for p in self._context.encode(frame)]

    def flush(self) -> list[MediaPacket]:
        return self.encode(None, 0, time.time())

    def _packet(self, packet: av.Packet, captured: float) -> MediaPacket:
        data, keyframe = self._keeper.process(bytes(packet))
        if self._info is None:
            self._info = StreamInfo(
                codec="h264",
                width=self._options.width,
                height=self._options.height,
                parameter_sets=self._keeper.parameter_sets,
                profile="Constrained Baseline",
                pix_fmt="yuv420p",
                declared_fps=self._options.fps,
            )
        pts = packet.pts if packet.pts is not None else 0
        dts = packet.dts if packet.dts is not None else pts
        return MediaPacket(data, pts, dts, keyframe, captured, self._info)


@hookimpl(trylast=True)
def gateway_register_camera_vendors(register: Callable[[type[CameraVendor]], None]) -> None:
    """Register the built-in demo camera."""
    register(DemoCamera)
