"""The cluster's part of the composition root: ``cluster_role_ctx`` makes this process a
node (or a single node) before any service that runs jobs or writes recordings starts;
``cluster_ctx`` starts taking cameras once every service that follows cameras listens."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway.access.identity import Identity
from gateway.api.cameras import view
from gateway.appkeys import ACCESS, CONFIG, DATABASE, EVENTS, IDENTITY
from gateway.cluster.forward import CLUSTER_HTTP, CLUSTER_NODE, CLUSTER_SECRET, OwnerLink
from gateway.cluster.node import ClusterNode
from gateway.cluster.outbox import ClusterEvents
from gateway.cluster.role import CLUSTER_ROLE, SINGLE_NODE
from gateway.config import GATEWAY_FILE, Config
from gateway.errors import ConfigError
from gateway.onvif_face.server import ONVIF_FACE

logger = logging.getLogger(__name__)

MIN_SECRET_BYTES = 32


def read_secret(config: Config) -> bytes:
    """The shared secret that signs node-to-node requests; refused if short or readable by others."""
    display = str(Path(config.root) / GATEWAY_FILE)
    assert config.cluster.secret_file is not None
    path = Path(config.root) / config.cluster.secret_file
    try:
        mode = path.stat().st_mode
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(display, "cluster.secret-file", f"cannot read {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ConfigError(display, "cluster.secret-file", f"{path} is readable or writable by others; chmod 600 it")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(display, "cluster.secret-file", f"{path} holds fewer than {MIN_SECRET_BYTES} bytes")
    return secret


async def cluster_role_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the database, before every service: who fences writes and runs jobs."""
    config: Config = app[CONFIG]
    if not config.cluster.enabled:
        app[CLUSTER_ROLE] = SINGLE_NODE
        yield
        return
    app[CLUSTER_SECRET] = read_secret(config)
    node = ClusterNode(app[DATABASE], config.cluster, app[EVENTS])
    node.describe = view  # what the other nodes' camera lists show of the cameras running here
    node.rtsp_port = config.rtsp_out.port if config.rtsp_out.enabled else None
    app[CLUSTER_NODE] = node
    app[CLUSTER_ROLE] = node
    yield


async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
    """After every service that follows cameras: events across nodes, then ownership."""
    node = app.get(CLUSTER_NODE)
    if node is None:
        yield
        return
    identity: Identity = app[IDENTITY]
    access = app[ACCESS]

    async def access_changed() -> None:
        identity.forget_cached()
        await access.reload_grants()
        access.recheck_soon()

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=60)
    async with (
        aiohttp.ClientSession(timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as http,
        ClusterEvents(app[DATABASE], node.node, app[EVENTS], on_access_change=access_changed) as outbox,
    ):
        app[CLUSTER_HTTP] = http
        face = app.get(ONVIF_FACE)
        if face is not None:  # the ONVIF face passes snapshot requests to the node running the camera
            face.cluster = OwnerLink(node, app[CLUSTER_SECRET], http)
            node.onvif_url = face.cluster_url(urlsplit(node.url).hostname or "127.0.0.1")
        sweep = asyncio.create_task(node.jobs.run("events-sweep", outbox.sweep_forever), name="cluster-events-sweep")
        try:
            async with node:
                yield
        finally:
            if face is not None:
                face.cluster = None
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweep
