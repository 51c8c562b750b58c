"""Station mode in real Chromium: pushed cameras open by themselves, and go away again."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.live.webrtc import WEBRTC_SESSIONS
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.fixtures_browser import wait_for_function  # noqa: E402
from tests.test_webclient import SMALL_DEMO  # noqa: E402

SCREENSHOT = Path(os.environ.get("CITYGATE_SCREENSHOT_DIR", "/tmp")) / "station.png"
STATION_TILE = '#page-station .tile[data-camera-id="{camera}"]'

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture
async def new_page() -> AsyncIterator:
    """``await new_page(username)`` → a page signed in as ``username`` in its own context."""
    errors: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

        async def factory(gw: RunningGateway, username: str) -> playwright_api.Page:
            context = await browser.new_context(viewport={"width": 1280, "height": 720})
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: print(f"{username} console.{msg.type}: {msg.text}"))
            resp = await context.request.post(gw.url + "/api/session", data={"username": username, "password": TEST_PASSWORD})
            assert resp.status == 201, await resp.text()
            await page.goto(gw.url + "/")
            return page

        try:
            yield factory
        finally:
            await browser.close()
    assert not errors, f"uncaught errors in the page: {errors}"


PLAYING = """sel => {
  const v = document.querySelector(sel);
  return !!v && v.videoWidth > 0 && v.currentTime > 0;
}"""


async def assert_advancing(page, selector: str) -> None:
    sample = "v => ({w: v.videoWidth, t: v.currentTime})"
    first = await page.eval_on_selector(selector, sample)
    await asyncio.sleep(0.6)
    later = await page.eval_on_selector(selector, sample)
    assert first["w"] > 0 and later["t"] > first["t"], (first, later)


async def test_station_plays_pushed_cameras_without_a_click(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO) + camera_toml("d2", "demo", area="north", **SMALL_DEMO))
    await gw.wait_online()
    await gw.sign_in("station-1", role="rescue-station")
    await gw.sign_in("station-2", role="rescue-station")

    # The operator pushes d2 through the dialog before the station is even open.
    operator = await new_page(gw, "tester")
    await operator.click("#push-open")
    await operator.wait_for_selector('#push-dialog input[name="camera"][value="d2"]')
    await operator.check('#push-dialog input[name="camera"][value="d2"]')
    await operator.check('#push-dialog input[name="station"][value="station-1"]')
    await operator.fill('#push-dialog input[name="reason"]', "Flooded underpass")
    await operator.fill('#push-dialog input[name="minutes"]', "30")
    await operator.click('#push-dialog button[type="submit"]')
    await operator.wait_for_selector("#push-dialog .push-list li[data-push-id]")
    assert "Flooded underpass" in await operator.inner_text("#push-dialog .push-list")
    await operator.screenshot(path=str(SCREENSHOT.with_name("push-dialog.png")))

    # The station lands on its page and shows what is already pushed to it.
    station = await new_page(gw, "station-1")
    await station.wait_for_selector("#page-station:not([hidden])[data-connected='true']")
    assert station.url.endswith("#/station")
    await wait_for_function(station, PLAYING, arg=STATION_TILE.format(camera="d2") + " video", timeout=10)
    assert "Flooded underpass" in await station.inner_text(STATION_TILE.format(camera="d2"))

    # A push through the API: playing within 3 s, no click; a chime; reason and countdown.
    started = time.monotonic()
    async with gw.session.post(
        gw.url + "/api/pushes", json={"cameras": ["d1"], "stations": ["station-1"], "reason": "Fire at the market", "minutes": 10}
    ) as resp:
        assert resp.status == 201
        push = await resp.json()
    await wait_for_function(station, PLAYING, arg=STATION_TILE.format(camera="d1") + " video", timeout=3)
    assert time.monotonic() - started < 3.0
    await assert_advancing(station, STATION_TILE.format(camera="d1") + " video")
    tile_text = await station.inner_text(STATION_TILE.format(camera="d1"))
    assert "Fire at the market" in tile_text and "from tester" in tile_text
    countdown = int(await station.get_attribute(STATION_TILE.format(camera="d1") + " .station-countdown", "data-seconds"))
    assert 590 <= countdown <= 600
    # m:ss, counting down from 10:00 (which it may still show if it rendered within the first second)
    countdown_text = await station.inner_text(STATION_TILE.format(camera="d1") + " .station-countdown")
    assert re.fullmatch(r"(10:00|9:[45]\d) left", countdown_text), countdown_text
    info = await station.evaluate("window.citygate.station")
    assert info["chimes"] >= 2 and info["audio"] == "running", info  # one for d2 at load, one for d1
    await station.screenshot(path=str(SCREENSHOT))

    # Revocation: the video stops and the tile goes away within 2 s.
    sessions = gw.app[WEBRTC_SESSIONS]
    assert sorted(s.camera_id for s in sessions) == ["d1", "d2"]
    started = time.monotonic()
    async with gw.session.delete(f"{gw.url}/api/pushes/{push['id']}") as resp:
        assert resp.status == 200
    await station.wait_for_selector(STATION_TILE.format(camera="d1"), state="detached", timeout=2000)
    while any(s.camera_id == "d1" for s in sessions):
        assert time.monotonic() - started < 2.0, "the revoked camera's WebRTC session is still open"
        await asyncio.sleep(0.05)
    await assert_advancing(station, STATION_TILE.format(camera="d2") + " video")  # the other push runs on

    # The operator ends the other push from the dialog: the station is empty again.
    await operator.click("#push-dialog .push-list li[data-push-id] button[data-action='revoke']")
    await station.wait_for_selector(STATION_TILE.format(camera="d2"), state="detached", timeout=2000)
    await station.wait_for_selector("#page-station[data-cameras='0'] .station-empty")
    await operator.wait_for_selector("#push-dialog .push-list li.push-none")
