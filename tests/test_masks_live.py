"""Privacy masks end to end: a real gateway, the GStreamer camera's static SMPTE bars, real readers.

After an administrator adds a fill mask over a region, WebRTC (aiortc viewers, three of them
watching through the switch), LL-HLS, a recorded segment and a snapshot all show that region
black and the rest of the picture as before; operators cannot change masks.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import av
import numpy as np
import pytest

from gateway.appkeys import AUDIT
from tests.fixtures_app import RunningGateway, camera_toml
from tests.hls_validator import parse_media_playlist
from tests.test_webrtc import Viewer, connect

W, H = 640, 360
#: The masked region (normalised), over the colour bars: their luma there is 30..180.
REGION = ((0.30, 0.10), (0.62, 0.10), (0.62, 0.55), (0.30, 0.55))
#: Pixels kept clear of the polygon's edges when measuring (chroma and codec blocks).
MARGIN = 12
GATEWAY_TOML = """
[recording]
segment-seconds = 1
[masking]
keyframe-interval = 1.0
"""
CONFIG_MASK = """
[[camera.masks]]
points = [[0.0, 0.8], [0.2, 0.8], [0.2, 1.0], [0.0, 1.0]]
filter = "pixelate"
"""


def region_masks(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(inside, outside) pixel masks, each kept ``MARGIN`` pixels away from the edges."""
    x0, y0 = REGION[0]
    x1, y1 = REGION[2]
    inside = np.zeros((height, width), dtype=bool)
    inside[round(y0 * height) + MARGIN : round(y1 * height) - MARGIN, round(x0 * width) + MARGIN : round(x1 * width) - MARGIN] = True
    outside = np.ones((height, width), dtype=bool)
    outside[max(round(y0 * height) - MARGIN, 0) : round(y1 * height) + MARGIN, round(x0 * width) - MARGIN : round(x1 * width) + MARGIN] = False
    return inside, outside


def luma(frame: av.VideoFrame) -> np.ndarray:
    plane = frame.planes[0]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[: frame.height, : frame.width].astype(np.float32)


def is_masked(y: np.ndarray, reference: np.ndarray, *, black: float = 16.0) -> tuple[bool, str]:
    inside, outside = region_masks(y.shape[1], y.shape[0])
    region = float(y[inside].mean())
    spread = float(y[inside].std())
    rest = float(np.abs(y[outside] - reference[outside]).mean())
    ok = abs(region - black) <= 4 and spread <= 4 and rest <= 6
    return ok, f"region mean {region:.1f} (sd {spread:.1f}), rest differs by {rest:.2f} on average"


