"""The built-in demo camera: a live, time-coded H.264 stream over RTSP."""

from __future__ import annotations

import asyncio
import time
import types

import av
import msgspec
import pytest

from citygate_plugins.cameras import demo
from citygate_plugins.cameras.demo import DemoCamera, DemoOptions
from gateway.errors import NotFound
from gateway.interfaces import StreamProfile
from gateway.media.timecode import read_timecode
from gateway.plugins import load_plugins

AV_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}


def camera(cam_id: str = "demo-1", name: str = "Demo 1") -> types.SimpleNamespace:
    return types.SimpleNamespace(id=cam_id, name=name)


def watch(url: str, packets_wanted: int, seconds: float) -> tuple[list[av.Packet], list[tuple[float, int | None]]]:
    """Blocking: read packets for up to ``seconds``; return them and (receive time, time code) per frame."""
    container = av.open(url, options=AV_OPTIONS)
    packets: list[av.Packet] = []
    codes: list[tuple[float, int | None]] = []
    deadline = time.monotonic() + seconds
    try:
        for packet in container.demux(video=0):
            if not packet.size:
                continue
            packets.append(packet)
            for frame in packet.decode():
                height = frame.height
                codes.append((time.time(), read_timecode(frame.to_ndarray(format="yuv420p")[:height])))
            if len(packets) >= packets_wanted or time.monotonic() > deadline:
                break
    finally:
        container.close()
    return packets, codes


def test_registered_through_the_plugin_hook() -> None:
    plugins = load_plugins(entry_points=False)
    plugins.register(demo, name="demo-under-test")
    try:
        assert plugins.camera_vendors()["demo"] is DemoCamera
    finally:
        plugins.unregister("demo-under-test")


def test_options_use_kebab_names_and_validate_ranges() -> None:
    options = msgspec.convert({"keyframe-interval": 1.0, "preencoded-seconds": 2}, DemoOptions)
    assert options.keyframe_interval == 1.0 and options.preencoded_seconds == 2
    assert options.keyint == 25
    bad_options = [
        {"width": 641},
        {"fps": 0},
        {"bitrate": 10},
        {"port": 70000},
        {"pattern": "plaid"},
        {"keyframe-interval": 0},
    ]
    for bad in bad_options:
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, DemoOptions)
    with pytest.raises(msgspec.ValidationError, match="colour"):
        msgspec.convert({"colour": "red"}, DemoOptions)
    with pytest.raises(ValueError, match="pattern"):
        DemoOptions(pattern="plaid")


async def test_live_stream_starts_with_a_keyframe_and_carries_the_capture_time() -> None:
    options = DemoOptions(width=640, height=360, keyframe_interval=1.0, bitrate=800_000)
    async with DemoCamera(camera(), options) as cam:
        assert cam.profiles() == (StreamProfile.MAIN,)
        url = await cam.stream_url()
        assert url.startswith("rtsp://127.0.0.1:") and url.endswith("/demo-1")
        started = time.monotonic()
        packets, codes = await asyncio.to_thread(watch, url, 60, 6.0)
        elapsed = time.monotonic() - started
    assert len(packets) >= 25
    assert packets[0].is_keyframe
    assert elapsed < 5.0
    values = [code for _, code in codes]
    assert None not in values
    assert values == sorted(values) and len(set(values)) == len(values)  # frames advance
    received, last = codes[-1]
    assert abs(received * 1000 - last) < 1000  # the time code is the (recent) capture time


async def test_preencoded_loop_and_public_bind() -> None:
    options = DemoOptions(width=320, height=180, preencoded_seconds=0.5, keyframe_interval=0.5, bind="0.0.0.0")
    async with DemoCamera(camera("bench cam", "Bench"), options) as cam:
        url = await cam.stream_url()
        assert url.startswith("rtsp://127.0.0.1:") and url.endswith("/bench%20cam")
        with pytest.raises(NotFound):
            await cam.stream_url(StreamProfile.SUB)
        packets, codes = await asyncio.to_thread(watch, url, 40, 6.0)
    assert len(packets) == 40 and packets[0].is_keyframe
    pts = [p.pts for p in packets if p.pts is not None]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)  # timestamps go on while content loops
    values = [code for _, code in codes]
    assert None not in values
    # 0.5 s at 25 fps (a little more when a busy machine delays the first frames), looped:
    # the same time codes come round again while timestamps go on
    assert len(set(values)) <= 20 and len(set(values)) < len(values)


async def test_stops_cleanly_and_can_restart() -> None:
    options = DemoOptions(width=320, height=180)
    cam = DemoCamera(camera(), options)
    async with cam:
        first_url = await cam.stream_url()
    assert cam.hub is not None and cam.hub.closed
    async with cam:
        assert (await cam.stream_url()) != "" and cam.hub is not None and not cam.hub.closed
    with pytest.raises(RuntimeError):
        await cam.stream_url()
    assert first_url
