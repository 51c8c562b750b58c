"""The web client's Playback page in real Chromium against a real gateway that records a
demo camera: the timeline, playing with hls.js, 2× speed, seeking by clicking on the
timeline, and the refusal for a role without ``playback.view``.

One gateway records for the whole module (the tests only read its recordings), and one
Chromium serves it: both run on the module's event loop.

Same requirements as tests/test_webclient.py: Debian's ``chromium``, Playwright for Python
(its driver only) and hls.js from npm. A screenshot of the page goes to /tmp/playback.png.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from gateway.media.timecode import read_timecode
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml, start_gateway, stop_gateway

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import CHROMIUM  # noqa: E402
from tests.fixtures_browser import launched_chromium, wait_for_function  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.asyncio(loop_scope="module"),
]

SCREENSHOT = Path(os.environ.get("CITYGATE_PLAYBACK_SCREENSHOT", "/tmp/playback.png"))
CAMERA = camera_toml("d1", "demo", width=320, height=240)
RECORDING = "[recording]\nsegment-seconds = 2\n"
PAGE = "#page-playback"
TIMELINE = "#playback-timeline"
CLOCK = f"{PAGE} .playback-clock"
VIDEO = f"{PAGE} video"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[playwright_api.Browser]:
    async with launched_chromium() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: playwright_api.Browser) -> AsyncIterator[playwright_api.Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: print(f"console.{msg.type}: {msg.text}"))
    try:
        yield page
    finally:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded(tmp_path_factory, hls_js) -> AsyncIterator[tuple[RunningGateway, list[dict]]]:  # noqa: F811
    """A gateway that has recorded the demo camera for ~9 s; its recorded segments."""
    gw = await start_gateway(tmp_path_factory.mktemp("playback") / "conf", CAMERA, RECORDING)
    try:
        await gw.wait_online("d1")
        since = time.time() - 60
        deadline = time.monotonic() + 40
        while True:
            answer = await gw.get_json("/api/cameras/d1/recordings", params={"from": since, "to": time.time()})
            segments = [i for i in answer["items"] if i["kind"] == "segment"]
            if sum(s["duration"] for s in segments) >= 9.0:
                break
            assert time.monotonic() < deadline, f"not enough recorded: {answer}"
            await asyncio.sleep(0.5)
        yield gw, segments
    finally:
        await stop_gateway(gw)


# --------------------------------------------------------------------------------------
# helpers


async def open_playback(page: playwright_api.Page, gw: RunningGateway, username: str = "tester") -> None:
    """Sign in (the session cookie is the browser's) and open #/playback."""
    resp = await page.context.request.post(gw.url + "/api/session", data={"username": username, "password": TEST_PASSWORD})
    assert resp.status == 201, await resp.text()
    await page.goto(gw.url + "/#/playback")
    await page.wait_for_selector(f"{PAGE}:not([hidden])")


async def wait_state(page: playwright_api.Page, state: str, timeout: float = 15.0) -> None:
    await page.wait_for_selector(f'{PAGE}[data-state="{state}"]', timeout=timeout * 1000)


async def clock(page: playwright_api.Page) -> float | None:
    value = await page.get_attribute(CLOCK, "data-wallclock")
    return float(value) if value else None


async def timeline_x(page: playwright_api.Page, wall: float) -> tuple[float, float, float]:
    """The whole pixel on the timeline nearest to ``wall``: (x, y, the time that pixel means)."""
    return tuple(
        await page.eval_on_selector(
            TIMELINE,
            """(t, wall) => {
                const box = t.getBoundingClientRect();
                const from = Number(t.dataset.from), to = Number(t.dataset.to);
                const x = Math.round(box.left + ((wall - from) / (to - from)) * box.width);
                return [x, box.top + 10, from + ((x - box.left) / box.width) * (to - from)];
            }""",
            wall,
        )
    )


async def video_sample(page: playwright_api.Page) -> dict:
    return await page.eval_on_selector(
        VIDEO, "v => ({w: v.videoWidth, t: v.currentTime, at: performance.now() / 1000, rate: v.playbackRate, paused: v.paused})"
    )


async def wait_advancing(page: playwright_api.Page, seconds: float = 1.0, within: float = 10.0) -> dict:
    """Wait until the video plays a picture and its time moves; the first sample."""
    await wait_state(page, "playing")
    first = await video_sample(page)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        await asyncio.sleep(0.25)
        later = await video_sample(page)
        if later["w"] > 0 and later["t"] > first["t"] + seconds:
            return first
        assert asyncio.get_running_loop().time() < deadline, f"video not advancing: {first} -> {later}"


async def frame_luma(page: playwright_api.Page, rows: int = 24) -> np.ndarray:
    """The top ``rows`` of the frame the video shows, as luma (the time-code strip)."""
    width, values = await page.eval_on_selector(
        VIDEO,
        """(v, rows) => {
            const canvas = Object.assign(document.createElement("canvas"), {width: v.videoWidth, height: rows});
            const g = canvas.getContext("2d");
            g.drawImage(v, 0, 0);
            const rgba = g.getImageData(0, 0, canvas.width, rows).data;
            const luma = [];
            for (let i = 0; i < rgba.length; i += 4) luma.push(Math.round(0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2]));
            return [canvas.width, luma];
        }""",
        rows,
    )
    return np.array(values, dtype=np.uint8).reshape(rows, width)


# --------------------------------------------------------------------------------------
# cases


async def test_timeline_shows_recorded_spans_and_gaps(recorded, page) -> None:
    gw, segments = recorded
    await open_playback(page, gw)
    await wait_state(page, "ready")
    assert "Playback" in [t.strip() for t in await page.locator("#nav a:visible").all_inner_texts()]
    assert await page.get_attribute('#nav a[data-route="playback"]', "aria-current") == "page"
    assert await page.input_value(f"{PAGE} select[name=camera]") == "d1"
    assert await page.input_value(f"{PAGE} select[name=span]") == "3600"

    spans = await page.eval_on_selector_all(
        f"{TIMELINE} .timeline-span",
        "nodes => nodes.map(n => ({kind: n.dataset.kind, start: Number(n.dataset.start), end: Number(n.dataset.end),"
        " width: n.getBoundingClientRect().width, title: n.title}))",
    )
    recorded_spans = [s for s in spans if s["kind"] == "segment"]
    assert recorded_spans and all(s["width"] >= 1 for s in recorded_spans), spans
    assert recorded_spans[0]["start"] <= segments[0]["start"] + 0.01
    assert sum(s["end"] - s["start"] for s in recorded_spans) >= 9.0
    # Before the camera came up nothing was recorded: a gap whose tooltip says why.
    leading = [s for s in spans if s["kind"] == "gap" and s["end"] <= recorded_spans[0]["start"] + 0.01]
    assert leading and "no recording" in leading[0]["title"], spans
    # Hour/minute ticks with labels, the cursor at the first recorded moment.
    assert await page.locator(f"{TIMELINE} .timeline-tick.major .timeline-label").count() >= 4
    assert await page.locator(f"{TIMELINE} .timeline-cursor").is_visible()
    assert "recorded in this range" in await page.inner_text(f"{PAGE} .page-head")
    # Opening the page fetched no playlist: nothing is viewed (or audited) before Play.
    assert await page.eval_on_selector(VIDEO, "v => v.currentSrc") == ""

    # An hour before the recording: says so plainly.
    earlier = time.localtime(segments[0]["start"] - 3 * 3600)
    await page.fill(f"{PAGE} input[name=from]", time.strftime("%Y-%m-%dT%H:%M", earlier))
    await page.click(f"{PAGE} button[type=submit]")
    await wait_state(page, "empty")
    assert "No recordings of d1 between" in await page.inner_text(f"{PAGE} .playback-overlay")
    assert await page.locator(f"{TIMELINE} .timeline-span[data-kind=segment]").count() == 0
    assert await page.is_disabled(f"{PAGE} .playback-play")


async def test_plays_with_the_wall_clock_of_the_frame(recorded, page) -> None:
    gw, segments = recorded
    await open_playback(page, gw)
    await wait_state(page, "ready")
    await page.click(f"{PAGE} .playback-play")
    first = await wait_advancing(page)
    sample = await video_sample(page)
    assert sample["w"] > 0 and sample["t"] > first["t"], (first, sample)
    assert await page.inner_text(f"{PAGE} .playback-play") == "Pause"

    shown = await clock(page)
    assert shown is not None and segments[0]["start"] - 0.5 <= shown <= time.time(), (shown, segments)
    # It follows the picture: a second later, about a second later on the clock.
    await asyncio.sleep(1.0)
    later = await clock(page)
    assert 0.4 < later - shown < 2.5, (shown, later)
    # Read as people read it: local time of day (the browser's time zone is this process's).
    value, text = await page.eval_on_selector(CLOCK, "c => [Number(c.dataset.wallclock), c.textContent]")
    assert time.strftime("%H:%M:%S", time.localtime(value)) in text, (value, text)
    # The cursor sits where the clock is.
    cursor = await page.eval_on_selector(
        TIMELINE,
        "t => { const c = t.querySelector('.timeline-cursor').getBoundingClientRect(), b = t.getBoundingClientRect();"
        " return Number(t.dataset.from) + ((c.left + c.width / 2 - b.left) / b.width) * (Number(t.dataset.to) - Number(t.dataset.from)); }",
    )
    assert abs(cursor - later) < 10, (cursor, later)  # a pixel is ~3 s on a 1 h timeline
    await page.screenshot(path=str(SCREENSHOT))

    await page.click(f"{PAGE} .playback-play")
    await wait_state(page, "paused")
    paused = await video_sample(page)
    await asyncio.sleep(0.6)
    assert (await video_sample(page))["t"] == paused["t"]
    # The clock is the time of the frame shown: the demo camera's burnt-in time code says
    # when it was captured; the recording's time is when the gateway received it (a little later).
    captured = read_timecode(await frame_luma(page))
    assert captured is not None
    shown = await clock(page)
    assert -0.1 < shown - captured / 1000 < 0.4, (shown, captured / 1000)

    # "Jump to live" opens the live page with this camera on the wall.
    await page.click(f"{PAGE} .playback-live")
    await wait_for_function(page, "location.hash === '#/live'")
    await page.wait_for_selector('.tile[data-camera-id="d1"], .tile:has-text("d1")', timeout=10000)


async def test_double_speed_plays_twice_as_fast(recorded, page) -> None:
    gw, _ = recorded
    await open_playback(page, gw)
    await wait_state(page, "ready")
    await page.click(f'{PAGE} [data-speed="2"]')
    assert await page.get_attribute(f'{PAGE} [data-speed="2"]', "aria-pressed") == "true"
    await page.click(f"{PAGE} .playback-play")
    await wait_advancing(page, seconds=0.5)
    start = await video_sample(page)
    wall_start = await clock(page)
    await asyncio.sleep(1.5)
    end = await video_sample(page)
    rate = (end["t"] - start["t"]) / (end["at"] - start["at"])
    assert start["rate"] == 2 and 1.6 < rate < 2.4, (start, end, rate)
    # The clock runs at the same speed: it shows the recorded time, not the time now.
    assert 1.6 < (await clock(page) - wall_start) / (end["at"] - start["at"]) < 2.6


async def test_clicking_the_timeline_seeks(recorded, page) -> None:
    gw, segments = recorded
    await open_playback(page, gw)
    await wait_state(page, "ready")
    begin = segments[0]["start"]

    # Nothing loaded yet: the click loads the recording from that moment and plays.
    x, y, wanted = await timeline_x(page, begin + 6.5)
    assert begin + 3 < wanted < segments[-1]["end"] - 1, (wanted, segments)
    await page.mouse.click(x, y)
    await wait_advancing(page, seconds=0.2)
    shown = await clock(page)
    assert wanted - 0.5 < shown < wanted + 2.5, (wanted, shown)

    # Loaded: a click earlier seeks within the same playlist.
    await page.click(f"{PAGE} .playback-play")  # pause: the clock stands still
    await wait_state(page, "paused")
    x, y, wanted = await timeline_x(page, begin + 1.5)
    assert wanted < shown - 2
    await page.mouse.click(x, y)
    await wait_for_function(
        page,
        "([sel, w]) => Math.abs(Number(document.querySelector(sel).dataset.wallclock) - w) < 1.0", arg=[CLOCK, wanted], timeout=5
    )
    shown = await clock(page)
    assert abs(shown - wanted) < 1.0, (wanted, shown)
    assert await page.eval_on_selector(VIDEO, "v => v.paused")


async def test_district_police_is_refused(recorded, page) -> None:
    gw, _ = recorded
    await gw.sign_in("pc", role="district-police", areas=("centre",))
    await open_playback(page, gw, "pc")
    await page.wait_for_selector("#user-menu:not([hidden])")
    await page.wait_for_selector('#nav a[data-route="live"]:visible')
    assert await page.locator('#nav a[data-route="playback"]').is_hidden()

    await wait_state(page, "refused")
    resp = await page.context.request.get(gw.url + "/api/cameras/d1/recordings")
    assert resp.status == 403
    refusal = (await resp.json())["error"]
    assert await page.inner_text(f"{PAGE} [role=alert]") == refusal
    assert "not available to this account" in await page.inner_text(f"{PAGE} .playback-overlay")
    assert await page.locator(f"{TIMELINE} .timeline-span[data-kind=segment]").count() == 0
    await page.screenshot(path=str(SCREENSHOT.with_name(SCREENSHOT.stem + "-refused.png")))


async def test_without_hlsjs_the_page_says_so(recorded, page) -> None:
    """hls.js not installed on the gateway, and a browser without its own HLS player."""
    gw, _ = recorded
    await page.route("**/node_modules/hls.js/**", lambda route: route.fulfill(status=404, body="not installed"))
    await page.add_init_script(
        """{
            const canPlayType = HTMLMediaElement.prototype.canPlayType;
            HTMLMediaElement.prototype.canPlayType = function (type) {
                return /mpegurl/i.test(type) ? "" : canPlayType.call(this, type);
            };
        }"""
    )
    await open_playback(page, gw)
    await wait_state(page, "ready")
    await page.click(f"{PAGE} .playback-play")
    await wait_state(page, "error")
    assert "hls.js is not installed" in await page.inner_text(f"{PAGE} [role=alert]")
