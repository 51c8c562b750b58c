"""Composition root: builds the aiohttp application and owns every long-lived resource.

Resources are ``cleanup_ctx`` generators, started in order before the first request and
closed in reverse order at shutdown. They are all appended in ``build_app``, in the one order
that reads top to bottom; route modules' ``setup`` functions only add routes (a test fails
when any other module appends to ``cleanup_ctx`` or the shutdown signals).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from gateway.access.agency import agency_access_ctx
from gateway.access.audit import AuditLog
from gateway.access.checkpoints import checkpointer
from gateway.access.control import AccessControl
from gateway.access.directory import Directory
from gateway.access import headers as security_headers
from gateway.access.guard import public
from gateway.access.identity import Identity
from gateway.access.middleware import access_middleware
from gateway.access.policy import Policy
from gateway.analytics import analytics_ctx
from gateway.api import analytics as analytics_api
from gateway.api import audit as audit_api
from gateway.api import camera_health as camera_health_api
from gateway.api import cluster as cluster_api
from gateway.api import cameras as cameras_api
from gateway.api import error_middleware
from gateway.api import exports as exports_api
from gateway.api import incidents as incidents_api
from gateway.api import tours as tours_api
from gateway.api import health as health_api
from gateway.api import inventory as inventory_api
from gateway.api import masks as masks_api
from gateway.api import managed_cameras as managed_cameras_api
from gateway.api import metrics as metrics_api
from gateway.api import openapi as openapi_api
from gateway.api.openapi import Media, api
from gateway.api import plates as plates_api
from gateway.api import ptz as ptz_api
from gateway.api import pushes as pushes_api
from gateway.api import agency as agency_api
from gateway.api import recordings as recordings_api
from gateway.api import archive as archive_api
from gateway.api import replication as replication_api
from gateway.api import session as session_api
from gateway.api import sign_in_redirect as sign_in_redirect_api
from gateway.api import users as users_api
from gateway.api import walls as walls_api
from gateway.api import map as map_api
from gateway.appkeys import (
    ACCESS, AUDIT, CAMERAS, CONFIG, DATABASE, EVENTS, EVENTS_CHANNEL, IDENTITY, PLUGINS, POLICY, POSITIONS, SIGNER, STARTED_AT,
)
from gateway.cameras import CameraManager
from gateway.cluster.forward import CLUSTER_NODE, forward_middleware, inbound_middleware
from gateway.cluster.wiring import cluster_ctx, cluster_role_ctx
from gateway.ptz import ptz_ctx
from gateway.ptz_positions import PositionLog
from gateway.config import Config
from gateway.datadir import private_dir
from gateway.db import Database
from gateway.dispatch import notify, push
from gateway.events import EventBus
from gateway.incidents import incidents_ctx
from gateway.ptz_tours import tours_ctx
from gateway.health import health_ctx
from gateway.evidence.requests import exports_ctx
from gateway.evidence.signing import gateway_signer
from gateway.live import hls, rtsp_out, webrtc
from gateway.masks import attach as attach_masks
from gateway.onvif_face.server import onvif_face_ctx
from gateway.plugin_facade import GATEWAY_FACADE, Gateway
from gateway.webroot import WEBCLIENT_DIR
from gateway.plugins import Plugins
from gateway.plates.store import plates_ctx
from gateway.reload import reload_ctx
from gateway.recording.reads import playback_reads_ctx
from gateway.recording.service import recording_ctx

logger = logging.getLogger(__name__)

__all__ = ["WEBCLIENT_DIR", "build_app", "ssl_context"]


async def _events_ctx(app: web.Application) -> AsyncIterator[None]:
    bus = EventBus(sink=app[PLUGINS].handle_event)
    app[EVENTS] = bus
    yield
    await bus.aclose()


def _log_first_admin(username: str, password: str) -> None:
    logger.warning("created the first account %r with the one-time password %r; change it at first sign-in", username, password)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Database, audit log, identity and access control: the security core, started first."""
    config = app[CONFIG]
    await asyncio.to_thread(private_dir, config.data_dir)  # 0700 before the keys and the database go in
    signer = await asyncio.to_thread(gateway_signer, config, WEBCLIENT_DIR)
    app[SIGNER] = signer
    async with Database(config.database_url) as db:
        app[DATABASE] = db
        async with (
            AuditLog(db, sink=app[EVENTS].publish) as audit,
            # exits after the audit entries of shutdown, so its last checkpoint covers them
            checkpointer(config, db, signer, app[EVENTS].publish),
        ):
            app[AUDIT] = audit
            # sign-in providers of [auth.*] (LDAP, OIDC): checked against roles.toml before serving
            # (in a thread: a provider's check may read a file, the OIDC client secret)
            directory = await asyncio.to_thread(
                Directory.from_config, config, app[PLUGINS].auth_providers(), frozenset(app[POLICY].roles)
            )
            identity = Identity(db, audit, config.security, app[POLICY], hasher=app.get(PASSWORD_HASHER), directory=directory)
            app[IDENTITY] = identity
            async with (
                AccessControl(db=db, policy=app[POLICY], audit=audit, config=config, sessions=identity) as access,
                directory.running(identity) if directory is not None else contextlib.nullcontext(),
            ):
                app[ACCESS] = access
                first = await identity.ensure_first_admin()
                if first is not None:
                    app[FIRST_ADMIN_HOOK](*first)
                purger = asyncio.create_task(_purge_sessions(identity), name="session-purge")
                await audit.record("gateway.start", detail={"cameras": len(config.cameras)})
                try:
                    yield
                finally:
                    purger.cancel()
                    await audit.record("gateway.stop")


