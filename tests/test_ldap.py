"""Sign-in through LDAP (``[auth.ldap]``) against a real OpenLDAP server on loopback.

The server is Debian's ``slapd`` (tests/fixtures_ldap.py); the gateway is a real one over
real HTTP; the directory is changed by its administrator over LDAP during the tests.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import ldap3
import pytest

from gateway import config as config_mod
from gateway.appkeys import AUDIT, IDENTITY
from gateway.errors import ConfigErrors, NotFound
from gateway.plugins import load_plugins
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_browser import CHROMIUM
from tests.fixtures_ldap import (
    LDAP_PASSWORD, LOOKUP_DN, LOOKUP_PASSWORD, SUFFIX, Ldap, group_dn, ldap_server, person_dn, requires_slapd,
)

__all__ = ["ldap_server"]  # the module-scoped slapd fixture

pytestmark = requires_slapd

LOOKUP_ENV = "CITYGATE_TEST_LDAP_LOOKUP_PASSWORD"


def auth_toml(ldap: Ldap, *, start_tls: bool = False, cache_seconds: float = 0.5) -> str:
    url = ldap.ldap_url if start_tls else ldap.ldaps_url
    return f"""
[auth.ldap]
url = "{url}"
start-tls = {"true" if start_tls else "false"}
ca-file = "{ldap.ca_file}"
lookup-dn = "{LOOKUP_DN}"
lookup-password-env = "{LOOKUP_ENV}"
user-base = "ou=people,{SUFFIX}"
user-filter = "(&(objectClass=inetOrgPerson)(!(employeeType=disabled)))"
group-base = "ou=groups,{SUFFIX}"
cache-seconds = {cache_seconds}

[[auth.ldap.groups]]
group = "{group_dn('cctv-supervisors')}"
role = "supervisor"
all-areas = true

[[auth.ldap.groups]]
group = "{group_dn('cctv-operators')}"
role = "operator"
areas = ["centre"]

