"""The Exports page in real Chromium: an investigator files a request, a supervisor
approves and produces it, the investigator downloads a package that verifies."""

from __future__ import annotations

import asyncio
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from gateway.evidence.requests import EXPORTS
from gateway.evidence.signing import verify_package
from tests.fixtures_app import camera_toml

playwright_api = pytest.importorskip("playwright.async_api", reason="Playwright for Python is not installed")

from tests.test_webclient_accounts import new_page, sign_in  # noqa: E402,F401 (new_page is a fixture)
from tests.fixtures_browser import CHROMIUM  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")

CAM = camera_toml("cam", "demo", width=320, height=240, keyframe_interval=1.0, bitrate=300_000)

SET_RANGE = """(seconds) => {
  const local = (t) => { const d = new Date(t * 1000); d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
                         return d.toISOString().slice(0, 19); };
  const form = document.getElementById("export-form");
  form.elements.from.value = local(Date.now() / 1000 - seconds);
  form.elements.to.value = local(Date.now() / 1000);
}"""


async def test_request_approve_produce_download(make_gateway, new_page, tmp_path: Path) -> None:  # noqa: F811
    gw = await make_gateway(CAM, "[recording]\nsegment-seconds = 2\n")
    await gw.wait_online("cam")
    await gw.sign_in("inv", role="investigator", all_areas=True)
    await gw.sign_in("boss", role="supervisor", all_areas=True)
    await asyncio.sleep(6)

    inv = await new_page()
    await sign_in(inv, gw, "inv")
    await inv.wait_for_selector('#nav a[data-route="exports"]:not([hidden])')
    await inv.goto(gw.url + "/#/exports")
    await inv.wait_for_selector("#export-form")
    await inv.fill('#export-form input[name="cameras"]', "cam")
    await inv.evaluate(SET_RANGE, 5)
    await inv.fill('#export-form input[name="case_number"]', "2026-K-7")
    await inv.fill('#export-form input[name="authority"]', "Public prosecutor")
    await inv.fill('#export-form input[name="legal_basis"]', "CCP s. 94")
    await inv.fill('#export-form textarea[name="purpose"]', "Assault near the station")
    # the evidence format's options, drawn from its schema: ask for a watermarked copy
    await inv.check('#export-form [data-option="watermark"]')
    await inv.select_option('#export-form [data-option="watermark-position"]', "top")
    await inv.click('#export-form button[type="submit"]')
    row = inv.locator('[data-body="mine"] tr[data-status="pending"]')
    await row.wait_for(timeout=10_000)
    request_id = await row.get_attribute("data-request")

    boss = await new_page()
    boss.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("court order seen")))
    await sign_in(boss, gw, "boss")
    await boss.wait_for_selector('#nav a[data-route="exports"]:not([hidden])')
    await boss.goto(gw.url + "/#/exports")
    queued = boss.locator(f'[data-body="queue"] tr[data-request="{request_id}"]')
    # the approver sees what is asked for before approving
    assert await queued.locator(".export-settings").inner_text(timeout=10_000) == "watermark (top)"
    await queued.locator('[data-action="approve"]').click(timeout=10_000)
    await boss.locator(f'[data-body="queue"] tr[data-request="{request_id}"][data-status="approved"] [data-action="produce"]').click(timeout=10_000)
    await boss.locator('[data-body="register"] tr[data-event="produced"]').wait_for(timeout=30_000)
    await boss.screenshot(path="/tmp/exports-supervisor.png", full_page=True)

    link = inv.locator(f'[data-body="mine"] tr[data-request="{request_id}"] [data-action="download"]')
    await link.wait_for(timeout=15_000)
    async with inv.expect_download() as info:
        await link.click()
    download = await info.value
    target = tmp_path / "package.zip"
    await download.save_as(target)
    await inv.screenshot(path="/tmp/exports-investigator.png", full_page=True)
    report = await asyncio.to_thread(verify_package, target)
    assert report.ok, report.problems
    with zipfile.ZipFile(target) as zf:
        assert {"cameras/cam.mp4", "watermarked/cam.mp4"} <= set(zf.namelist())
        assert json.loads(zf.read("manifest.json"))["options"]["watermark-position"] == "top"

    # after package-days the package is gone: the requester is told, a producer can make it again
    assert await gw.app[EXPORTS].delete_old_packages(now=time.time() + 31 * 86400) == [int(request_id)]
    mine = inv.locator(f'[data-body="mine"] tr[data-request="{request_id}"]')
    await mine.locator(".export-status", has_text="package deleted").wait_for(timeout=10_000)
    assert await mine.locator('[data-action="download"]').count() == 0
    await boss.locator(f'[data-body="queue"] tr[data-request="{request_id}"] [data-action="produce"]', has_text="Produce again").click(timeout=10_000)
    await inv.locator(f'[data-body="mine"] tr[data-request="{request_id}"] [data-action="download"]').wait_for(timeout=30_000)


async def test_releasing_holds_takes_a_second_approver(make_gateway, new_page) -> None:  # noqa: F811
    gw = await make_gateway(CAM)
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    await gw.sign_in("boss2", role="supervisor", all_areas=True)
    now = time.time()
    body = {"cameras": ["cam"], "from": now - 7200, "to": now - 3600, "case_number": "2026-K-8",
            "authority": "Public prosecutor", "legal_basis": "CCP s. 94", "purpose": "Assault near the station"}
    async with inv.post(f"{gw.url}/api/exports", json=body) as resp:
        request_id = (await resp.json())["id"]
    async with boss.post(f"{gw.url}/api/exports/{request_id}/approve", json={"reason": "court order seen"}) as resp:
        assert resp.status == 200

    first = await new_page()
    first.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("case closed")))
    await sign_in(first, gw, "boss")
    await first.wait_for_selector('#nav a[data-route="exports"]:not([hidden])')
    await first.goto(gw.url + "/#/exports")
    row = first.locator(f'[data-body="queue"] tr[data-request="{request_id}"]')
    await row.locator('[data-action="release-holds"]').click(timeout=10_000)
    await row.locator(".export-status", has_text="hold release proposed by boss").wait_for(timeout=10_000)
    assert await row.locator('[data-action="confirm-release"]').count() == 0  # never one's own proposal
    assert len(await gw.app[EXPORTS].recording.active_holds("cam")) == 1

    second = await new_page()
    second.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept("case file checked")))
    await sign_in(second, gw, "boss2")
    await second.wait_for_selector('#nav a[data-route="exports"]:not([hidden])')
    await second.goto(gw.url + "/#/exports")
    await second.locator(f'[data-body="queue"] tr[data-request="{request_id}"] [data-action="confirm-release"]').click(timeout=10_000)
    await second.locator('[data-body="register"] tr[data-event="hold_released"]').wait_for(timeout=10_000)
    assert await gw.app[EXPORTS].recording.active_holds("cam") == []
    assert (await gw.app[EXPORTS].get(request_id)).holds_released_by == "boss2"
