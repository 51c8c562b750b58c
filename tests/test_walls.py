"""Saved walls over the real API: per user, shared per role, restored after sign-in, audited."""

from __future__ import annotations

from gateway.appkeys import AUDIT
from tests.fixtures_app import camera_toml

CAMERAS = (
    camera_toml("n1", "demo", area="north", width=160, height=120)
    + camera_toml("n2", "demo", area="north", width=160, height=120)
    + camera_toml("s1", "demo", area="south", width=160, height=120)
)

WALL = {
    "name": "North crossings",
    "columns": 2,
    "rows": 2,
    "tiles": [{"camera": "n1", "profile": "main"}, None, {"camera": "s1"}],
    "shared_roles": ["district-police"],
}


async def audit_entries(gw, **query) -> list[dict]:
    audit = gw.app[AUDIT]
    await audit.flush()
    return await audit.query(**query)


async def test_a_wall_is_saved_restored_after_sign_in_and_shared_per_role(make_gateway) -> None:
    gw = await make_gateway(CAMERAS)
    async with gw.session.post(gw.url + "/api/walls", json=WALL) as resp:
        assert resp.status == 201, await resp.text()
        saved = await resp.json()
    assert saved["mine"] and saved["owner"] == "tester" and saved["hidden"] == 0
    assert saved["tiles"] == [{"camera": "n1", "profile": "main"}, None, {"camera": "s1", "profile": "sub"}]
    (entry,) = await audit_entries(gw, action="wall.save")
    assert entry["user"] == "tester" and entry["outcome"] == "ok" and entry["detail"]["wall"] == saved["id"]

    # signed out and in again (a new session): the wall is still there, layout intact
    async with gw.session.delete(gw.url + "/api/session") as resp:
        assert resp.status in (200, 204)
    again = await gw.sign_in("tester", create=False)
    async with again.get(gw.url + "/api/walls") as resp:
        assert resp.status == 200
        (wall,) = await resp.json()
    assert {k: wall[k] for k in ("name", "columns", "rows", "tiles")} == {
        k: saved[k] for k in ("name", "columns", "rows", "tiles")
    }

    # a district police officer of the north opens it: the south camera's tile is hidden
    police = await gw.sign_in("nora", role="district-police", areas=("north",))
    async with police.get(gw.url + f"/api/walls/{saved['id']}") as resp:
        assert resp.status == 200
        shared = await resp.json()
    assert not shared["mine"] and shared["hidden"] == 1
    assert shared["tiles"] == [{"camera": "n1", "profile": "main"}, None, None]
    # ... but may not change or delete it: refused with the reason, audited
    async with police.put(gw.url + f"/api/walls/{saved['id']}", json={**WALL, "tiles": []}) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == f"only tester may change wall {saved['id']}"
    async with police.delete(gw.url + f"/api/walls/{saved['id']}") as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == f"only tester may delete wall {saved['id']}"
    refused = await audit_entries(gw, user="nora")
    assert {(e["action"], e["outcome"]) for e in refused if e["action"].startswith("wall.")} == {
        ("wall.save", "refused"), ("wall.delete", "refused"),
    }

    # another role sees neither the wall in its list nor the wall itself
    other = await gw.sign_in("otto", role="operator", all_areas=True)
    async with other.get(gw.url + "/api/walls") as resp:
        assert await resp.json() == []
    async with other.get(gw.url + f"/api/walls/{saved['id']}") as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == f"wall {saved['id']} is neither yours nor shared with role operator"
    (entry,) = await audit_entries(gw, user="otto", action="wall.open")
    assert entry["outcome"] == "refused" and entry["detail"]["wall"] == saved["id"]


async def test_a_wall_may_not_name_cameras_the_user_may_not_watch(make_gateway) -> None:
    gw = await make_gateway(CAMERAS)
    police = await gw.sign_in("nora", role="district-police", areas=("north",))
    body = {"name": "mine", "columns": 1, "rows": 2, "tiles": [{"camera": "n2"}, {"camera": "s1"}]}
    async with police.post(gw.url + "/api/walls", json=body) as resp:
        assert resp.status == 403
        reason = (await resp.json())["error"]
    assert reason.startswith("camera s1: ")
    (entry,) = await audit_entries(gw, user="nora", action="wall.save")
    assert entry["outcome"] == "refused" and entry["camera"] == "s1" and entry["detail"]["reason"] == reason

    async with police.post(gw.url + "/api/walls", json={**body, "tiles": [{"camera": "n2"}] * 3}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "a 1x2 wall has 2 tiles, not 3"
    async with police.post(gw.url + "/api/walls", json={**body, "tiles": [], "shared_roles": ["nobody"]}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "unknown role 'nobody' in shared_roles"
    async with police.post(gw.url + "/api/walls", json={**body, "tiles": [{"camera": "n2"}]}) as resp:
        assert resp.status == 201
        wall = await resp.json()
    async with police.post(gw.url + "/api/walls", json={**body, "tiles": []}) as resp:
        assert resp.status == 409
        assert (await resp.json())["error"] == "you already have a wall named 'mine'"
    async with police.delete(gw.url + f"/api/walls/{wall['id']}") as resp:
        assert resp.status == 204
    (entry,) = await audit_entries(gw, user="nora", action="wall.delete")
    assert entry["outcome"] == "ok" and entry["detail"] == {"wall": wall["id"], "name": "mine"}
