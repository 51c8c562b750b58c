"""Privacy masks that stay on the scene of a PTZ dome: the demo camera's virtual dome, a fill
mask over the panorama's garden (a green that appears nowhere else in the scene), real
readers. The garden must never show: not in WebRTC frames decoded by an aiortc viewer (after
absolute moves, a relative move, a zoom, and in every frame of a continuous pan), not in a
snapshot, not in the recording. A vendor whose position goes stale makes the stage fail
closed; a masked camera that cannot report its position refuses PTZ below mask.edit.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import av
import numpy as np
import pytest

from citygate_plugins.cameras.demo import DemoCamera
from citygate_plugins.cameras.virtual_ptz import garden_pixels
from gateway import hookimpl
from gateway.appkeys import AUDIT, RECORDING
from gateway.interfaces import PtzStatus
from gateway.plugins import load_plugins
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_webrtc import Viewer, connect

W, H = 640, 360
GATEWAY_TOML = """
[recording]
segment-seconds = 1
[masking]
keyframe-interval = 1.0
[ptz]
position-stale-seconds = 0.4
"""
#: Chroma samples of the garden's green tolerated in a masked frame (codec ringing at the edge).
TOLERANCE = 2
#: Positions (pan, tilt, zoom) from which the garden is in view, all different from home.
POSITIONS = ((0.1, 0.0, 0.5), (0.05, 0.3, 0.7), (0.12, -0.2, 0.9))


def planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yuv = frame.to_ndarray(format="yuv420p")
    h, w = frame.height, frame.width
    y = yuv[:h]
    u = yuv[h : h + h // 4].reshape(h // 2, w // 2)
    v = yuv[h + h // 4 :].reshape(h // 2, w // 2)
    return y, u, v


def garden(frame: av.VideoFrame) -> int:
    _, u, v = planes(frame)
    return garden_pixels(u, v)


def black_fraction(frame: av.VideoFrame) -> float:
    y, _, _ = planes(frame)
    return float(np.count_nonzero(y[40:] <= 24)) / y[40:].size  # below the time-code strip


async def call(session: Any, gw: RunningGateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, f"{gw.url}/api/cameras/{path}", json=body) as resp:
        text = await resp.text()
        try:
            return resp.status, await resp.json()
        except Exception:
            return resp.status, text


async def frames_for(viewer: Viewer, seconds: float) -> list[av.VideoFrame]:
    viewer.frames.clear()
    await viewer.count_frames(seconds)
    return list(viewer.frames)


async def settle(viewer: Viewer, after: float) -> av.VideoFrame:
    """The first frame received once ``after`` (wall clock) is some way behind."""
    while True:
        frame = await asyncio.wait_for(viewer.track.recv(), 5)
        if time.time() > after + 0.8:
            return frame


async def garden_box(gw: RunningGateway) -> list[list[float]]:
    """Where the garden is in the unmasked picture at home, from the camera's own keyframe,
    grown by a few pixels: what an administrator would draw around it."""
    keyframe = gw.cameras.get("dome").latest_keyframe()
    decoder = av.CodecContext.create("h264", "r")
    frame = (decoder.decode(av.Packet(keyframe.data)) + decoder.decode(None))[0]
    _, u, v = planes(frame)
    green = (u < 100) & (v < 95)
    rows, cols = np.flatnonzero(green.any(axis=1)), np.flatnonzero(green.any(axis=0))
    assert rows.size and cols.size, "the garden is not in view at home"
    x0, x1 = (cols[0] - 2) * 2 / W, (cols[-1] + 3) * 2 / W
    y0, y1 = (rows[0] - 2) * 2 / H, (rows[-1] + 3) * 2 / H
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


@pytest.fixture
async def dome(make_gateway) -> RunningGateway:
    cams = camera_toml("dome", "demo", width=W, height=H, fps=25, keyframe_interval=1.0)
    gw = await make_gateway(cams, GATEWAY_TOML)
    await gw.wait_online("dome")
    return gw


async def test_the_mask_stays_on_the_garden_while_the_dome_moves(dome: RunningGateway) -> None:
    gw = dome
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    operator = gw.session
    box = await garden_box(gw)

    viewer = await connect(gw, "dome")
    try:
        await viewer.first_frame(10)
        # Without a mask, the garden shows at every test position: the checks below can fail.
        for position in POSITIONS:
            moved = time.time()
            status, body = await call(operator, gw, "POST", "dome/ptz/absolute", dict(zip(("pan", "tilt", "zoom"), position)))
            assert status == 200, body
            assert garden(await settle(viewer, moved)) > 50, f"the garden is not in view at {position}"

        status, body = await call(operator, gw, "POST", "dome/ptz/home")
        assert status == 200, body
        await settle(viewer, time.time())
        status, view = await call(admin, gw, "POST", "dome/masks", {"points": box, "filter": "fill", "reason": "private garden"})
        assert status == 201, view
        mask = view["masks"][0]
        assert mask["space"] == "scene" and mask["drawn_at"] == [0.0, 0.0, 0.5]
        masked_at = time.time()
        first = await settle(viewer, masked_at)
        assert garden(first) <= TOLERANCE
        assert black_fraction(first) < 0.3, "the mask must cover the garden, not the picture"

        moves = [("absolute", dict(zip(("pan", "tilt", "zoom"), p))) for p in POSITIONS]
        moves += [("relative", {"pan": -0.03}), ("absolute", {"pan": 0.1, "tilt": 0.1, "zoom": 0.2})]
        for command, body in moves:
            status, answer = await call(operator, gw, "POST", f"dome/ptz/{command}", body)
            assert status == 200, answer
            # every frame from the command on, in transit included
            frames = await frames_for(viewer, 1.2)
            assert frames, "no frames after the move"
            shown = [garden(f) for f in frames]
            assert max(shown) <= TOLERANCE, f"garden visible after {command} {body}: {shown}"
            assert black_fraction(frames[-1]) < 0.5, f"the picture is blacked out after {command} {body}"

        # A continuous pan for 2 s: every frame, not only after the camera stops.
        status, answer = await call(operator, gw, "POST", "dome/ptz/absolute", {"pan": 0.0, "tilt": 0.0, "zoom": 0.6})
        assert status == 200, answer
        await frames_for(viewer, 0.5)
        status, answer = await call(operator, gw, "POST", "dome/ptz/move", {"pan": 0.3})
        assert status == 200, answer
        frames = await frames_for(viewer, 2.0)
        status, answer = await call(operator, gw, "POST", "dome/ptz/stop")
        assert status == 200, answer
        assert len(frames) >= 25, f"only {len(frames)} frames during the pan"
        shown = [garden(f) for f in frames]
        assert max(shown) <= TOLERANCE, f"garden visible during the pan: {shown}"
        head = gw.cameras.get("dome").vendor.head
        assert head.position()[0] > 0.05, "the dome did not pan"

        # Back where the garden is in view: the snapshot is masked too.
        status, answer = await call(operator, gw, "POST", "dome/ptz/absolute", {"pan": 0.1, "tilt": 0.0, "zoom": 0.5})
        assert status == 200, answer
        snap_after = time.time()
        await settle(viewer, snap_after)
        async with operator.get(f"{gw.url}/api/cameras/dome/snapshot.jpg") as resp:
            assert resp.status == 200, await resp.text()
            jpeg = await resp.read()
        with av.open(io.BytesIO(jpeg)) as container:
            still = next(container.decode(video=0)).reformat(format="yuv420p")
        assert garden(still) <= TOLERANCE
        assert black_fraction(still) < 0.5
    finally:
        await viewer.pc.close()

    # The recording of the whole run after the mask: no segment shows the garden.
    await _recorded_after(gw, masked_at + 1.0)


async def _recorded_after(gw: RunningGateway, since: float) -> None:
    deadline = time.monotonic() + 20
    while True:
        body = await gw.get_json(f"/api/cameras/dome/recordings?from={since}&to={time.time()}&detail=segments")
        segments = [i for i in body["items"] if i.get("kind", "segment") == "segment" and i["start"] >= since]
        if len(segments) >= 3:
            break
        assert time.monotonic() < deadline, f"no recorded segments after the mask: {body}"
        await asyncio.sleep(0.2)
    checked = 0
    for item in segments[:6]:
        async with gw.session.get(f"{gw.url}/api/cameras/dome/recordings/segments/{item['id']}.mp4") as resp:
            assert resp.status == 200, await resp.text()
            data = await resp.read()
        with av.open(io.BytesIO(data)) as container:
            for frame in container.decode(video=0):
                assert garden(frame) <= TOLERANCE, f"segment {item['id']} shows the garden"
                checked += 1
    assert checked >= 50


class _Hanging(DemoCamera):
    """The demo dome whose position reading can be made to hang (a camera that stops
    answering GetStatus) or to be unsupported."""

    hang = False
    unsupported = False

    @staticmethod
    def id() -> str:
        return "flaky-dome"

    async def ptz_status(self) -> PtzStatus | None:
        if type(self).unsupported:
            return None
        while type(self).hang:
            await asyncio.sleep(0.05)
        return await super().ptz_status()


class _Plugin:
    @hookimpl
    def gateway_register_camera_vendors(self, register: Any) -> None:
        register(_Hanging)


@pytest.fixture
async def flaky_dome(make_gateway):
    _Hanging.hang = False
    _Hanging.unsupported = False
    plugins = load_plugins()
    plugins.register(_Plugin(), name="flaky-dome-test")
    try:
        cams = camera_toml("dome", "flaky-dome", width=W, height=H, fps=25, keyframe_interval=1.0)
        gw = await make_gateway(cams, GATEWAY_TOML, plugins=plugins)
        await gw.wait_online("dome")
        yield gw
    finally:
        plugins.unregister("flaky-dome-test")


async def test_a_stale_position_blacks_the_whole_picture_until_it_is_known_again(flaky_dome: RunningGateway) -> None:
    gw = flaky_dome
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    box = await garden_box(gw)
    status, view = await call(admin, gw, "POST", "dome/masks", {"points": box, "reason": "private garden"})
    assert status == 201, view
    viewer = await connect(gw, "dome")
    try:
        await settle(viewer, time.time())
        frame = await settle(viewer, time.time())
        assert black_fraction(frame) < 0.3

        _Hanging.hang = True  # the camera stops answering GetStatus...
        status, answer = await call(gw.session, gw, "POST", "dome/ptz/move", {"pan": 0.4})  # ...and pans
        assert status == 200, answer
        frames = await frames_for(viewer, 1.5)
        assert frames
        assert max(garden(f) for f in frames) <= TOLERANCE
        assert all(black_fraction(f) > 0.97 for f in frames[-10:]), [round(black_fraction(f), 3) for f in frames]
        camera = await gw.get_json("/api/cameras/dome")
        assert camera["mask_position_known"] is False

        _Hanging.hang = False
        status, answer = await call(gw.session, gw, "POST", "dome/ptz/stop")
        assert status == 200, answer
        recovered = await settle(viewer, time.time())
        assert black_fraction(recovered) < 0.5 and garden(recovered) <= TOLERANCE
        camera = await gw.get_json("/api/cameras/dome")
        assert camera["mask_position_known"] is True
    finally:
        await viewer.pc.close()


async def test_a_masked_camera_that_cannot_report_its_position_refuses_ptz_below_mask_edit(
    flaky_dome: RunningGateway,
) -> None:
    gw = flaky_dome
    _Hanging.unsupported = True
    camera = gw.cameras.get("dome")
    assert camera.tracker is not None
    await camera.tracker.read_once()
    assert not camera.reports_position
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)

    # Unmasked, it moves for anyone with ptz.control.
    status, answer = await call(gw.session, gw, "POST", "dome/ptz/absolute", {"pan": 0.1, "tilt": 0, "zoom": 0.5})
    assert status == 200, answer
    status, answer = await call(gw.session, gw, "DELETE", "dome/ptz/lock")
    assert status == 200, answer

    # Its masks stay in picture space: asking for a scene mask is refused with the reason.
    status, body = await call(admin, gw, "POST", "dome/masks", {"points": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]], "space": "scene", "reason": "r"})
    assert status == 409 and "picture space" in body["error"], body
    status, view = await call(admin, gw, "POST", "dome/masks", {"points": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]], "reason": "shop window"})
    assert status == 201 and view["masks"][0]["space"] == "picture", view

    status, body = await call(gw.session, gw, "POST", "dome/ptz/absolute", {"pan": -0.2, "tilt": 0, "zoom": 0.5})
    assert status == 409, body
    assert "cannot report where it points" in body["error"] and "mask.edit" in body["error"]
    status, body = await call(gw.session, gw, "POST", "dome/ptz/stop")
    assert status == 200, body  # stopping never uncovers anything
    for _ in range(100):  # the audit writer stores entries in the background
        entries = await gw.app[AUDIT].query(action="ptz.control", outcome="refused")
        if any(e["user"] == "tester" and "cannot report" in e["detail"]["reason"] for e in entries):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no audited refusal: {entries}")

    status, body = await call(gw.session, gw, "DELETE", "dome/ptz/lock")
    # The administrator, who can redraw the masks, may move it.
    status, body = await call(admin, gw, "POST", "dome/ptz/absolute", {"pan": -0.2, "tilt": 0, "zoom": 0.5})
    assert status == 200, body


async def test_a_mask_drawn_at_a_position_the_camera_left_is_refused(dome: RunningGateway) -> None:
    gw = dome
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    async with gw.session.get(f"{gw.url}/api/cameras/dome/masks") as resp:
        assert resp.status == 403  # operators neither see nor change masks
    async with admin.get(f"{gw.url}/api/cameras/dome/masks") as resp:
        view = await resp.json()
    assert view["anchors"] is True and view["position"]["zoom"] == pytest.approx(0.5)
    drawn_at = [view["position"]["pan"], view["position"]["tilt"], view["position"]["zoom"]]
    status, answer = await call(admin, gw, "POST", "dome/ptz/absolute", {"pan": 0.3, "tilt": 0, "zoom": 0.5})
    assert status == 200, answer
    await asyncio.sleep(0)  # the tracker reads the new position right after the command
    square = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
    status, body = await call(admin, gw, "POST", "dome/masks", {"points": square, "drawn_at": drawn_at, "reason": "r"})
    assert status == 409 and "moved since the mask was drawn" in body["error"], body
    status, body = await call(admin, gw, "POST", "dome/ptz/move", {"pan": 0.5})
    assert status == 200, body
    status, body = await call(admin, gw, "POST", "dome/masks", {"points": square, "reason": "r"})
    assert status == 409 and "moving" in body["error"], body
    status, body = await call(admin, gw, "POST", "dome/ptz/stop")
    assert status == 200
    # A picture-space mask on a PTZ camera stays where it is drawn in the picture.
    status, body = await call(admin, gw, "POST", "dome/masks", {"points": square, "space": "picture", "reason": "OSD"})
    assert status == 201 and body["masks"][0]["space"] == "picture" and body["masks"][0]["drawn_at"] is None, body
    # PUT: a mask read back keeps its anchor; asking for picture space drops it even with drawn_at
    entries = [{"points": square, "drawn_at": [0.3, 0.0, 0.5]}, {"points": square, "drawn_at": [0.3, 0.0, 0.5], "space": "picture"}]
    status, body = await call(admin, gw, "PUT", "dome/masks", {"masks": entries, "reason": "r", "version": body["version"]})
    assert status == 200, body
    assert [(m["space"], m["drawn_at"]) for m in body["masks"]] == [("scene", [0.3, 0.0, 0.5]), ("picture", None)]


async def test_a_scene_mask_drawn_later_covers_the_garden_in_recordings_made_while_the_dome_moved(
    dome: RunningGateway,
) -> None:
    """Recorded before any mask, while an operator moved the dome around; then the garden is
    masked. Playing those segments back shows no garden: the position log places the mask
    on every recorded picture. The stored bytes themselves do show it (the check can fail)."""
    gw = dome
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    box = await garden_box(gw)
    started = time.time()
    for position in POSITIONS:
        status, body = await call(gw.session, gw, "POST", "dome/ptz/absolute", dict(zip(("pan", "tilt", "zoom"), position)))
        assert status == 200, body
        await asyncio.sleep(0.7)  # let some pictures of each position be recorded
    status, body = await call(gw.session, gw, "POST", "dome/ptz/move", {"pan": 0.2})
    assert status == 200, body
    await asyncio.sleep(1.0)
    status, body = await call(gw.session, gw, "POST", "dome/ptz/absolute", {"pan": 0.0, "tilt": 0.0, "zoom": 0.5})
    assert status == 200, body
    moved_until = time.time()
    recording = gw.app[RECORDING]
    deadline = time.monotonic() + 20
    while True:
        segments = [s for s in await recording.catalogue.all_segments("dome") if s.start >= started - 1]
        if segments and segments[-1].end >= moved_until:
            break
        assert time.monotonic() < deadline, "the moves were not recorded"
        await asyncio.sleep(0.2)

    raw_garden = 0
    for seg in segments:
        for frame in decode_bytes(await recording.read_segment(seg)):
            raw_garden = max(raw_garden, garden(frame))
    assert raw_garden > 50, "the recording before the mask must show the garden"

    status, view = await call(admin, gw, "POST", "dome/masks", {"points": box, "reason": "private garden"})
    assert status == 201 and view["masks"][0]["space"] == "scene", view
    checked = 0
    for seg in segments:
        async with gw.session.get(f"{gw.url}/api/cameras/dome/recordings/segments/{seg.id}.mp4") as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Mask-Applied"] == "re-masked"
            frames = decode_bytes(await resp.read())
        shown = [garden(f) for f in frames]
        assert max(shown) <= TOLERANCE, f"segment {seg.id} shows the garden on playback: {shown}"
        checked += len(frames)
        # placed from the log, not blacked out: pictures keep most of the scene
        assert min(black_fraction(f) for f in frames) < 0.5
    assert checked >= 75


def decode_bytes(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))
