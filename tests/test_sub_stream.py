"""Sub streams on demand: grid tiles ask for a camera's smaller stream over WHEP; it is
pulled from its first viewer on, shared, stopped when nobody watches it, and never served
while the camera is privacy-masked."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from gateway.appkeys import AUDIT, CAMERAS
from gateway.interfaces import MaskShape
from tests.fixtures_app import RunningGateway, camera_toml
from tests.fixtures_cameras import free_port
from tests.fixtures_browser import wait_for_function
from tests.test_webrtc import GST_SIZE, Viewer, client_offer_pc, wait_for

SUB_SIZE = (GST_SIZE[0] // 2, GST_SIZE[1] // 2)

pytestmark = pytest.mark.gstreamer


async def watch(gw: RunningGateway, camera_id: str, profile: str | None) -> tuple[Viewer, str]:
    """A real aiortc viewer of ``camera_id``; returns it and the profile the gateway chose."""
    pc = client_offer_pc()
    await pc.setLocalDescription(await pc.createOffer())
    query = f"?profile={profile}" if profile else ""
    posted = time.monotonic()
    async with gw.session.post(
        f"{gw.url}/api/cameras/{camera_id}/whep{query}", data=pc.localDescription.sdp.encode(),
        headers={"Content-Type": "application/sdp"},
    ) as resp:
        body = await resp.text()
        assert resp.status == 201, f"{resp.status} {body}"
        chosen = resp.headers["Citygate-Profile"]
        location = resp.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return Viewer(pc, pc.getTransceivers()[0].receiver.track, location, body, posted), chosen


@pytest.fixture
async def gw(make_gateway, shared_gst_camera) -> RunningGateway:
    cams = camera_toml("cam", "generic_rtsp", url=shared_gst_camera.url("h264"), sub_url=shared_gst_camera.url("h264-sub"))
    cams += camera_toml("plain", "generic_rtsp", url=shared_gst_camera.url("h264"))
    cams += camera_toml("badsub", "generic_rtsp", url=shared_gst_camera.url("h264"), sub_url=f"rtsp://127.0.0.1:{free_port()}/nothing")
    gw = await make_gateway(cams, "[live]\nsub-stream-linger = 1.0\nsub-stream-timeout = 2.0\n")
    await gw.wait_online("cam", "plain", "badsub")
    return gw


async def test_the_sub_stream_is_pulled_for_its_viewers_only_and_shared(gw: RunningGateway) -> None:
    camera = gw.app[CAMERAS].get("cam")
    assert not camera.sub.running  # online, watched by nobody: its sub stream is not pulled
    async with gw.session.get(f"{gw.url}/api/cameras") as resp:
        profiles = {c["id"]: c["profiles"] for c in await resp.json()}
    assert profiles == {"cam": ["main", "sub"], "plain": ["main"], "badsub": ["main", "sub"]}

    first, chosen = await watch(gw, "cam", "sub")
    second, again = await watch(gw, "cam", "sub")
    main, main_chosen = await watch(gw, "cam", None)
    plain, fallback = await watch(gw, "plain", "sub")
    try:
        assert (chosen, again, main_chosen, fallback) == ("sub", "sub", "main", "main")
        frame = await first.first_frame(timeout=8)
        print(f"first sub-stream frame {1000 * (time.monotonic() - first.posted_at):.0f} ms after the offer (stream started on demand)")
        assert (frame.width, frame.height) == SUB_SIZE
        assert ((await second.first_frame()).width, (await main.first_frame()).width) == (SUB_SIZE[0], GST_SIZE[0])
        assert (await plain.first_frame()).width == GST_SIZE[0]  # no sub stream: main
        assert camera.sub.starts == 1 and camera.sub.hub.readers == 1  # one pull, one RTP packetizer for both tiles
        assert await second.count_frames(1.0) >= 15
    finally:
        for viewer in (first, second, main, plain):
            await viewer.pc.close()

    # the last tile closed: the sub stream stops after the linger, the main stream stays
    await wait_for(lambda: not camera.sub.running, 10, "the idle sub stream stopping")
    assert camera.status.state == "online"
    await gw.app[AUDIT].flush()
    starts = await gw.app[AUDIT].query(action="live.start", camera="cam")
    assert sorted(e["detail"]["profile"] for e in starts) == ["main", "sub", "sub"]

    # and starts again for the next tile
    viewer, chosen = await watch(gw, "cam", "sub")
    try:
        assert chosen == "sub" and (await viewer.first_frame(timeout=8)).height == SUB_SIZE[1]
        assert camera.sub.starts == 2
    finally:
        await viewer.pc.close()


async def test_masks_end_sub_stream_viewers_and_masked_cameras_send_main(gw: RunningGateway) -> None:
    camera = gw.app[CAMERAS].get("cam")
    tile, chosen = await watch(gw, "cam", "sub")
    try:
        assert chosen == "sub" and (await tile.first_frame(timeout=8)).width == SUB_SIZE[0]
        # an administrator masks the camera: the unmasked sub picture must stop at once
        await camera.set_masks([MaskShape(points=((0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)))])
        deadline = time.monotonic() + 5
        with pytest.raises(MediaStreamError):
            while time.monotonic() < deadline:
                await asyncio.wait_for(tile.track.recv(), deadline - time.monotonic())
    finally:
        await tile.pc.close()
    async with gw.session.get(f"{gw.url}/api/cameras") as resp:
        assert {c["id"]: c["profiles"] for c in await resp.json()}["cam"] == ["main"]
    again, chosen = await watch(gw, "cam", "sub")
    try:
        assert chosen == "main"  # the masked main stream, never the unmasked sub stream
        assert (await again.first_frame(timeout=8)).width == GST_SIZE[0]
    finally:
        await again.pc.close()


async def test_a_sub_stream_without_picture_sends_its_viewers_the_main_stream(gw: RunningGateway) -> None:
    first, chosen = await watch(gw, "badsub", "sub")  # waits sub-stream-timeout, then main
    try:
        assert chosen == "main" and (await first.first_frame()).width == GST_SIZE[0]
        started = time.monotonic()
        second, chosen = await watch(gw, "badsub", "sub")  # straight to main for a while
        assert chosen == "main" and time.monotonic() - started < 1.5
        await second.pc.close()
    finally:
        await first.pc.close()


async def test_an_unknown_profile_is_400(gw: RunningGateway) -> None:
    pc = client_offer_pc()
    await pc.setLocalDescription(await pc.createOffer())
    async with gw.session.post(
        f"{gw.url}/api/cameras/cam/whep?profile=hd", data=pc.localDescription.sdp.encode(),
        headers={"Content-Type": "application/sdp"},
    ) as resp:
        assert resp.status == 400
        assert "profile must be one of main, sub, not 'hd'" in (await resp.json())["error"]
    await pc.close()
    assert not gw.app[CAMERAS].get("cam").sub.running


async def test_browser_tiles_use_the_sub_stream_and_a_maximised_tile_the_main(gw: RunningGateway, browser) -> None:
    from tests.test_webclient import TILE, open_viewer, show_camera, wait_phase

    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    try:
        await open_viewer(page, gw)
        await show_camera(page, "cam")  # into tile 0 of the 4-tile wall
        assert await wait_phase(page, 0, "live") == "live · WebRTC · sub stream"
        tile = TILE.format(index=0)
        size = "v => [v.videoWidth, v.videoHeight]"
        await wait_for_function(page, f"document.querySelector('{tile} video').videoWidth === {SUB_SIZE[0]}")
        assert await page.get_attribute(tile, "data-profile") == "sub"

        await page.dblclick(tile)  # maximised: the full picture
        await page.wait_for_selector(f'{tile}.is-maximised[data-phase="live"][data-profile="main"]', timeout=20000)
        await wait_for_function(page, f"document.querySelector('{tile} video').videoWidth === {GST_SIZE[0]}")
        assert await page.eval_on_selector(f"{tile} video", size) == list(GST_SIZE)
        await page.dblclick(tile)  # back on the wall: the sub stream again
        await page.wait_for_selector(f'{tile}:not(.is-maximised)[data-phase="live"][data-profile="sub"]', timeout=20000)
    finally:
        await context.close()
