"""The camera health page in real Chromium against a real gateway: the worst camera on top
with its offline alarm, a camera's history as sparklines, an alarm arriving live from the
events channel when a camera is killed, and a camera outside one's areas refused (403, reason,
audit)."""

from __future__ import annotations

import pytest

from gateway.appkeys import AUDIT
from tests.fixtures_app import camera_toml
from tests.fixtures_cameras import free_port

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import requires_chromium, wait_for_function  # noqa: E402
from tests.test_webclient_station import new_page  # noqa: E402,F401 - the fixture is used

pytestmark = requires_chromium

FAST_HEALTH = "[health]\nsample-seconds = 0.5\nfrozen-check-seconds = 0.5\n"
ROW = '.health-table tr[data-camera="{}"]'


async def test_the_health_page_lists_cameras_worst_first_and_follows_alarms(make_gateway, gst_camera, new_page) -> None:
    cameras = camera_toml("dead", "generic_rtsp", area="north", url=f"rtsp://127.0.0.1:{free_port()}/x") + camera_toml(
        "gone", "generic_rtsp", url=gst_camera.url("h264")
    )
    gw = await make_gateway(cameras, FAST_HEALTH)
    await gw.wait_online("gone")
    await gw.sign_in("hugo", role="operator", all_areas=True)
    page = await new_page(gw, "hugo")
    await page.goto(gw.url + "/#/health")

    # the camera at a closed port is offline, with its alarm, on top
    await page.wait_for_selector(ROW.format("dead") + '[data-state="offline"] .health-alarm[data-alarm="offline"]', timeout=15000)
    await page.wait_for_selector(ROW.format("gone") + '[data-state="online"]')
    order = await page.evaluate("() => [...document.querySelectorAll('.health-table tbody tr')].map(r => r.dataset.camera)")
    assert order == ["dead", "gone"]
    dead = await page.inner_text(ROW.format("dead"))
    assert "north" in dead and "offline" in dead
    headers = await page.evaluate("() => [...document.querySelectorAll('.health-table th')].map(t => t.textContent)")
    assert {"Uptime 24 h", "Uptime 7 d", "Reconnects", "Bitrate", "Frame rate", "Keyframe interval", "Gaps 24 h"} <= set(headers)

    # the live camera's detail: bitrate and frame-rate history as sparklines, refreshed
    await page.click(ROW.format("gone") + " .health-open")
    await page.wait_for_selector('.health-detail[data-camera="gone"] .health-chart[data-series="bitrate"] svg')
    await wait_for_function(
        page, """() => Number(document.querySelector('.health-chart[data-series="fps"] svg')?.dataset.samples) >= 3""", timeout=15
    )
    assert "No alarms" in await page.inner_text(".health-detail")
    assert await page.evaluate("() => location.hash") == "#/health?camera=gone"

    # killed: the offline alarm arrives from the events channel into the log and the row
    gst_camera.kill()
    await page.wait_for_selector(
        '.health-alarm-log li[data-camera="gone"][data-kind="camera.alarm"][data-alarm="offline"]', timeout=20000
    )
    assert "offline raised" in await page.inner_text('.health-alarm-log li[data-camera="gone"]')
    await page.wait_for_selector(ROW.format("gone") + ' .health-alarm[data-alarm="offline"]')
    await page.wait_for_selector('.health-detail[data-camera="gone"] li[data-alarm="offline"]', timeout=10000)


async def test_a_camera_outside_ones_areas_is_refused_with_the_reason(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("dead", "generic_rtsp", area="north", url=f"rtsp://127.0.0.1:{free_port()}/x"), FAST_HEALTH)
    await gw.sign_in("sud", role="operator", areas=("south",))
    page = await new_page(gw, "sud")
    async with page.expect_response(lambda r: r.url.endswith("/api/health/cameras/dead")) as answer:
        await page.goto(gw.url + "/#/health?camera=dead")
    response = await answer.value
    assert response.status == 403
    reason = (await response.json())["error"]
    await page.wait_for_selector(f'.health-detail[data-camera="dead"] .health-refused:has-text("{reason}")')
    await page.wait_for_selector(".page-health .page-count:has-text('0 cameras')")
    await gw.app[AUDIT].flush()
    (entry,) = await gw.app[AUDIT].query(user="sud", action="camera.health")  # asked once, not at every refresh
    assert all(e["outcome"] == "refused" and e["camera"] == "dead" and e["detail"]["reason"] == reason for e in [entry])
