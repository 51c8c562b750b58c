"""Incidents in real Chromium: an operator opens one from a live tile, bookmarks it, and
follows its link to a pre-filled evidence request; the register page lists it."""

from __future__ import annotations

import pytest

from gateway.appkeys import AUDIT, RECORDING
from tests.fixtures_app import camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import requires_chromium, wait_for_function  # noqa: E402
from tests.test_webclient import SMALL_DEMO  # noqa: E402
from tests.test_webclient_station import new_page  # noqa: E402,F401 - the fixture is used

pytestmark = requires_chromium
TILE = '.tile[data-index="0"]'


async def test_open_an_incident_from_a_tile(make_gateway, new_page) -> None:
    small = {**SMALL_DEMO, "width": 320, "height": 240}
    gw = await make_gateway(camera_toml("d1", "demo", **small) + camera_toml("d2", "demo", **small))
    await gw.wait_online()
    page = await new_page(gw, "tester")
    await page.click('#camera-list li[data-camera-id="d1"] button')
    await page.wait_for_selector(f"{TILE} .tile-incident", state="visible")
    await page.click(f"{TILE} .tile-incident")
    await page.wait_for_selector("#incident-dialog form[data-ready='true']")
    assert "Camera d1" in await page.inner_text("#incident-dialog .incident-camera")
    await page.select_option("#incident-dialog select[name='category']", "person-lying")
    await page.fill("#incident-dialog textarea[name='note']", "man on the bench, not moving")
    await page.check("#incident-dialog input[name='camera'][value='d2']")
    await page.click("#incident-dialog button[type='submit']")
    await page.wait_for_selector("#incident-dialog .incident-detail[data-state='open']")
    iid = int(await page.get_attribute("#incident-dialog .incident-detail", "data-incident-id"))
    assert f"Incident {iid}: Person lying on the ground" in await page.inner_text("#incident-dialog .incident-detail h2")

    # a bookmark while it is open
    await page.fill("#incident-dialog .incident-bookmark input[name='note']", "ambulance arrives")
    await page.click("#incident-dialog .incident-bookmark button[type='submit']")
    await wait_for_function(page, "() => document.querySelector('#incident-dialog .incident-bookmarks')?.textContent.includes('ambulance arrives')")

    # the gateway has it: the hold on both cameras, the audit entry
    async with gw.session.get(f"{gw.url}/api/incidents/{iid}") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["cameras"] == ["d1", "d2"] and body["note"] == "man on the bench, not moving"
    assert [b["note"] for b in body["bookmarks"]] == ["ambulance arrives"]
    holds = [h for h in await gw.app[RECORDING].active_holds() if h.source == f"incident:{iid}"]
    assert {h.camera for h in holds} == {"d1", "d2"}
    await gw.app[AUDIT].flush()
    opened = await gw.app[AUDIT].query(action="incident.open", user="tester")
    assert [e["detail"]["incident"] for e in opened] == [iid]

    # "Request an export of this incident" fills the evidence request form
    await page.click("#incident-dialog .incident-export")
    await page.wait_for_selector(f"#export-form[data-incident='{iid}']")
    assert await page.input_value("#export-form input[name='cameras']") == "d1, d2"
    assert await page.input_value("#export-form input[name='case_number']") == f"INC-{iid}"
    assert (await page.input_value("#export-form textarea[name='purpose']")).startswith(f"Incident {iid}")

    # the register lists it
    await page.goto(gw.url + "/#/incidents")
    await page.wait_for_selector(f"#page-incidents tr[data-incident-id='{iid}']")
    assert "Person lying on the ground" in await page.inner_text(f"#page-incidents tr[data-incident-id='{iid}']")
