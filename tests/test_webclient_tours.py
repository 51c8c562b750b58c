"""The patrol tour editor in real Chromium: an administrator builds a tour of two presets
on the demo dome, saves it and starts it; the gateway runs it."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures_app import camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import requires_chromium  # noqa: E402
from tests.test_webclient_station import new_page  # noqa: E402,F401 - the fixture is used

pytestmark = requires_chromium


async def test_build_save_and_start_a_tour(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("dome", "demo", width=320, height=240, fps=10))
    await gw.wait_online()
    await gw.sign_in("ada", role="admin", all_areas=True)
    page = await new_page(gw, "ada")
    await page.goto(gw.url + "/#/tours")
    await page.wait_for_selector("#tour-form .tour-step select[name='preset'] option[value='2']", state="attached")
    await page.fill("#tour-form input[name='name']", "Market square")
    await page.fill("#tour-form .tour-step input[name='dwell']", "2")
    await page.click("#tour-form .tour-add-step")
    await page.select_option("#tour-form .tour-step:nth-child(2) select[name='preset']", "2")
    await page.fill("#tour-form .tour-step:nth-child(2) input[name='speed']", "0.5")
    await page.click("#tour-form button[type='submit']")
    await page.wait_for_selector(".tours-list li[data-state='stopped']")

    async with gw.session.get(gw.url + "/api/cameras/dome/tours") as resp:
        assert resp.status == 200
        tours = await resp.json()
    assert [(t["name"], [(s["preset"], s["dwell_seconds"], s["speed"]) for s in t["steps"]]) for t in tours] == [
        ("Market square", [("1", 2.0, None), ("2", 10.0, 0.5)])
    ]
    await page.click(f".tours-list li[data-tour-id='{tours[0]['id']}'] .tour-start")
    await page.wait_for_selector(f".tours-list li[data-tour-id='{tours[0]['id']}'][data-state='running']")
    head = gw.cameras.get("dome").vendor.head
    for _ in range(100):  # the tour's first step: preset 1
        if head.position() == pytest.approx((0.0, 0.0, 0.0)):
            break
        await asyncio.sleep(0.05)
    assert head.position() == pytest.approx((0.0, 0.0, 0.0))
