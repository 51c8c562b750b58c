"""Export options over the HTTP API (checked at filing, defaults from gateway.toml, shown to
the approver, used by production), least privilege per camera for deciding and producing,
and packages deleted after ``package-days`` (410, register entry, produced again)."""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from pathlib import Path

import av
import pytest

from gateway import config as config_mod
from gateway.appkeys import AUDIT
from gateway.errors import ConfigErrors
from gateway.evidence.requests import EXPORTS
from gateway.evidence.watermark import BAND_FONT_ROWS, band_scale
from gateway.plugins import load_plugins
from tests.bitmap_ocr import read_line
from tests.fixtures_app import camera_toml
from tests.test_exports import REQUEST, wait_status

CAMS = camera_toml("north", "demo", area="north", width=320, height=240, keyframe_interval=1.0, bitrate=300_000) + camera_toml(
    "south", "demo", area="south", width=320, height=240, keyframe_interval=1.0, bitrate=300_000
)
GATEWAY = """
[recording]
segment-seconds = 2

[evidence]
package-days = 7

[evidence.format-options.evidence]
watermark-position = "top"
"""


async def file(session, url: str, **body) -> tuple[int, dict]:
    async with session.post(f"{url}/api/exports", json={**REQUEST, **body}) as resp:
        return resp.status, await resp.json()


async def recorded(make_gateway) -> tuple:
    """A gateway that recorded camera north for a few seconds, an investigator, a supervisor,
    and the recorded span as request fields."""
    gw = await make_gateway(CAMS, GATEWAY)
    await gw.wait_online("north")
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    t0 = time.time()
    await asyncio.sleep(5)
    return gw, inv, boss, {"cameras": ["north"], "from": t0, "to": time.time() - 0.5}


async def test_options_checked_at_filing_shown_to_the_approver_and_used(make_gateway, tmp_path: Path) -> None:
    gw, inv, boss, span = await recorded(make_gateway)

    async with inv.get(f"{gw.url}/api/exports/formats") as resp:
        formats = {f["id"]: f for f in await resp.json()}
    evidence = formats["evidence"]
    assert evidence["options"] == {"keep-unaltered": True, "watermark": False, "watermark-position": "top", "watermark-shade": 0.6}
    schema = evidence["options_schema"]["$defs"]["EvidenceOptions"]["properties"]
    assert schema["watermark"]["type"] == "boolean" and schema["watermark-position"]["enum"] == ["bottom", "top"]
    assert formats["media-release"]["options"]["method"] == "pixelate"

    # mistakes are refused with the reason, naming the option
    for options, reason in (
        ({"watermark": "yes"}, "Expected `bool`, got `str` - at `$.watermark`"),
        ({"watermak": True}, "unknown field `watermak`"),
        ({"keep-unaltered": False}, "keep-unaltered = false needs watermark = true"),
    ):
        status, body = await file(inv, gw.url, **span, options=options)
        assert status == 400 and "options for format evidence" in body["error"] and reason in body["error"], body
    status, body = await file(inv, gw.url, **span, format="media-release", options={"face-cascades": ["../../secret.xml"]})
    assert status == 400 and "face-cascades" in body["error"], body

    # the request stores every setting in force: what the approver approves is what is produced
    status, req = await file(inv, gw.url, **span, options={"watermark": True})
    assert status == 201, req
    expected = {"keep-unaltered": True, "watermark": True, "watermark-position": "top", "watermark-shade": 0.6}
    assert req["options"] == expected
    url = f"{gw.url}/api/exports/{req['id']}"
    async with boss.get(url) as resp:
        seen = await resp.json()
    assert seen["options"] == expected and seen["register"][0]["detail"]["options"] == expected

    async with boss.post(url + "/approve", json={"reason": "court order"}) as resp:
        assert resp.status == 200, await resp.text()
    async with boss.post(url + "/produce") as resp:
        assert resp.status == 202, await resp.text()
    await wait_status(boss, url, "produced")
    async with inv.get(url + "/download") as resp:
        assert resp.status == 200
        data = await resp.read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        stamped = zf.read("watermarked/north.mp4")
        assert "cameras/north.mp4" in zf.namelist()
    assert manifest["options"] == expected
    with av.open(io.BytesIO(stamped)) as container:
        frame = next(iter(container.decode(video=0)))
    scale = band_scale(frame.height)
    assert BAND_FONT_ROWS * scale < frame.height
    header = read_line(frame.to_ndarray(format="gray"), scale, scale, scale)  # the band is at the top, as configured
    assert header.startswith(f"REQUEST {req['id']}  CASE {REQUEST['case_number']}  EXPORTED "), header


