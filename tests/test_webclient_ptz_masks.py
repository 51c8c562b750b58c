"""Privacy masks on a PTZ dome in real Chromium, against a real gateway and the demo camera's
virtual dome: an administrator draws a mask over the panorama's garden in the mask editor,
an operator pans the dome, and the mask follows the garden on screen while the garden stays
hidden in the picture. A live tile says "privacy mask: position unknown" while the dome's
position cannot be read (the gateway blacks the whole picture meanwhile)."""

from __future__ import annotations

import asyncio
import io
import os

import av
import pytest

from gateway.appkeys import AUDIT
from gateway.plugins import load_plugins
from tests.fixtures_app import RunningGateway, camera_toml
from tests.fixtures_browser import CHROMIUM
from tests.test_ptz_masks import GATEWAY_TOML, TOLERANCE, H, W, _Hanging, _Plugin, black_fraction, call, garden, garden_box

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.test_webclient_masks import open_as  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

EDITOR = "#page-masks"
TILE = '.tile[data-index="0"]'
#: Where the operator turns the dome: 18 degrees right, where a picture at zoom 0.5 spans 90.
PANNED = (0.1, 0.0, 0.5)
#: At zoom 0.5 the picture spans 90 degrees; pan 0.1 is 18 degrees, a fifth of the width.
SHIFT = 0.2

#: In the editor's snapshot, read through a canvas: samples with the garden's green (the
#: chroma test of tests/test_ptz_masks.py on the JPEG's full-range Cb/Cr) and the share of
#: dark pixels inside ``rect`` (normalised x0, y0, x1, y1).
PICTURE = """(img, rect) => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let garden = 0, dark = 0, inside = 0;
  const [x0, y0, x1, y1] = [rect[0] * c.width, rect[1] * c.height, rect[2] * c.width, rect[3] * c.height];
  for (let i = 0, p = 0; i < d.length; i += 4, p++) {
    const r = d[i], gr = d[i + 1], b = d[i + 2];
    const u = -0.1687 * r - 0.3313 * gr + 0.5 * b + 128;
    const v = 0.5 * r - 0.4187 * gr - 0.0813 * b + 128;
    if (u < 100 && v < 95) garden++;
    const x = p % c.width, y = Math.floor(p / c.width);
    if (x >= x0 && x < x1 && y >= y0 && y < y1) {
      inside++;
      if (0.299 * r + 0.587 * gr + 0.114 * b < 40) dark++;
    }
  }
  return { w: c.width, h: c.height, garden, dark: inside ? dark / inside : 0 };
}"""

#: The editor shows a snapshot taken at ``position`` (within 0.001) and lets the admin draw.
SHOWN_AT = """([selector, position]) => {
  const root = document.querySelector(selector);
  const shown = (root.dataset.shownAt || "").split(",").filter(Boolean).map(Number);
  return root.dataset.drawable === "true" && shown.length === 3 && shown.every((v, i) => Math.abs(v - position[i]) < 0.001);
}"""


@pytest.fixture
async def dome(make_gateway) -> RunningGateway:
    gw = await make_gateway(camera_toml("dome", "demo", width=W, height=H, fps=25, keyframe_interval=1.0), GATEWAY_TOML)
    await gw.wait_online("dome")
    return gw


@pytest.fixture
async def flaky_dome(make_gateway):
    """The demo dome whose position reading can be made to hang (tests/test_ptz_masks.py)."""
    _Hanging.hang = False
    _Hanging.unsupported = False
    plugins = load_plugins()
    plugins.register(_Plugin(), name="flaky-dome-webclient-test")
    try:
        cams = camera_toml("dome", "flaky-dome", width=W, height=H, fps=25, keyframe_interval=1.0)
        gw = await make_gateway(cams, GATEWAY_TOML, plugins=plugins)
        await gw.wait_online("dome")
        yield gw
    finally:
        _Hanging.hang = False
        plugins.unregister("flaky-dome-webclient-test")


