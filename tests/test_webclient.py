"""The browser viewer (webclient/) in real Chromium against a real gateway.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and Playwright for Python (only its
driver: no ``playwright install``, the system Chromium is used). The LL-HLS fallback cases
need hls.js from npm (``npm ci --prefix webclient``), which they install when npm is there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.live.webrtc import WEBRTC_SESSIONS
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_browser import CHROMIUM, HLS_JS, WEBCLIENT  # noqa: F401 - re-exported for other test modules
from tests.fixtures_cameras import GstCamera, free_port

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

SMALL_DEMO = {"width": 640, "height": 360, "fps": 15, "bitrate": 600_000, "keyframe_interval": 1.0}
SCREENSHOT = Path(os.environ.get("CITYGATE_SCREENSHOT", "/tmp/webclient.png"))

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")




@pytest.fixture
async def page(browser: playwright_api.Browser) -> AsyncIterator[playwright_api.Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: print(f"console.{msg.type}: {msg.text}"))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"




# --------------------------------------------------------------------------------------
# helpers

TILE = '.tile[data-index="{index}"]'


async def open_viewer(page: playwright_api.Page, gw: RunningGateway, *, sign_in: bool = True) -> None:
    """Open the viewer as ``tester`` (the fixture's operator); the session cookie is the browser's."""
    if sign_in:
        resp = await page.context.request.post(
            gw.url + "/api/session", data={"username": "tester", "password": TEST_PASSWORD}
        )
        assert resp.status == 201, await resp.text()
    await page.goto(gw.url + "/")
    if sign_in:
        await page.wait_for_selector("#camera-list li[data-camera-id]")


async def show_camera(page: playwright_api.Page, camera_id: str) -> None:
    await page.click(f'#camera-list li[data-camera-id="{camera_id}"] button')


async def wait_phase(page: playwright_api.Page, index: int, phase: str, timeout: float = 20.0) -> str:
    """Wait until tile ``index`` is in ``phase``; return its state text."""
    tile = TILE.format(index=index)
    await page.wait_for_selector(f'{tile}[data-phase="{phase}"]', timeout=timeout * 1000)
    return await page.inner_text(f"{tile} .tile-state")


async def assert_playing(page: playwright_api.Page, index: int, within: float = 6.0) -> None:
    """The tile's video has a picture, and its time and decoded frames advance."""
    video = f"{TILE.format(index=index)} video"
    sample = "v => ({w: v.videoWidth, h: v.videoHeight, t: v.currentTime, f: v.getVideoPlaybackQuality().totalVideoFrames})"
    first = await page.eval_on_selector(video, sample)
    assert first["w"] > 0 and first["h"] > 0, first
    deadline = asyncio.get_running_loop().time() + within
    while True:
        await asyncio.sleep(0.5)
        later = await page.eval_on_selector(video, sample)
        # A second of picture: a stall at the start of LL-HLS playback is tolerated.
        if later["t"] > first["t"] + 1.0 and later["f"] > first["f"] + 5:
            return
        assert asyncio.get_running_loop().time() < deadline, f"video not advancing: {first} -> {later}"


async def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------
# cases


async def test_lists_cameras_with_state(make_gateway, page) -> None:
    dead = camera_toml("dead", "generic_rtsp", area="north", url=f"rtsp://127.0.0.1:{free_port()}/x")
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO) + dead)
    await gw.wait_online("d1")
    await open_viewer(page, gw, sign_in=False)
    # Not signed in: the gateway answers 401 and the page asks who we are.
    await page.wait_for_selector("#sign-in[open]")
    await page.fill('#sign-in input[name="username"]', "tester")
    await page.fill('#sign-in input[name="password"]', "wrong password")
    await page.click('#sign-in button[type="submit"]')
    await page.wait_for_selector("#sign-in .sign-in-message:has-text('password')")
    await page.fill('#sign-in input[name="password"]', TEST_PASSWORD)
    await page.click('#sign-in button[type="submit"]')
    await page.wait_for_selector("#sign-in", state="hidden")
    await page.wait_for_selector('#camera-list li[data-camera-id="dead"][data-state="offline"]', timeout=15000)
    await page.wait_for_selector('#camera-list li[data-camera-id="d1"][data-state="online"]', timeout=10000)
    d1 = await page.inner_text('#camera-list li[data-camera-id="d1"]')
    assert "ONLINE" in d1.upper() and "centre" in d1 and "640×360" in d1
    dead_text = await page.inner_text('#camera-list li[data-camera-id="dead"]')
    assert "OFFLINE" in dead_text.upper() and "north" in dead_text
    assert "1 of 2 online" in await page.inner_text("#camera-count")
    assert await page.get_attribute('[data-layout-button="4"]', "aria-pressed") == "true"
    assert await page.locator("#grid .tile").count() == 4


