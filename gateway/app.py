"""Composition root: builds the aiohttp application and owns every long-lived resource.

Resources are ``cleanup_ctx`` generators, started in order before the first request and
closed in reverse order at shutdown.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from gateway.api import cameras as cameras_api
from gateway.api import error_middleware
from gateway.api import health as health_api
from gateway.appkeys import CAMERAS, CONFIG, EVENTS, PLUGINS, STARTED_AT
from gateway.cameras import CameraManager
from gateway.config import Config
from gateway.events import EventBus
from gateway.live import webrtc
from gateway.plugins import Plugins

logger = logging.getLogger(__name__)

WEBCLIENT_DIR = Path(__file__).resolve().parent.parent / "webclient"


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    bus = EventBus(sink=app[PLUGINS].handle_event)
    app[EVENTS] = bus
    yield
    await bus.aclose()


async def _cameras_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    manager = CameraManager(config, app[PLUGINS].camera_vendors(), app[EVENTS])
    app[CAMERAS] = manager
    async with manager:
        logger.info("started %d cameras", len(manager))
        yield


async def _plugins_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[PLUGINS].startup(app)
    yield
    await app[PLUGINS].shutdown(app)


def build_app(config: Config, plugins: Plugins) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[PLUGINS] = plugins
    app[STARTED_AT] = time.monotonic()
    app.cleanup_ctx.append(_events_ctx)
    app.cleanup_ctx.append(_cameras_ctx)
    app.cleanup_ctx.append(_plugins_ctx)
    health_api.setup(app)
    cameras_api.setup(app)
    webrtc.setup(app)
    plugins.add_routes(app)
    if WEBCLIENT_DIR.is_dir():
        app.router.add_get("/", _index)
        app.router.add_static("/static/", WEBCLIENT_DIR, name="static", follow_symlinks=False)
    return app


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEBCLIENT_DIR / "index.html")


def ssl_context(config: Config) -> ssl.SSLContext | None:
    server = config.server
    if not server.tls_cert:
        return None
    root = Path(config.root)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(root / server.tls_cert, root / server.tls_key if server.tls_key else None)
    return ctx
