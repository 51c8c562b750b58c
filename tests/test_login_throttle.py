"""Sign-in that is neither an oracle nor a lockout anyone can cause, and attempt limits on
password change (issue 15 items 2, 10 and 11): a real gateway core over real HTTP, with an
injected clock so no test waits out a lock.

Client addresses other than loopback come from ``X-Forwarded-For``, which the gateway
believes only because loopback is configured as a trusted proxy (the test client is the
proxy).
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import citygate_plugins.auth.local as local_auth
from gateway import config as config_mod
from gateway.access import headers
from gateway.access.audit import AuditLog
from gateway.access.control import AccessControl
from gateway.access.identity import Identity
from gateway.access.middleware import access_middleware
from gateway.access.policy import load_roles
from gateway.api import error_middleware
from gateway.api import session as session_api
from gateway.api import users as users_api
from gateway.appkeys import ACCESS, CONFIG, IDENTITY, PLUGINS
from gateway.db import Database
from gateway.plugins import load_plugins
from tests.fixtures_app import FAST_HASHER
from tests.test_identity import Clock

ROOT = Path(__file__).resolve().parent.parent
GOOD = "correct horse battery staple"
WRONG = "purple elephant marmalade 42"
ATTACKER = "203.0.113.5"
HOME = "198.51.100.7"


@dataclass
class Gate:
    server: TestServer
    identity: Identity
    audit: AuditLog
    clock: Clock
    client: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def login(self, username: str, password: str, *, address: str | None = None, **extra) -> tuple[int, dict]:
        hdrs = {"X-Forwarded-For": address} if address else {}
        async with aiohttp.ClientSession() as fresh:  # no cookies carried between attempts
            async with fresh.post(self.url("/api/session"), json={"username": username, "password": password, **extra}, headers=hdrs) as r:
                return r.status, await r.json()

    async def entries(self, action: str, **kw) -> list[dict]:
        await self.audit.flush()
        return await self.audit.query(action=action, **kw)


GateFactory = Callable[..., Awaitable[Gate]]


@pytest.fixture
async def make_gate(tmp_path: Path, database_url: str) -> AsyncIterator[GateFactory]:
    """``await make_gate(gateway_toml)``: database, audit, identity (on a test clock), guard,
    session and user routes and the security headers, served on loopback."""
    started: list = []

    async def factory(gateway_toml: str = "", *, trusted_proxies: str = '["127.0.0.1"]', server: str = "") -> Gate:
        conf = tmp_path / f"conf{len(started)}"
        conf.mkdir()
        (conf / "gateway.toml").write_text(f"[server]\ntrusted-proxies = {trusted_proxies}\n{server}\n" + textwrap.dedent(gateway_toml))
        (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
        config = config_mod.load(conf, vendors={})
        policy = load_roles(conf)
        db = await Database(database_url).__aenter__()
        started.append(db)
        audit = await AuditLog(db).__aenter__()
        started.append(audit)
        clock = Clock()
        identity = Identity(db, audit, config.security, policy, clock=clock, hasher=FAST_HASHER)
        control = await AccessControl(db=db, policy=policy, audit=audit, config=config, sessions=identity).__aenter__()
        started.append(control)
        plugins = load_plugins(entry_points=False)
        plugins.register(local_auth, name="local_auth")
        app = web.Application(middlewares=[error_middleware, access_middleware])
        app[CONFIG], app[PLUGINS], app[IDENTITY], app[ACCESS] = config, plugins, identity, control
        headers.setup(app)
        session_api.setup(app)
        users_api.setup(app)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        started.append(server)
        client = aiohttp.ClientSession()
        started.append(client)
        return Gate(server, identity, audit, clock, client)

    try:
        yield factory
    finally:
        for thing in reversed(started):
            if isinstance(thing, TestServer | aiohttp.ClientSession):
                await thing.close()
            else:
                await thing.__aexit__(None, None, None)


async def make_user(gate: Gate, username: str, role: str = "operator", **kw) -> None:
    await gate.identity.create_user(username, role=role, areas=("centre",), password=GOOD, **kw)


async def test_unknown_names_and_wrong_passwords_answer_alike_locks_included(make_gate: GateFactory) -> None:
    gate = await make_gate()
    await make_user(gate, "alice")
    answers = {}
    for name in ("alice", "nobody"):
        answers[name] = [await gate.login(name, WRONG, address=ATTACKER) for _ in range(6)]
    assert answers["alice"] == answers["nobody"]
    assert [s for s, _ in answers["alice"]] == [401] * 4 + [423] * 2
    assert answers["alice"][0][1] == {"error": "wrong username or password", "status": 401}
    assert answers["alice"][4][1]["error"].startswith("account locked until")
    # The right password does not tell either: the pair is locked, the address unknown.
    assert await gate.login("alice", GOOD, address=ATTACKER) == answers["nobody"][-1]

    locks = await gate.entries("account.locked")
    assert {e["user"] for e in locks} == {"alice", "nobody"}
    assert all(e["client"] == ATTACKER and e["detail"]["address"] == ATTACKER for e in locks)
    refused = await gate.entries("login.failed", user="alice")
    assert refused[0]["outcome"] == "refused" and refused[0]["detail"]["reason"] == "locked from this address"
    assert refused[0]["detail"]["password"] == "right"  # the log tells the auditor; the answer did not


async def test_a_lock_from_one_address_leaves_other_addresses_in_and_backs_off(make_gate: GateFactory) -> None:
    gate = await make_gate()
    await make_user(gate, "admin", role="admin", all_areas=True)
    assert (await gate.login("admin", GOOD, address=HOME))[0] == 201  # a known-good address from now on

    for _ in range(5):
        await gate.login("admin", WRONG, address=ATTACKER)
    assert (await gate.login("admin", GOOD, address=ATTACKER))[0] == 423
    assert (await gate.login("admin", GOOD, address=HOME))[0] == 201
    assert (await gate.login("admin", GOOD, address="192.0.2.99"))[0] == 201  # never locked there either

    # The attacker's next lock lasts twice as long: five tries per lock period no longer
    # keep anyone out, and each period doubles.
    first = (await gate.entries("account.locked"))[0]["detail"]["until"]
    assert first == pytest.approx(gate.clock.now + 15 * 60, abs=1)
    gate.clock.advance(15 * 60 + 1)
    for _ in range(5):
        status, _ = await gate.login("admin", WRONG, address=ATTACKER)
    assert status == 423
    second = (await gate.entries("account.locked"))[0]["detail"]["until"]
    assert second == pytest.approx(gate.clock.now + 30 * 60, abs=1)
    assert (await gate.login("admin", GOOD, address=HOME))[0] == 201


async def test_right_password_from_a_known_good_address_passes_a_lock_on_that_address(make_gate: GateFactory) -> None:
    """A colleague behind the same NAT address mistyped five times: the owner still gets in."""
    gate = await make_gate()
    await make_user(gate, "alice")
    assert (await gate.login("alice", GOOD, address=HOME))[0] == 201
    for _ in range(5):
        await gate.login("alice", WRONG, address=HOME)
    assert (await gate.login("alice", WRONG, address=HOME))[0] == 423  # still no guessing from there
    assert (await gate.login("alice", GOOD, address=HOME))[0] == 201
    ok = (await gate.entries("login.ok", user="alice"))
    assert "known-good address while locked" in str([e["detail"] for e in ok])


async def test_spread_out_guessing_locks_the_name_for_new_addresses_only(make_gate: GateFactory) -> None:
    gate = await make_gate("[security]\nmax-failed-logins-per-account = 6\n")
    await make_user(gate, "alice")
    assert (await gate.login("alice", GOOD, address=HOME))[0] == 201
    for name in ("alice", "nobody"):
        statuses = [(await gate.login(name, WRONG, address=f"203.0.113.{i}"))[0] for i in range(10, 16)]
        assert statuses == [401] * 5 + [423], name
    assert (await gate.login("alice", GOOD, address="192.0.2.7"))[0] == 423
    assert (await gate.login("alice", GOOD, address=HOME))[0] == 201
    locks = await gate.entries("account.locked", user="alice")
    assert locks[0]["detail"]["address"] == "any address it never signed in from"


async def test_client_address_comes_from_trusted_proxies_only(make_gate: GateFactory) -> None:
    behind = await make_gate("[security]\nlogin-attempts-per-minute-per-client = 3\n")
    # Many names from one address: throttled per address, whatever the names.
    statuses = [(await behind.login(f"user{i}", WRONG, address=f"10.9.9.9, {ATTACKER}"))[0] for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    status, body = await behind.login("user9", WRONG, address=ATTACKER)
    assert status == 429 and "too many sign-in attempts from your address" in body["error"]
    assert (await behind.login("user9", WRONG, address="192.0.2.1"))[0] == 401  # another client behind the proxy
    throttled = await behind.entries("login.throttled")
    assert [e["client"] for e in throttled] == [ATTACKER]
    # The client chose the left part of the header; the proxy appended the real address.
    assert {e["client"] for e in await behind.entries("login.failed")} == {ATTACKER, "192.0.2.1"}


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_gate: GateFactory) -> None:
    gate = await make_gate(trusted_proxies='["192.0.2.254/32"]')  # loopback is a plain client here
    for _ in range(5):
        await gate.login("nobody", WRONG, address=ATTACKER)
    assert {e["client"] for e in await gate.entries("login.failed")} == {"127.0.0.1"}
    # the lock is on the real peer's address, not on the one the client claimed
    assert (await gate.entries("account.locked"))[0]["detail"]["address"] == "127.0.0.1"


async def test_wrong_current_passwords_end_the_session(make_gate: GateFactory) -> None:
    gate = await make_gate("[security]\nmax-password-change-failures = 3\n")
    await make_user(gate, "alice")
    status, body = await gate.login("alice", GOOD, address=HOME, kind="token")
    assert status == 201
    auth = {"Authorization": f"Bearer {body['token']}"}
    change = {"old_password": WRONG, "new_password": "a brand new passphrase"}
    answers = []
    for _ in range(3):
        async with gate.client.post(gate.url("/api/session/password"), json=change, headers=auth) as r:
            answers.append((r.status, (await r.json())["error"]))
    assert answers[:2] == [
        (403, "the current password is wrong (2 attempts left in this session)"),
        (403, "the current password is wrong (1 attempt left in this session)"),
    ]
    assert answers[2] == (401, "too many wrong current passwords: this session has ended; sign in again")
    async with gate.client.get(gate.url("/api/session"), headers=auth) as r:
        assert r.status == 401  # the stolen token is dead
    failed = await gate.entries("password.change", user="alice")
    assert [e["outcome"] for e in failed] == ["failed"] * 3
    ended = await gate.entries("session.ended", user="alice")
    assert len(ended) == 1 and ended[0]["detail"]["reason"] == "3 wrong current passwords"
    assert "wrong current passwords" in (await gate.entries("account.locked", user="alice"))[0]["detail"]["reason"]


async def test_refusal_until_the_password_is_changed_is_audited(make_gate: GateFactory) -> None:
    gate = await make_gate()
    await make_user(gate, "carol", role="admin", all_areas=True)
    status, body = await gate.login("carol", GOOD, kind="token")
    assert status == 201 and body["must_change_password"]
    async with gate.client.get(gate.url("/api/users"), headers={"Authorization": f"Bearer {body['token']}"}) as r:
        assert r.status == 403 and (await r.json())["error"] == "change your password first"
    refused = await gate.entries("users.manage", user="carol")
    assert len(refused) == 1 and refused[0]["outcome"] == "refused"
    assert refused[0]["detail"] == {"reason": "change your password first", "method": "GET", "path": "/api/users"}


async def test_https_behind_a_proxy_makes_a_secure_host_cookie_and_hsts(make_gate: GateFactory) -> None:
    """TLS ends at the reverse proxy: the gateway sees plain HTTP, the browser uses HTTPS."""
    gate = await make_gate(server='public-scheme = "https"')
    await make_user(gate, "alice")
    async with gate.client.post(gate.url("/api/session"), json={"username": "alice", "password": GOOD}) as r:
        assert r.status == 201
        cookie = r.headers["Set-Cookie"]
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    name, _, rest = cookie.partition("=")
    token = rest.split(";")[0]
    assert name == "__Host-citygate_session"
    assert all(flag in cookie for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/")) and "Domain" not in cookie
    async with aiohttp.ClientSession() as bare:
        async with bare.get(gate.url("/api/session"), headers={"Cookie": f"__Host-citygate_session={token}"}) as r:
            assert r.status == 200
        # a cookie without the prefix (plantable over plain HTTP or from a sibling domain) is ignored
        async with bare.get(gate.url("/api/session"), headers={"Cookie": f"citygate_session={token}"}) as r:
            assert r.status == 401


async def test_plain_http_keeps_the_plain_cookie_without_hsts(make_gate: GateFactory) -> None:
    gate = await make_gate()
    await make_user(gate, "alice")
    async with gate.client.post(gate.url("/api/session"), json={"username": "alice", "password": GOOD}) as r:
        assert r.status == 201
        assert r.headers["Set-Cookie"].startswith("citygate_session=") and "Secure" not in r.headers["Set-Cookie"]
        assert "Strict-Transport-Security" not in r.headers
