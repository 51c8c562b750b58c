"""Saved walls in real Chromium against a real gateway with demo cameras: save a wall, have it
back after signing out and in (as the gateway holds it), open it in a pop-out window that keeps
its layout, be refused a wall not shared with one's role (403, reason, audit); next/previous
wall with Alt+PageDown/Alt+PageUp, and cycling through chosen walls."""

from __future__ import annotations

import asyncio

import pytest

from gateway.appkeys import AUDIT
from tests.fixtures_app import TEST_PASSWORD, camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import CHROMIUM, CHROMIUM_ARGS, requires_chromium, wait_for_function  # noqa: E402

pytestmark = requires_chromium

TINY = {"width": 160, "height": 120, "fps": 5, "keyframe_interval": 1.0}
CAMERAS = (
    camera_toml("d1", "demo", **TINY) + camera_toml("d2", "demo", **TINY) + camera_toml("d3", "demo", area="north", **TINY)
)
SHOWN = "() => [...document.querySelectorAll('#grid .tile:not([hidden])')].map(t => t.dataset.phase === 'empty' ? '-' : t.querySelector('.tile-name').textContent).join(',')"
CURRENT = "() => document.querySelector('#walls')?.dataset.wall || ''"
STATUS = "#walls .walls-status"


@pytest.fixture
async def browser_context():
    """``await browser_context()`` → a fresh Chromium context (a workstation of its own)."""
    errors: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

        async def factory():
            context = await browser.new_context(viewport={"width": 1280, "height": 720})
            context.on("page", lambda p: p.on("pageerror", lambda exc: errors.append(str(exc))))
            return context

        try:
            yield factory
        finally:
            await browser.close()
    assert not errors, f"uncaught errors in the page: {errors}"


async def sign_in_page(context, gw, username: str, path: str = "/"):
    resp = await context.request.post(gw.url + "/api/session", data={"username": username, "password": TEST_PASSWORD})
    assert resp.status == 201, await resp.text()
    page = await context.new_page()
    await page.goto(gw.url + path)
    return page


async def audit(gw, **query) -> list[dict]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(**query)


async def test_a_saved_wall_comes_back_after_sign_in_and_in_a_pop_out(make_gateway, browser_context) -> None:
    gw = await make_gateway(CAMERAS)
    api = await gw.sign_in("wally", role="operator", all_areas=True)
    context = await browser_context()
    page = await sign_in_page(context, gw, "wally")
    await page.wait_for_selector('#camera-list li[data-camera-id="d2"][data-state="online"]', timeout=15000)
    # two cameras on the 2 x 2 wall, the first on its main stream ("HD")
    await page.click('#camera-list li[data-camera-id="d1"] button')
    await page.click('#camera-list li[data-camera-id="d2"] button')
    await page.click('.tile[data-index="0"] .tile-main')
    assert await page.get_attribute('.tile[data-index="0"] .tile-main', "aria-pressed") == "true"
    await page.fill("#walls input[name='name']", "Bridges")
    await page.fill("#walls input[name='shared_roles']", "operator")
    await page.click("#walls .walls-save-button")
    await page.wait_for_selector(f"{STATUS}:has-text('Saved wall: Bridges (shared with operator)')")

    async with api.get(gw.url + "/api/walls") as resp:
        assert resp.status == 200
        (wall,) = await resp.json()
    assert (wall["name"], wall["columns"], wall["rows"], wall["shared_roles"]) == ("Bridges", 2, 2, ["operator"])
    assert wall["tiles"] == [{"camera": "d1", "profile": "main"}, {"camera": "d2", "profile": "sub"}, None, None]
    (saved,) = await audit(gw, action="wall.save")
    assert saved["user"] == "wally" and saved["outcome"] == "ok" and saved["detail"]["wall"] == wall["id"]
    # the main stream is what the first tile plays; the second, small, plays the sub stream
    await page.wait_for_selector('.tile[data-index="0"][data-phase="live"][data-profile="main"]', timeout=20000)

    # signed out; meanwhile the wall is changed (at another desk): 3 x 3, d3 first
    await page.click("#user-menu .user-menu-button")
    await page.click("#user-menu [data-action='sign-out']")
    await page.wait_for_selector("#sign-in[open]")
    changed = {**{k: wall[k] for k in ("name", "shared_roles")}, "columns": 3, "rows": 3,
               "tiles": [{"camera": "d3", "profile": "sub"}, None, {"camera": "d1", "profile": "main"}]}
    async with api.put(gw.url + f"/api/walls/{wall['id']}", json=changed) as resp:
        assert resp.status == 200, await resp.text()
    # ... signed in again: the wall opened last is back, as the gateway holds it now
    await page.fill('#sign-in input[name="username"]', "wally")
    await page.fill('#sign-in input[name="password"]', TEST_PASSWORD)
    await page.click('#sign-in button[type="submit"]')
    await wait_for_function(page, f"() => ({SHOWN})() === 'd3,-,d1,-,-,-,-,-,-'", timeout=15)
    assert await page.evaluate(CURRENT) == str(wall["id"])
    assert "Wall: Bridges" in await page.inner_text(STATUS)
    assert await page.get_attribute('.tile[data-index="2"] .tile-main', "aria-pressed") == "true"

    # "Pop out": a window of its own with the wall alone, which keeps its layout on reload
    async with context.expect_page() as popped:
        await page.click("#walls .walls-popout")
    popout = await popped.value
    await popout.wait_for_load_state()
    assert f"?wall={wall['id']}" in popout.url
    await wait_for_function(popout, f"() => ({SHOWN})() === 'd3,-,d1,-,-,-,-,-,-'", timeout=15)
    assert await popout.evaluate("() => document.body.classList.contains('wall-window')")
    assert await popout.is_hidden(".sidebar") and await popout.is_hidden("#nav")
    await popout.wait_for_selector('.tile[data-index="0"][data-phase="live"]', timeout=20000)
    await popout.reload()
    await wait_for_function(popout, f"() => ({SHOWN})() === 'd3,-,d1,-,-,-,-,-,-'", timeout=15)
    # the pop-out changed nothing the main window remembers
    await popout.keyboard.press("1")
    await wait_for_function(popout, f"() => ({SHOWN})() === 'd3'", timeout=5)
    await popout.close()
    remembered = await page.evaluate("() => JSON.parse(localStorage.getItem('citygate.grid.v1:wally'))")
    assert remembered["layout"] == 9 and remembered["tiles"][:3] == ["d3", None, "d1"]
    assert await page.evaluate("() => localStorage.getItem('citygate.wall.v1:wally')") == str(wall["id"])

    # a district police officer, whose role the wall is not shared with, is refused it
    await gw.sign_in("nora", role="district-police", areas=("north",))
    other = await browser_context()
    refused = await sign_in_page(other, gw, "nora", "/?wall=" + str(wall["id"]) + "#/live")
    reason = f"wall {wall['id']} is neither yours nor shared with role district-police"
    # (a pop-out shows no sidebar: the reason is in the top bar)
    await refused.wait_for_selector(f"#notice-info:has-text('{reason}')", timeout=15000)
    async with (await gw.sign_in("nora", create=False)).get(gw.url + f"/api/walls/{wall['id']}") as resp:
        assert resp.status == 403 and (await resp.json())["error"] == reason
    entries = await audit(gw, action="wall.open", user="nora")
    assert entries and all(e["outcome"] == "refused" and e["detail"]["reason"] == reason for e in entries)
    assert len(entries) == 2  # the page's request and this one