def decode_all(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


@pytest.fixture
async def pattern_gateway(make_gateway, shared_gst_camera) -> RunningGateway:
    url = shared_gst_camera.url("pattern")
    cams = camera_toml("pat", "generic_rtsp", url=url) + camera_toml("locked", "generic_rtsp", url=url) + CONFIG_MASK
    gw = await make_gateway(cams, GATEWAY_TOML)
    await gw.wait_online("pat", "locked")
    return gw


async def reference_picture(gw: RunningGateway) -> np.ndarray:
    """The unmasked picture of the static pattern, decoded from the camera's hub."""
    keyframe = gw.cameras.get("pat").latest_keyframe()
    decoder = av.CodecContext.create("h264", "r")
    frames = decoder.decode(av.Packet(keyframe.data)) + decoder.decode(None)
    return luma(frames[0])


async def next_masked_frame(viewer: Viewer, reference: np.ndarray, timeout: float = 10.0) -> tuple[float, int]:
    """Receive until a frame is masked; return (seconds waited, frames received meanwhile)."""
    start = time.monotonic()
    received = 0
    while time.monotonic() - start < timeout:
        frame = await asyncio.wait_for(viewer.track.recv(), timeout)
        received += 1
        if is_masked(luma(frame), reference)[0]:
            return time.monotonic() - start, received
    raise AssertionError(f"no masked frame within {timeout}s ({received} frames)")


@pytest.mark.gstreamer
async def test_a_fill_mask_reaches_every_reader_while_viewers_keep_watching(pattern_gateway: RunningGateway) -> None:
    gw = pattern_gateway
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    reference = await reference_picture(gw)
    assert not is_masked(reference, reference)[0]

    viewers = [await connect(gw, "pat") for _ in range(3)]
    try:
        await asyncio.gather(*(v.first_frame() for v in viewers))
        await asyncio.gather(*(v.count_frames(0.5) for v in viewers))
        async with admin.post(
            f"{gw.url}/api/cameras/pat/masks", json={"points": REGION, "filter": "fill", "reason": "private garden"}
        ) as resp:
            assert resp.status == 201, await resp.text()
            body = await resp.json()
        added_at = time.time()
        assert [m["source"] for m in body["masks"]] == ["database"] and body["version"] == 1

        # WebRTC: every viewer keeps receiving, and is masked soon after the switch.
        waits = await asyncio.gather(*(next_masked_frame(v, reference) for v in viewers))
        assert all(seconds < 3.0 for seconds, _ in waits), waits
        counts = await asyncio.gather(*(v.count_frames(2.0) for v in viewers))
        assert all(c >= 40 for c in counts), counts
        for v in viewers:
            ok, why = is_masked(luma(v.frames[-1]), reference)
            assert ok, why
            assert all(is_masked(luma(f), reference)[0] for f in v.frames[-40:])

        # Snapshot (JPEG: full range, black is 0 there).
        async with gw.session.get(f"{gw.url}/api/cameras/pat/snapshot.jpg") as resp:
            assert resp.status == 200
            jpeg = decode_all(await resp.read())[0]
        full_range = (reference - 16) * 255 / 219
        ok, why = is_masked(luma(jpeg), full_range, black=0.0)
        assert ok, f"snapshot: {why}"

        # LL-HLS: a whole segment after the switch.
        base = f"{gw.url}/api/cameras/pat/hls/"
        async with gw.session.get(base + "stream.m3u8") as resp:
            assert resp.status == 200
        await asyncio.sleep(2.5)
        async with gw.session.get(base + "stream.m3u8") as resp:
            playlist = parse_media_playlist(await resp.text())
        segment = [s for s in playlist.segments if s.uri][-1]
        async with gw.session.get(base + (segment.map_uri or "init.mp4")) as resp:
            init = await resp.read()
        async with gw.session.get(base + segment.uri) as resp:
            media = await resp.read()
        frames = decode_all(init + media)
        assert len(frames) >= 20
        for frame in (frames[0], frames[-1]):
            ok, why = is_masked(luma(frame), reference)
            assert ok, f"LL-HLS: {why}"

        # Recording: a segment that started after the switch.
        deadline = time.monotonic() + 10
        while True:
            timeline = await gw.get_json(f"/api/cameras/pat/recordings?from={added_at + 0.5}")
            done = [i for i in timeline["items"] if i["kind"] == "segment" and i["start"] > added_at + 0.5]
            if done:
                break
            assert time.monotonic() < deadline, timeline
            await asyncio.sleep(0.3)
        async with gw.session.get(f"{gw.url}/api/cameras/pat/recordings/segments/{done[0]['id']}.mp4") as resp:
            assert resp.status == 200
            recorded = decode_all(await resp.read())
        assert recorded
        for frame in (recorded[0], recorded[-1]):
            ok, why = is_masked(luma(frame), reference)
            assert ok, f"recording: {why}"

        # Removing the mask switches back to passthrough, still without dropping viewers.
        async with admin.delete(f"{gw.url}/api/cameras/pat/masks/0", json={"reason": "garden sold"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["masks"] == []
        await asyncio.sleep(1.5)
        counts = await asyncio.gather(*(v.count_frames(1.0) for v in viewers))
        assert all(c >= 18 for c in counts), counts
        assert all(not is_masked(luma(v.frames[-1]), reference)[0] for v in viewers)
    finally:
        await asyncio.gather(*(v.pc.close() for v in viewers))


@pytest.mark.gstreamer
async def test_operators_cannot_change_masks_and_are_audited(pattern_gateway: RunningGateway) -> None:
    gw = pattern_gateway
    operator = gw.session  # "tester", an operator of every area
    mask = {"points": REGION, "filter": "fill", "reason": "test"}
    for method, path, body in (
        ("POST", "/api/cameras/pat/masks", mask),
        ("PUT", "/api/cameras/pat/masks", {"masks": [], "reason": "test"}),
        ("DELETE", "/api/cameras/locked/masks/0", {"reason": "test"}),
        ("GET", "/api/cameras/locked/masks", None),
    ):
        async with operator.request(method, gw.url + path, json=body) as resp:
            assert resp.status == 403, (method, path, resp.status)
    refused = await gw.app[AUDIT].query(user="tester", action="mask.edit", outcome="refused")
    assert {r["camera"] for r in refused} == {"pat", "locked"} and len(refused) == 4

    # The config mask is locked even for an administrator, and stays applied.
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    async with admin.get(f"{gw.url}/api/cameras/locked/masks") as resp:
        view = await resp.json()
    assert [(m["source"], m["locked"], m["filter"]) for m in view["masks"]] == [("config", True, "pixelate")]
    async with admin.delete(f"{gw.url}/api/cameras/locked/masks/0", json={"reason": "try"}) as resp:
        assert resp.status == 403 and "config" in (await resp.json())["error"]
    async with admin.put(f"{gw.url}/api/cameras/locked/masks", json={"masks": [], "reason": "try"}) as resp:
        assert resp.status == 200
        assert [m["source"] for m in (await resp.json())["masks"]] == ["config"]
    assert gw.cameras.get("locked").masked
    # viewers see that the picture is masked (and by how many masks), not where
    async with operator.get(f"{gw.url}/api/cameras") as resp:
        listed = {c["id"]: c["masks"] for c in await resp.json()}
    assert listed["locked"] == 1 and listed["pat"] == len(gw.cameras.get("pat").masks)


INVALID = [
    ({"points": [[0.1, 0.1], [0.5, 0.1]]}, "at least 3 points"),
    ({"points": [[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]]}, "outside the picture"),
    ({"points": [[0.1, -0.1], [0.2, 0.1], [0.5, 0.5]]}, "outside the picture"),
    ({"points": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}, "no area"),
    ({"points": "0.1,0.1"}, "list of [x, y] pairs"),
    ({"points": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]], "filter": "sparkle"}, "unknown filter"),
    ({"points": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]], "filter": "pixelate", "options": {"block": 0}}, "'block'"),
    ({"points": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]], "reason": ""}, "reason is required"),
]


