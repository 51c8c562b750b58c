"""Evidence release, who may do what, over the real API: filing, approving, producing,
releasing holds (two approvers) and downloading need the right on EVERY camera of the
request, now; every refusal is an audit entry (outcome "refused", action, user, camera);
package paths read from the database are checked before anything is served or deleted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import sqlalchemy as sa

from gateway.appkeys import AUDIT, DATABASE, IDENTITY, RECORDING
from gateway.db import export_requests
from gateway.evidence.requests import EXPORTS
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_exports import REQUEST, wait_status

SMALL = {"width": 320, "height": 240, "fps": 5}
CAMS = camera_toml("north", "demo", area="north", **SMALL) + camera_toml("south", "demo", area="south", **SMALL)


async def file(session, gw: RunningGateway, cameras=("north", "south")) -> tuple[int, dict]:
    """A request for a past hour (before the gateway started: nothing recorded, so a
    package is made in a moment)."""
    now = time.time()
    body = {**REQUEST, "cameras": list(cameras), "from": now - 7200, "to": now - 3600}
    async with session.post(f"{gw.url}/api/exports", json=body) as resp:
        return resp.status, await resp.json()


async def refusals(gw: RunningGateway, action: str) -> list[tuple[str, str | None, str]]:
    """(user, camera, reason) of the refused audit entries of ``action``, oldest first."""
    rows = await gw.app[AUDIT].query(action=action, outcome="refused", limit=100)
    return [(r["user"], r["camera"], r["detail"]["reason"]) for r in reversed(rows)]


async def test_filing_outside_ones_areas_is_refused_and_audited(make_gateway):
    gw = await make_gateway(CAMS)
    inv = await gw.sign_in("inv", role="investigator", areas=("north",))
    status, body = await file(inv, gw)
    assert status == 403 and "camera south is in area 'south', outside inv's areas" in body["error"], body
    assert await refusals(gw, "export.request") == [("inv", "south", "camera south is in area 'south', outside inv's areas")]
    async with inv.get(f"{gw.url}/api/exports", params={"mine": "1"}) as resp:
        assert await resp.json() == []
    status, body = await file(inv, gw, cameras=["north"])
    assert status == 201, body


async def test_register_and_others_requests_refused_and_audited(make_gateway):
    gw = await make_gateway(CAMS)
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    other = await gw.sign_in("other", role="investigator", all_areas=True)
    for path in ("/api/exports/register", "/api/exports/register.csv"):
        async with inv.get(gw.url + path) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "the release register is for approvers, producers and auditors"
    reason = "the release register is for approvers, producers and auditors"
    assert await refusals(gw, "export.register") == [("inv", None, reason), ("inv", None, reason)]

    status, req = await file(inv, gw, cameras=["north"])
    assert status == 201, req
    async with other.get(f"{gw.url}/api/exports/{req['id']}") as resp:
        assert resp.status == 404 and (await resp.json())["error"] == f"no export request {req['id']}"
    [(user, camera, why)] = await refusals(gw, "export.view")
    assert (user, camera) == ("other", "north") and f"request {req['id']}" in why


async def test_approval_needs_export_approve_on_every_camera(make_gateway):
    gw = await make_gateway(CAMS)
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    north_boss = await gw.sign_in("nboss", role="supervisor", areas=("north",))
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    status, req = await file(inv, gw)
    assert status == 201, req
    url = f"{gw.url}/api/exports/{req['id']}"

    # a supervisor of the north district decides nothing about a south camera
    for verb in ("approve", "reject"):
        async with north_boss.post(f"{url}/{verb}", json={"reason": "ok"}) as resp:
            assert resp.status == 403
            error = (await resp.json())["error"]
        assert error == f"camera south is in area 'south', outside nboss's areas (request {req['id']} includes camera south)"
        assert await refusals(gw, f"export.{verb}") == [("nboss", "south", "camera south is in area 'south', outside nboss's areas")]
    assert (await gw.app[EXPORTS].get(req["id"])).status == "pending"
    assert await gw.app[RECORDING].active_holds() == []

    async with boss.post(f"{url}/approve", json={"reason": "court order seen"}) as resp:
        assert resp.status == 200 and (await resp.json())["decided_by"] == "boss"
    async with north_boss.post(f"{url}/produce") as resp:
        assert resp.status == 403 and "south" in (await resp.json())["error"]
    assert [(u, c) for u, c, _ in await refusals(gw, "export.produce")] == [("nboss", "south")]


async def test_releasing_holds_takes_two_approvers_with_every_camera(make_gateway):
    gw = await make_gateway(CAMS)
    recording = gw.app[RECORDING]
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    north_boss = await gw.sign_in("nboss", role="supervisor", areas=("north",))
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    second = await gw.sign_in("boss2", role="supervisor", all_areas=True)
    status, req = await file(inv, gw)
    assert status == 201, req
    rid, url = req["id"], f"{gw.url}/api/exports/{req['id']}"
    async with boss.post(f"{url}/approve", json={"reason": "court order seen"}) as resp:
        holds = (await resp.json())["holds"]
    assert len(holds) == 2 and {h.id for h in await recording.active_holds()} == set(holds)

    async with north_boss.post(f"{url}/release-holds", json={"reason": "case closed"}) as resp:
        assert resp.status == 403 and "outside nboss's areas (request" in (await resp.json())["error"]
    assert [(u, c) for u, c, _ in await refusals(gw, "export.release_holds")] == [("nboss", "south")]

    # the first approver only proposes: the holds stay
    async with boss.post(f"{url}/release-holds", json={"reason": "case closed"}) as resp:
        assert resp.status == 202, await resp.text()
        proposed = await resp.json()
    assert (proposed["release_proposed_by"], proposed["release_proposal_reason"]) == ("boss", "case closed")
    assert proposed.get("holds_released_at") is None and proposed.get("holds_released_by") is None
    assert {h.id for h in await recording.active_holds()} == set(holds)
    async with second.post(f"{url}/release-holds", json={"reason": "me too"}) as resp:
        assert resp.status == 409 and "already proposed by boss" in (await resp.json())["error"]

    # ... and may not confirm their own proposal; nor may someone without every camera
    async with boss.post(f"{url}/release-holds/confirm", json={"reason": "sure"}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == f"four eyes: boss proposed releasing the holds of request {rid}; another approver confirms"
    async with north_boss.post(f"{url}/release-holds/confirm", json={"reason": "sure"}) as resp:
        assert resp.status == 403 and "south" in (await resp.json())["error"]
    assert [(u, c) for u, c, _ in await refusals(gw, "export.confirm_release")] == [("boss", None), ("nboss", "south")]
    assert "four eyes" in (await refusals(gw, "export.confirm_release"))[0][2]
    assert {h.id for h in await recording.active_holds()} == set(holds)

    # a second approver confirms: released, both persons recorded
    async with second.post(f"{url}/release-holds/confirm", json={"reason": "checked the case file"}) as resp:
        assert resp.status == 200, await resp.text()
        released = await resp.json()
    assert (released["release_proposed_by"], released["holds_released_by"]) == ("boss", "boss2") and released["holds_released_at"]
    assert await recording.active_holds() == []
    async with second.post(f"{url}/release-holds/confirm", json={"reason": "again"}) as resp:
        assert resp.status == 409
    async with boss.get(f"{gw.url}/api/exports/register", params={"request": rid}) as resp:
        entries = list(reversed(await resp.json()))
    assert [(e["event"], e["user"]) for e in entries] == [
        ("filed", "inv"), ("approved", "boss"), ("hold_release_proposed", "boss"), ("hold_released", "boss2")
    ]
    assert entries[-1]["detail"]["proposed_by"] == "boss" and entries[-1]["detail"]["reason"] == "checked the case file"
    [audited] = await gw.app[AUDIT].query(action="export.hold_released")
    assert audited["user"] == "boss2" and audited["detail"]["proposed_by"] == "boss" and audited["id"] == entries[-1]["audit_id"]


async def produced(gw: RunningGateway, inv, boss) -> dict:
    status, req = await file(inv, gw)
    assert status == 201, req
    url = f"{gw.url}/api/exports/{req['id']}"
    async with boss.post(f"{url}/approve", json={"reason": "court order seen"}) as resp:
        assert resp.status == 200, await resp.text()
    async with boss.post(f"{url}/produce") as resp:
        assert resp.status == 202, await resp.text()
    return await wait_status(boss, url, "produced")


async def test_downloading_another_users_package_is_refused_and_audited(make_gateway):
    gw = await make_gateway(CAMS)
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    other = await gw.sign_in("other", role="investigator", all_areas=True)
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    req = await produced(gw, inv, boss)
    url = f"{gw.url}/api/exports/{req['id']}/download"

    async with other.get(url) as resp:  # may not even see the request
        assert resp.status == 404 and (await resp.json())["error"] == f"no export request {req['id']}"
    async with boss.get(url) as resp:  # oversees it, but is not the requester
        assert resp.status == 403
        assert (await resp.json())["error"] == f"only the requester (inv) downloads the package of request {req['id']}"
    only = f"only the requester (inv) downloads the package of request {req['id']}"
    assert await refusals(gw, "export.download") == [("other", None, only), ("boss", None, only)]
    [row] = await gw.app[AUDIT].query(action="export.download", user="boss")
    assert row["detail"]["request"] == req["id"] and row["detail"]["cameras"] == ["north", "south"]
    assert await gw.app[AUDIT].query(action="export.downloaded") == []


async def test_a_requester_who_lost_a_camera_no_longer_downloads(make_gateway):
    gw = await make_gateway(CAMS)
    inv = await gw.sign_in("inv", role="investigator", areas=("north", "south"))
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    req = await produced(gw, inv, boss)
    url = f"{gw.url}/api/exports/{req['id']}/download"

    # the requester lost the south district: no more video of it
    await gw.app[IDENTITY].set_areas("inv", ["north"], False, by="tester")
    async with inv.get(url) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == (
            f"camera south is in area 'south', outside inv's areas (request {req['id']} includes camera south)"
        )
    assert (await refusals(gw, "export.download"))[-1] == ("inv", "south", "camera south is in area 'south', outside inv's areas")

    await gw.app[IDENTITY].set_areas("inv", ["north", "south"], False, by="tester")
    async with inv.get(url) as resp:
        assert resp.status == 200 and (await resp.read())[:2] == b"PK"
    downloads = await gw.app[AUDIT].query(action="export.downloaded")
    assert [e["user"] for e in downloads] == ["inv"]


async def tamper(gw: RunningGateway, request_id: int, name: str) -> None:
    async with gw.app[DATABASE].begin() as conn:
        await conn.execute(sa.update(export_requests).where(export_requests.c.id == request_id).values(package_name=name))


async def test_a_tampered_package_path_is_never_served_or_deleted(make_gateway, tmp_path: Path):
    gw = await make_gateway(CAMS)
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    boss = await gw.sign_in("boss", role="supervisor", all_areas=True)
    service = gw.app[EXPORTS]
    req = await produced(gw, inv, boss)
    rid = req["id"]
    secret = tmp_path / "secret.txt"
    secret.write_text("the gateway's secrets")
    url = f"{gw.url}/api/exports/{rid}/download"

    # a row pointing outside the package directory
    outside = os.path.relpath(secret, service.package_dir)
    await tamper(gw, rid, outside)
    async with inv.get(url) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"] == f"request {rid}: package name {outside!r} is not one the gateway makes"
    # a well-formed name whose file is a link to somewhere else
    link = service.package_dir / f"export-{rid}-evidence.zip"
    link.unlink()
    link.symlink_to(secret)
    await tamper(gw, rid, link.name)
    async with inv.get(url) as resp:
        assert resp.status == 500
        assert (await resp.json())["error"] == f"request {rid}: package {link.name!r} resolves outside the package directory"
    assert [(u, c) for u, c, _ in await refusals(gw, "export.download")] == [("inv", None), ("inv", None)]
    assert await gw.app[AUDIT].query(action="export.downloaded") == []

    # the package sweep leaves it alone, says so once, and never deletes the file outside
    await tamper(gw, rid, outside)
    later = time.time() + 400 * 86400
    assert await service.delete_old_packages(now=later) == []
    assert await service.delete_old_packages(now=later) == []
    assert secret.read_text() == "the gateway's secrets"
    [(user, camera, reason)] = await refusals(gw, "export.delete_package")
    assert user is None and "is not one the gateway makes" in reason
    assert (await service.get(rid)).package_deleted_at is None