[[auth.ldap.groups]]
group = "{group_dn('north-district')}"
areas = ["north"]
"""


@pytest.fixture
def lookup_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOKUP_ENV, LOOKUP_PASSWORD)


async def ldap_gateway(make_gateway, ldap: Ldap, **kw) -> RunningGateway:
    return await make_gateway("", auth_toml(ldap, **kw))


async def sign_in(gw: RunningGateway, username: str, password: str = LDAP_PASSWORD, kind: str = "cookie") -> tuple[int, dict, aiohttp.ClientSession]:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    gw._sessions.append(session)
    async with session.post(gw.url + "/api/session", json={"username": username, "password": password, "kind": kind}) as resp:
        return resp.status, await resp.json(), session


async def audit_entries(gw: RunningGateway, action: str, **kw) -> list[dict]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(action=action, **kw)


async def poll(predicate, *, timeout: float = 20.0, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------


async def test_sign_in_over_ldaps_maps_groups_to_role_and_areas(make_gateway, ldap_server: Ldap, lookup_env) -> None:
    gw = await ldap_gateway(make_gateway, ldap_server)
    status, body, session = await sign_in(gw, "Alice")  # names are matched as typed, lower-cased
    assert status == 201, body
    assert body["user"]["role"] == "operator"
    assert body["user"]["areas"] == ["centre", "north"]  # operators' area plus the district group's
    assert body["user"]["display_name"] == "Alice Example"
    assert body["must_change_password"] is False
    session.headers["X-CSRF-Token"] = body["csrf_token"]
    async with session.get(gw.url + "/api/session") as resp:
        assert resp.status == 200
        assert (await resp.json())["user"]["username"] == "alice"
    created = await audit_entries(gw, "user.create", user="directory:ldap")
    assert created and created[0]["detail"]["username"] == "alice", created
    assert created[0]["detail"]["groups"] == [group_dn("cctv-operators"), group_dn("north-district")]
    ok = await audit_entries(gw, "login.ok", user="alice")
    assert ok and ok[0]["client"] == "127.0.0.1"
    # The password belongs to the directory: changing it here is refused with the reason.
    async with session.post(
        gw.url + "/api/session/password", json={"old_password": LDAP_PASSWORD, "new_password": "An0ther-long-passw0rd"}
    ) as resp:
        assert resp.status == 400
        assert "change the password there" in (await resp.json())["error"]


async def test_start_tls_supervisor_gets_all_areas_and_token(make_gateway, ldap_server: Ldap, lookup_env) -> None:
    gw = await ldap_gateway(make_gateway, ldap_server, start_tls=True)
    status, body, _ = await sign_in(gw, "bob", kind="token")
    assert status == 201, body
    assert body["user"]["role"] == "supervisor" and body["user"]["all_areas"] is True
    async with gw.anonymous.get(gw.url + "/api/session", headers={"Authorization": f"Bearer {body['token']}"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["user"]["username"] == "bob"


async def test_wrong_password_and_unknown_name_refused_and_audited(make_gateway, ldap_server: Ldap, lookup_env) -> None:
    gw = await ldap_gateway(make_gateway, ldap_server)
    for name in ("alice", "nobody"):
        status, body, _ = await sign_in(gw, name, "not-the-password")
        assert status == 401, body
        assert body["error"] == "wrong username or password"
        failed = await audit_entries(gw, "login.failed", user=name)
        assert failed and failed[0]["outcome"] == "failed", failed
        assert failed[0]["detail"]["reason"] == "wrong password or unknown in the directory"
    with pytest.raises(NotFound):
        await gw.app[IDENTITY].get_user("alice")  # nothing created by a failure


async def test_person_in_no_mapped_group_refused(make_gateway, ldap_server: Ldap, lookup_env) -> None:
    gw = await ldap_gateway(make_gateway, ldap_server)
    status, body, _ = await sign_in(gw, "carol")  # right password, only in "canteen"
    assert status == 403, body
    assert "no group that may use Citygate" in body["error"]
    refused = await audit_entries(gw, "login.failed", user="carol")
    assert refused and refused[0]["outcome"] == "refused"
    assert refused[0]["detail"] == {"reason": "in no directory group mapped to a Citygate role", "source": "ldap"}
    with pytest.raises(NotFound):
        await gw.app[IDENTITY].get_user("carol")


async def test_removed_from_group_loses_the_role_at_next_sign_in(make_gateway, ldap_server: Ldap, lookup_env) -> None:
    gw = await ldap_gateway(make_gateway, ldap_server, cache_seconds=3600)  # no recheck: the sign-in does it
    status, body, _ = await sign_in(gw, "erin")
    assert status == 201 and body["user"]["role"] == "supervisor", body
    ldap_server.modify(group_dn("cctv-supervisors"), {"member": [(ldap3.MODIFY_DELETE, [person_dn("erin")])]})
    status, body, _ = await sign_in(gw, "erin")
    assert status == 201 and body["user"]["role"] == "operator", body
    assert body["user"]["all_areas"] is False and body["user"]["areas"] == ["centre"]
    changed = await audit_entries(gw, "user.set-role", user="directory:ldap")
    assert changed and changed[0]["detail"] == {"username": "erin", "role": "operator", "was": "supervisor"}
    assert (await gw.app[IDENTITY].get_user("erin")).role == "operator"


async def test_disabled_in_the_directory_ends_sessions_within_the_cache_time(make_gateway, ldap_server: Ldap, lookup_env) -> None:
    gw = await ldap_gateway(make_gateway, ldap_server, cache_seconds=0.5)
    status, body, session = await sign_in(gw, "dave")
    assert status == 201, body
    token_status, token_body, _ = await sign_in(gw, "dave", kind="token")
    assert token_status == 201, token_body
    bearer = {"Authorization": f"Bearer {token_body['token']}"}
    ldap_server.modify(person_dn("dave"), {"employeeType": [(ldap3.MODIFY_REPLACE, ["disabled"])]})

    async def ended() -> bool:
        async with session.get(gw.url + "/api/session") as resp:
            return resp.status == 401

    await poll(ended, what="dave's browser session to end")
    async with gw.anonymous.get(gw.url + "/api/session", headers=bearer) as resp:
        assert resp.status == 401  # the API token too
    entries = await audit_entries(gw, "session.ended", user="directory:ldap")
    assert entries and entries[0]["detail"]["username"] == "dave", entries
    assert entries[0]["detail"]["reason"] == "removed or disabled in the directory"
    assert entries[0]["detail"]["sessions"] == 2
    status, body, _ = await sign_in(gw, "dave")  # no longer found through user-filter
    assert status == 401 and body["error"] == "wrong username or password"


async def test_local_accounts_still_work_and_win_over_the_directory(make_gateway, ldap_server: Ldap, lookup_env) -> None:
    gw = await ldap_gateway(make_gateway, ldap_server)
    async with gw.session.get(gw.url + "/api/session") as resp:  # the fixture's local "tester"
        assert resp.status == 200 and (await resp.json())["user"]["role"] == "operator"
    # "grace" also exists in the directory; her local account is checked locally only.
    await gw.app[IDENTITY].create_user("grace", role="investigator", password=TEST_PASSWORD)
    status, body, _ = await sign_in(gw, "grace", LDAP_PASSWORD)
    assert status == 401 and body["error"] == "wrong username or password"
    failed = await audit_entries(gw, "login.failed", user="grace")
    assert failed[0]["detail"]["reason"] == "wrong password"
    status, body, _ = await sign_in(gw, "grace", TEST_PASSWORD)
    assert status == 201 and body["user"]["role"] == "investigator", body


async def test_ldap_options_are_checked_with_file_and_key(tmp_path: Path, ldap_server: Ldap) -> None:
    plugins = load_plugins()
    bad = auth_toml(ldap_server).replace('start-tls = false', 'start-tls = true').replace(
        'role = "operator"', 'role = "no-such-role"'
    )
    (tmp_path / "gateway.toml").write_text(bad)
    (tmp_path / "roles.toml").write_text((Path(__file__).parent.parent / "conf" / "roles.toml").read_text())
    with pytest.raises(ConfigErrors) as exc:
        config_mod.load(tmp_path, vendors={}, env={LOOKUP_ENV: "x"}, auth_providers=plugins.auth_providers())
    assert str(exc.value) == f"{tmp_path / 'gateway.toml'}: auth.ldap: start-tls is for ldap:// urls; ldaps:// is TLS from the start"
    (tmp_path / "gateway.toml").write_text(auth_toml(ldap_server).replace('role = "operator"', 'role = "no-such-role"'))
    config = config_mod.load(tmp_path, vendors={}, env={LOOKUP_ENV: "x"}, auth_providers=plugins.auth_providers())
    from gateway.access.directory import Directory
    from gateway.access.policy import load_roles

    with pytest.raises(ConfigErrors) as exc:
        Directory.from_config(config, plugins.auth_providers(), frozenset(load_roles(tmp_path).roles))
    assert "gateway.toml: auth.ldap.groups[1].role: unknown role 'no-such-role'" in str(exc.value)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")
async def test_ldap_sign_in_in_chromium(make_gateway, ldap_server: Ldap, lookup_env, browser) -> None:
    gw = await make_gateway(camera_toml("d1", "demo", area="north", width=320, height=180, fps=10), auth_toml(ldap_server))
    context = await browser.new_context()
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(gw.url + "/")
        await page.wait_for_selector("#sign-in[open]")
        await page.fill('#sign-in input[name="username"]', "frank")
        await page.fill('#sign-in input[name="password"]', "wrong")
        await page.click('#sign-in button[type="submit"]')
        await page.wait_for_selector("#sign-in .sign-in-message:has-text('password')")
        await page.fill('#sign-in input[name="password"]', LDAP_PASSWORD)
        await page.click('#sign-in button[type="submit"]')
        await page.wait_for_selector("#sign-in", state="hidden")
        # frank's groups give the north district: its camera is listed
        await page.wait_for_selector('#camera-list li[data-camera-id="d1"]')
        me = await page.evaluate("fetch('/api/session').then(r => r.json())")
        assert me["user"]["username"] == "frank" and me["user"]["role"] == "operator"
        assert errors == []
    finally:
        await context.close()
    ok = await audit_entries(gw, "login.ok", user="frank")
    assert ok and ok[0]["detail"]["kind"] == "cookie"
