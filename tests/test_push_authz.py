"""Who may extend or revoke an emergency push, over the real API: extending needs
``push.send`` on every camera of the push at the time of extending (the sender too);
revoking is the sender's or someone's who may push every camera; every refusal is an
audit entry (outcome "refused", action, user, camera)."""

from __future__ import annotations

import pytest

from gateway.appkeys import AUDIT, IDENTITY
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_push import push

SMALL = {"width": 320, "height": 240, "fps": 5}


@pytest.fixture
async def gw(make_gateway) -> RunningGateway:
    return await make_gateway(
        camera_toml("c-centre", "demo", area="centre", **SMALL) + camera_toml("c-north", "demo", area="north", **SMALL),
        gateway_toml="[push]\ndefault-minutes = 10\nmax-minutes = 30\n",
    )


async def refusals(gw: RunningGateway, action: str) -> list[tuple[str, str | None, str]]:
    rows = await gw.app[AUDIT].query(action=action, outcome="refused", limit=100)
    return [(r["user"], r["camera"], r["detail"]["reason"]) for r in reversed(rows)]


async def extend(session, gw: RunningGateway, push_id: int, minutes: float = 5) -> tuple[int, dict]:
    async with session.post(f"{gw.url}/api/pushes/{push_id}/extend", json={"minutes": minutes}) as resp:
        return resp.status, await resp.json()


async def revoke(session, gw: RunningGateway, push_id: int) -> tuple[int, dict]:
    async with session.delete(f"{gw.url}/api/pushes/{push_id}") as resp:
        return resp.status, await resp.json()


async def test_a_sender_who_lost_the_right_cannot_extend_but_can_end(gw):
    await gw.sign_in("station-a", role="rescue-station")
    sender = await gw.sign_in("op", role="operator", areas=("centre", "north"))
    status, created = await push(sender, gw, cameras=["c-north", "c-centre"], stations=["station-a"], reason="Fire")
    assert status == 201, created

    # the operator is moved to the north district: the centre camera is no longer theirs to push
    await gw.app[IDENTITY].set_areas("op", ["north"], False, by="tester")
    status, body = await extend(sender, gw, created["id"])
    assert status == 403
    assert body["error"] == (
        f"you may not extend push {created['id']}: it includes camera c-centre, "
        "and camera c-centre is in area 'centre', outside op's areas"
    )
    assert await refusals(gw, "push.extend") == [("op", "c-centre", "camera c-centre is in area 'centre', outside op's areas")]
    assert (await gw.get_json(f"/api/pushes/{created['id']}"))["expires_at"] == created["expires_at"]

    # ... and losing the role altogether is the same
    await gw.app[IDENTITY].set_role("op", "investigator", by="tester")
    status, body = await extend(sender, gw, created["id"])
    assert status == 403 and "role investigator does not allow push.send" in body["error"]
    assert (await refusals(gw, "push.extend"))[-1] == ("op", "c-north", "role investigator does not allow push.send")

    # ending the push takes away access, so the sender may always do it
    status, body = await revoke(sender, gw, created["id"])
    assert status == 200 and body["state"] == "revoked" and body["ended_by"] == "op"


async def test_extending_or_revoking_anothers_push_without_the_right_is_refused_and_audited(gw):
    station = await gw.sign_in("station-a", role="rescue-station")
    sender = await gw.sign_in("op", role="operator", areas=("centre", "north"))
    north = await gw.sign_in("nop", role="operator", areas=("north",))
    inv = await gw.sign_in("inv", role="investigator", all_areas=True)
    colleague = await gw.sign_in("op2", role="operator", areas=("centre", "north"))
    status, created = await push(sender, gw, cameras=["c-north", "c-centre"], stations=["station-a"], reason="Flood")
    assert status == 201, created
    pid = created["id"]
    outside = "camera c-centre is in area 'centre', outside nop's areas"

    # a sender of another district sees the push but may not extend or end it
    status, body = await extend(north, gw, pid)
    assert status == 403 and body["error"] == f"you may not extend push {pid}: it includes camera c-centre, and {outside}"
    status, body = await revoke(north, gw, pid)
    assert status == 403 and body["error"] == f"you may not revoke push {pid}: it includes camera c-centre, and {outside}"
    # users who are no senders (a station, an investigator) do not even learn it exists
    status, body = await extend(inv, gw, pid)
    assert status == 404 and body["error"] == f"no push {pid}"
    status, body = await revoke(station, gw, pid)
    assert status == 404 and body["error"] == f"no push {pid}"

    assert await refusals(gw, "push.extend") == [
        ("nop", "c-centre", outside), ("inv", "c-north", "role investigator does not allow push.send")
    ]
    assert await refusals(gw, "push.revoke") == [
        ("nop", "c-centre", outside), ("station-a", "c-north", "role rescue-station does not allow push.send")
    ]
    assert (await gw.get_json(f"/api/pushes/{pid}"))["state"] == "active"

    # a colleague who may push every camera may extend and end it
    status, body = await extend(colleague, gw, pid)
    assert status == 200 and body["expires_at"] > created["expires_at"]
    status, body = await revoke(colleague, gw, pid)
    assert status == 200 and body["ended_by"] == "op2"
    done = {r["action"] for r in await gw.app[AUDIT].query(action="push.*", user="op2", outcome="ok")}
    assert done == {"push.extend", "push.revoke"}
