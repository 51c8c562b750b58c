"""The API page in real Chromium: the gateway's OpenAPI document rendered for integrators —
operations grouped by tag with the action each needs, a filter, an operation's parameters
and answers, and the schemas; the link shows for administrators, not for operators."""

from __future__ import annotations

import pytest

from tests.fixtures_app import camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import requires_chromium, wait_for_function  # noqa: E402
from tests.test_webclient_station import new_page  # noqa: E402,F401 - the fixture is used

pytestmark = requires_chromium

WHEP = '.apidocs-op[data-operation="POST /api/cameras/{camera_id}/whep"]'


async def test_the_api_page_renders_the_openapi_document(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("cam", "demo", width=160, height=120, fps=5))
    await gw.sign_in("ada", role="admin", all_areas=True)
    page = await new_page(gw, "ada")
    await page.goto(gw.url + "/#/api")
    await page.wait_for_selector(WHEP, timeout=15000)
    assert await page.is_visible('#nav a[data-route="api"]')
    count = await page.evaluate("() => document.querySelectorAll('.apidocs-op').length")
    spec = await (await gw.session.get(gw.url + "/api/openapi.json")).json()
    assert count == sum(len(ops) for ops in spec["paths"].values())
    assert "live.view on the camera" in await page.inner_text(WHEP + " .apidocs-access")

    # the filter narrows to matching operations; opening one shows its parameters and answers
    await page.fill(".apidocs-filter", "whep")
    await wait_for_function(page, "() => document.querySelectorAll('.apidocs-op').length <= 3")
    await page.click(WHEP + " summary")
    body = await page.inner_text(WHEP + " .apidocs-body")
    assert "camera_id" in body and "application/sdp" in body and "201" in body and "4XX" in body
    assert await page.evaluate("() => document.querySelectorAll('.apidocs-schema').length") == len(spec["components"]["schemas"])

    # an operator's navigation has no API link (the page itself opens for any signed-in user)
    await gw.sign_in("otto", role="operator", all_areas=True)
    other = await new_page(gw, "otto")
    await other.goto(gw.url + "/#/live")
    await other.wait_for_selector('#nav a[data-route="live"]:not([hidden])', timeout=15000)
    assert await other.is_hidden('#nav a[data-route="api"]')
