"""The authenticated RTSP/RTSPS re-stream (``[rtsp-out]``): every camera's public hub,
masks applied, at ``rtsp://host:port/cameras/{id}`` and ``/cameras/{id}/sub``.

Served by ``gateway.rtsp.server`` with this module as its gate. No anonymous access, ever:
a request without credentials is answered 401 with Digest challenges. Two ways in:

* **Digest** (RFC 7616; SHA-256, MD5 only with ``allow-md5``) with the account's name and
  its **RTSP secret**. Digest needs the password (or ``H(user:realm:password)``) on the
  server, and Citygate keeps only Argon2 hashes of passwords, so the Digest password is not
  the account's password but a secret derived from it: ``HMAC(key, username, password
  hash)`` with a key of this gateway (``rtsp-digest.key`` in the data dir; in a cluster,
  a key every node derives from the cluster's secret, so a secret works on every node). An
  administrator issues it (``POST /api/users/{name}/rtsp-secret``, audited); it is random
  to anyone without the key, is never stored, is worthless elsewhere, and changes when
  the account's password is changed or reset, which ends the sessions made with it.
* **Bearer token** for clients that cannot do Digest: an API token of the account
  (``POST /api/session`` with ``kind = "token"``) as ``?token=`` in the URL or in
  ``Authorization: Bearer``. URLs end up in logs and process lists, so prefer Digest,
  give the token its own name, and revoke it when done; the gateway never logs the query.
  Later requests of the same RTSP connection (SETUP, PLAY on the track URL, which carries
  no query) are made as the account the connection authenticated as, re-checked each time.

The policy decides per camera exactly as for WHEP (``live.view`` on the camera's area or a
grant). Every session is audited (``live.start`` / ``live.stop`` with ``kind`` and
``protocol`` "rtsp", transport, duration, client address and user agent); refusals
(``live.view`` refused) too, except the first challenge every client gets before it sends
credentials. Each play is tracked by ``AccessControl``, so a revoked grant, a disabled
account, a changed role or areas, or a revoked token ends it within two seconds.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from aiohttp import web

from gateway.access.control import AccessControl
from gateway.access.guard import Principal, requires
from gateway.api.openapi import JsonObject, api
from gateway.access.identity import Identity
from gateway.access.middleware import client_address
from gateway.access.relay import ON_BEHALF_HEADER, on_behalf_text
from gateway.access.guard import principal as request_principal
from gateway.appkeys import ACCESS, AUDIT, CAMERAS, CONFIG, DATABASE, IDENTITY
from gateway.cameras import Camera, CameraManager
from gateway.cluster.forward import CLUSTER_NODE, CLUSTER_SECRET
from gateway.cluster.node import ClusterNode
from gateway.config import Config, loopback_host
from gateway.datadir import private_file
from gateway.db import Database, users
from gateway.errors import Forbidden, Moved, NotFound, StaleCredentials, Unauthorized, Unavailable
from gateway.interfaces import StreamProfile
from gateway.media.hub import HubReader
from gateway.media.packet import StreamInfo
from gateway.rtsp.digest import DigestAuth, parse_authorization, parse_bearer
from gateway.rtsp.server import HubSource, RtspPlay, RtspRequest, RtspServer

logger = logging.getLogger(__name__)

PROFILES = ("main", "sub")
KEY_FILE = "rtsp-digest.key"
#: What a cluster's nodes derive their common credentials key from the cluster secret with.
CLUSTER_KEY_LABEL = b"citygate: the key of RTSP and ONVIF device secrets"


def stream_uri(config: Config, camera_id: str, profile: str = "main") -> str:
    """The re-stream URL of ``camera_id`` (``profile`` "main" or "sub") as clients see it."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (known: main, sub)")
    out = config.rtsp_out
    scheme = "rtsps" if out.tls_cert else "rtsp"
    host = out.public_host or out.bind
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    path = f"/cameras/{quote(camera_id, safe='')}"
    if profile == "sub":
        path += "/sub"
    return f"{scheme}://{host}:{out.port}{path}"