async def test_shortcuts_and_cycling_switch_walls(make_gateway, browser_context) -> None:
    gw = await make_gateway(CAMERAS)
    api = await gw.sign_in("cyril", role="operator", all_areas=True)
    ids = {}
    for name, camera in (("A wall", "d1"), ("B wall", "d2"), ("C wall", "d3")):
        body = {"name": name, "columns": 1, "rows": 1, "tiles": [{"camera": camera}]}
        async with api.post(gw.url + "/api/walls", json=body) as resp:
            assert resp.status == 201, await resp.text()
            ids[name] = str((await resp.json())["id"])
    a, b, c = ids["A wall"], ids["B wall"], ids["C wall"]
    context = await browser_context()
    page = await sign_in_page(context, gw, "cyril")
    await page.wait_for_selector(f"#walls .walls-select option[value='{c}']", state="attached")

    # the shortcuts are announced in the page
    assert await page.get_attribute("#walls .walls-next", "aria-keyshortcuts") == "Alt+PageDown"
    assert await page.get_attribute("#walls .walls-prev", "aria-keyshortcuts") == "Alt+PageUp"
    assert "Alt+PageDown / Alt+PageUp: next / previous wall." in await page.inner_text("#walls .walls-hint")

    async def press(key: str, wall: str, camera: str) -> None:
        await page.keyboard.press(key)
        await wait_for_function(page, f"() => ({CURRENT})() === '{wall}' && ({SHOWN})() === '{camera}'", timeout=10)

    await press("Alt+PageDown", a, "d1")
    await press("Alt+PageDown", b, "d2")
    await press("Alt+PageUp", a, "d1")
    await press("Alt+PageUp", c, "d3")  # round to the last
    await press("Alt+PageDown", a, "d1")

    # cycle through B and C every 2 s
    await page.click("#walls .walls-cycle summary")
    await page.check(f"#walls .walls-cycle-choices input[value='{b}']")
    await page.check(f"#walls .walls-cycle-choices input[value='{c}']")
    await page.fill("#walls input[name='seconds']", "2")
    await page.click("#walls .walls-cycle-toggle")
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(seen) < 4 and loop.time() < deadline:
        current = await page.evaluate(CURRENT)
        if current != a and (not seen or seen[-1] != current):
            seen.append(current)
        await asyncio.sleep(0.1)
    assert seen[:4] == [b, c, b, c], seen

    # the cycle pops out as an unattended video wall that cycles by itself
    async with context.expect_page() as popped:
        await page.click("#walls .walls-popout")
    popout = await popped.value
    await popout.wait_for_load_state()
    assert f"?walls={b},{c}&cycle=2" in popout.url
    first = await wait_for_function(popout, f"() => ({CURRENT})()", timeout=15)
    await wait_for_function(popout, f"() => {{ const w = ({CURRENT})(); return w && w !== '{first}'; }}", timeout=15)

    # stopped: the wall stays
    await page.click("#walls .walls-cycle-toggle")
    await page.wait_for_selector(f"{STATUS}:has-text('Cycling stopped')")
    assert await page.get_attribute("#walls", "data-cycling") == "false"
