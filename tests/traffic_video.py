"""A synthetic street for vehicle counting: two lanes, vehicles at known times, directions
and lanes, so counts have a ground truth. Pictures are drawn with numpy; ``TrafficCamera``
encodes them live (libx264, PyAV) into a hub that an in-process RTSP server plays, so the
gateway ingests them as from any camera. Also used by ``bench/analytics.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from gateway.media.h26x import ParameterSetKeeper
from gateway.media.hub import StreamHub
from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo
from gateway.rtsp.server import RtspServer

#: Lane centres (fraction of the height) and the counting line used by the tests.
LANES = {"north": 0.3, "south": 0.7}
SPEED = 0.4  #: picture widths per second
CAR_W, CAR_H = 0.12, 0.14


@dataclass(frozen=True, slots=True)
class Vehicle:
    start: float  #: seconds after the scenario starts, when it enters the picture
    lane: str
    eastbound: bool  #: left to right
    shade: int = 220  #: luma of the body

    def x(self, t: float) -> float | None:
        """The centre's x (fraction of the width) at scenario time ``t``; None when out of view."""
        travelled = (t - self.start) * SPEED
        if travelled < 0:
            return None
        x = -CAR_W / 2 + travelled if self.eastbound else 1 + CAR_W / 2 - travelled
        return x if -CAR_W <= x <= 1 + CAR_W else None


#: Six vehicles; the south lane is one-way westbound and vehicle 5 drives it eastbound.
SCENARIO = (
    Vehicle(0.0, "north", True),
    Vehicle(1.0, "south", False, shade=40),
    Vehicle(2.0, "north", True, shade=200),
    Vehicle(3.0, "south", False),
    Vehicle(6.5, "south", True, shade=235),
    Vehicle(5.0, "north", True, shade=30),
)
SCENARIO_SECONDS = 10.0


def ground_truth(scenario: tuple[Vehicle, ...] = SCENARIO) -> Counter[tuple[str, str]]:
    """(lane, direction) -> vehicles crossing the middle of the picture."""
    return Counter((v.lane, "eastbound" if v.eastbound else "westbound") for v in scenario)


class Street:
    """Draws the street at any scenario time (luma only; chroma is neutral)."""

    def __init__(self, width: int, height: int, seed: int = 7) -> None:
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        road = np.full((height, width), 90, dtype=np.int16) + rng.integers(-12, 13, size=(height, width), dtype=np.int16)
        road[: int(height * 0.08)] = 150  # pavement
        road[int(height * 0.92) :] = 150
        mid = height // 2
        dash = max(2, width // 40)
        for x0 in range(0, width, dash * 2):
            road[mid - 1 : mid + 1, x0 : x0 + dash] = 200  # lane marking
        self.background = np.clip(road, 16, 235).astype(np.uint8)

    def luma(self, t: float | None, scenario: tuple[Vehicle, ...] = SCENARIO) -> np.ndarray:
        """The picture at scenario time ``t`` (None: the empty street)."""
        img = self.background.copy()
        if t is None:
            return img
        w, h = self.width, self.height
        for vehicle in scenario:
            x = vehicle.x(t)
            if x is None:
                continue
            cy = LANES[vehicle.lane]
            x0, x1 = int((x - CAR_W / 2) * w), int((x + CAR_W / 2) * w)
            y0, y1 = int((cy - CAR_H / 2) * h), int((cy + CAR_H / 2) * h)
            img[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = vehicle.shade
            img[max(y0, 0) : max(y0 + (y1 - y0) // 3, 0), max(x0 + 3, 0) : max(x1 - 3, 0)] = 60  # windscreen
        return img

    def frame(self, t: float | None, scenario: tuple[Vehicle, ...] = SCENARIO) -> av.VideoFrame:
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        y = self.luma(t, scenario)
        frame.planes[0].update(_pad(y, frame.planes[0].line_size))
        for plane in frame.planes[1:]:
            plane.update(np.full(plane.line_size * plane.height, 128, dtype=np.uint8).tobytes())
        return frame


def _pad(plane: np.ndarray, line_size: int) -> bytes:
    h, w = plane.shape
    if line_size == w:
        return plane.tobytes()
    out = np.zeros((h, line_size), dtype=np.uint8)
    out[:, :w] = plane
    return out.tobytes()


class TrafficCamera:
    """The street as a live RTSP camera: ``rtsp://127.0.0.1:<port>/traffic``. Shows the empty
    street until ``go()``; then the scenario plays once, in real time, and the street is
    empty again. Use as an async context manager inside the test's event loop."""

    def __init__(self, width: int = 320, height: int = 240, fps: float = 25.0, gop: int = 25) -> None:
        self.street = Street(width, height)
        self.fps, self.gop = fps, gop
        self.hub = StreamHub("traffic")
        self.server = RtspServer("127.0.0.1", 0)
        self._go_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.server.port}/traffic"

    def go(self) -> float:
        """Start the scenario now; returns the wall-clock time it started."""
        self._go_at = time.time()
        return self._go_at

    @property
    def finished(self) -> bool:
        return self._go_at is not None and time.time() - self._go_at > SCENARIO_SECONDS

    async def __aenter__(self) -> TrafficCamera:
        await self.server.__aenter__()
        self.server.add_mount("/traffic", self.hub)
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,), name="traffic-camera", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        self.hub.close()
        await self.server.__aexit__(*exc)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        w, h = self.street.width, self.street.height
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
        ctx.time_base = Fraction(1, CLOCK_RATE)
        ctx.framerate = Fraction(self.fps).limit_denominator(1001)
        ctx.bit_rate = 800_000
        ctx.options = {
            "preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
            "x264-params": f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:repeat-headers=1:bframes=0",
        }
        ctx.open()
        keeper = ParameterSetKeeper("h264", b"")
        info: StreamInfo | None = None
        step = 1.0 / self.fps
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = start + i * step
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            t = None if self._go_at is None else now - self._go_at
            if t is not None and t > SCENARIO_SECONDS:
                t = None
            frame = self.street.frame(t)
            frame.pts = round(i * step * CLOCK_RATE)
            frame.time_base = Fraction(1, CLOCK_RATE)
            for packet in ctx.encode(frame):
                data, key = keeper.process(bytes(packet))
                key = key or packet.is_keyframe
                if info is None:
                    if not key:
                        continue
                    info = StreamInfo(codec="h264", width=w, height=h, parameter_sets=keeper.parameter_sets,
                                      declared_fps=self.fps)
                pts = int(packet.pts)
                media = MediaPacket(data=data, pts=pts, dts=pts, keyframe=key, wallclock=now, info=info)
                try:
                    loop.call_soon_threadsafe(self.hub.publish, media)
                except RuntimeError:
                    return
            i += 1
