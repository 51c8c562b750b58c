"""The Cameras page in real Chromium: an administrator adds a camera (the gateway starts it),
sees a mistake named by key, and removes it; the cameras of cameras.toml are listed read-only."""

from __future__ import annotations

import pytest

from tests.fixtures_app import camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import requires_chromium  # noqa: E402
from tests.test_webclient_station import new_page  # noqa: E402,F401 - the fixture is used

pytestmark = requires_chromium


async def test_add_a_camera_see_an_error_and_remove_it(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("c-file", "demo", width=160, height=120, fps=10))
    await gw.sign_in("ada", role="admin", all_areas=True)
    page = await new_page(gw, "ada")
    page.on("dialog", lambda dialog: dialog.accept())
    await page.goto(gw.url + "/#/cameras")
    await page.wait_for_selector("#cameras-configured tr[data-camera-id='c-file']")
    assert await page.locator("#cameras-configured button").count() == 0  # read-only

    await page.fill("#camera-form input[name='id']", "c-new")
    await page.fill("#camera-form input[name='vendor']", "no-such-vendor")
    await page.fill("#camera-form input[name='area']", "north")
    await page.fill("#camera-form textarea[name='options']", '{"width": 160, "height": 120, "fps": 10}')
    await page.click("#camera-form button[type='submit']")
    await page.wait_for_selector("#cameras-admin-message:has-text('camera.vendor: unknown vendor')")

    await page.fill("#camera-form input[name='vendor']", "demo")
    await page.click("#camera-form button[type='submit']")
    await page.wait_for_selector("#cameras-managed tr[data-camera-id='c-new']")
    assert "c-new" in gw.cameras.ids() and gw.cameras.is_running("c-new")

    await page.click("#cameras-managed tr[data-camera-id='c-new'] .camera-remove")
    await page.wait_for_selector("#cameras-admin-message:has-text('Removed c-new')")
    assert gw.cameras.ids() == ["c-file"]
