"""Accounts, passwords, sign-in, lockout and sessions: through Identity and over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web
from argon2 import PasswordHasher
from aiohttp.test_utils import TestServer

import citygate_plugins.auth.local as local_auth
from gateway import config as config_mod
from gateway.access import passwords
from gateway.access.audit import AuditLog
from gateway.access.control import AccessControl
from gateway.access.guard import CSRF_HEADER
from gateway.access.identity import SESSION_COOKIE, Identity, hash_token
from gateway.access.middleware import access_middleware
from gateway.access.policy import Policy, load_roles
from gateway.api import error_middleware
from gateway.api import session as session_api
from gateway.api import users as users_api
from gateway.appkeys import ACCESS, IDENTITY, PLUGINS
from gateway.config import SecurityConfig
from gateway.db import Database
from gateway.errors import BadRequest, Conflict, Forbidden, Locked, TooManyRequests, Unauthorized
from gateway.plugins import load_plugins

CONF = Path(__file__).resolve().parent.parent / "conf"
GOOD = "correct horse battery staple"
OTHER = "purple elephant marmalade 42"
#: Real Argon2id with small parameters, so the many sign-ins here take milliseconds;
#: the production parameters are exercised by the hashing test and the CLI tests.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def policy() -> Policy:
    return load_roles(CONF)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    async with Database(database_url) as database:
        yield database


@pytest.fixture
async def audit(db: Database) -> AsyncIterator[AuditLog]:
    async with AuditLog(db) as log:
        yield log


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def identity(db: Database, audit: AuditLog, policy: Policy, clock: Clock) -> Identity:
    return Identity(db, audit, SecurityConfig(), policy, clock=clock, hasher=FAST)


async def make_user(identity: Identity, username: str = "alice", *, role: str = "operator", password: str = GOOD, **kw):
    user, _ = await identity.create_user(username, role=role, areas=kw.pop("areas", ("centre",)), password=password, **kw)
    return user


# --------------------------------------------------------------------------------------
# password rules


@pytest.mark.parametrize(
    ("password", "username", "message"),
    [
        ("short pass", "alice", "at least 12 characters long (it has 10)"),
        ("x" * 257, "alice", "at most 256 characters"),
        ("aaaaaaaaaaaaaa", "alice", "one character repeated"),
        ("Password123456", "alice", "one of the most common passwords"),
        ("qwertyuiopas", "alice", "one of the most common passwords"),
        ("1234567890123", "alice", "keyboard or number sequence"),
        ("abcdefghijklmn", "alice", "keyboard or number sequence"),
        ("asdfghjklzxcv", "alice", "keyboard or number sequence"),
        ("my name is ALICE!", "alice", "must not contain the username"),
    ],
)
def test_password_rules_name_the_rule(password: str, username: str, message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        passwords.check_password(password, username=username, min_length=12)
    assert message in exc.value.message


def test_good_passwords_pass_and_generated_ones_comply() -> None:
    passwords.check_password(GOOD, username="alice")
    passwords.check_password("x" * 255 + "y", username="alice")
    for _ in range(50):
        generated = passwords.generate_password(username="bob")
        assert len(generated) == 20
        passwords.check_password(generated, username="bob")
    assert len({passwords.generate_password() for _ in range(20)}) == 20


def test_min_length_follows_config() -> None:
    with pytest.raises(BadRequest, match="at least 16"):
        passwords.check_password("fifteen chars!!", min_length=16)


async def test_hashes_verify_and_never_contain_the_password() -> None:
    h = await passwords.hash_password(GOOD)
    assert GOOD not in h and h.startswith("$argon2id$")
    assert await passwords.verify_password(h, GOOD)
    assert not await passwords.verify_password(h, OTHER)
    assert not await passwords.verify_password("not a hash", GOOD)
    assert not passwords.needs_rehash(h)


# --------------------------------------------------------------------------------------
# accounts


async def test_create_user_rules(identity: Identity) -> None:
    user, generated = await identity.create_user("alice", role="operator", areas=["north", "centre", " "])
    assert user.areas == {"north", "centre"} and user.must_change_password and not user.disabled
    assert generated is not None and len(generated) == 20
    with pytest.raises(Conflict, match="already exists"):
        await identity.create_user("alice", role="operator")
    with pytest.raises(BadRequest, match="unknown role 'chief'"):
        await identity.create_user("carol", role="chief")
    for bad in ("A", "Alice", "al ice", "x" * 65, "al/ice"):
        with pytest.raises(BadRequest, match="invalid username"):
            await identity.create_user(bad, role="operator")
    with pytest.raises(BadRequest, match="must not contain the username"):
        await identity.create_user("dave", role="operator", password="dave's long password")
    assert [u.username for u in await identity.list_users()] == ["alice"]


async def test_first_admin_only_on_empty_database(identity: Identity) -> None:
    first = await identity.ensure_first_admin()
    assert first is not None
    username, password = first
    admin = await identity.get_user(username)
    assert admin.role == "admin" and admin.all_areas and admin.must_change_password
    principal, _ = await identity.login(username, password, client="127.0.0.1")
    assert principal.must_change_password
    assert await identity.ensure_first_admin() is None


async def test_login_authenticate_logout(identity: Identity, audit: AuditLog) -> None:
    await make_user(identity)
    principal, token = await identity.login("alice", GOOD, client="10.0.0.5", user_agent="pytest")
    assert principal.username == "alice" and principal.role == "operator" and principal.kind == "cookie"
    assert principal.session_id == hash_token(token) and token not in principal.session_id
    again = await identity.authenticate(token)
    assert again is not None and again.user_id == principal.user_id and again.csrf_token == principal.csrf_token
    assert await identity.authenticate(token + "x") is None
    assert await identity.logout(token)
    assert await identity.authenticate(token) is None
    actions = [e["action"] for e in await audit.query(user="alice")]
    assert actions[:2] == ["logout", "login.ok"]


async def test_tokens_are_stored_only_as_hashes(identity: Identity, db: Database, database_url: str, tmp_path: Path) -> None:
    await make_user(identity)
    _, token = await identity.login("alice", GOOD)
    stored = ""
    async with db.connect() as conn:
        for table in ("users", "sessions", "audit"):
            stored += repr((await conn.execute(sa.text(f"SELECT * FROM {table}"))).all())
    assert token not in stored and GOOD not in stored
    assert hash_token(token) in stored
    if database_url.startswith("sqlite"):  # and not in the file's bytes either (WAL included)
        raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("citygate.db*"))
        assert token.encode() not in raw and GOOD.encode() not in raw


async def test_unknown_user_gets_the_same_answer(identity: Identity, audit: AuditLog) -> None:
    await make_user(identity)
    with pytest.raises(Unauthorized) as wrong_pw:
        await identity.login("alice", OTHER)
    with pytest.raises(Unauthorized) as unknown:
        await identity.login("nobody", OTHER)
    assert wrong_pw.value.message == unknown.value.message == "wrong username or password"
    failures = await audit.query(action="login.failed")
    assert {e["detail"]["reason"] for e in failures} == {"wrong password", "unknown user"}
    assert all(OTHER not in str(e) for e in await audit.query())


async def test_idle_and_absolute_expiry(identity: Identity, clock: Clock) -> None:
    await make_user(identity)
    _, token = await identity.login("alice", GOOD)
    for _ in range(4):  # activity keeps the session alive past the idle timeout
        clock.advance(20 * 60)
        assert await identity.authenticate(token) is not None
    clock.advance(31 * 60)  # idle
    assert await identity.authenticate(token) is None

    _, token = await identity.login("alice", GOOD)
    for _ in range(12 * 3 - 1):  # active every 20 minutes for 11h40
        clock.advance(20 * 60)
        assert await identity.authenticate(token) is not None
    clock.advance(20 * 60 + 1)  # past 12 h, however active
    assert await identity.authenticate(token) is None


async def test_idle_time_survives_a_cache_reload(db, audit, policy, clock: Clock) -> None:
    """Activity not yet written to the database still counts after a re-read."""
    ident = Identity(db, audit, SecurityConfig(), policy, clock=clock, cache_ttl=0.0, hasher=FAST)
    await make_user(ident)
    _, token = await ident.login("alice", GOOD)
    for _ in range(10):
        clock.advance(10 * 60)
        assert await ident.authenticate(token) is not None


async def test_api_token_has_no_idle_timeout_but_a_lifetime(identity: Identity, clock: Clock) -> None:
    await make_user(identity)
    principal, token = await identity.login("alice", GOOD, kind="token", token_name="wall 3")
    assert principal.kind == "token"
    clock.advance(30 * 86400)
    assert await identity.authenticate(token) is not None
    clock.advance(61 * 86400)
    assert await identity.authenticate(token) is None


async def test_lockout_after_repeated_failures(identity: Identity, audit: AuditLog, clock: Clock) -> None:
    await make_user(identity)
    outcomes = []
    for _ in range(6):
        clock.advance(5)
        try:
            await identity.login("alice", OTHER, client="10.0.0.9")
        except (Unauthorized, Locked) as exc:
            outcomes.append(type(exc))
    assert outcomes == [Unauthorized] * 4 + [Locked] * 2
    with pytest.raises(Locked) as exc:
        await identity.login("alice", GOOD, client="10.0.0.9")
    until = time.strftime("%H:%M", time.gmtime(clock.now - 5 + 15 * 60))
    assert f"account locked until {until} UTC" in exc.value.message
    locks = await audit.query(action="account.locked")
    assert len(locks) == 1 and locks[0]["user"] == "alice" and "5 failed sign-ins" in locks[0]["detail"]["reason"]
    assert (await identity.get_user("alice")).locked(clock.now)

    clock.advance(15 * 60)  # the lock expires
    principal, _ = await identity.login("alice", GOOD, client="10.0.0.9")
    assert principal.username == "alice"
    assert [e["detail"]["reason"] for e in await audit.query(action="account.unlocked")] == ["lock expired"]


async def test_failures_outside_the_window_do_not_lock(identity: Identity, clock: Clock) -> None:
    await make_user(identity)
    for _ in range(8):
        clock.advance(20)  # 5 failures span 80 s > the 60 s window
        with pytest.raises(Unauthorized):
            await identity.login("alice", OTHER)
    await identity.login("alice", GOOD)


async def test_reset_password_unlocks_revokes_and_forces_change(identity: Identity, audit: AuditLog) -> None:
    await make_user(identity)
    principal, token = await identity.login("alice", GOOD)
    await identity.change_password(principal, GOOD, OTHER)
    assert not (await identity.get_user("alice")).must_change_password
    for _ in range(5):
        with pytest.raises((Unauthorized, Locked)):
            await identity.login("alice", "wrong password!!")
    temp = await identity.reset_password("alice", by="root")
    assert await identity.authenticate(token) is None
    fresh, token2 = await identity.login("alice", temp)
    assert fresh.must_change_password
    with pytest.raises(Forbidden, match="current password is wrong"):
        await identity.change_password(fresh, GOOD, "another fine passphrase")
    with pytest.raises(BadRequest, match="differ from the current one"):
        await identity.change_password(fresh, temp, temp)
    await identity.change_password(fresh, temp, "another fine passphrase")
    after = await identity.authenticate(token2)
    assert after is not None and not after.must_change_password
    entries = {e["action"]: e for e in await audit.query()}
    assert entries["user.reset-password"]["user"] == "root"
    assert entries["account.unlocked"]["detail"]["reason"] == "password reset"


async def test_change_password_ends_other_sessions(identity: Identity) -> None:
    await make_user(identity)
    here, token_here = await identity.login("alice", GOOD)
    _, token_there = await identity.login("alice", GOOD, kind="token")
    await identity.change_password(here, GOOD, OTHER)
    assert await identity.authenticate(token_here) is not None
    assert await identity.authenticate(token_there) is None


async def test_disabled_user_refused_and_sessions_end(identity: Identity, audit: AuditLog) -> None:
    await make_user(identity)
    changed: list[int] = []
    identity.add_listener(changed.append)
    principal, token = await identity.login("alice", GOOD)
    await identity.set_disabled("alice", True, by="root")
    assert changed == [principal.user_id]
    assert await identity.authenticate(token) is None
    with pytest.raises(Forbidden, match="disabled"):
        await identity.login("alice", GOOD)
    with pytest.raises(Unauthorized):  # a wrong password learns nothing about the state
        await identity.login("alice", OTHER)
    await identity.set_disabled("alice", False, by="root")
    assert await identity.authenticate(token) is None  # re-enabling does not revive sessions
    await identity.login("alice", GOOD)
    with pytest.raises(BadRequest, match="cannot disable your own"):
        await identity.set_disabled("alice", True, by="alice")


async def test_change_by_another_node_applies_within_two_seconds(db, audit, policy) -> None:
    """Two gateways (or the CLI) share the database: the cache yields to it within 2 s."""
    node_a = Identity(db, audit, SecurityConfig(), policy, hasher=FAST)
    node_b = Identity(db, audit, SecurityConfig(), policy, hasher=FAST)
    await make_user(node_a)
    _, token = await node_a.login("alice", GOOD)
    assert (await node_a.authenticate(token)).areas == {"centre"}
    await node_b.set_areas("alice", ["north"], False, by="root")
    await node_b.set_disabled("alice", True, by="root")
    deadline = time.monotonic() + 2.5
    while await node_a.authenticate(token) is not None:
        assert time.monotonic() < deadline, "session still valid on the other node after 2.5 s"
        await asyncio.sleep(0.1)


async def test_role_and_area_changes_apply_to_live_sessions(identity: Identity) -> None:
    await make_user(identity)
    principal, token = await identity.login("alice", GOOD)
    notified: list[int] = []

    async def listener(user_id: int) -> None:
        notified.append(user_id)

    identity.add_listener(listener)
    await identity.set_role("alice", "investigator", by="root")
    await identity.set_areas("alice", ["north", "south"], False, by="root")
    now = await identity.authenticate(token)
    assert now.role == "investigator" and now.areas == {"north", "south"}
    subject = await identity.subject_for(principal.user_id)
    assert subject.role == "investigator" and not subject.disabled
    assert notified == [principal.user_id] * 2
    assert await identity.principal_for_session(principal.session_id) is not None


async def test_login_rehashes_with_stronger_parameters(db, audit, policy) -> None:
    import sqlalchemy as sa

    from gateway.db import users

    async def stored() -> str:
        async with db.connect() as conn:
            return (await conn.execute(sa.select(users.c.password_hash))).scalar_one()

    await make_user(Identity(db, audit, SecurityConfig(), policy, hasher=FAST))
    weak = await stored()
    stronger = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    await Identity(db, audit, SecurityConfig(), policy, hasher=stronger).login("alice", GOOD)
    upgraded = await stored()
    assert upgraded != weak and not stronger.check_needs_rehash(upgraded) and stronger.verify(upgraded, GOOD)


async def test_login_throttled_per_client(db, audit, policy) -> None:
    ident = Identity(db, audit, SecurityConfig(login_attempts_per_minute_per_client=3), policy, hasher=FAST)
    await make_user(ident)
    for _ in range(3):
        await ident.login("alice", GOOD, client="10.0.0.1")
    with pytest.raises(TooManyRequests, match="try again in"):
        await ident.login("alice", GOOD, client="10.0.0.1")
    await ident.login("alice", GOOD, client="10.0.0.2")
    assert len(await audit.query(action="login.throttled")) == 1


async def test_last_seen_written_at_most_every_30_s(identity: Identity, db: Database, clock: Clock) -> None:
    import sqlalchemy as sa

    from gateway.db import sessions

    await make_user(identity)
    principal, token = await identity.login("alice", GOOD)
    start = clock.now

    async def stored() -> float:
        async with db.connect() as conn:
            return (await conn.execute(sa.select(sessions.c.last_seen_at).where(sessions.c.id == principal.session_id))).scalar_one()

    for _ in range(10):
        clock.advance(2)
        await identity.authenticate(token)
    assert await stored() == start
    clock.advance(15)
    await identity.authenticate(token)
    assert await stored() == start + 35


# --------------------------------------------------------------------------------------
# HTTP


@dataclass
class Http:
    server: TestServer
    identity: Identity
    client: aiohttp.ClientSession

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def login(self, username: str, password: str, **extra) -> tuple[int, dict]:
        async with self.client.post(self.url("/api/session"), json={"username": username, "password": password, **extra}) as r:
            return r.status, await r.json()


@pytest.fixture
async def http(tmp_path: Path, db, audit, policy) -> AsyncIterator[Http]:
    (tmp_path / "conf").mkdir()
    config = config_mod.load(tmp_path / "conf", vendors={})
    identity = Identity(db, audit, config.security, policy, hasher=FAST)
    plugins = load_plugins(entry_points=False)
    plugins.register(local_auth, name="local_auth")
    app = web.Application(middlewares=[error_middleware, access_middleware])
    app[PLUGINS] = plugins
    app[IDENTITY] = identity
    session_api.setup(app)
    users_api.setup(app)
    async with AccessControl(db=db, policy=policy, audit=audit, config=config, sessions=identity) as control:
        app[ACCESS] = control
        server = TestServer(app)
        await server.start_server()
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
                yield Http(server, identity, client)
        finally:
            await server.close()


async def test_http_cookie_login_flow(http: Http) -> None:
    await make_user(http.identity)
    async with http.client.post(http.url("/api/session"), json={"username": "alice", "password": GOOD}) as r:
        assert r.status == 201
        body = await r.json()
        cookie = r.headers["Set-Cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; set only over TLS
    assert "token" not in body and body["must_change_password"] and body["user"]["username"] == "alice"
    csrf = body["csrf_token"]

    async with http.client.get(http.url("/api/session")) as r:
        me = await r.json()
    assert r.status == 200
    assert me["user"]["role_title"] == "Operator" and "live.view" in me["user"]["actions"]
    assert me["csrf_token"] == csrf and me["must_change_password"]

    # Unsafe methods need the CSRF header with a cookie session.
    change = {"old_password": GOOD, "new_password": OTHER}
    async with http.client.post(http.url("/api/session/password"), json=change) as r:
        assert r.status == 403
    async with http.client.post(http.url("/api/session/password"), json=change, headers={CSRF_HEADER: csrf}) as r:
        assert r.status == 200, await r.text()
    async with http.client.get(http.url("/api/session")) as r:
        assert (await r.json())["must_change_password"] is False

    async with http.client.delete(http.url("/api/session"), headers={CSRF_HEADER: csrf}) as r:
        assert r.status == 204
    async with http.client.get(http.url("/api/session")) as r:
        assert r.status == 401


async def test_http_login_errors(http: Http) -> None:
    await make_user(http.identity)
    assert (await http.login("alice", OTHER)) == (401, {"error": "wrong username or password", "status": 401})
    assert (await http.login("nobody", OTHER)) == (401, {"error": "wrong username or password", "status": 401})
    for body in (b"{not json", b'{"username": "alice"}', b'{"username": "alice", "password": 5}'):
        async with http.client.post(http.url("/api/session"), data=body, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400
            assert (await r.json())["error"]
    async with http.client.post(http.url("/api/session"), data={"username": "alice", "password": GOOD}) as r:
        assert r.status == 400 and "JSON" in (await r.json())["error"]  # no form posts: no login CSRF
    for _ in range(4):
        await http.login("alice", OTHER)
    status, body = await http.login("alice", GOOD)
    assert status == 423 and body["error"].startswith("account locked until")


async def test_http_bearer_token_needs_no_cookie_nor_csrf(http: Http) -> None:
    await make_user(http.identity)
    await make_user(http.identity, "bob", password=OTHER)
    status, body = await http.login("alice", GOOD, kind="token", name="nightly export")
    assert status == 201 and body["token"] and body["kind"] == "token"
    assert not http.client.cookie_jar.filter_cookies(http.url("/"))
    auth = {"Authorization": f"Bearer {body['token']}"}
    change = {"old_password": GOOD, "new_password": "a brand new passphrase"}
    async with aiohttp.ClientSession() as bare:
        async with bare.post(http.url("/api/session/password"), json=change, headers=auth) as r:
            assert r.status == 200, await r.text()
        async with bare.get(http.url("/api/session"), headers=auth) as r:
            assert r.status == 200 and (await r.json())["user"]["username"] == "alice"
        # An API token presented as a cookie is refused (it would bypass the CSRF check).
        async with bare.get(http.url("/api/session"), cookies={SESSION_COOKIE: body["token"]}) as r:
            assert r.status == 401
        async with bare.get(http.url("/api/session"), headers={"Authorization": "Bearer nonsense"}) as r:
            assert r.status == 401


async def test_http_must_change_password_gate(http: Http) -> None:
    _, password = await http.identity.create_user("carol", role="admin", all_areas=True)
    status, body = await http.login("carol", password, kind="token")
    auth = {"Authorization": f"Bearer {body['token']}"}
    async with http.client.get(http.url("/api/users"), headers=auth) as r:
        assert r.status == 403 and "change your password" in (await r.json())["error"]
    async with http.client.post(
        http.url("/api/session/password"), json={"old_password": password, "new_password": GOOD}, headers=auth
    ) as r:
        assert r.status == 200
    async with http.client.get(http.url("/api/users"), headers=auth) as r:
        assert r.status == 200 and [u["username"] for u in await r.json()] == ["carol"]


async def test_http_user_administration(http: Http, audit: AuditLog) -> None:
    await make_user(http.identity, "root", role="admin", all_areas=True)
    await http.identity.change_password((await http.identity.login("root", GOOD))[0], GOOD, OTHER)
    _, body = await http.login("root", OTHER, kind="token")
    admin = {"Authorization": f"Bearer {body['token']}"}
    url = http.url

    async with http.client.post(url("/api/users"), json={"username": "dora", "role": "operator", "areas": ["north"]}, headers=admin) as r:
        assert r.status == 201
        created = await r.json()
    temp = created["password"]
    assert created["user"]["areas"] == ["north"] and created["user"]["must_change_password"]
    async with http.client.post(url("/api/users"), json={"username": "dora", "role": "operator"}, headers=admin) as r:
        assert r.status == 409
    async with http.client.post(url("/api/users"), json={"username": "eve", "role": "operator", "password": GOOD}, headers=admin) as r:
        assert r.status == 201 and "password" not in await r.json()

    _, dora = await http.login("dora", temp, kind="token")
    dora_auth = {"Authorization": f"Bearer {dora['token']}"}
    async with http.client.get(url("/api/users"), headers=dora_auth) as r:
        assert r.status == 403  # must change password first; and operators do not manage users

    patch = {"role": "investigator", "areas": ["south"], "display_name": "Dora D."}
    async with http.client.patch(url("/api/users/dora"), json=patch, headers=admin) as r:
        assert r.status == 200
        changed = await r.json()
    assert changed["role"] == "investigator" and changed["areas"] == ["south"] and changed["display_name"] == "Dora D."
    async with http.client.get(url("/api/session"), headers=dora_auth) as r:
        assert (await r.json())["user"]["role"] == "investigator"
    async with http.client.patch(url("/api/users/dora"), json={"role": "chief", "display_name": "X"}, headers=admin) as r:
        assert r.status == 400
    assert (await http.identity.get_user("dora")).display_name == "Dora D."  # refused request changed nothing
    async with http.client.patch(url("/api/users/root"), json={"disabled": True}, headers=admin) as r:
        assert r.status == 400 and "own account" in (await r.json())["error"]
    async with http.client.patch(url("/api/users/nobody"), json={"disabled": True}, headers=admin) as r:
        assert r.status == 404

    async with http.client.post(url("/api/users/dora/reset-password"), headers=admin) as r:
        assert r.status == 200
        new_temp = (await r.json())["password"]
    async with http.client.get(url("/api/session"), headers=dora_auth) as r:
        assert r.status == 401  # reset ended her sessions
    assert (await http.login("dora", new_temp))[0] == 201

    async with http.client.patch(url("/api/users/dora"), json={"disabled": True}, headers=admin) as r:
        assert r.status == 200 and (await r.json())["disabled"]
    assert (await http.login("dora", new_temp))[0] == 403

    by_root = {e["action"] for e in await audit.query(user="root")}
    assert {"user.create", "user.set-role", "user.set-areas", "user.set-name", "user.reset-password", "user.disable"} <= by_root


async def test_http_secure_cookie_over_tls(http: Http, tmp_path: Path) -> None:
    """The same app served over TLS (self-signed certificate) marks the cookie Secure."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    await make_user(http.identity)
    tls = TestServer(http.server.app, scheme="https")
    await tls.start_server(ssl=server_ctx)
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(
                str(tls.make_url("/api/session")), json={"username": "alice", "password": GOOD}, ssl=False
            ) as r:
                assert r.status == 201
                cookie = r.headers["Set-Cookie"]
    finally:
        await tls.close()
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
