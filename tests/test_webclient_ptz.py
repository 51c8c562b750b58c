"""The PTZ pad in real Chromium against a real gateway and the demo camera's virtual dome:
dragging the joystick pans the picture, users without ``ptz.control`` see no pad, and a
take-over by a higher PTZ priority reaches the previous holder's page."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

SCREENSHOT = Path(os.environ.get("CITYGATE_SCREENSHOT_DIR", "/tmp")) / "ptz.png"
WIDTH, HEIGHT = 320, 240
#: Rows of the demo picture below the time code and text panel, above the bouncing box.
BAND = slice(48, 140)
TILE = '.tile[data-index="0"]'
PAD = f"{TILE} .ptz-pad"

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

#: The luma of the video's current frame, read through a canvas.
LUMA = """v => {
  const c = document.createElement("canvas");
  c.width = v.videoWidth;
  c.height = v.videoHeight;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const y = new Array(c.width * c.height);
  for (let i = 0, j = 0; i < d.length; i += 4, j++) y[j] = (d[i] * 77 + d[i + 1] * 150 + d[i + 2] * 29) >> 8;
  return { w: c.width, h: c.height, y };
}"""


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    gateway = await make_gateway(camera_toml("demo", "demo", width=WIDTH, height=HEIGHT, fps=25, keyframe_interval=1.0))
    await gateway.wait_online("demo")
    return gateway


@pytest.fixture
async def new_page() -> AsyncIterator:
    """``await new_page(gw, username)`` → the live page signed in as ``username``, in its own context."""
    errors: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

        async def factory(gw: RunningGateway, username: str) -> playwright_api.Page:
            context = await browser.new_context(viewport={"width": 1280, "height": 720})
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(f"{username}: {exc}"))
            page.on("console", lambda msg: print(f"{username} console.{msg.type}: {msg.text}"))
            resp = await context.request.post(gw.url + "/api/session", data={"username": username, "password": TEST_PASSWORD})
            assert resp.status == 201, await resp.text()
            await page.goto(gw.url + "/")
            await page.wait_for_selector('#camera-list li[data-camera-id="demo"]')
            return page

        try:
            yield factory
        finally:
            await browser.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def open_demo(page: playwright_api.Page) -> None:
    """Show the demo camera in the first tile, wait for its picture and select the tile."""
    await page.click('#camera-list li[data-camera-id="demo"] button')
    await page.wait_for_selector(f'{TILE}[data-phase="live"]', timeout=20000)
    await page.click(TILE, position={"x": 40, "y": 60})


async def luma(page: playwright_api.Page) -> np.ndarray:
    frame = await page.eval_on_selector(f"{TILE} video", LUMA)
    assert (frame["w"], frame["h"]) == (WIDTH, HEIGHT), frame["w"]
    return np.array(frame["y"], dtype=np.int16).reshape(HEIGHT, WIDTH)


def horizontal_shift(before: np.ndarray, after: np.ndarray, limit: int = 150) -> tuple[int, float]:
    """The ``d`` for which ``after[:, x] ≈ before[:, x + d]`` (the picture moved left by d)."""
    a, b = before[BAND], after[BAND]
    best, best_err = 0, float("inf")
    for d in range(-limit, limit + 1):
        err = np.abs(a[:, d:] - b[:, : WIDTH - d]).mean() if d >= 0 else np.abs(a[:, :d] - b[:, -d:]).mean()
        if err < best_err:
            best, best_err = d, float(err)
    return best, best_err


async def lock_of(session, gw: RunningGateway) -> dict:
    async with session.get(gw.url + "/api/cameras/demo/ptz/lock") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_dragging_the_joystick_right_pans_the_picture(gw: RunningGateway, new_page) -> None:
    page = await new_page(gw, "tester")  # an operator
    await open_demo(page)
    await page.wait_for_selector(f"{PAD} .ptz-lock[data-state='free']")
    assert await page.inner_text(f"{PAD} .ptz-lock") == "Free"
    await asyncio.sleep(0.5)
    before = await luma(page)

    box = await page.locator(f"{PAD} .ptz-stick").bounding_box()
    knob = await page.locator(f"{PAD} .ptz-knob").bounding_box()
    cx, cy = knob["x"] + knob["width"] / 2, knob["y"] + knob["height"] / 2
    radius = (box["width"] - knob["width"]) / 2
    await page.mouse.move(cx, cy)
    await page.mouse.down()
    started = time.monotonic()
    # 56 % of the way out, past the 12 % dead zone: pan velocity 0.5.
    await page.mouse.move(cx + 0.56 * radius, cy, steps=4)
    await page.wait_for_selector(f"{PAD} .ptz-lock[data-state='yours']", timeout=2000)
    assert await page.inner_text(f"{PAD} .ptz-lock") == "You have control"
    await asyncio.sleep(1.25 - (time.monotonic() - started))  # long enough for one repeat of the move
    await page.mouse.up()
    moved_for = time.monotonic() - started

    lock = await lock_of(gw.session, gw)
    assert lock["holder"] == "tester" and lock["yours"], lock
    assert lock["commands"] >= 3, f"move, a repeat while held, stop: {lock}"
    await asyncio.sleep(1.0)  # the stop reaches the picture
    after = await luma(page)
    shift, err = horizontal_shift(before, after)
    expected = 0.5 * 0.25 * 2 * WIDTH * moved_for  # 0.25 units/s at velocity 1, 1 unit = 2 frame widths
    print(f"picture moved left {shift} px (~{expected:.0f} expected), residual {err:.1f}")
    assert shift > 0, f"panning right must move the picture left, it moved {shift}"
    assert 0.5 * expected < shift < 1.5 * expected, (shift, expected)
    assert err < 15, "the two views match at no shift"
    # Released means still.
    await asyncio.sleep(0.5)
    assert horizontal_shift(after, await luma(page))[0] == 0

    # In a 3 × 3 wall the tile is small: the pad shrinks to who holds control.
    await page.keyboard.press("9")
    await page.wait_for_selector(f"{PAD}.ptz-compact .ptz-hint", state="visible")
    assert not await page.locator(f"{PAD} .ptz-stick").is_visible()
    await page.screenshot(path=str(SCREENSHOT.with_name("ptz-compact.png")))


async def test_the_pad_follows_the_rights(gw: RunningGateway, new_page) -> None:
    await gw.sign_in("ada", role="admin", all_areas=True)  # ptz.control and cameras.manage
    await gw.sign_in("sue", role="supervisor", all_areas=True)  # live.view, no ptz.control

    # Saving the current view as a preset needs cameras.manage.
    admin = await new_page(gw, "ada")
    await open_demo(admin)
    await admin.click(f"{PAD} .ptz-presets-button")
    await admin.wait_for_selector(f"{PAD} .ptz-preset:has-text('Overview')")
    await admin.fill(f"{PAD} .ptz-preset-save input", "Market square")
    await admin.click(f"{PAD} .ptz-preset-save button")
    await admin.wait_for_selector(f"{PAD} .ptz-preset:has-text('Market square')")
    assert "Market square" in [name for _, name in gw.cameras.get("demo").vendor.head.presets()]

    page = await new_page(gw, "sue")
    ptz_requests: list[str] = []
    page.on("request", lambda r: ptz_requests.append(r.url) if "/ptz/" in r.url else None)
    await open_demo(page)
    await page.wait_for_selector(f"{TILE}.selected")
    await page.dblclick(TILE, position={"x": 40, "y": 60})  # maximised, too
    await page.wait_for_selector(f"{TILE}.is-maximised")
    await page.keyboard.press("ArrowRight")
    await asyncio.sleep(0.5)
    assert await page.locator(".ptz-pad").count() == 0
    assert ptz_requests == [], "a page without the right sends no PTZ requests, not even for arrow keys"


async def test_a_take_over_reaches_the_previous_holder(gw: RunningGateway, new_page) -> None:
    await gw.sign_in("dora", role="duty-officer", all_areas=True)
    operator = await new_page(gw, "tester")
    officer = await new_page(gw, "dora")
    await open_demo(operator)
    await open_demo(officer)

    # The operator steers with the keyboard and holds control.
    await operator.wait_for_selector(PAD)
    await operator.keyboard.down("ArrowLeft")
    await operator.wait_for_selector(f"{PAD} .ptz-lock[data-state='yours']", timeout=2000)
    await operator.keyboard.up("ArrowLeft")
    # Everyone watching sees who holds it; the higher priority may take over.
    await officer.wait_for_selector(f"{PAD} .ptz-lock[data-state='other']", timeout=2000)
    assert await officer.inner_text(f"{PAD} .ptz-lock") == "Controlled by tester (Operator)"

    started = time.monotonic()
    await officer.click(f"{PAD} .ptz-take")
    await operator.wait_for_selector(f"{PAD} .ptz-notice[data-kind='warn']", timeout=2000)
    await operator.wait_for_selector(f"{PAD} .ptz-lock[data-state='other']", timeout=2000)
    assert time.monotonic() - started < 2.0
    notice = await operator.inner_text(f"{PAD} .ptz-notice")
    assert "Control taken over by dora (Duty officer)" in notice, notice
    assert "took control of camera demo from tester" in notice, notice  # the gateway's reason
    assert await operator.inner_text(f"{PAD} .ptz-lock") == "Controlled by dora (Duty officer)"
    assert await officer.inner_text(f"{PAD} .ptz-lock") == "You have control"
    assert (await lock_of(gw.session, gw))["holder"] == "dora"
    await operator.screenshot(path=str(SCREENSHOT))

    # The operator's next command is refused (409), naming the holder.
    await operator.click(f"{PAD} .ptz-home")
    await operator.wait_for_selector(f"{PAD} .ptz-notice[data-kind='error']", timeout=2000)
    assert "controlled by dora" in await operator.inner_text(f"{PAD} .ptz-notice")

    # The officer goes to a preset from the menu.
    await officer.click(f"{PAD} .ptz-presets-button")
    await officer.click(f"{PAD} .ptz-preset:has-text('East, close')")
    await asyncio.sleep(0.8)  # the new view reaches the picture
    await officer.screenshot(path=str(SCREENSHOT.with_name("ptz-presets.png")))
    assert not await officer.locator(f"{PAD} .ptz-preset-save").count(), "saving presets needs cameras.manage"
    camera = gw.cameras.get("demo").vendor
    pan, tilt, zoom = camera.head.position()
    assert (round(pan, 2), round(tilt, 2), round(zoom, 2)) == (0.5, 0.2, 0.9)
