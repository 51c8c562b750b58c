"""Fixtures that run a real gateway (real aiohttp server on loopback, real cameras)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import config as config_mod
from gateway.app import build_app
from gateway.appkeys import CAMERAS
from gateway.plugins import Plugins, load_plugins


@dataclass
class RunningGateway:
    app: web.Application
    server: TestServer
    session: aiohttp.ClientSession
    conf_dir: Path

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


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """``await make_gateway(cameras_toml, gateway_toml="", plugins=None)`` → a running gateway."""
    running: list[RunningGateway] = []

    async def factory(cameras: str, gateway_toml: str = "", plugins: Plugins | None = None) -> RunningGateway:
        conf = tmp_path / f"conf{len(running)}"
        conf.mkdir()
        (conf / "cameras.toml").write_text(textwrap.dedent(cameras))
        base = '[server]\ndata-dir = "data"\n[ingest]\nbackoff-initial = 0.2\nbackoff-max = 2.0\nread-timeout = 3.0\n'
        (conf / "gateway.toml").write_text(base + textwrap.dedent(gateway_toml))
        plugins = plugins or load_plugins()
        backends = plugins.storage_backends()
        config = config_mod.load(conf, vendors=plugins.camera_vendors(), storage_backends=backends or None)
        app = build_app(config, plugins)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession()
        gw = RunningGateway(app, server, session, conf)
        running.append(gw)
        return gw

    try:
        yield factory
    finally:
        for gw in reversed(running):
            await gw.session.close()
            await gw.server.close()
