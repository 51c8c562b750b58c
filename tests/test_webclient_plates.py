"""The Plates page in real Chromium: a search with a purpose shows reads with their crops and
"Play from here"; the watchlist is kept from the page (each change with its purpose)."""

from __future__ import annotations

import time

import cv2
import pytest

from gateway.appkeys import AUDIT
from gateway.plates.store import PLATES
from tests.plate_fixtures import plate_image

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import requires_chromium, wait_for_function  # noqa: E402
from tests.test_webclient_station import new_page  # noqa: E402,F401 - the fixture is used

pytestmark = requires_chromium

CAMERAS = """
[[camera]]
id = "gate-1"
vendor = "generic_rtsp"
area = "north"
enabled = false
[camera.options]
url = "rtsp://127.0.0.1:9/none"
"""


async def test_plate_search_and_watchlist_page(make_gateway, new_page) -> None:
    gw = await make_gateway(CAMERAS)
    await gw.sign_in("officer", role="duty-officer", all_areas=True)
    at = time.time() - 120
    ok, jpeg = cv2.imencode(".jpg", plate_image(["29-B1", "123.45"], 120))
    assert ok
    read = await gw.app[PLATES].record(
        camera="gate-1", at=at, text=["29-B1", "123.45"], confidence=0.97, analyzer="plate-reader", crop=jpeg.tobytes()
    )
    assert read is not None

    page = await new_page(gw, "officer")
    await page.wait_for_selector('#nav a[data-route="plates"]:not([hidden])')
    await page.click('#nav a[data-route="plates"]')
    await page.fill("#page-plates .plates-search input[name='q']", "29-B1*")
    await page.fill("#page-plates .plates-search input[name='purpose']", "case 2026/7")
    await page.click("#page-plates .plates-search button[type='submit']")
    item = f"#page-plates .plate-read[data-read-id='{read.id}']"
    await page.wait_for_selector(item)
    assert "29-B1 123.45" in await page.inner_text(f"{item} .plate-text")
    await wait_for_function(page, "sel => document.querySelector(sel)?.naturalWidth > 0", f"{item} img.plate-crop")
    assert await page.get_attribute(f"{item} .plate-play", "href") == f"#/playback?camera=gate-1&at={at:.3f}"
    await gw.app[AUDIT].flush()
    crops = await gw.app[AUDIT].query(action="plates.crop", user="officer")
    assert crops and crops[0]["purpose"] == "case 2026/7"

    # the watchlist: add with a purpose, then remove with another
    form = "#page-plates .plates-watch-form"
    await page.fill(f"{form} input[name='pattern']", "AA1234BB")
    await page.fill(f"{form} input[name='label']", "reported stolen")
    await page.fill(f"{form} input[name='purpose']", "case 2026/8")
    await page.click(f"{form} button[type='submit']")
    row = "#page-plates .plates-watch-table tr[data-watch-id]"
    await page.wait_for_selector(row)
    assert "reported stolen" in await page.inner_text(row)
    await page.fill(f"{row} input[name='purpose']", "recovered")
    await page.click(f"{row} button[type='submit']")
    await page.wait_for_selector(row, state="detached")
    await gw.app[AUDIT].flush()
    changes = {e["action"]: e["purpose"] for e in await gw.app[AUDIT].query(action="plates.watch.*")}
    assert changes == {"plates.watch.add": "case 2026/8", "plates.watch.delete": "recovered"}
