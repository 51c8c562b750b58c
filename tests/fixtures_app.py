"""Fixtures that run a real gateway (real aiohttp server on loopback, real cameras)."""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import config as config_mod
from gateway.access.policy import load_roles
from gateway.app import build_app
from gateway.appkeys import CAMERAS, IDENTITY
from gateway.plugins import Plugins, load_plugins

ROOT = Path(__file__).resolve().parent.parent
#: Argon2id with small parameters: every test gateway signs users in, and the default
#: parameters (memory-hard on purpose) would cost seconds per test. Production is unchanged.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
TEST_PASSWORD = "Tr0ub4dor-and-3-horses"


@dataclass
class RunningGateway:
    app: web.Application
    server: TestServer
    #: Signed in as ``tester`` (operator, all areas), CSRF header set: most tests need no more.
    session: aiohttp.ClientSession
    conf_dir: Path
    anonymous: aiohttp.ClientSession
    _sessions: list[aiohttp.ClientSession]

    async def api_token(self, username: str) -> str:
        """A bearer token for an existing user (for clients in other processes)."""
        async with self.anonymous.post(
            self.url + "/api/session", json={"username": username, "password": TEST_PASSWORD, "kind": "token"}
        ) as resp:
            assert resp.status == 201, await resp.text()
            return (await resp.json())["token"]

    async def sign_in(
        self, username: str, *, role: str = "operator", areas: tuple[str, ...] = (), all_areas: bool = False,
        create: bool = True,
    ) -> aiohttp.ClientSession:
        """Create the user (unless ``create`` is false), sign in through the real API and
        change the first password: a session the way a browser holds it."""
        if create:
            await self.app[IDENTITY].create_user(username, role=role, areas=areas, all_areas=all_areas, password=TEST_PASSWORD)
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self._sessions.append(session)
        async with session.post(self.url + "/api/session", json={"username": username, "password": TEST_PASSWORD}) as resp:
            assert resp.status == 201, await resp.text()
            body = await resp.json()
        session.headers["X-CSRF-Token"] = body["csrf_token"]
        if body["must_change_password"]:
            new = TEST_PASSWORD + "!"
            async with session.post(
                self.url + "/api/session/password", json={"old_password": TEST_PASSWORD, "new_password": new}
            ) as resp:
                assert resp.status == 200, await resp.text()
            # sign in again with the new password, then set it back for the next sign-in
            async with session.post(
                self.url + "/api/session/password", json={"old_password": new, "new_password": TEST_PASSWORD}
            ) as resp:
                assert resp.status in (200, 400), await resp.text()
        return session

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def cameras(self):  # -> CameraManager
        return self.app[CAMERAS]

    async def get_json(self, path: str, **kw: Any) -> Any:
        async with self.session.get(self.url + path, **kw) as resp:
            assert resp.status == 200, f"GET {path}: {resp.status} {await resp.text()}"
            return await resp.json()

    async def wait_online(self, *camera_ids: str, timeout: float = 15.0) -> None:
        """Wait until the cameras (all, if none named) report online with a picture."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            cams = {c["id"]: c for c in await self.get_json("/api/cameras")}
            wanted = camera_ids or tuple(cams)
            if all(cams[c]["state"] == "online" and cams[c]["codec"] for c in wanted):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"cameras not online in {timeout}s: {cams}")
            await asyncio.sleep(0.1)


def camera_toml(camera_id: str, vendor: str, area: str = "centre", **options: Any) -> str:
    """A ``[[camera]]`` table for ``cameras.toml``."""
    lines = [f'[[camera]]\nid = "{camera_id}"\nvendor = "{vendor}"\narea = "{area}"\n']
    if options:
        lines.append("[camera.options]\n")
        for key, value in options.items():
            lines.append(f"{key.replace('_', '-')} = {_toml_value(value)}\n")
    return "".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


GatewayFactory = Callable[..., Awaitable[RunningGateway]]

#: Set (e.g. by .ci/run) to run the database-backed tests against PostgreSQL:
#: ``postgresql+asyncpg://postgres@127.0.0.1:55432/postgres``. Each test gets a fresh database.
PG_ENV = "CITYGATE_TEST_DATABASE_URL"


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database when configured."""
    admin_url = os.environ.get(PG_ENV)
    if not admin_url:
        yield f"sqlite+aiosqlite:///{tmp_path / 'data' / 'citygate.db'}"
        return
    import asyncpg

    name = f"citygate_test_{uuid.uuid4().hex[:12]}"
    dsn = admin_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def start_gateway(
    conf: Path, cameras: str, gateway_toml: str = "", plugins: Plugins | None = None, port: int | None = None,
    database_url: str | None = None,
) -> RunningGateway:
    """A gateway configured in the new directory ``conf`` (its data beneath it), serving on
    loopback, with ``tester`` (operator, every area) signed in. ``database_url``: a database
    other than the data dir's SQLite file."""
    conf.mkdir()
    (conf / "cameras.toml").write_text(textwrap.dedent(cameras))
    base = '[server]\ndata-dir = "data"\n'
    if "[ingest]" not in gateway_toml:  # a test may set its own ingest timeouts
        base += '[ingest]\nbackoff-initial = 0.2\nbackoff-max = 2.0\nread-timeout = 3.0\n'
    if database_url is not None:
        base += f'[database]\nurl = "{database_url}"\n'
    (conf / "gateway.toml").write_text(base + textwrap.dedent(gateway_toml))
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    plugins = plugins or load_plugins()
    backends = plugins.storage_backends()
    config = config_mod.load(conf, vendors=plugins.camera_vendors(), storage_backends=backends or None)
    app = build_app(config, plugins, load_roles(conf), on_first_admin=lambda *_: None, password_hasher=FAST_HASHER)
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    anonymous = aiohttp.ClientSession()
    gw = RunningGateway(app, server, anonymous, conf, anonymous, [anonymous])
    try:
        gw.session = await gw.sign_in("tester", role="operator", all_areas=True)
    except BaseException:
        await stop_gateway(gw)
        raise
    return gw


async def stop_gateway(gw: RunningGateway) -> None:
    for session in gw._sessions:
        await session.close()
    await gw.server.close()


@pytest.fixture
async def make_gateway(tmp_path: Path, database_url: str) -> AsyncIterator[GatewayFactory]:
    """``await make_gateway(cameras_toml, gateway_toml="", plugins=None, port=None)`` → a running
    gateway (on ``port`` when given: a callback URL registered at an OpenID provider names it)."""
    running: list[RunningGateway] = []

    async def factory(cameras: str, gateway_toml: str = "", plugins: Plugins | None = None, port: int | None = None) -> RunningGateway:
        # the first gateway of a test uses CI's PostgreSQL when it is given
        url = database_url if not running and os.environ.get(PG_ENV) else None
        gw = await start_gateway(tmp_path / f"conf{len(running)}", cameras, gateway_toml, plugins, port, url)
        running.append(gw)
        return gw

    try:
        yield factory
    finally:
        for gw in reversed(running):
            await stop_gateway(gw)
