"""Synthetic number plates and a camera that shows them (tests and ``bench/plates.py``).

``plate_image`` (the demo traffic camera's, ``citygate_plugins.cameras.demo_traffic``) renders
a plate (white, dark border, dark characters: OpenCV's Hershey font) of one line or two (a
Vietnamese motorbike plate); ``street`` puts it on a car in a
small street scene. ``PlateCamera`` is a real RTSP camera on loopback (the gateway's own RTSP
server and hub, H.264 from libx264 in a thread at a few pictures per second) whose picture
the test changes with ``show(lines)``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from fractions import Fraction

import av
import cv2
import numpy as np

from citygate_plugins.cameras.demo_traffic import plate_image  # the demo traffic camera draws the same plates
from gateway.media.h26x import ParameterSetKeeper
from gateway.media.hub import StreamHub
from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo
from gateway.rtsp.server import RtspServer

W, H = 640, 360

#: Plates of the three countries, as printed (lines), with their canonical text.
PLATES: list[tuple[tuple[str, ...], str]] = [
    (("AA 1234 BB",), "AA1234BB"),
    (("BC 5678 KI",), "BC5678KI"),
    (("KA 0042 XM",), "KA0042XM"),
    (("WA 12345",), "WA12345"),
    (("KR 1AB23",), "KR1AB23"),
    (("WPI 7421",), "WPI7421"),
    (("30A-123.45",), "30A12345"),
    (("51F-678.90",), "51F67890"),
    (("29-B1", "123.45"), "29B112345"),
    (("59-X3", "456.78"), "59X345678"),
]


def street(lines: Sequence[str] | None, width: int = W, height: int = H, plate_width: int = 150) -> np.ndarray:
    """A road with sky, and (given ``lines``) a car whose plate shows them (BGR)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (105, 105, 105)
    img[: height // 3] = (200, 170, 120)
    if lines:
        plate = plate_image(lines, plate_width)
        x, y = (width - plate_width) // 2, int(height * 0.6)
        cv2.rectangle(img, (x - plate_width // 2, y - plate_width // 2), (x + plate_width * 3 // 2, y + plate_width // 2),
                      (40, 40, 150), -1)
        img[y : y + plate.shape[0], x : x + plate.shape[1]] = plate
    return img


class PlateCamera:
    """An RTSP camera on loopback showing ``street(lines)``; ``show()`` changes the plate.

    Used in a running event loop: ``async with PlateCamera() as cam``, then ``cam.url``.
    """

    def __init__(self, fps: float = 5.0, width: int = W, height: int = H) -> None:
        self.fps, self.width, self.height = fps, width, height
        self._lines: tuple[str, ...] | None = None
        self._stop = threading.Event()
        self._hub = StreamHub("plate camera")
        self._server = RtspServer("127.0.0.1", 0)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self._server.url("/plates")

    def show(self, lines: Sequence[str] | None) -> None:
        self._lines = tuple(lines) if lines else None

    async def __aenter__(self) -> PlateCamera:
        await self._server.__aenter__()
        self._server.add_mount("/plates", self._hub)
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, args=(loop,), name="plate-camera", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        await self._server.close()
        self._hub.close()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = Fraction(1, CLOCK_RATE)
        ctx.framerate = Fraction(self.fps).limit_denominator(1001)
        keyint = max(1, round(self.fps))
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline", "crf": "20",
                       "x264-params": f"repeat-headers=1:keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        ctx.thread_count = 1
        keeper = ParameterSetKeeper("h264")
        info: StreamInfo | None = None
        shown: tuple[str, ...] | None | bool = False
        picture = None
        start, slot = time.monotonic(), 0
        while not self._stop.is_set():
            wait = start + slot / self.fps - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            lines = self._lines
            if lines != shown:
                shown, picture = lines, street(lines, self.width, self.height)
            frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
            frame.pts = round(slot * CLOCK_RATE / self.fps)
            captured = time.time()
            for packet in ctx.encode(frame):
                data, key = keeper.process(bytes(packet))
                if info is None:
                    info = StreamInfo(codec="h264", width=self.width, height=self.height,
                                      parameter_sets=keeper.parameter_sets, declared_fps=self.fps)
                pts = packet.pts if packet.pts is not None else 0
                out = MediaPacket(data, pts, packet.dts if packet.dts is not None else pts, key, captured, info)
                try:
                    loop.call_soon_threadsafe(self._hub.publish, out)
                except RuntimeError:
                    return
            slot += 1
