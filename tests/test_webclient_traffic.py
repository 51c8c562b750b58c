"""The traffic page in real Chromium against a real gateway: a camera's counts per lane and
direction as an SVG bar chart, a table and a CSV link (counts put in the store directly:
the counting itself is tests/test_analytics.py's)."""

from __future__ import annotations

import time

import pytest

from gateway.analytics.store import bucket_start
from gateway.appkeys import ANALYTICS_STORE
from gateway.interfaces import Observation
from tests.fixtures_app import camera_toml
from tests.fixtures_cameras import free_port

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import requires_chromium, wait_for_function  # noqa: E402
from tests.test_webclient_station import new_page  # noqa: E402,F401 - the fixture is used

pytestmark = requires_chromium

COUNTING = """
[[camera.analytics]]
analyzer = "vehicle-count"
[[camera.analytics.lines]]
name = "bridge"
points = [[0.5, 0.0], [0.5, 1.0]]
directions = ["in", "out"]
[[camera.analytics.lines.lanes]]
name = "left"
span = [0.0, 0.5]
[[camera.analytics.lines.lanes]]
name = "right"
span = [0.5, 1.0]
"""


async def test_the_traffic_page_charts_counts_per_lane_and_direction(make_gateway, new_page) -> None:
    cameras = camera_toml("entry", "generic_rtsp", url=f"rtsp://127.0.0.1:{free_port()}/x") + COUNTING
    gw = await make_gateway(cameras)
    store = gw.app[ANALYTICS_STORE]
    hour = bucket_start(time.time(), "hour")  # counts in three whole hours before this one
    for minutes_before, lane, direction in [(30, "left", "in"), (30, "left", "in"), (20, "right", "out"), (90, "left", "in"), (150, "right", "out")]:
        store.add(Observation(kind="count", at=hour - minutes_before * 60, camera="entry", analyzer="vehicle-count",
                              payload={"line": "bridge", "lane": lane, "direction": direction}))
    await store.flush()
    await gw.sign_in("tess", role="operator", all_areas=True)
    page = await new_page(gw, "tess")
    await page.goto(gw.url + "/#/traffic?camera=entry&line=bridge")
    await page.wait_for_selector('#nav a[data-route="traffic"]:not([hidden])')
    await page.wait_for_selector('.traffic-chart[data-total="5"]')
    legend = await page.evaluate("() => [...document.querySelectorAll('.traffic-legend li')].map(li => [li.textContent, li.dataset.total])")
    assert sorted(legend) == [["left in", "3"], ["right out", "2"]]
    assert await page.locator(".traffic-chart rect.traffic-bar").count() == 4  # a bar per series and hour
    assert await page.locator(".traffic-table tbody tr").count() == 3  # three hours with vehicles
    href = await page.get_attribute(".traffic-csv", "href")
    assert "format=csv" in href and "camera=entry" in href and "line=bridge" in href
    # per week: the same vehicles, asked again
    await page.select_option('select[name="interval"]', "week")
    await wait_for_function(page, "() => document.querySelector('.traffic-csv').href.includes('interval=week')")
    await page.wait_for_selector('.traffic-chart[data-total="5"]')
