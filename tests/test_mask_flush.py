"""No picture from before a mask: adding one empties the GOP cache and the LL-HLS window.

A real gateway with the demo camera's static colour bars, already masked in one corner by
its config; an administrator adds a second mask while an aiortc viewer watches. A snapshot,
a new WebRTC viewer and an LL-HLS playlist taken at once show the new area masked in every
picture they hold; nothing cached from before the mask is served.
"""

from __future__ import annotations

import asyncio
import io
import time

import av
import numpy as np

from gateway.appkeys import AUDIT
from tests.fixtures_app import RunningGateway, camera_toml
from tests.hls_validator import parse_media_playlist
from tests.test_webrtc import connect

W, H = 320, 240
#: The mask the administrator adds (normalised), over the green, magenta and red bars.
REGION = ((0.55, 0.30), (0.85, 0.30), (0.85, 0.55), (0.55, 0.55))
#: Kept masked by the config from the start (so the mask stage already runs).
CONFIG_MASK = """
[[camera.masks]]
points = [[0.05, 0.30], [0.25, 0.30], [0.25, 0.55], [0.05, 0.55]]
filter = "fill"
"""
#: A long keyframe interval of the masked stream: without the flush, the cached GOP (from
#: before the mask) would be what new readers get for up to three seconds.
GATEWAY_TOML = """
[masking]
keyframe-interval = 3.0
"""
MARGIN = 6


def region_luma(frame: av.VideoFrame) -> float:
    """Mean luma inside the new mask (kept ``MARGIN`` pixels from its edges)."""
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[: frame.height, : frame.width]
    (x0, y0), (x1, y1) = REGION[0], REGION[2]
    h, w = y.shape
    return float(y[round(y0 * h) + MARGIN : round(y1 * h) - MARGIN, round(x0 * w) + MARGIN : round(x1 * w) - MARGIN].mean())


def decode_all(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


async def masked_demo(make_gateway) -> RunningGateway:
    cams = camera_toml("bars", "demo", width=W, height=H, fps=25, pattern="bars", keyframe_interval=1.0) + CONFIG_MASK
    gw = await make_gateway(cams, GATEWAY_TOML)
    await gw.wait_online("bars")
    return gw


async def test_a_mask_added_while_watched_leaves_no_earlier_picture_anywhere(make_gateway) -> None:
    gw = await masked_demo(make_gateway)
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    base = f"{gw.url}/api/cameras/bars/hls/"

    watching = await connect(gw, "bars")
    late = None
    try:
        before = await watching.first_frame()
        assert region_luma(before) > 50, "the bars are visible before the mask"
        # The LL-HLS window holds segments from before the mask.
        deadline = time.monotonic() + 20
        while True:
            async with gw.session.get(base + "stream.m3u8") as resp:
                assert resp.status == 200, await resp.text()
                old = parse_media_playlist(await resp.text())
            if len([s for s in old.segments if s.uri]) >= 2:
                break
            assert time.monotonic() < deadline, old.text
            await asyncio.sleep(0.3)
        old_uris = {p.uri for s in old.segments for p in s.parts} | {s.uri for s in old.segments if s.uri}

        async with admin.post(
            f"{gw.url}/api/cameras/bars/masks", json={"points": REGION, "filter": "fill", "reason": "private garden"}
        ) as resp:
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["version"] == 1

        # At once: a snapshot, a new viewer and a playlist.
        async with gw.session.get(f"{gw.url}/api/cameras/bars/snapshot.jpg") as resp:
            assert resp.status == 200, await resp.text()
            jpeg = decode_all(await resp.read())[0]
        assert region_luma(jpeg) < 12, f"snapshot shows the area (luma {region_luma(jpeg):.0f})"
        late = await connect(gw, "bars")
        first = [await late.first_frame(10.0) for _ in range(10)]
        lumas = [round(region_luma(f)) for f in first]
        assert all(v < 30 for v in lumas), f"the new viewer saw the area: {lumas}"
        async with gw.session.get(base + "stream.m3u8") as resp:
            assert resp.status == 200, await resp.text()
            now = parse_media_playlist(await resp.text())
        listed = [s for s in now.segments if s.uri]
        assert listed, now.text
        assert not old_uris & ({p.uri for s in now.segments for p in s.parts} | {s.uri for s in listed}), now.text
        for seg in listed:
            async with gw.session.get(base + seg.map_uri) as resp:
                init = await resp.read()
            async with gw.session.get(base + seg.uri) as resp:
                assert resp.status == 200
                frames = decode_all(init + await resp.read())
            lumas = [round(region_luma(f)) for f in frames]
            assert frames and all(v < 30 for v in lumas), f"segment {seg.uri}: {lumas}"
        for uri in old_uris:  # nothing from before the mask can be fetched any more
            async with gw.session.get(base + uri) as resp:
                assert resp.status == 404, uri
                assert "no " in (await resp.json())["error"]

        # The viewer who watched all along kept receiving, and is masked now too.
        assert await watching.count_frames(1.0) >= 15
        assert region_luma(watching.frames[-1]) < 30
        assert gw.cameras.get("bars").hub.forgotten == 1
        entries = await gw.app[AUDIT].query(action="mask.edit", outcome="ok")
        assert [(e["user"], e["detail"]["change"], e["detail"]["version"]) for e in entries] == [("mask-admin", "add", 1)]
        snapshots = await gw.app[AUDIT].query(action="snapshot", camera="bars")
        assert [e["user"] for e in snapshots] == ["tester"]
    finally:
        await watching.pc.close()
        if late is not None:
            await late.pc.close()


async def test_removing_a_mask_keeps_the_cached_pictures(make_gateway) -> None:
    """A pure removal shows less masking, never more of the past: no flush, no restart."""
    gw = await masked_demo(make_gateway)
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    async with admin.post(
        f"{gw.url}/api/cameras/bars/masks", json={"points": REGION, "filter": "fill", "reason": "garden"}
    ) as resp:
        assert resp.status == 201
    hub = gw.cameras.get("bars").hub
    assert hub.forgotten == 1
    async with admin.delete(f"{gw.url}/api/cameras/bars/masks/1", json={"reason": "garden sold"}) as resp:
        assert resp.status == 200, await resp.text()
    assert hub.forgotten == 1
    async with admin.delete(f"{gw.url}/api/cameras/bars/masks/0", json={"reason": "try"}) as resp:
        assert resp.status == 403 and "config" in (await resp.json())["error"]
    changes = await gw.app[AUDIT].query(action="mask.edit")
    assert [(e["outcome"], e["detail"]["change"]) for e in changes] == [("refused", "delete"), ("ok", "delete"), ("ok", "add")]