async def _purge_sessions(identity: Identity) -> None:
    while True:
        await asyncio.sleep(3600)
        try:
            await identity.purge()
        except Exception:
            logger.exception("purging ended sessions failed")


async def _cameras_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    keep_days = max((c.retention_days for c in config.cameras), default=45)
    async with PositionLog(app[DATABASE], keep_days=keep_days) as positions:
        app[POSITIONS] = positions
        # a cluster node runs only the cameras it owns (gateway.cluster.node decides)
        manager = CameraManager(
            config, app[PLUGINS].camera_vendors(), app[EVENTS], positions=positions, owns_all=not config.cluster.enabled
        )
        app[CAMERAS] = manager
        if CLUSTER_NODE in app:
            app[CLUSTER_NODE].bind(manager)
        await attach_masks(app, manager)  # privacy masks in place before any camera starts
        async with manager:
            logger.info("started %d cameras", len(manager))
            yield


async def _event_sinks_ctx(app: web.Application) -> AsyncIterator[None]:
    # the configured event sinks ([events.sinks.<id>]); plugins see the facade, not the app
    async with app[PLUGINS].event_sinks_running(app[GATEWAY_FACADE]):
        yield


async def _plugins_started_ctx(app: web.Application) -> AsyncIterator[None]:
    # gateway_startup once every service of the facade exists; gateway_shutdown before any stops
    async with app[PLUGINS].started(app[GATEWAY_FACADE]):
        yield


FIRST_ADMIN_HOOK = web.AppKey("first_admin_hook", object)
#: Tests pass a cheap Argon2 parameter set; production keeps argon2-cffi's defaults.
PASSWORD_HASHER = web.AppKey("password_hasher", object)


