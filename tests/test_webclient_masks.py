"""The mask editor in real Chromium: an administrator draws a polygon on the snapshot and
saves it with a reason; the gateway then reports and applies the mask. Operators have no editor."""

from __future__ import annotations

import os

import pytest

from gateway.appkeys import AUDIT
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_browser import CHROMIUM

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

#: Where the admin clicks, as fractions of the snapshot.
CORNERS = [(0.2, 0.3), (0.5, 0.3), (0.5, 0.6), (0.2, 0.6)]


async def open_as(browser: playwright_api.Browser, gw: RunningGateway, username: str) -> playwright_api.Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    resp = await context.request.post(gw.url + "/api/session", data={"username": username, "password": TEST_PASSWORD})
    assert resp.status == 201, await resp.text()
    await page.goto(gw.url + "/")
    await page.wait_for_selector("#nav:not([hidden])")
    return page


async def test_an_admin_draws_and_saves_a_mask_an_operator_has_no_editor(make_gateway, browser) -> None:
    gw = await make_gateway(camera_toml("demo", "demo", width=640, height=360, fps=10, pattern="bars", keyframe_interval=0.5))
    await gw.wait_online("demo")
    await gw.sign_in("chief", role="admin", all_areas=True)

    page = await open_as(browser, gw, "chief")
    await page.click('#nav a[data-route="masks"]')
    await page.wait_for_selector('#page-masks[data-camera="demo"] .mask-snapshot[data-loaded]')
    await page.wait_for_selector('#page-masks[data-version="0"]')
    box = await page.locator(".mask-overlay").bounding_box()
    assert box and box["width"] > 300
    await page.click('[data-action="draw"]')
    for x, y in CORNERS:
        await page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
    await page.click('[data-action="finish"]')
    assert await page.locator(".mask-overlay polygon").count() == 1
    await page.select_option('select[name="filter"]', "pixelate")
    # Saving without a reason is refused in the page; with one, it becomes version 1.
    await page.click('[data-action="save"]')
    assert "reason" in await page.inner_text(".mask-status")
    await page.fill('input[name="reason"]', "neighbour's window")
    await page.click('[data-action="save"]')
    await page.wait_for_selector('#page-masks[data-version="1"]')
    assert "version 1" in await page.inner_text(".mask-status")

    admin = await gw.sign_in("chief", create=False)
    async with admin.get(f"{gw.url}/api/cameras/demo/masks") as resp:
        view = await resp.json()
    [mask] = view["masks"]
    assert mask["filter"] == "pixelate" and mask["source"] == "database"
    for (x, y), (px, py) in zip(CORNERS, mask["points"]):
        assert abs(x - px) < 0.01 and abs(y - py) < 0.01, mask["points"]
    [entry] = await gw.app[AUDIT].query(action="mask.edit", outcome="ok")
    assert entry["user"] == "chief" and entry["purpose"] == "neighbour's window"
    assert gw.cameras.get("demo").masked

    # Move the mask by dragging it, then delete it: each save is a version.
    cx, cy = box["x"] + 0.35 * box["width"], box["y"] + 0.45 * box["height"]
    await page.mouse.move(cx, cy)
    await page.mouse.down()
    await page.mouse.move(cx + 0.1 * box["width"], cy, steps=4)
    await page.mouse.up()
    await page.fill('input[name="reason"]', "moved")
    await page.click('[data-action="save"]')
    await page.wait_for_selector('#page-masks[data-version="2"]')
    async with admin.get(f"{gw.url}/api/cameras/demo/masks") as resp:
        moved = (await resp.json())["masks"][0]["points"]
    assert abs(moved[0][0] - 0.3) < 0.01 and abs(moved[0][1] - 0.3) < 0.01, moved
    assert not page.errors  # type: ignore[attr-defined]

    # The operator: no link, no editor, even when typing the address.
    operator = await open_as(browser, gw, "tester")
    assert await operator.locator('#nav a[data-route="masks"]').is_hidden()
    await operator.goto(gw.url + "/#/masks")
    await operator.wait_for_timeout(500)
    assert "masks" not in operator.url.split("#")[-1]
    assert await operator.locator("#page-masks").is_hidden()
    assert await operator.locator("#page-masks .mask-overlay").count() == 0
    assert not operator.errors  # type: ignore[attr-defined]