async def test_invalid_masks_are_refused_with_a_reason(make_gateway) -> None:
    gw = await make_gateway(camera_toml("demo", "demo", width=320, height=240, fps=10))
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    for mask, reason in INVALID:
        body = {"reason": "test", **mask}
        async with admin.post(f"{gw.url}/api/cameras/demo/masks", json=body) as resp:
            assert resp.status == 400, mask
            assert reason in (await resp.json())["error"]
        put = {"masks": [{k: v for k, v in body.items() if k != "reason"}], "reason": body["reason"]}
        async with admin.put(f"{gw.url}/api/cameras/demo/masks", json=put) as resp:
            assert resp.status == 400, mask
            error = (await resp.json())["error"]
            assert reason in error and (error.startswith("masks[0]: ") or "reason" in reason), error
    async with admin.get(f"{gw.url}/api/cameras/demo/masks") as resp:
        assert (await resp.json())["version"] == 0


async def test_versions_keep_who_when_and_why(make_gateway, tmp_path: Path) -> None:
    gw = await make_gateway(camera_toml("demo", "demo", width=320, height=240, fps=10))
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    a = {"points": [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]], "filter": "blur"}
    b = {"points": [[0.5, 0.5], [0.9, 0.5], [0.9, 0.9], [0.5, 0.9]], "filter": "pixelate", "options": {"block": 8}}
    async with admin.put(f"{gw.url}/api/cameras/demo/masks", json={"masks": [a, b], "reason": "first", "version": 0}) as resp:
        assert resp.status == 200, await resp.text()
    async with admin.put(f"{gw.url}/api/cameras/demo/masks", json={"masks": [b], "reason": "stale", "version": 0}) as resp:
        assert resp.status == 409
    async with admin.delete(f"{gw.url}/api/cameras/demo/masks/0?reason=second") as resp:
        assert resp.status == 200
    async with admin.get(f"{gw.url}/api/cameras/demo/masks/versions") as resp:
        versions = await resp.json()
    assert [(v["version"], v["reason"], v["created_by"], len(v["masks"])) for v in versions] == [
        (2, "second", "mask-admin", 1),
        (1, "first", "mask-admin", 2),
    ]
    assert versions[0]["masks"][0]["filter"] == "pixelate"
    entries = await gw.app[AUDIT].query(action="mask.edit", outcome="ok")
    assert [(e["purpose"], e["detail"]["change"], e["detail"]["version"]) for e in entries] == [("second", "delete", 2), ("first", "replace", 1)]
    assert gw.cameras.get("demo").masks[0].filter == "pixelate"
