"""The camera map in real Chromium: the demo GeoJSON, the cameras' markers, click and rectangle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures_app import TEST_PASSWORD

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import CHROMIUM, CHROMIUM_ARGS, wait_for_function  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

DEMO_GEOJSON = Path(__file__).resolve().parent.parent / "conf" / "map-demo.geojson"


def placed(camera_id: str, name: str, area: str, location: str, heading: int | None = None) -> str:
    lines = [f'[[camera]]\nid = "{camera_id}"\nname = "{name}"\nvendor = "demo"\narea = "{area}"\nlocation = {location}\n']
    if heading is not None:
        lines.append(f"heading = {heading}\nfov-degrees = 60\n")
    lines.append("[camera.options]\nwidth = 320\nheight = 180\nfps = 10\n")
    return "".join(lines)


# the demo cameras' places (conf/cameras.toml), on the demo map
CAMERAS = (
    placed("d1", "Town Hall Square", "centre", "[50.8110, 19.1195]", 90)
    + placed("d2", "Railway Station", "centre", "[50.8072, 19.1232]", 200)
    + placed("d3", "Harbour Bridge", "north", "[50.8158, 19.1152]")
    + '[[camera]]\nid = "nowhere"\nvendor = "demo"\narea = "centre"\n[camera.options]\nwidth = 320\nheight = 180\n'
)

SHOWN = """() => [...document.querySelectorAll('#grid .tile-name')].map(e => e.textContent).filter(Boolean).sort().join(',')"""


async def test_the_map_shows_the_demo_cameras_and_opens_them(make_gateway) -> None:
    gw = await make_gateway(CAMERAS, f'[map]\nbackground = "{DEMO_GEOJSON}"\n')
    await gw.sign_in("mapper", role="operator", all_areas=True)
    errors: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            resp = await context.request.post(gw.url + "/api/session", data={"username": "mapper", "password": TEST_PASSWORD})
            assert resp.status == 201, await resp.text()
            await page.goto(gw.url + "/#/map")
            await wait_for_function(page, "() => document.querySelector('#page-map')?.dataset.ready === 'true'", timeout=15)

            # the demo GeoJSON drawn as the background (three districts, streets), no tiles
            assert await page.locator("path.map-bg-district").count() == 3
            assert await page.locator("path.map-bg-street").count() == 3
            assert await page.locator("img.leaflet-tile").count() == 0
            # one marker per placed camera, heading cones for those with a heading
            markers = await page.evaluate("() => [...document.querySelectorAll('path.map-camera')].map(e => e.dataset.camera).sort()")
            assert markers == ["d1", "d2", "d3"]
            assert await page.locator("path.map-cone").count() == 2
            assert "nowhere" in await page.locator(".map-status").text_content()
            # states follow the cameras: recording once online
            await wait_for_function(
                page, "() => [...document.querySelectorAll('path.map-camera')].every(e => e.dataset.state === 'recording')", timeout=20
            )

            # a click on a marker opens the camera on the wall
            await page.locator('path.map-camera[data-camera="d2"]').click()
            await wait_for_function(page, "() => location.hash === '#/live'", timeout=10)
            await wait_for_function(page, f"() => ({SHOWN})() === 'Railway Station'", timeout=10)

            # a rectangle around the northern cameras opens them all
            await page.goto(gw.url + "/#/map")
            await wait_for_function(page, "() => document.querySelector('#page-map')?.dataset.ready === 'true'", timeout=15)
            await page.get_by_role("button", name="Select area").click()
            box1 = await page.locator('path.map-camera[data-camera="d1"]').bounding_box()
            box3 = await page.locator('path.map-camera[data-camera="d3"]').bounding_box()
            left, right = min(box1["x"], box3["x"]) - 20, max(box1["x"], box3["x"]) + 40
            top, bottom = min(box1["y"], box3["y"]) - 20, max(box1["y"], box3["y"]) + 40
            await page.mouse.move(left, top)
            await page.mouse.down()
            await page.mouse.move((left + right) / 2, (top + bottom) / 2, steps=5)
            await page.mouse.move(right, bottom, steps=5)
            await page.mouse.up()
            await wait_for_function(page, "() => location.hash === '#/live'", timeout=10)
            shown = await wait_for_function(page, f"() => {{ const s = ({SHOWN})(); return s.includes('Harbour') && s; }}", timeout=10)
            assert "Town Hall Square" in shown and "Harbour Bridge" in shown
        finally:
            await browser.close()
    assert not errors, f"uncaught errors in the page: {errors}"