async def test_plays_over_webrtc_and_releases_the_session(make_gateway, page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO) + camera_toml("d2", "demo", area="north", **SMALL_DEMO))
    await gw.wait_online()
    await open_viewer(page, gw)
    await show_camera(page, "d1")
    await show_camera(page, "d2")
    assert await wait_phase(page, 0, "live") == "live · WebRTC"
    assert await wait_phase(page, 1, "live") == "live · WebRTC"
    await assert_playing(page, 0)
    await assert_playing(page, 1)
    sessions = gw.app[WEBRTC_SESSIONS]
    assert sorted(s.camera_id for s in sessions) == ["d1", "d2"]
    overlay = await page.inner_text(TILE.format(index=0))
    assert "d1" in overlay
    await page.wait_for_timeout(3500)  # the list refresh has filled in the thumbnails
    await page.screenshot(path=str(SCREENSHOT))

    # Clearing a tile DELETEs its WHEP session.
    await page.hover(TILE.format(index=1))
    await page.click(f"{TILE.format(index=1)} .tile-close")
    await wait_until(lambda: [s.camera_id for s in sessions] == ["d1"], what="d2's session to end")
    assert await page.get_attribute(TILE.format(index=1), "data-phase") == "empty"

    # Leaving the page releases the rest.
    await page.goto("about:blank")
    await wait_until(lambda: len(sessions) == 0, what="every session to end on unload")


@pytest.mark.parametrize("how", ["no-rtcpeerconnection", "whep-refused"])
async def test_falls_back_to_ll_hls(make_gateway, page, hls_js, how) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    await gw.wait_online()
    if how == "no-rtcpeerconnection":
        await page.add_init_script("delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;")
    else:
        async def refuse(route: playwright_api.Route) -> None:
            await route.fulfill(status=500, content_type="application/json", body='{"error": "test says no", "status": 500}')

        await page.route("**/api/cameras/*/whep", refuse)
    await open_viewer(page, gw)
    await show_camera(page, "d1")
    assert await wait_phase(page, 0, "live", timeout=30) == "live · HLS"
    await assert_playing(page, 0)
    assert len(gw.app[WEBRTC_SESSIONS]) == 0
    if how == "no-rtcpeerconnection":
        assert "no WebRTC" in await page.inner_text("#notice-capabilities")


async def test_offline_camera_shows_state_and_reason(make_gateway, page) -> None:
    dead = camera_toml("dead", "generic_rtsp", url=f"rtsp://127.0.0.1:{free_port()}/x")
    gw = await make_gateway(dead)
    await open_viewer(page, gw)
    await show_camera(page, "dead")
    state = await wait_phase(page, 0, "offline", timeout=15)
    assert state.startswith("offline: ")
    reason = state.removeprefix("offline: ")
    camera = (await gw.get_json("/api/cameras/dead"))
    assert camera["state"] == "offline"
    # The tile says why in words, over the (black) video.
    message = await page.inner_text(f"{TILE.format(index=0)} .tile-message")
    assert "offline" in message and "retrying in" in message
    assert reason and reason != "offline", state
    assert await page.is_visible(f"{TILE.format(index=0)} .tile-message-text")
    await page.screenshot(path=str(SCREENSHOT.with_name(SCREENSHOT.stem + "-offline.png")))