def parse_path(path: str) -> tuple[str, StreamProfile] | None:
    """``/cameras/{id}`` -> (id, main), ``/cameras/{id}/sub`` -> (id, sub), else None."""
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "cameras" and parts[1]:
        return unquote(parts[1]), StreamProfile.MAIN
    if len(parts) == 3 and parts[0] == "cameras" and parts[1] and parts[2] == "sub":
        return unquote(parts[1]), StreamProfile.SUB
    return None


def rtsp_secret(key: bytes, username: str, password_hash: str) -> str:
    """The account's Digest secret: derived, never stored; changes with the password."""
    mac = hmac.new(key, b"citygate rtsp secret\0" + username.encode() + b"\0" + password_hash.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii")[:32]


async def credentials_key(app: web.Application) -> bytes:
    """The key of the accounts' RTSP (and ONVIF) secrets. Every node of a cluster derives
    the same one from the cluster's secret: a secret issued on any node works on all of
    them, also where the re-stream redirects a client to the camera's node. A single
    gateway keeps its own key file."""
    cluster_secret = app.get(CLUSTER_SECRET)
    if cluster_secret is not None:
        return hmac.new(cluster_secret, CLUSTER_KEY_LABEL, hashlib.sha256).digest()
    return await asyncio.to_thread(load_key, app[CONFIG].data_dir / KEY_FILE)


def load_key(path: Path) -> bytes:
    """The gateway's RTSP key (32 random bytes, mode 0600), made on first use. Blocking."""
    if not path.exists():
        private_file(path)
        with open(path, "r+b") as f:
            if not f.read(1):
                f.write(secrets.token_bytes(32))
    data = path.read_bytes()
    if len(data) < 16:
        raise ValueError(f"{path}: the RTSP key is too short; delete it to make a new one")
    return data


@dataclass(frozen=True, slots=True)
class Caller:
    """Who an RTSP connection authenticated as."""

    principal: Principal
    user_agent: str
    #: For Digest callers: the principal as of now (None once disabled or re-keyed).
    refresh: Callable[[], Awaitable[Principal | None]] | None = None
    on_behalf_of: str | None = None


class CameraSource:
    """A camera's public main hub, or its sub stream (never for a masked camera)."""

    def __init__(self, camera: Camera, profile: StreamProfile) -> None:
        self.camera = camera
        self.profile = profile

    async def wait_info(self, timeout: float) -> StreamInfo | None:
        if self.profile == StreamProfile.MAIN:
            return await HubSource(self.camera.hub).wait_info(timeout)
        reader = await self.open_reader("rtsp describe")
        try:
            return reader.info
        finally:
            reader.close()  # the sub stream lingers, so PLAY finds it running

    async def open_reader(self, name: str) -> HubReader:
        reader, _ = await self.camera.open_live_reader(name, self.profile)
        return reader


@dataclass(slots=True)
class _Play:
    camera: str
    profile: str
    caller: Caller
    ticket: Any


class RtspOut:
    """The re-stream: an ``RtspServer`` whose gate is this object. An async context manager."""

    def __init__(
        self, config: Config, *, cameras: CameraManager, access: AccessControl, identity: Identity, db: Database,
        key: bytes, cluster: ClusterNode | None = None,
    ) -> None:
        self.config = config
        #: In a cluster: who runs each camera, to redirect clients there.
        self.cluster = cluster
        self.out = config.rtsp_out
        self.cameras = cameras
        self.access = access
        self.audit = access.audit
        self.identity = identity
        self.db = db
        self._key = key
        self.digest = DigestAuth(
            hmac.new(key, b"nonce", hashlib.sha256).digest(), realm=self.out.realm, allow_md5=self.out.allow_md5,
            lifetime=self.out.nonce_lifetime,
        )
        self._dummy = rtsp_secret(key, "", "")
        self._plays: dict[RtspPlay, _Play] = {}
        self.server = RtspServer(
            self.out.bind, self.out.port, gate=self, udp=self.out.udp, ssl=_ssl_context(config),
        )

    async def __aenter__(self) -> RtspOut:
        await self.server.__aenter__()
        logger.info("rtsp-out: serving %d cameras on %s:%d", len(self.cameras), self.out.bind, self.server.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()

    @property
    def port(self) -> int:
        return self.server.port

    def plays(self) -> list[tuple[str, str, str]]:
        """(camera, profile, username) of every play, for monitoring and tests."""
        return [(p.camera, p.profile, p.caller.principal.username) for p in self._plays.values()]

    def secret_for(self, username: str, password_hash: str) -> str:
        return rtsp_secret(self._key, username, password_hash)

    # -- the gate ----------------------------------------------------------------------
    def challenges(self, *, stale: bool = False) -> list[str]:
        return self.digest.challenges(stale=stale)

    async def authorize(self, request: RtspRequest, previous: Caller | None) -> tuple[Caller, CameraSource]:
        client = request.peer.rsplit(":", 1)[0].strip("[]")
        caller = await self._authenticate(request, previous, client)
        who = caller.principal
        target = parse_path(request.path)
        if target is None:
            raise NotFound(f"no stream at {request.path}")
        camera_id, profile = target
        try:
            camera = self.cameras.get(camera_id)
        except NotFound:
            await self._refused(who.username, client, camera_id, 404, "no such camera", caller)
            raise
        decision = self.access.decide(who, "live.view", camera_id)
        if not decision:
            await self._refused(who.username, client, camera_id, 403, decision.reason, caller)
            raise Forbidden(decision.reason)
        if profile == StreamProfile.SUB and StreamProfile.SUB not in camera.profiles:
            if camera.masked or StreamProfile.SUB in camera.vendor.profiles():
                reason = "the camera has privacy masks: only its masked main stream is served"
                await self._refused(who.username, client, camera_id, 403, reason, caller)
                raise Forbidden(reason)
            await self._refused(who.username, client, camera_id, 404, "the camera has no sub stream", caller)
            raise NotFound(f"camera {camera_id} has no sub stream")
        elsewhere = self._elsewhere(request, camera_id)
        if elsewhere is not None:
            raise Moved(f"camera {camera_id} runs on another node", elsewhere)
        return caller, CameraSource(camera, profile)

    def _elsewhere(self, request: RtspRequest, camera_id: str) -> str | None:
        """The re-stream URL on the node that runs the camera, when that is another node of
        the cluster. The caller was authorised here; the owner checks it again and audits
        the play."""
        node = self.cluster
        if node is None or self.cameras.is_running(camera_id):
            return None
        owner = node.owner(camera_id)
        if owner is None:
            raise Unavailable(f"camera {camera_id} is moving between nodes; try again in a few seconds")
        if owner.node == node.node:
            return None  # starting here
        info = node.node_info(owner.node)
        if info is None or info.rtsp_port is None:
            raise Unavailable(f"the node running camera {camera_id} ({owner.node}) serves no RTSP re-stream")
        host = urlsplit(info.url).hostname or ""
        if loopback_host(host):  # workers of one machine: the address the client used
            host = urlsplit(request.uri).hostname or host
        if ":" in host:
            host = f"[{host}]"
        query = urlsplit(request.uri).query
        scheme = "rtsps" if self.out.tls_cert else "rtsp"
        return f"{scheme}://{host}:{info.rtsp_port}{request.path}" + (f"?{query}" if query else "")

    async def _authenticate(self, request: RtspRequest, previous: Caller | None, client: str) -> Caller:
        agent = request.headers.get("user-agent", "")[:200]
        header = request.headers.get("authorization", "")
        token = request.query.get("token") or (parse_bearer(header) if header else None)
        if token:
            principal = await self.identity.authenticate(token)
            if principal is not None and principal.kind != "token":
                principal = None  # a browser session's cookie never travels in a URL
            if principal is None:
                await self._refused(None, client, None, 401, "unknown, expired or revoked token", None)
                raise Unauthorized("unknown, expired or revoked token")
            if principal.must_change_password:
                await self._refused(principal.username, client, None, 401, "the account must change its password first", None)
                raise Unauthorized("the account must change its password first")
            return Caller(principal, agent, None, _on_behalf(request, principal, self.access))
        if header:
            creds = parse_authorization(header)
            if creds is None:
                await self._refused(None, client, None, 401, "malformed or unsupported Authorization header", None)
                raise Unauthorized("malformed Authorization header")
            row = await self._account(creds.username)
            secret = self.secret_for(creds.username, row["password_hash"]) if row is not None else self._dummy
            verdict = self.digest.check(creds, request.method, request.uri, secret)
            if verdict == "stale":
                raise StaleCredentials("the nonce expired")
            if verdict != "ok" or row is None:
                reason = verdict if verdict != "ok" else "wrong username or secret"
                await self._refused(creds.username[:64], client, None, 401, reason, None)
                raise Unauthorized(reason)
            if row["disabled"]:
                await self._refused(creds.username, client, None, 401, "the account is disabled", None)
                raise Unauthorized("the account is disabled")
            refresh = self._refresher(row["id"], row["password_hash"])
            principal = await refresh()
            if principal is None:
                raise Unauthorized("the account changed")
            return Caller(principal, agent, refresh, _on_behalf(request, principal, self.access))
        if previous is not None:
            current = await (previous.refresh() if previous.refresh else self.identity.principal_for_session(previous.principal.session_id))
            if current is None:
                raise Unauthorized("the account or token is no longer valid")
            return Caller(current, previous.user_agent, previous.refresh, previous.on_behalf_of)
        raise Unauthorized("credentials required")  # the usual first challenge: not audited

    async def _account(self, username: str) -> Any:
        if len(username) > 64:
            return None
        q = sa.select(users.c.id, users.c.password_hash, users.c.disabled).where(users.c.username == username)
        async with self.db.connect() as conn:
            return (await conn.execute(q)).mappings().first()

    def _refresher(self, user_id: int, password_hash: str) -> Callable[[], Awaitable[Principal | None]]:
        async def refresh() -> Principal | None:
            user = await self.identity.subject_for(user_id)
            if user is None or user.disabled:
                return None
            row = await self._account(user.username)
            if row is None or row["password_hash"] != password_hash:
                return None  # the password, and with it the RTSP secret, changed
            return Principal(
                user_id=user.id, username=user.username, role=user.role, areas=user.areas, all_areas=user.all_areas,
                session_id=f"rtsp-digest:{user.id}", kind="digest", csrf_token="",
            )

        return refresh

    async def _refused(
        self, username: str | None, client: str, camera: str | None, status: int, reason: str, caller: Caller | None
    ) -> None:
        detail: dict[str, Any] = {"kind": "rtsp", "protocol": "rtsp", "status": status, "reason": reason}
        if caller is not None and caller.on_behalf_of:
            detail["on_behalf_of"] = caller.on_behalf_of
        await self.audit.record("live.view", outcome="refused", user=username, client=client, camera=camera, detail=detail)

    async def play_started(self, play: RtspPlay) -> None:
        caller: Caller = play.identity
        target = parse_path(play.mount)
        assert target is not None
        camera_id, profile = target
        client = play.peer.rsplit(":", 1)[0].strip("[]")
        live = self.config.live
        who = caller.principal
        if sum(1 for p in self._plays.values() if p.camera == camera_id) >= live.max_viewers_per_camera:
            reason = f"camera {camera_id} already has its maximum of {live.max_viewers_per_camera} RTSP clients"
        elif sum(1 for p in self._plays.values() if p.caller.principal.user_id == who.user_id) >= live.max_sessions_per_user:
            reason = f"user {who.username} already has {live.max_sessions_per_user} RTSP sessions"
        else:
            reason = ""
        if reason:  # the same limits as WebRTC views (live.max-viewers-per-camera, max-sessions-per-user)
            await self._refused(who.username, client, camera_id, 503, reason, caller)
            raise Unavailable(reason)

        async def close(reason: str) -> None:
            play.close(f"access revoked: {reason}")

        ticket = self.access.track(caller.principal, camera_id, "live.view", "rtsp", close, client, refresh=caller.refresh)
        self._plays[play] = _Play(camera_id, str(profile), caller, ticket)
        await self.audit.record(
            "live.start", user=caller.principal.username, client=client, camera=camera_id,
            detail=self._detail(play, caller, profile=str(profile), auth=caller.principal.kind, user_agent=caller.user_agent),
        )

    async def play_stopped(self, play: RtspPlay, reason: str) -> None:
        entry = self._plays.pop(play, None)
        if entry is None:
            return
        self.access.release(entry.ticket)
        duration = round(time.time() - play.started_at, 3)
        await self.audit.record(
            "live.stop", user=entry.caller.principal.username, client=play.peer.rsplit(":", 1)[0].strip("[]"),
            camera=entry.camera, detail=self._detail(play, entry.caller, profile=entry.profile, duration=duration, reason=reason),
        )

    @staticmethod
    def _detail(play: RtspPlay, caller: Caller, **more: Any) -> dict[str, Any]:
        detail: dict[str, Any] = {"kind": "rtsp", "protocol": "rtsp", "session": play.id, "transport": play.transport, **more}
        if caller.on_behalf_of:
            detail["on_behalf_of"] = caller.on_behalf_of
        return detail


def _on_behalf(request: RtspRequest, principal: Principal, access: AccessControl) -> str | None:
    """``central:alice via node`` when a federating gateway names its user and may (``federation.relay``)."""
    return on_behalf_text(request.headers.get(ON_BEHALF_HEADER.lower()), principal, access)


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    out = config.rtsp_out
    if not out.tls_cert:
        return None
    root = Path(config.root)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(root / out.tls_cert, root / out.tls_key if out.tls_key else None)
    return ctx


RTSP_OUT = web.AppKey("rtsp_out", RtspOut)


async def rtsp_out_ctx(app: web.Application) -> AsyncIterator[None]:
    """The re-stream service, when ``[rtsp-out] enabled``; after cameras and access control."""
    config = app[CONFIG]
    if not config.rtsp_out.enabled:
        yield
        return
    key = await credentials_key(app)
    async with RtspOut(
        config, cameras=app[CAMERAS], access=app[ACCESS], identity=app[IDENTITY], db=app[DATABASE], key=key,
        cluster=app.get(CLUSTER_NODE),
    ) as service:
        app[RTSP_OUT] = service
        yield


@api(summary="Issue an account's RTSP secret", responses={200: JsonObject}, tag="live")
@requires("users.manage", camera_param=None)
async def issue_secret(request: web.Request) -> web.Response:
    """``POST /api/users/{username}/rtsp-secret``: the account's RTSP Digest secret."""
    service = request.app.get(RTSP_OUT)
    if service is None:
        raise NotFound("the RTSP re-stream is not enabled ([rtsp-out] enabled = false)")
    username = request.match_info["username"]
    row = await service._account(username)
    if row is None:
        raise NotFound(f"no user {username!r}")
    who = request_principal(request)
    await request.app[AUDIT].record(
        "user.rtsp_secret", user=who.username, client=client_address(request), detail={"username": username},
    )
    return web.json_response({
        "username": username, "realm": service.out.realm, "secret": service.secret_for(username, row["password_hash"]),
        "note": "changes when the account's password is changed or reset",
    })


@api(summary="The camera's RTSP re-stream URLs", responses={200: JsonObject}, tag="live")
@requires("live.view")
async def stream_urls(request: web.Request) -> web.Response:
    """``GET /api/cameras/{camera_id}/rtsp``: the camera's re-stream URLs for this user (the
    sub stream's only when it is served: never for a masked camera)."""
    service = request.app.get(RTSP_OUT)
    if service is None:
        raise NotFound("the RTSP re-stream is not enabled ([rtsp-out] enabled = false)")
    camera = request.app[CAMERAS].get(request.match_info["camera_id"])
    config = request.app[CONFIG]
    sub = stream_uri(config, camera.id, "sub") if StreamProfile.SUB in camera.profiles else None
    return web.json_response({"main": stream_uri(config, camera.id), "sub": sub, "realm": service.out.realm})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/users/{username}/rtsp-secret", issue_secret, name="rtsp_secret")
    app.router.add_get("/api/cameras/{camera_id}/rtsp", stream_urls, name="rtsp_urls")