async def test_producing_needs_the_right_on_every_camera(make_gateway) -> None:
    gw = await make_gateway(CAMS, "[recording]\nsegment-seconds = 2\n")
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    north_boss = await gw.sign_in("nboss", role="supervisor", areas=("north",))
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    now = time.time()
    status, req = await file(inv, gw.url, cameras=["north", "south"], **{"from": now - 300, "to": now - 60})
    assert status == 201, req
    url = f"{gw.url}/api/exports/{req['id']}"

    # approving and producing need the right on every camera (a district's leadership
    # decides for the district only); tests/test_export_authz.py has the refusals in detail
    async with north_boss.post(url + "/approve", json={"reason": "ok"}) as resp:
        assert resp.status == 403 and "south" in (await resp.json())["error"]
    async with boss.post(url + "/approve", json={"reason": "ok"}) as resp:
        assert resp.status == 200
    async with north_boss.post(url + "/produce") as resp:
        assert resp.status == 403 and "south" in (await resp.json())["error"]
    assert (await gw.app[EXPORTS].get(req["id"])).status == "approved", "a refused producer changes nothing"
    refusals = [e for e in await gw.app[AUDIT].query(action="export.*", limit=50) if e["outcome"] == "refused"]
    assert {(e["action"], e["user"], e["camera"]) for e in refusals} == {
        ("export.approve", "nboss", "south"), ("export.produce", "nboss", "south")
    }
    async with boss.post(url + "/produce") as resp:
        assert resp.status == 202


async def test_packages_are_deleted_after_package_days_and_can_be_produced_again(make_gateway) -> None:
    gw, inv, boss, span = await recorded(make_gateway)
    status, req = await file(inv, gw.url, **span)
    assert status == 201, req
    url = f"{gw.url}/api/exports/{req['id']}"
    async with boss.post(url + "/approve", json={"reason": "ok"}) as resp:
        assert resp.status == 200
    async with boss.post(url + "/produce") as resp:
        assert resp.status == 202
    produced = await wait_status(boss, url, "produced")
    service = gw.app[EXPORTS]
    package = service.package_dir / produced["package_name"]
    assert package.exists()

    assert await service.delete_old_packages(now=time.time() + 6 * 86400) == []
    assert await service.delete_old_packages(now=time.time() + 8 * 86400) == [req["id"]]
    assert not package.exists()
    async with inv.get(url + "/download") as resp:
        body = await resp.json()
        assert resp.status == 410 and "was deleted" in body["error"] and "7 days" in body["error"], body
    async with boss.get(url) as resp:
        events = [e["event"] for e in (await resp.json())["register"]]
    assert events == ["filed", "approved", "produced", "package_deleted"]
    assert await service.delete_old_packages(now=time.time() + 30 * 86400) == [], "deleted once"

    # the recordings are still held: the package can be made again and downloaded
    async with boss.post(url + "/produce") as resp:
        assert resp.status == 202, await resp.text()
    again = await wait_status(boss, url, "produced")
    assert again["package_deleted_at"] is None
    async with inv.get(url + "/download") as resp:
        assert resp.status == 200
    async with boss.post(url + "/produce") as resp:  # and not twice while it exists
        assert resp.status == 409 and "its package exists" in (await resp.json())["error"]


def test_bad_format_defaults_in_gateway_toml_are_named(tmp_path: Path) -> None:
    (tmp_path / "cameras.toml").write_text(CAMS)
    (tmp_path / "gateway.toml").write_text(
        "[evidence.format-options.evidence]\nwatermark = 3\n[evidence.format-options.nope]\nx = 1\n"
    )
    plugins = load_plugins()
    with pytest.raises(ConfigErrors) as caught:
        config_mod.load(tmp_path, vendors=plugins.camera_vendors(), export_formats=plugins.export_formats())
    text = str(caught.value)
    assert "gateway.toml: evidence.format-options.evidence.watermark: expected `bool`, got `int`" in text, text
    assert "evidence.format-options.nope: unknown export format 'nope'" in text, text


async def test_migration_7_adds_the_columns_to_a_database_made_before_them(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from gateway.db import Database, export_requests, schema_version

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    async with Database(url) as db:  # then make it look like a database from before migration 7
        async with db.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE export_requests DROP COLUMN options"))
            await conn.execute(sa.text("ALTER TABLE export_requests DROP COLUMN package_deleted_at"))
            await conn.execute(schema_version.delete().where(schema_version.c.version == 7))
    async with Database(url) as db:
        async with db.connect() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("export_requests")})
            versions = set((await conn.execute(sa.select(schema_version.c.version))).scalars())
    assert {"options", "package_deleted_at"} <= columns and 7 in versions
    assert {c.name for c in export_requests.c} <= columns