async def test_recovers_when_the_gateway_drops_the_session(make_gateway, page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    await gw.wait_online()
    await open_viewer(page, gw)
    await show_camera(page, "d1")
    assert await wait_phase(page, 0, "live") == "live · WebRTC"
    sessions = gw.app[WEBRTC_SESSIONS]
    (first,) = list(sessions)
    await sessions.close_all("test drops every viewer")
    await wait_until(
        lambda: any(s.id != first.id and s.connected_at for s in sessions), timeout=30, what="the viewer to reconnect"
    )
    assert await wait_phase(page, 0, "live") == "live · WebRTC"
    await assert_playing(page, 0)


async def test_layout_keys_and_remembered_wall(make_gateway, page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    await gw.wait_online()
    await open_viewer(page, gw)
    await page.keyboard.press("9")
    assert await page.locator("#grid .tile").count() == 9
    assert await page.get_attribute('[data-layout-button="9"]', "aria-pressed") == "true"
    await page.click(TILE.format(index=4))
    await show_camera(page, "d1")
    await wait_phase(page, 4, "live")
    await page.dblclick(TILE.format(index=4))
    assert await page.locator("#grid .tile:visible").count() == 1
    await page.keyboard.press("Escape")
    assert await page.locator("#grid .tile:visible").count() == 9
    await page.reload()
    await page.wait_for_selector('#grid .tile[data-index="8"]', state="attached")  # the wall renders after the session check
    assert await page.locator("#grid .tile").count() == 9
    assert await wait_phase(page, 4, "live") == "live · WebRTC"
    await page.keyboard.press("1")
    await page.keyboard.press("6")
    assert await page.locator("#grid .tile").count() == 16


@pytest.mark.gstreamer
async def test_h265_camera_says_so_plainly(make_gateway, page, hls_js, shared_gst_camera: GstCamera) -> None:
    gw = await make_gateway(camera_toml("hevc", "generic_rtsp", url=shared_gst_camera.url("h265")))
    await gw.wait_online()
    await open_viewer(page, gw)
    hevc_in_mse = await page.evaluate("MediaSource.isTypeSupported('video/mp4; codecs=\"hvc1.1.6.L93.B0\"')")
    await show_camera(page, "hevc")
    if hevc_in_mse:
        assert await wait_phase(page, 0, "live", timeout=30) == "live · HLS"
    else:
        await wait_phase(page, 0, "unsupported", timeout=20)
        message = await page.inner_text(f"{TILE.format(index=0)} .tile-message")
        assert "This camera sends H.265, which this browser cannot play" in message


async def test_without_webrtc_or_hlsjs_the_tile_says_why(make_gateway, page) -> None:
    """No npm on the gateway (hls.js missing) and no WebRTC: a plain message, never a black tile."""
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    await gw.wait_online()
    await page.route("**/node_modules/hls.js/**", lambda route: route.fulfill(status=404, body="not installed"))
    await page.add_init_script("delete window.RTCPeerConnection;")
    await open_viewer(page, gw)
    await page.wait_for_selector("#notice-capabilities:not([hidden])")
    assert "HLS fallback is unavailable" in await page.inner_text("#notice-capabilities")
    native_hls = await page.evaluate("document.createElement('video').canPlayType('application/vnd.apple.mpegurl')")
    await show_camera(page, "d1")
    state = await wait_phase(page, 0, "offline")
    assert state.startswith("offline: ")
    if not native_hls:
        assert "HLS fallback unavailable" in state, state
    # else the browser's own HLS player was tried (Chromium >= 141 has one) and said why it failed
    assert await page.is_visible(f"{TILE.format(index=0)} .tile-message-text")
