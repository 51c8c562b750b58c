"""The web client's account pages in real Chromium against a real gateway: sign-in with the
forced first password change, the user menu and sign-out, the Users page, the Audit page.

Same requirements as tests/test_webclient.py: Debian's ``chromium`` and Playwright for
Python (its driver only). Screenshots of each page go to /tmp/accounts-*.png.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
from pathlib import Path

import pytest

from gateway.access.checkpoints import AuditCheckpointer
from gateway.appkeys import AUDIT, DATABASE, IDENTITY, SIGNER
from gateway.errors import BadRequest
from gateway.live.webrtc import WEBRTC_SESSIONS
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.fixtures_browser import CHROMIUM  # noqa: E402
from tests.fixtures_browser import wait_for_function  # noqa: E402
from tests.test_webclient import SMALL_DEMO, wait_phase, wait_until  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")

SHOTS = Path(os.environ.get("CITYGATE_SCREENSHOT_DIR", "/tmp"))
STRONG = "lantern-orchard-quietly-7"
SESSION_ENDED = "Your session ended; sign in again."


@pytest.fixture
async def new_page(browser: playwright_api.Browser):
    """``await new_page()`` → a page in its own browser context (its own cookies)."""
    contexts: list[playwright_api.BrowserContext] = []
    errors: list[str] = []

    async def factory() -> playwright_api.Page:
        context = await browser.new_context(viewport={"width": 1280, "height": 720})
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: print(f"console.{msg.type}: {msg.text}"))
        return page

    try:
        yield factory
    finally:
        for context in contexts:
            await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


# --------------------------------------------------------------------------------------
# helpers


async def sign_in(page: playwright_api.Page, gw: RunningGateway, username: str, password: str = TEST_PASSWORD) -> None:
    """Open the client (if not open) and sign in through the sign-in screen."""
    if not page.url.startswith(gw.url):
        await page.goto(gw.url + "/")
    await page.wait_for_selector("#sign-in[open]")
    await page.fill('#sign-in input[name="username"]', username)
    await page.fill('#sign-in input[name="password"]', password)
    await page.click('#sign-in button[type="submit"]')


async def signed_in(page: playwright_api.Page, gw: RunningGateway, username: str) -> None:
    await sign_in(page, gw, username)
    await page.wait_for_selector("#user-menu:not([hidden])")


async def change_password(page: playwright_api.Page, new: str, repeat: str | None = None) -> None:
    dialog = "#change-password"
    await page.fill(f'{dialog} input[name="new_password"]', new)
    await page.fill(f'{dialog} input[name="repeat_password"]', new if repeat is None else repeat)
    await page.click(f'{dialog} button[type="submit"]')


async def nav_links(page: playwright_api.Page) -> list[str]:
    return [t.strip() for t in await page.locator("#nav a:visible").all_inner_texts()]


def user_row(username: str) -> str:
    return f'#page-users tr[data-username="{username}"]'


async def shot(page: playwright_api.Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"accounts-{name}.png"))


# --------------------------------------------------------------------------------------
# cases


async def test_first_sign_in_forces_a_password_change(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    identity = gw.app[IDENTITY]
    await identity.create_user("newbie", role="operator", all_areas=True, display_name="Nora Newbie", password=TEST_PASSWORD)
    page = await new_page()
    await page.goto(gw.url + "/")
    await page.wait_for_selector("#sign-in[open]")
    assert not await page.is_visible("#sign-in .sign-in-notice")  # a first visit: no "session ended"
    await shot(page, "sign-in")
    await sign_in(page, gw, "newbie")

    await page.wait_for_selector("#change-password[open]")
    assert "one-time password" in await page.inner_text("#change-password")
    assert await page.is_hidden("#user-menu") and await page.is_hidden("#camera-list")
    # The gateway refuses everything else until the password is changed.
    resp = await page.context.request.get(gw.url + "/api/cameras")
    assert resp.status == 403 and "change your password" in (await resp.json())["error"]
    # Escape does not get past the form (Chromium closes it on a second Escape; it comes back).
    await page.keyboard.press("Escape")
    await page.keyboard.press("Escape")
    await page.wait_for_timeout(200)
    await page.wait_for_selector("#change-password[open]", timeout=2000)
    assert await page.is_hidden("#user-menu")

    await change_password(page, STRONG, repeat=STRONG + "x")
    await page.wait_for_selector("#change-password .sign-in-message:has-text('do not match')")

    weak = "password1234"  # long enough, but one of the most common passwords
    with pytest.raises(BadRequest) as refused:
        identity.check_password(weak, "newbie")
    await change_password(page, weak)
    message = page.locator("#change-password .sign-in-message")
    await message.filter(has_text=refused.value.message).wait_for()
    await shot(page, "change-password")
    assert (await identity.get_user("newbie")).must_change_password

    await change_password(page, STRONG)
    await page.wait_for_selector("#change-password", state="hidden")
    await page.wait_for_selector('#camera-list li[data-camera-id="d1"]')
    assert "Nora Newbie" in await page.inner_text("#user-menu")
    assert not (await identity.get_user("newbie")).must_change_password
    # The same browser session goes on with the new password in force.
    resp = await page.context.request.get(gw.url + "/api/cameras")
    assert resp.status == 200


async def test_admin_creates_a_user_who_signs_in_with_the_one_time_password(make_gateway, new_page) -> None:
    gw = await make_gateway("")
    await gw.sign_in("boss", role="admin", all_areas=True)
    admin = await new_page()
    await admin.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=gw.url)
    await signed_in(admin, gw, "boss")
    # an administrator without a camera sees the map and health (empty) and edits tours, not video
    assert await nav_links(admin) == ["Live", "Map", "Health", "Users", "Cameras", "Masks", "Tours", "API"]
    await admin.click('#nav a[data-route="users"]')
    await admin.wait_for_selector(user_row("tester"))
    assert admin.url.endswith("#/users")
    assert "Operator" in await admin.inner_text(user_row("tester"))
    assert await admin.is_disabled(f'{user_row("boss")} [data-action="disable"]')  # not oneself

    form = "#user-create"
    await admin.fill(f'{form} input[name="username"]', "newcomer")
    await admin.fill(f'{form} input[name="display_name"]', "Nils Newcomer")
    await admin.fill(f'{form} input[name="role"]', "district-police")
    await admin.fill(f'{form} input[name="areas"]', "north, harbour")
    await admin.click(f'{form} button[type="submit"]')
    await admin.wait_for_selector("#one-time-password:not([hidden])")
    password = await admin.input_value("#one-time-password .secret-value")
    assert len(password) >= 12
    assert "newcomer" in await admin.inner_text("#one-time-password")
    await admin.click('#one-time-password button:has-text("Copy")')
    await admin.wait_for_selector("#one-time-password .secret-copied:has-text('Copied')")
    assert await admin.evaluate("navigator.clipboard.readText()") == password
    row = await admin.inner_text(user_row("newcomer"))
    assert "Nils Newcomer" in row and "District police" in row and "harbour, north" in row
    assert "must change password" in row
    await shot(admin, "users")
    # Shown once: dismissed, it is gone from the page.
    await admin.click('#one-time-password button:has-text("Done")')
    assert await admin.is_hidden("#one-time-password")
    assert await admin.input_value("#one-time-password .secret-value") == ""

    # An unknown role is refused with the gateway's reason.
    await admin.fill(f'{form} input[name="username"]', "ghost")
    await admin.fill(f'{form} input[name="role"]', "wizard")
    await admin.click(f'{form} button[type="submit"]')
    await admin.wait_for_selector("#page-users .page-message:has-text('unknown role')")

    # Edit: the role and the areas.
    await admin.click(f'{user_row("newcomer")} [data-action="edit"]')
    await admin.wait_for_selector("#user-editor[open]")
    await admin.fill('#user-editor input[name="role"]', "operator")
    await admin.fill('#user-editor input[name="areas"]', "south")
    await admin.click('#user-editor button[type="submit"]')
    await admin.wait_for_selector("#user-editor", state="hidden")
    await admin.wait_for_selector(f'{user_row("newcomer")}:has-text("Operator"):has-text("south")')
    user = await gw.app[IDENTITY].get_user("newcomer")
    assert (user.role, sorted(user.areas)) == ("operator", ["south"])

    # The new user signs in with the one-time password and must change it first.
    newcomer = await new_page()
    await sign_in(newcomer, gw, "newcomer", password)
    await newcomer.wait_for_selector("#change-password[open]")
    await change_password(newcomer, STRONG)
    await newcomer.wait_for_selector("#user-menu:not([hidden])")
    assert "Nils Newcomer" in await newcomer.inner_text("#user-menu")
    await admin.click('#nav a[data-route="live"]')  # back to Users: the list is read afresh
    await admin.click('#nav a[data-route="users"]')
    await admin.wait_for_selector(f'{user_row("newcomer")}[data-state="active"]')

    # Reset password: confirmed by a second click, a new one-time password, the session ends.
    reset = f'{user_row("newcomer")} [data-action="reset-password"]'
    await admin.click(reset)
    assert "confirm" in (await admin.inner_text(reset)).lower()
    await admin.click(reset)
    await admin.wait_for_selector("#one-time-password:not([hidden])")
    second = await admin.input_value("#one-time-password .secret-value")
    assert second and second != password
    assert "reset" in await admin.inner_text("#one-time-password")
    await newcomer.wait_for_selector("#sign-in[open]", timeout=10000)  # its list refresh got a 401
    assert SESSION_ENDED in await newcomer.inner_text("#sign-in .sign-in-notice")


async def test_disabled_user_is_sent_to_sign_in_and_unlock_works(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    await gw.sign_in("boss", role="admin", all_areas=True)
    await gw.sign_in("walker", role="operator", all_areas=True)
    admin, user = await new_page(), await new_page()
    await signed_in(admin, gw, "boss")
    await admin.goto(gw.url + "/#/users")
    await admin.wait_for_selector(user_row("walker"))
    await signed_in(user, gw, "walker")
    await user.wait_for_selector('#camera-list li[data-camera-id="d1"]')

    await admin.click(f'{user_row("walker")} [data-action="disable"]')
    await admin.wait_for_selector(f'{user_row("walker")}[data-state="disabled"]')
    assert (await gw.app[IDENTITY].get_user("walker")).disabled

    # The user's next action (a click, or the list's own refresh) meets a 401: back to sign-in.
    await user.click('#camera-list li[data-camera-id="d1"] button')
    await user.wait_for_selector("#sign-in[open]", timeout=10000)
    assert SESSION_ENDED in await user.inner_text("#sign-in .sign-in-notice")
    assert await user.input_value('#sign-in input[name="username"]') == "walker"
    assert await user.is_hidden("#user-menu")
    await shot(user, "session-ended")
    await sign_in(user, gw, "walker")
    await user.wait_for_selector("#sign-in .sign-in-message:has-text('disabled')")

    await admin.click(f'{user_row("walker")} [data-action="enable"]')
    await admin.wait_for_selector(f'{user_row("walker")}[data-state="active"]')

    # Five wrong passwords lock the account from this address (the right password from it
    # would still pass: walker signed in from here before); the Users page shows and lifts it.
    for _ in range(5):
        await user.fill('#sign-in input[name="password"]', "not the password at all")
        await user.click('#sign-in button[type="submit"]')
        await user.wait_for_selector('#sign-in button[type="submit"]:not([disabled])')
    await user.wait_for_selector("#sign-in .sign-in-message:has-text('locked until')")
    await admin.reload()
    await admin.wait_for_selector(f'{user_row("walker")}[data-state="locked"]')
    assert "locked until" in await admin.inner_text(user_row("walker"))
    await admin.click(f'{user_row("walker")} [data-action="unlock"]')
    await admin.wait_for_selector(f'{user_row("walker")}[data-state="active"]')
    await sign_in(user, gw, "walker")
    await user.wait_for_selector('#camera-list li[data-camera-id="d1"]')


async def test_auditor_reads_the_audit_log_and_sees_no_cameras(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    await gw.sign_in("audrey", role="auditor")
    audit = gw.app[AUDIT]
    await asyncio.gather(*(audit.record("test.entry", user="robot", detail={"n": n}) for n in range(150)))
    signed = await AuditCheckpointer(gw.app[DATABASE], gw.app[SIGNER], every=0).checkpoint()
    page = await new_page()
    await signed_in(page, gw, "audrey")
    await page.wait_for_selector("#page-audit:not([hidden])")
    assert page.url.endswith("#/audit")
    await page.wait_for_selector(f'#page-audit .audit-seal[data-entry="{signed.entry_id}"]')
    seal = await page.inner_text("#page-audit .audit-seal")
    assert seal.startswith(f"Signed up to entry {signed.entry_id} at ") and f"key {signed.key_fingerprint[:16]}" in seal
    assert await nav_links(page) == ["Audit", "Exports"]  # the auditor reads the release register
    assert "Auditor" in await page.inner_text("#user-menu")

    rows = page.locator("#page-audit tbody tr")
    await wait_for_function(page, "document.querySelectorAll('#page-audit tbody tr').length === 100")
    first_ids = [int(i) for i in await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")]
    assert first_ids == sorted(first_ids, reverse=True)  # newest first
    await shot(page, "audit")
    await page.click("#page-audit .load-more")
    await wait_for_function(page, "document.querySelectorAll('#page-audit tbody tr').length > 100")
    ids = [int(i) for i in await rows.evaluate_all("rows => rows.map(r => r.dataset.id)")]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)

    # Filters: an action prefix and a user; paging runs to the end.
    await page.fill('#page-audit input[name="action"]', "test.*")
    await page.fill('#page-audit input[name="user"]', "robot")
    await page.select_option('#page-audit select[name="outcome"]', "ok")
    await page.click('#page-audit button[type="submit"]')
    await wait_for_function(
        page,
        "[...document.querySelectorAll('#page-audit tbody tr')].every(r => r.textContent.includes('test.entry'))"
        " && document.querySelectorAll('#page-audit tbody tr').length === 100"
    )
    await page.click("#page-audit .load-more")
    await wait_for_function(page, "document.querySelectorAll('#page-audit tbody tr').length === 150")
    assert await page.is_hidden("#page-audit .load-more")
    # The CSV link carries the same filters.
    href = await page.get_attribute("#audit-csv", "href")
    assert "action=test.*" in href.replace("%2A", "*") and "user=robot" in href and "format=csv" in href
    resp = await page.context.request.get(gw.url + href)
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(table) == 150 and {r["action"] for r in table} == {"test.entry"} and {r["user"] for r in table} == {"robot"}
    # A time window before any entry: nothing.
    await page.fill('#page-audit input[name="to"]', "2001-01-01T00:00:00")
    await page.click('#page-audit button[type="submit"]')
    await page.wait_for_selector("#page-audit .page-message:has-text('No entries match')")
    assert await rows.count() == 0

    # No camera rights: the live view says so plainly, without an error.
    await page.goto(gw.url + "/#/live")
    await page.wait_for_selector("#live-empty:not([hidden])")
    assert "No cameras are shared with this account right now." in await page.inner_text("#live-empty")
    assert await page.locator("#camera-list li").count() == 0
    assert await page.is_hidden("#notice-gateway")
    await shot(page, "live-empty")


async def test_sign_out_ends_the_session_and_every_whep_session(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO) + camera_toml("d2", "demo", area="north", **SMALL_DEMO))
    await gw.wait_online()
    page = await new_page()
    requests: list[tuple[str, str, int]] = []
    page.on("response", lambda r: requests.append((r.request.method, r.url, r.status)))
    await signed_in(page, gw, "tester")
    for camera in ("d1", "d2"):
        await page.click(f'#camera-list li[data-camera-id="{camera}"] button')
    assert await wait_phase(page, 0, "live") == "live · WebRTC"
    assert await wait_phase(page, 1, "live") == "live · WebRTC"
    sessions = gw.app[WEBRTC_SESSIONS]
    assert len(sessions) == 2

    await page.click("#user-menu .user-menu-button")
    await page.wait_for_selector("#user-menu-panel:popover-open")
    menu = await page.inner_text("#user-menu-panel")
    assert "Operator" in menu and "All areas" in menu and "tester" in menu
    await shot(page, "user-menu")
    await page.click('#user-menu-panel [data-action="sign-out"]')
    await page.wait_for_selector("#sign-in[open]")
    assert await page.is_hidden("#sign-in .sign-in-notice")  # signed out on purpose: no "session ended"
    await wait_until(lambda: len(sessions) == 0, timeout=5, what="every WHEP session to end")
    # The browser itself DELETEd both WHEP sessions while its own session was valid (404:
    # the gateway had already noticed the peer close), and signed out after that.
    deletes = [(url, status) for method, url, status in requests if method == "DELETE"]
    whep = [status for url, status in deletes if "/api/whep/sessions/" in url]
    assert len(whep) == 2 and set(whep) <= {204, 404}, deletes
    assert deletes[-1] == (gw.url + "/api/session", 204), deletes
    resp = await page.context.request.get(gw.url + "/api/session")
    assert resp.status == 401
    assert await page.locator("#grid .tile").count() == 0 and await page.is_hidden("#grid")

    # Signing in again brings the remembered wall back.
    await signed_in(page, gw, "tester")
    assert await wait_phase(page, 0, "live") == "live · WebRTC"


async def test_operator_sees_no_users_or_audit_navigation(make_gateway, new_page) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", **SMALL_DEMO))
    page = await new_page()
    await signed_in(page, gw, "tester")
    await page.wait_for_selector('#camera-list li[data-camera-id="d1"]')
    # operators may request exports, open incidents and start tours
    assert await nav_links(page) == ["Live", "Playback", "Map", "Health", "Exports", "Incidents", "Traffic", "Tours"]
    assert await page.locator('#nav a[data-route="users"]').is_hidden()
    assert await page.locator('#nav a[data-route="audit"]').is_hidden()
    # Typing the address does not open them either: the live view stays.
    for route in ("users", "audit"):
        await page.goto(f"{gw.url}/#/{route}")
        await wait_for_function(page, "location.hash === '#/live'")
        assert await page.is_hidden("#page-users") and await page.is_hidden("#page-audit")
        assert await page.get_attribute("body", "data-view") == "live"
    await shot(page, "live")


async def test_a_second_administrator_confirms_an_approver_on_the_users_page(make_gateway, new_page) -> None:
    """Two-person rule: Ann's new supervisor waits; Ann cannot confirm it, Ben can and gets
    the one-time password."""
    gw = await make_gateway("")
    await gw.sign_in("ann", role="admin", all_areas=True)
    await gw.sign_in("ben", role="admin", all_areas=True)
    ann, ben = await new_page(), await new_page()
    for page, name in ((ann, "ann"), (ben, "ben")):
        await signed_in(page, gw, name)
        await page.goto(gw.url + "/#/users")
        await page.wait_for_selector(user_row(name))

    form = "#user-create"
    await ann.fill(f'{form} input[name="username"]', "sam")
    await ann.fill(f'{form} input[name="role"]', "supervisor")
    await ann.check(f'{form} input[name="all_areas"]')
    await ann.click(f'{form} button[type="submit"]')
    await ann.wait_for_selector("#page-users .page-message:has-text('second administrator')")
    assert await ann.is_hidden("#one-time-password")
    pending = '#pending-changes tr[data-pending-for="sam"]'
    await ann.wait_for_selector(pending)
    assert await ann.is_disabled(f'{pending} [data-action="confirm-change"]')  # not her own
    assert await ann.query_selector(user_row("sam")) is None

    await ben.reload()
    await ben.wait_for_selector(pending)
    assert "ann" in await ben.inner_text(pending)
    await ben.click(f'{pending} [data-action="confirm-change"]')
    await ben.wait_for_selector("#one-time-password:not([hidden])")
    assert "sam" in await ben.inner_text("#one-time-password")
    assert len(await ben.input_value("#one-time-password .secret-value")) >= 12
    await ben.wait_for_selector(user_row("sam"))
    assert await ben.is_hidden("#pending-changes")
    user = await gw.app[IDENTITY].get_user("sam")
    assert (user.role, user.created_by, user.created_confirmed_by) == ("supervisor", "ann", "ben")
    await shot(ben, "pending-confirmed")
