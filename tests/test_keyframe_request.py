"""Asking the camera for a keyframe: a fresh RTSP connection that receives pictures but nothing
decodable yet asks the camera for one (ONVIF SetSynchronizationPoint), so viewers and the
recorder do not wait out the camera's GOP.

The cameras are real: Citygate's demo camera, encoding live with libx264 behind its own RTSP
server, with a 30 s GOP whose first keyframe has passed before the gateway connects. The
ONVIF simulator turns SetSynchronizationPoint into an IDR from the camera of that profile, as
a device's encoder does.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator

import pytest

from citygate_plugins.cameras.demo import DemoCamera, DemoOptions
from gateway.appkeys import CAMERAS
from gateway.interfaces import StreamProfile
from tests.fixtures_app import camera_toml
from tests.onvif_simulator import OnvifSimulator
from tests.test_sub_stream import watch

USER, PASSWORD = "citygate", "Dome-Pass-1"
#: The cameras' keyframe interval: without asking, a new connection waits up to this long.
GOP = 30.0
MAIN_SIZE, SUB_SIZE = (320, 240), (192, 108)
#: The gateway's picture must come well inside the GOP.
WITHIN = 8.0
#: The demo camera's RTSP server starts a new client at its cached GOP, which the native
#: ingest takes at once (nothing to ask for). FFmpeg's RTSP demuxer drops that replayed
#: start, so through it the gateway begins with pictures but nothing decodable: what any
#: ingest meets on cameras that start a client mid-GOP, the case these tests are about.
MID_GOP_INGEST = '[ingest]\nclient = "ffmpeg"\n'


@pytest.fixture
async def long_gop() -> AsyncIterator[tuple[DemoCamera, DemoCamera]]:
    """A main and a sub camera, live-encoded with a 30 s GOP, past their first keyframe."""

    def camera(name: str, size: tuple[int, int]) -> DemoCamera:
        options = DemoOptions(width=size[0], height=size[1], pattern="bars", keyframe_interval=GOP, preencoded_seconds=0)
        return DemoCamera(types.SimpleNamespace(id=name, name=name), options)

    main, sub = camera("main", MAIN_SIZE), camera("sub", SUB_SIZE)
    async with main, sub:
        await asyncio.sleep(0.5)  # the encoders' first IDR is gone: the next is ~30 s away
        yield main, sub


async def test_new_connections_ask_the_onvif_camera_for_a_keyframe(make_gateway, long_gop) -> None:
    main, sub = long_gop
    asked: list[str] = []

    def sync_point(token: str) -> None:  # the device's encoder of that profile makes an IDR
        asked.append(token)
        (main if token == "Profile_1" else sub).force_keyframe()

    async with OnvifSimulator(
        USER, PASSWORD, stream_uri=await main.stream_url(), sub_stream_uri=await sub.stream_url(), sync_point=sync_point
    ) as sim:
        cams = camera_toml("dome", "onvif", host="127.0.0.1", port=sim.port, username=USER, password=PASSWORD)
        gw = await make_gateway(cams, MID_GOP_INGEST + "[live]\nsub-stream-timeout = 8.0\n")
        await gw.wait_online("dome", timeout=WITHIN)
        camera = await gw.get_json("/api/cameras/dome")
        assert (camera["width"], camera["height"]) == MAIN_SIZE
        assert asked == ["Profile_1"] and main.keyframes_requested == 1
        assert sim.last("SetSynchronizationPoint").authenticated

        # A wall tile starts the sub stream on demand: its first picture comes at once, not in 30 s.
        viewer, chosen = await watch(gw, "dome", "sub")
        try:
            assert chosen == "sub"
            frame = await viewer.first_frame(timeout=WITHIN)
            assert (frame.width, frame.height) == SUB_SIZE
        finally:
            await viewer.pc.close()
        assert asked == ["Profile_1", "Profile_2"] and sub.keyframes_requested == 1
        assert gw.app[CAMERAS].get("dome").sub.keyframe_requests == 1


async def test_a_device_without_synchronization_points_is_asked_once_and_waited_for(make_gateway, long_gop) -> None:
    main, _ = long_gop
    async with OnvifSimulator(USER, PASSWORD, stream_uri=await main.stream_url(), sync_point=None) as sim:
        cams = camera_toml("dome", "onvif", host="127.0.0.1", port=sim.port, username=USER, password=PASSWORD)
        gw = await make_gateway(cams, MID_GOP_INGEST)
        # Connected, pictures flowing, none decodable: it asked, the device said it cannot.
        deadline = asyncio.get_running_loop().time() + WITHIN
        while "SetSynchronizationPoint" not in sim.operations("media"):
            assert asyncio.get_running_loop().time() < deadline, sim.operations()
            await asyncio.sleep(0.05)
        assert sim.last("SetSynchronizationPoint").fault == "ter:ActionNotSupported"
        await asyncio.sleep(1.5)
        camera = await gw.get_json("/api/cameras/dome")
        assert camera["state"] == "connecting" and not camera["codec"], camera  # waiting for the camera's keyframe

        # The plugin remembers: later connections do not ask again.
        vendor = gw.app[CAMERAS].get("dome").vendor
        assert await vendor.request_keyframe(StreamProfile.MAIN) is False
        assert sim.operations("media").count("SetSynchronizationPoint") == 1

        main.force_keyframe()  # the camera's own next keyframe: the picture comes with it
        await gw.wait_online("dome", timeout=WITHIN)
        assert main.keyframes_requested == 1


async def test_the_demo_camera_keyframe_request_makes_an_idr_on_live_encoding_only(long_gop) -> None:
    main, _ = long_gop
    # The IDR itself: within a frame or two of the request (a frame may be in the encoder).
    reader = main.hub.open_reader("test")
    try:
        while reader.get_nowait() is not None:  # the cached GOP
            pass
        assert await main.request_keyframe(StreamProfile.MAIN) is True
        packets = [await asyncio.wait_for(reader.recv(), 2.0) for _ in range(3)]
    finally:
        reader.close()
    assert any(p.keyframe for p in packets), "no IDR after the request"
    assert main.keyframes_requested == 1

    assert await main.request_keyframe(StreamProfile.SUB) is False  # it has no sub stream
    looping = DemoCamera(types.SimpleNamespace(id="loop", name="loop"), DemoOptions(width=160, height=96, preencoded_seconds=1))
    assert await looping.request_keyframe(StreamProfile.MAIN) is False  # pre-encoded: keyframes are where they are
