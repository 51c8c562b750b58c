"""Two-person rule for accounts that release evidence or manage accounts (issue 15 item 9):
one administrator can no longer make a requester and an approver and release evidence alone.
A real gateway over real HTTP, and the ``citygate users`` CLI as a real process."""

from __future__ import annotations

import getpass
import re
import time

import aiohttp

from gateway.appkeys import AUDIT, IDENTITY
from tests.fixtures_app import TEST_PASSWORD, camera_toml
from tests.test_users_cli import conf, ok, sign_in  # noqa: F401 - the CLI's fixture and helpers

CAM = camera_toml("cam", "demo", width=320, height=240)
REQUEST = {
    "case_number": "2026-K-0077",
    "authority": "Police directorate",
    "legal_basis": "Code of criminal procedure s. 94",
    "purpose": "Burglary at the harbour",
}


async def entries(gw, action: str) -> list[dict]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(action=action)


async def first_sign_in(gw, username: str, one_time: str) -> aiohttp.ClientSession:
    """Sign in with a one-time password and choose a new one, as the person would."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # cookies for 127.0.0.1
    gw._sessions.append(session)
    async with session.post(f"{gw.url}/api/session", json={"username": username, "password": one_time}) as resp:
        assert resp.status == 201, await resp.text()
        session.headers["X-CSRF-Token"] = (await resp.json())["csrf_token"]
    async with session.post(
        f"{gw.url}/api/session/password", json={"old_password": one_time, "new_password": TEST_PASSWORD}
    ) as resp:
        assert resp.status == 200, await resp.text()
    return session


async def test_an_approver_account_needs_a_second_administrator(make_gateway) -> None:
    gw = await make_gateway(CAM)
    ann = await gw.sign_in("ann", role="admin", all_areas=True)
    ben = await gw.sign_in("ben", role="admin", all_areas=True)

    # Ann creates a supervisor: nothing exists until another administrator confirms.
    body = {"username": "sam", "role": "supervisor", "all_areas": True}
    async with ann.post(f"{gw.url}/api/users", json=body) as resp:
        assert resp.status == 202, await resp.text()
        answer = await resp.json()
    assert "second administrator" in answer["message"] and "password" not in answer
    change = answer["pending"]
    assert (change["kind"], change["username"], change["requested_by"], change["status"]) == ("create", "sam", "ann", "pending")
    async with ann.get(f"{gw.url}/api/users") as resp:
        assert "sam" not in [u["username"] for u in await resp.json()]
    async with ann.post(f"{gw.url}/api/users", json={**body, "username": "sid", "password": TEST_PASSWORD}) as resp:
        assert resp.status == 400 and "cannot be chosen" in (await resp.json())["error"]

    # She cannot confirm her own change; the refusal is audited.
    async with ann.post(f"{gw.url}/api/users/pending/{change['id']}/confirm") as resp:
        assert resp.status == 403
        assert (await resp.json())["error"] == "you asked for this change: another administrator must confirm it"
    refused = await entries(gw, "user.change-confirm")
    assert refused[0]["user"] == "ann" and refused[0]["outcome"] == "refused" and refused[0]["detail"]["id"] == change["id"]

    # Ben sees it, confirms it and receives the one-time password (Ann never does).
    async with ben.get(f"{gw.url}/api/users/pending") as resp:
        assert [c["id"] for c in await resp.json()] == [change["id"]]
    async with ben.post(f"{gw.url}/api/users/pending/{change['id']}/confirm") as resp:
        assert resp.status == 200, await resp.text()
        confirmed = await resp.json()
    assert confirmed["pending"]["status"] == "confirmed" and confirmed["pending"]["decided_by"] == "ben"
    assert confirmed["user"]["created_by"] == "ann" and confirmed["user"]["created_confirmed_by"] == "ben"
    async with ben.post(f"{gw.url}/api/users/pending/{change['id']}/confirm") as resp:
        assert resp.status == 409  # once only
    requested = await entries(gw, "user.change-requested")
    assert requested[-1]["user"] == "ann" and requested[-1]["detail"]["kind"] == "create"
    done = await entries(gw, "user.change-confirmed")
    assert done[0]["user"] == "ben" and done[0]["detail"]["requested_by"] == "ann"
    created = [e for e in await entries(gw, "user.create") if e["detail"]["username"] == "sam"]
    assert created[0]["user"] == "ann" and created[0]["detail"]["confirmed_by"] == "ben"
    sam = await first_sign_in(gw, "sam", confirmed["password"])

    # Ann makes an investigator (needs nobody) and files through it; Sam approves.
    async with ann.post(f"{gw.url}/api/users", json={"username": "ivy", "role": "investigator", "all_areas": True}) as resp:
        assert resp.status == 201
        ivy = await first_sign_in(gw, "ivy", (await resp.json())["password"])
    now = time.time()
    async with ivy.post(f"{gw.url}/api/exports", json={"cameras": ["cam"], "from": now - 600, "to": now - 60, **REQUEST}) as resp:
        assert resp.status == 201, await resp.text()
        req_id = (await resp.json())["id"]
    async with sam.post(f"{gw.url}/api/exports/{req_id}/approve", json={"reason": "lawful request"}) as resp:
        assert resp.status == 200, await resp.text()

    # The register shows who made both accounts.
    async with sam.get(f"{gw.url}/api/exports/register?request={req_id}") as resp:
        register = await resp.json()
    approved = next(e for e in register if e["event"] == "approved")
    assert approved["accounts"]["requester"]["username"] == "ivy"
    assert approved["accounts"]["requester"]["created_by"] == "ann"
    assert approved["accounts"]["requester"]["created_confirmed_by"] is None
    assert approved["accounts"]["approver"]["username"] == "sam"
    assert approved["accounts"]["approver"]["created_by"] == "ann"
    assert approved["accounts"]["approver"]["created_confirmed_by"] == "ben"


async def test_role_change_and_password_reset_wait_for_the_second_administrator(make_gateway) -> None:
    gw = await make_gateway(CAM)
    ann = await gw.sign_in("ann", role="admin", all_areas=True)
    ben = await gw.sign_in("ben", role="admin", all_areas=True)
    ivy = await gw.sign_in("ivy", role="investigator", all_areas=True)
    await gw.sign_in("sam", role="supervisor", areas=("north",))

    # Making the investigator an approver: pending, the role unchanged meanwhile.
    async with ann.patch(f"{gw.url}/api/users/ivy", json={"role": "supervisor", "display_name": "Ivy I."}) as resp:
        assert resp.status == 202, await resp.text()
        answer = await resp.json()
    assert answer["user"]["role"] == "investigator" and answer["user"]["display_name"] == "Ivy I."
    role_change = answer["pending"]
    assert role_change["changes"] == {"role": "supervisor"}
    async with ivy.get(f"{gw.url}/api/session") as resp:
        assert (await resp.json())["user"]["role"] == "investigator"

    # Widening an approver's areas, and resetting an approver's password: pending too.
    async with ann.patch(f"{gw.url}/api/users/sam", json={"areas": ["north", "south"]}) as resp:
        assert resp.status == 202
        areas_change = (await resp.json())["pending"]
    async with ann.post(f"{gw.url}/api/users/sam/reset-password") as resp:
        assert resp.status == 202
        reset = await resp.json()
    assert "password" not in reset and reset["pending"]["kind"] == "reset-password"
    assert (await gw.app[IDENTITY].get_user("sam")).areas == {"north"}

    # Ben rejects the areas, confirms the role and the reset (and gets the password).
    async with ben.post(f"{gw.url}/api/users/pending/{areas_change['id']}/cancel") as resp:
        assert resp.status == 200 and (await resp.json())["pending"]["status"] == "cancelled"
    async with ben.post(f"{gw.url}/api/users/pending/{role_change['id']}/confirm") as resp:
        assert resp.status == 200
        user = (await resp.json())["user"]
    assert user["role"] == "supervisor" and user["changed_by"] == "ann" and user["changed_confirmed_by"] == "ben"
    async with ivy.get(f"{gw.url}/api/session") as resp:
        assert (await resp.json())["user"]["role"] == "supervisor"
    async with ben.post(f"{gw.url}/api/users/pending/{reset['pending']['id']}/confirm") as resp:
        assert resp.status == 200
        assert len((await resp.json())["password"]) == 20
    assert [e["detail"]["confirmed_by"] for e in await entries(gw, "user.set-role")] == ["ben"]
    assert [e["user"] for e in await entries(gw, "user.change-cancelled")] == ["ben"]

    # Changes that give no guarded action still apply at once.
    async with ann.patch(f"{gw.url}/api/users/tester", json={"role": "investigator"}) as resp:
        assert resp.status == 200 and (await resp.json())["role"] == "investigator"


async def test_the_cli_follows_the_rule_once_an_administrator_exists(conf) -> None:  # noqa: F811
    # Bootstrapping: no administrator yet, so the first ones are made at once.
    out = ok(conf, "add", "root", "--role", "admin", "--all-areas")
    _, root_password = re.search(r"one-time password for (\S+): (\S+)", out).groups()
    await sign_in(conf, "root", root_password)
    # From now on an approver needs a second administrator.
    out = ok(conf, "add", "sam", "--role", "supervisor", "--all-areas")
    change_id = re.search(r"pending change (\d+)", out).group(1)
    assert "one-time password" not in out
    listed = ok(conf, "pending")
    assert f"{change_id}   create  sam" in listed and "role=supervisor" in listed
    from tests.test_users_cli import citygate

    mine = citygate(conf, "confirm", change_id)
    assert mine.returncode == 1 and "another administrator must confirm it" in mine.stderr
    # A second administrator (here the one signed in to the web client) confirms.
    from gateway.access.audit import AuditLog
    from gateway.access.identity import Identity
    from gateway.access.policy import load_roles
    from gateway.config import SecurityConfig
    from gateway.db import Database

    async with Database(f"sqlite+aiosqlite:///{conf.parent / 'data' / 'citygate.db'}") as db, AuditLog(db) as audit:
        identity = Identity(db, audit, SecurityConfig(), load_roles(conf))
        _, user, password = await identity.confirm_change(int(change_id), by="root")
        assert user.created_by == f"cli:{getpass.getuser()}" and user.created_confirmed_by == "root" and password