def bbox(points: list[list[float]]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


async def ptz_audited(gw: RunningGateway, user: str) -> dict:
    """The ptz.control entry written when ``user``'s control session of the dome ended."""
    for _ in range(100):  # the audit writer stores entries in the background
        entries = await gw.app[AUDIT].query(action="ptz.control", camera="dome", user=user, outcome="ok")
        if entries:
            return entries[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no ptz.control entry for {user}")


async def test_a_mask_drawn_in_the_editor_follows_the_garden_when_the_dome_pans(dome: RunningGateway, browser) -> None:
    gw = dome
    admin = await gw.sign_in("chief", role="admin", all_areas=True)
    operator = gw.session
    box = await garden_box(gw)
    x0, y0, x1, y1 = bbox(box)

    page = await open_as(browser, gw, "chief")
    await page.click('#nav a[data-route="masks"]')
    await page.wait_for_selector(f'{EDITOR}[data-camera="dome"][data-anchors="true"] .mask-snapshot[data-loaded]')
    # Unmasked, the garden shows in the editor's picture: the checks below can fail.
    seen = await page.eval_on_selector(".mask-snapshot", PICTURE, [x0, y0, x1, y1])
    assert (seen["w"], seen["h"]) == (W, H) and seen["garden"] > 200, seen
    await page.wait_for_function(SHOWN_AT, arg=[EDITOR, [0.0, 0.0, 0.5]], timeout=15000)
    assert await page.input_value('select[name="space"]') == "scene"
    assert not await page.locator('select[name="space"]').is_disabled()
    assert await page.input_value('select[name="filter"]') == "fill"

    # Draw around the garden and save with a reason.
    overlay = await page.locator(".mask-overlay").bounding_box()
    assert overlay and overlay["width"] > 300
    await page.click('[data-action="draw"]')
    for x, y in box:
        await page.mouse.click(overlay["x"] + x * overlay["width"], overlay["y"] + y * overlay["height"])
    await page.click('[data-action="finish"]')
    await page.fill('input[name="reason"]', "private garden")
    await page.click('[data-action="save"]')
    await page.wait_for_selector(f'{EDITOR}[data-version="1"]')
    assert "version 1" in await page.inner_text(".mask-status")
    assert "follows the scene" in await page.inner_text(".mask-list")

    # The gateway anchored it where the picture was taken, with the corners clicked.
    async with admin.get(f"{gw.url}/api/cameras/dome/masks") as resp:
        assert resp.status == 200, await resp.text()
        view = await resp.json()
    [mask] = view["masks"]
    assert mask["space"] == "scene" and mask["source"] == "database" and mask["filter"] == "fill", mask
    assert mask["drawn_at"] == pytest.approx([0.0, 0.0, 0.5], abs=1e-3)
    for (x, y), (px, py) in zip(box, mask["points"]):
        assert abs(x - px) < 0.01 and abs(y - py) < 0.01, mask["points"]
    [entry] = await gw.app[AUDIT].query(action="mask.edit", outcome="ok")
    assert entry["user"] == "chief" and entry["purpose"] == "private garden" and entry["camera"] == "dome"
    assert entry["detail"]["version"] == 1

    polygon = page.locator(f'{EDITOR} .mask-overlay polygon[data-mask="0"]')
    before = await polygon.bounding_box()
    assert before is not None
    assert abs((before["x"] - overlay["x"]) / overlay["width"] - x0) < 0.01, before

    # While the dome moves, nothing can be drawn, and the editor says why.
    status, answer = await call(operator, gw, "POST", "dome/ptz/move", {"pan": 0.2})
    assert status == 200, answer
    await page.wait_for_selector(f'{EDITOR}[data-moving="true"]', timeout=5000)
    assert "The camera is moving: stop it to draw." in await page.inner_text(".mask-motion")
    assert await page.locator('[data-action="draw"]').is_disabled()
    status, answer = await call(operator, gw, "POST", "dome/ptz/stop")
    assert status == 200, answer

    # The operator turns the dome 18 degrees right: the garden, and the mask, move left.
    status, answer = await call(operator, gw, "POST", "dome/ptz/absolute", dict(zip(("pan", "tilt", "zoom"), PANNED)))
    assert status == 200, answer
    for _ in range(100):  # the gateway reads where the dome stands right after the command
        async with admin.get(f"{gw.url}/api/cameras/dome/masks") as resp:
            view = await resp.json()
        position = view["position"]
        if [position["pan"], position["tilt"], position["zoom"]] == pytest.approx(list(PANNED), abs=1e-3):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the gateway never saw the dome at {PANNED}: {view}")
    [projected] = view["masks"][0]["projected"]
    expected = x0 - bbox(projected)[0]
    assert expected == pytest.approx(SHIFT, abs=0.01), projected

    await page.wait_for_function(SHOWN_AT, arg=[EDITOR, list(PANNED)], timeout=15000)
    after = await polygon.bounding_box()
    shift = (before["x"] - after["x"]) / overlay["width"]
    print(f"the mask moved left {shift:.3f} of the picture ({expected:.3f} expected)")
    assert shift == pytest.approx(expected, abs=0.015), (before, after)
    assert after["width"] == pytest.approx(before["width"], rel=0.05)
    assert after["y"] == pytest.approx(before["y"], abs=0.01 * overlay["height"])
    assert await page.input_value('select[name="space"]') == "scene"

    # The garden is hidden in the picture shown there, blacked where the polygon is.
    px0, py0, px1, py1 = bbox(projected)
    inner = [px0 + 0.02, py0 + 0.02, px1 - 0.02, py1 - 0.02]
    shown = await page.eval_on_selector(".mask-snapshot", PICTURE, inner)
    print(f"on screen after the pan: {shown}")
    assert shown["garden"] <= 4 * TOLERANCE, shown
    assert shown["dark"] > 0.95, shown

    # ... and in the live picture as an operator gets it.
    async with operator.get(f"{gw.url}/api/cameras/dome/snapshot.jpg") as resp:
        assert resp.status == 200, await resp.text()
        jpeg = await resp.read()
    with av.open(io.BytesIO(jpeg)) as container:
        still = next(container.decode(video=0)).reformat(format="yuv420p")
    assert garden(still) <= TOLERANCE
    assert black_fraction(still) < 0.5, "the mask must cover the garden, not the picture"

    # A mask fixed in the picture, drawn here, goes with the scene mask sent back unchanged.
    osd = [(0.05, 0.2), (0.25, 0.2), (0.25, 0.3), (0.05, 0.3)]
    await page.click('[data-action="draw"]')
    await page.select_option('select[name="space"]', "picture")
    for x, y in osd:
        await page.mouse.click(overlay["x"] + x * overlay["width"], overlay["y"] + y * overlay["height"])
    await page.click('[data-action="finish"]')
    await page.fill('input[name="reason"]', "on-screen display")
    await page.click('[data-action="save"]')
    await page.wait_for_selector(f'{EDITOR}[data-version="2"]')
    async with admin.get(f"{gw.url}/api/cameras/dome/masks") as resp:
        scene, fixed = (await resp.json())["masks"]
    assert scene["points"] == mask["points"] and scene["drawn_at"] == mask["drawn_at"], scene
    assert fixed["space"] == "picture" and fixed["drawn_at"] is None, fixed
    for (x, y), (px, py) in zip(osd, fixed["points"]):
        assert abs(x - px) < 0.01 and abs(y - py) < 0.01, fixed["points"]
    assert "fixed in the picture" in await page.inner_text(".mask-list li:nth-child(2)")

    # The garden mask moved here is drawn anew, where the dome stands now.
    await page.wait_for_function(SHOWN_AT, arg=[EDITOR, list(PANNED)], timeout=15000)
    after = await polygon.bounding_box()
    cx, cy = after["x"] + after["width"] / 2, after["y"] + after["height"] / 2
    await page.mouse.move(cx, cy)
    await page.mouse.down()
    await page.mouse.move(cx + 0.05 * overlay["width"], cy, steps=4)
    await page.mouse.up()
    await page.fill('input[name="reason"]', "a little further right")
    await page.click('[data-action="save"]')
    await page.wait_for_selector(f'{EDITOR}[data-version="3"]')
    async with admin.get(f"{gw.url}/api/cameras/dome/masks") as resp:
        redrawn, kept = (await resp.json())["masks"]
    assert redrawn["space"] == "scene" and redrawn["drawn_at"] == pytest.approx(list(PANNED), abs=1e-3), redrawn
    assert bbox(redrawn["points"])[0] == pytest.approx(px0 + 0.05, abs=0.01), redrawn
    assert kept["points"] == fixed["points"] and kept["space"] == "picture"
    entries = await gw.app[AUDIT].query(action="mask.edit", outcome="ok")
    assert [e["purpose"] for e in entries] == ["a little further right", "on-screen display", "private garden"]

    status, answer = await call(operator, gw, "DELETE", "dome/ptz/lock")
    assert status == 200, answer
    control = await ptz_audited(gw, "tester")
    assert control["detail"]["commands"] >= 3, control
    assert not page.errors  # type: ignore[attr-defined]


async def test_a_tile_says_privacy_mask_position_unknown_while_the_dome_cannot_be_placed(flaky_dome: RunningGateway, browser) -> None:
    gw = flaky_dome
    admin = await gw.sign_in("mask-admin", role="admin", all_areas=True)
    box = await garden_box(gw)
    status, view = await call(admin, gw, "POST", "dome/masks", {"points": box, "reason": "private garden"})
    assert status == 201 and view["masks"][0]["space"] == "scene", view

    page = await open_as(browser, gw, "tester")  # an operator
    await page.click('#camera-list li[data-camera-id="dome"] button')
    await page.wait_for_selector(f'{TILE}[data-phase="live"]', timeout=20000)
    notice = page.locator(f"{TILE} .tile-mask-unknown")
    assert await notice.is_hidden()

    _Hanging.hang = True  # the dome stops answering where it points...
    status, answer = await call(gw.session, gw, "POST", "dome/ptz/move", {"pan": 0.4})  # ...and pans
    assert status == 200, answer
    await notice.wait_for(state="visible", timeout=10000)
    assert await notice.inner_text() == "privacy mask: position unknown"
    assert await page.get_attribute(TILE, "data-mask-position") == "unknown"
    camera = await gw.get_json("/api/cameras/dome")
    assert camera["mask_position_known"] is False

    # A page opened meanwhile learns it from the camera list (no event comes).
    late = await open_as(browser, gw, "tester")
    await late.click('#camera-list li[data-camera-id="dome"] button')
    await late.locator(f"{TILE} .tile-mask-unknown").wait_for(state="visible", timeout=10000)
    assert await late.inner_text(f"{TILE} .tile-mask-unknown") == "privacy mask: position unknown"

    _Hanging.hang = False
    status, answer = await call(gw.session, gw, "POST", "dome/ptz/stop")
    assert status == 200, answer
    await notice.wait_for(state="hidden", timeout=10000)
    await late.locator(f"{TILE} .tile-mask-unknown").wait_for(state="hidden", timeout=10000)
    assert await page.get_attribute(TILE, "data-mask-position") is None
    camera = await gw.get_json("/api/cameras/dome")
    assert camera["mask_position_known"] is True

    status, answer = await call(gw.session, gw, "DELETE", "dome/ptz/lock")
    assert status == 200, answer
    control = await ptz_audited(gw, "tester")
    assert control["detail"]["commands"] >= 2, control
    assert not page.errors and not late.errors  # type: ignore[attr-defined]
