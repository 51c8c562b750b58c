"""Analytics on a camera's sub stream: a counting analyzer needs no full-resolution picture,
and decoding 360p costs a quarter of 720p. ``stream = "sub"`` in ``[[camera.analytics]]``, or
an analyzer's ``default_stream = "sub"`` (vehicle counting's), reads the sub stream while the
camera offers it; a privacy-masked camera offers none, so its
analyzers then get the masked main stream from the mask stage, and the sub stream stops."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from gateway import hookimpl
from gateway.appkeys import ANALYTICS, CAMERAS
from gateway.interfaces import Analyzer, AnalyzerFrame, MaskShape, Observation
from gateway.plugins import load_plugins
from tests.fixtures_app import camera_toml
from tests.test_sub_stream import SUB_SIZE
from tests.test_webrtc import GST_SIZE

pytestmark = pytest.mark.gstreamer


class SizeProbe(Analyzer):
    """Remembers each picture's size and the mean luma of its top-left quarter; reads the
    sub stream unless its entry says otherwise, as vehicle counting does."""

    seen: list[tuple[int, int, float]] = []
    default_stream = "sub"

    @staticmethod
    def id() -> str:
        return "test-size"

    def analyze(self, frame: AnalyzerFrame) -> list[Observation]:
        gray = frame.gray
        SizeProbe.seen.append((frame.width, frame.height, float(gray[: frame.height // 2 - 4, : frame.width // 2 - 4].mean())))
        return []


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.1)


async def test_analyzers_read_the_sub_stream_and_the_masked_main_stream_once_masked(make_gateway, shared_gst_camera) -> None:
    SizeProbe.seen = []
    plugins = load_plugins()
    plugins.register(SimpleNamespace(gateway_register_analyzers=hookimpl(lambda register: register(SizeProbe))), "test-size")
    cams = camera_toml("cam", "generic_rtsp", url=shared_gst_camera.url("h264"), sub_url=shared_gst_camera.url("h264-sub"))
    cams += '[[camera.analytics]]\nanalyzer = "test-size"\nfps = 5\n'  # its default: the sub stream
    gw = await make_gateway(cams, "[live]\nsub-stream-linger = 0.5\n", plugins=plugins)
    await gw.wait_online("cam")
    camera = gw.app[CAMERAS].get("cam")
    await _until(lambda: len(SizeProbe.seen) >= 3, 20, "sub-stream pictures")
    assert {(w, h) for w, h, _ in SizeProbe.seen} == {SUB_SIZE}
    assert camera.sub.running and camera.sub.hub.readers == 1
    (stats,) = gw.app[ANALYTICS].stats("cam")
    assert set(stats.streams) == {"sub"} and stats.streams["sub"].frames > 0  # the main stream is not decoded

    # masked: the sub stream (never masked) is not offered; the analyzer gets the masked
    # main stream's pictures from the mask stage, and the sub stream stops
    await camera.set_masks([MaskShape(points=((0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)))])
    SizeProbe.seen = []  # (a sub-stream picture already in the analyzer's mailbox may still come)
    await _until(lambda: sum((w, h) == GST_SIZE for w, h, _ in SizeProbe.seen) >= 3, 20, "masked main-stream pictures")
    first = next(i for i, (w, h, _) in enumerate(SizeProbe.seen) if (w, h) == GST_SIZE)
    assert all((w, h) == GST_SIZE and luma < 24 for w, h, luma in SizeProbe.seen[first:]), SizeProbe.seen
    await _until(lambda: not camera.sub.running, 10, "the sub stream stopping")
    assert stats.streams["sub"].shared > 0