def build_app(
    config: Config,
    plugins: Plugins,
    policy: Policy,
    *,
    on_first_admin: Callable[[str, str], None] = _log_first_admin,
    password_hasher: object | None = None,
) -> web.Application:
    """The whole gateway. ``on_first_admin`` is told the one-time credentials of the
    first account when the gateway starts with no accounts at all."""
    # a cluster node checks a forwarded request's hop before the guard, and forwards what
    # runs on another node only after the guard has authorised it here
    app = web.Application(
        middlewares=[error_middleware, inbound_middleware, access_middleware, forward_middleware], client_max_size=1024 * 1024
    )
    app[CONFIG] = config
    app[PLUGINS] = plugins
    app[POLICY] = policy
    app[GATEWAY_FACADE] = Gateway(app)
    app[FIRST_ADMIN_HOOK] = on_first_admin
    if password_hasher is not None:
        app[PASSWORD_HASHER] = password_hasher
    app[STARTED_AT] = time.monotonic()
    security_headers.setup(app)  # CSP, nosniff, no-store, HSTS on every response
    app.cleanup_ctx.append(_events_ctx)
    app.cleanup_ctx.append(_store_ctx)
    # node or single node: fencing and cluster-wide jobs, before any service uses them
    app.cleanup_ctx.append(cluster_role_ctx)
    # agencies' access requests: grants through the access core, expired on time
    app.cleanup_ctx.append(agency_access_ctx)
    app.cleanup_ctx.append(_cameras_ctx)
    # cameras managed through the API join those of cameras.toml; reloads (SIGHUP) apply here
    app.cleanup_ctx.append(reload_ctx)
    # after the cameras: on shutdown recorders store their last segment before cameras stop
    app.cleanup_ctx.append(recording_ctx)
    # analyzers read the cameras' public hubs: started after them, stopped before them
    app.cleanup_ctx.append(analytics_ctx)
    # plate reads (crops in the recordings' storage): listens to the analyzers, stops before them
    app.cleanup_ctx.append(plates_ctx)
    # camera health reads the cameras and the recorders: after both, stopped before them
    app.cleanup_ctx.append(health_ctx)
    # segment reads are audited until it stops, so it stops before the audit log
    app.cleanup_ctx.append(playback_reads_ctx)
    # the RTSP re-stream ([rtsp-out]): its plays end, audited, before cameras and the audit log
    app.cleanup_ctx.append(rtsp_out.rtsp_out_ctx)
    # event sinks: they see the events of every service started after them
    app.cleanup_ctx.append(_event_sinks_ctx)
    # evidence exports read the recordings: after the recording service, stopped before it
    app.cleanup_ctx.append(exports_ctx)
    # the PTZ service drives the cameras: after them
    app.cleanup_ctx.append(ptz_ctx)
    # the ONVIF face ([onvif-server]) steers through the PTZ service: after it, stopped before it
    app.cleanup_ctx.append(onvif_face_ctx)
    app.cleanup_ctx.append(hls.hls_ctx)
    app.cleanup_ctx.append(push.push_ctx)
    # incidents place holds and push: after the recording and push services
    app.cleanup_ctx.append(incidents_ctx)
    # patrol tours steer through the PTZ service: started after it, stopped before it
    app.cleanup_ctx.append(tours_ctx)
    # plugins' gateway_startup once every service exists (the facade reaches them all);
    # gateway_shutdown before any of them stops
    app.cleanup_ctx.append(_plugins_started_ctx)
    # last: the node takes cameras once every service that follows them listens, and on
    # shutdown gives them away first, while those services still store what they hold
    app.cleanup_ctx.append(cluster_ctx)
    # objects that live as long as the application; on shutdown, before aiohttp waits for open
    # requests, live sessions end, blocked playlist requests return and events sockets close
    app[webrtc.WEBRTC_SESSIONS] = webrtc.WebRtcSessions(config.live)
    app[EVENTS_CHANNEL] = notify.EventsChannel(app)
    app.on_shutdown.append(webrtc.close_on_shutdown)
    app.on_shutdown.append(hls.close_on_shutdown)
    app.on_shutdown.append(notify.close_on_shutdown)
    # routes only, from here on
    session_api.setup(app)
    sign_in_redirect_api.setup(app)  # OIDC: /api/session/providers, /api/session/redirect/...
    users_api.setup(app)
    audit_api.setup(app)
    health_api.setup(app)
    camera_health_api.setup(app)
    walls_api.setup(app)
    map_api.setup(app)
    metrics_api.setup(app)
    inventory_api.setup(app)  # before the camera routes, whose {camera_id} would match "inventory"
    managed_cameras_api.setup(app)  # /api/cameras/managed: before the camera routes too
    cameras_api.setup(app)
    masks_api.setup(app)
    recordings_api.setup(app)
    archive_api.setup(app)
    replication_api.setup(app)
    exports_api.setup(app)
    ptz_api.setup(app)
    webrtc.setup(app)
    rtsp_out.setup(app)
    hls.setup(app)
    pushes_api.setup(app)
    agency_api.setup(app)
    notify.setup(app)
    incidents_api.setup(app)
    plates_api.setup(app)
    tours_api.setup(app)
    analytics_api.setup(app)
    cluster_api.setup(app)
    openapi_api.setup(app)  # GET /api/openapi.json, generated from every route's declaration
    plugins.add_routes(app[GATEWAY_FACADE])
    if WEBCLIENT_DIR.is_dir():
        app.router.add_get("/", _index)
        app.router.add_static("/static/", WEBCLIENT_DIR, name="static", follow_symlinks=False)
    return app


@api(summary="The web client", responses={200: Media("text/html")}, tag="webclient")
@public
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
