"""Any node answers any request: what must run where the camera runs is forwarded there.

``OWNER_ROUTES`` names the routes that need the camera's running objects (its hub for
WHEP and LL-HLS, its vendor for PTZ, its mask stage for mask edits, its health samples).
On any other node the request is first authenticated, authorised and (when refused)
audited exactly as if the camera ran there — ``forward_middleware`` runs after the
guard — and then passed to the owner with the user's own credentials and a *hop*: the
forwarding node's name, the time, the client's address and an HMAC over all of it and the
request, keyed with the cluster's shared secret.

The owner trusts nothing more for the hop: its own guard checks the same session again
(sessions live in the shared database) and its handler audits the access as always, with
the client address the hop vouches for. A hop that does not verify — a forged request
from outside the cluster, a replay after the time window, a node with another secret — is
refused and audited (``inbound_middleware``, first in line). A hop is never forwarded
again: if the camera moved meanwhile, the owner answers 503 and the client retries.

WHEP answers carry the owner's ICE candidates, so media flows from the owner straight to
the browser; the session's ``Location`` is rewritten to name the owner
(``/api/whep/sessions/<node>~<id>``) so the DELETE finds its way from any node.

The ONVIF face serves a port of its own, outside these middlewares: ``OwnerLink`` tells it
which node runs a camera and passes its snapshot requests there, signed the same way.
"""

from __future__ import annotations

import hmac
import logging
import time

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from multidict import CIMultiDict

from gateway.access.middleware import client_address
from gateway.appkeys import AUDIT, DATABASE
from gateway.cluster.hop import (
    CLIENT_HEADER, HOP, HOP_HEADERS, NODE_HEADER, SIGNATURE_HEADER, TIME_HEADER, Hop, hop_of, sign,
)
from gateway.cluster.node import ClusterNode, NodeInfo, Owner
from gateway.db import export_requests
from gateway.errors import Forbidden, NotFound, Unavailable

logger = logging.getLogger(__name__)

#: How far a hop's time may be from ours: nodes are NTP-synchronised; this bounds replays.
MAX_SKEW = 30.0
SESSION_SEP = "~"

#: Routes that run on the node that runs the camera (by route name).
OWNER_ROUTES = frozenset({
    "whep", "whep_session",
    "hls-index", "hls-stream", "hls-init", "hls-init-n", "hls-segment", "hls-part",
    "snapshot", "camera", "camera_health_one",
    "ptz-move", "ptz-stop", "ptz-absolute", "ptz-relative", "ptz-home", "ptz-presets", "ptz-preset-set",
    "ptz-preset-go", "ptz-lock", "ptz-lock-take", "ptz-lock-release",
    "ptz-tours", "ptz-tour-create", "ptz-tour-update", "ptz-tour-delete", "ptz-tour-start", "ptz-tour-stop",
    "masks-put", "masks-add", "mask-delete",
    # an export package lies on the node that produced it
    "export-download",
})
#: Hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself.
_NOT_FORWARDED = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding",
    "Upgrade", "Content-Length", *HOP_HEADERS,
))

CLUSTER_NODE = web.AppKey("cluster_node", ClusterNode)
CLUSTER_SECRET = web.AppKey("cluster_secret", bytes)
CLUSTER_HTTP = web.AppKey("cluster_http", aiohttp.ClientSession)


@web.middleware
async def inbound_middleware(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
    if not any(h in request.headers for h in HOP_HEADERS):
        return await handler(request)
    node = request.headers.get(NODE_HEADER, "")
    reason = await _verify(request)
    if reason is not None:
        audit = request.app.get(AUDIT)
        if audit is not None:
            await audit.record(
                "cluster.forged", outcome="refused", client=request.remote,
                detail={"node": node[:64], "reason": reason, "method": request.method, "path": request.path[:300]},
            )
        logger.warning("cluster: refused a request claiming to come from node %r: %s", node[:64], reason)
        raise Forbidden("not a request of this cluster's nodes")
    request[HOP] = Hop(node=node, client=request.headers[CLIENT_HEADER])  # type: ignore[index]
    return await handler(request)


async def _verify(request: web.Request) -> str | None:
    return await verify_hop(request.app.get(CLUSTER_SECRET), request)


async def verify_hop(secret: bytes | None, request: web.Request) -> str | None:
    """Why ``request``'s hop headers do not prove it comes from a node of this cluster (None: they do)."""
    if secret is None:
        return "this gateway is not a cluster node"
    headers = request.headers
    if not all(headers.get(h) for h in HOP_HEADERS):
        return "incomplete hop headers"
    try:
        at = float(headers[TIME_HEADER])
    except ValueError:
        return "malformed time"
    if not abs(time.time() - at) <= MAX_SKEW:
        return "outside the time window"
    body = await request.read()
    expected = sign(
        secret, method=request.method, path_qs=request.path_qs, node=headers[NODE_HEADER], at=headers[TIME_HEADER],
        client=headers[CLIENT_HEADER], body=body,
    )
    if not hmac.compare_digest(expected, headers[SIGNATURE_HEADER]):
        return "bad signature"
    return None


def hop_headers(secret: bytes, node: str, *, method: str, path_qs: str, client: str, body: bytes = b"") -> dict[str, str]:
    """The signed hop headers of a request this node passes to another."""
    at = f"{time.time():.3f}"
    return {
        NODE_HEADER: node, TIME_HEADER: at, CLIENT_HEADER: client,
        SIGNATURE_HEADER: sign(secret, method=method, path_qs=path_qs, node=node, at=at, client=client, body=body),
    }


class OwnerLink:
    """For a service with a port of its own (the ONVIF face), outside the API's middlewares:
    who runs a camera, and a signed request to that node's same service."""

    def __init__(self, node: ClusterNode, secret: bytes, http: aiohttp.ClientSession) -> None:
        self.node = node
        self.secret = secret
        self.http = http

    def elsewhere(self, camera_id: str) -> NodeInfo | None:
        """The node running the camera when it is not this one (None: it runs here).
        Raises Unavailable while the camera moves between nodes."""
        owner = self.node.owner(camera_id)
        if owner is None:
            raise Unavailable(f"camera {camera_id} is moving between nodes; try again in a few seconds")
        if owner.node == self.node.node:
            return None
        info = self.node.node_info(owner.node)
        if info is None:
            raise Unavailable(f"camera {camera_id} is moving between nodes; try again in a few seconds")
        return info

    async def get(self, base_url: str, path_qs: str, client: str) -> tuple[int, str, bytes]:
        """GET ``path_qs`` of another node's service: (status, content type, body)."""
        return await self.send("GET", base_url, path_qs, client)

    async def send(
        self, method: str, base_url: str, path_qs: str, client: str, body: bytes = b"", content_type: str | None = None,
    ) -> tuple[int, str, bytes]:
        """``method`` ``path_qs`` of another node's service, signed with ``body``: (status,
        content type, body of the answer)."""
        headers = hop_headers(self.secret, self.node.node, method=method, path_qs=path_qs, client=client, body=body)
        if content_type is not None:
            headers["Content-Type"] = content_type
        try:
            async with self.http.request(
                method, base_url.rstrip("/") + path_qs, data=body or None, headers=headers, allow_redirects=False,
            ) as resp:
                return resp.status, resp.content_type, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("cluster: %s unreachable for %s: %s", base_url, path_qs, exc)
            raise Unavailable("the node running this camera cannot be reached; try again shortly") from exc


@web.middleware
async def forward_middleware(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
    node = request.app.get(CLUSTER_NODE)
    route = request.match_info.route
    if node is None or route.name not in OWNER_ROUTES or hop_of(request) is not None:
        return await handler(request)
    target, path = await _target(request, node)
    if target is None or target.node == node.node:
        return await handler(request)
    return await _proxy(request, target, path, node)


async def _producer(request: web.Request, node: ClusterNode) -> Owner | None:
    """An export package lies in the data dir of the node that produced it."""
    try:
        request_id = int(request.match_info["request_id"])
    except (KeyError, ValueError):
        return None
    async with request.app[DATABASE].connect() as conn:
        producer = (
            await conn.execute(sa.select(export_requests.c.producer_node).where(export_requests.c.id == request_id))
        ).scalar()
    info = next((n for n in node.nodes() if n.node == producer), None)
    return Owner(info.node, info.url) if info is not None else None


async def _target(request: web.Request, node: ClusterNode) -> tuple[Owner | None, str]:
    match = request.match_info
    if "session_id" in match:  # DELETE /api/whep/sessions/<node>~<id>
        owner_node, sep, session = match["session_id"].partition(SESSION_SEP)
        if not sep:
            return None, request.path_qs
        if owner_node == node.node:
            match["session_id"] = session
            return None, request.path_qs
        info = next((n for n in node.nodes() if n.node == owner_node), None)
        if info is None:
            raise NotFound(f"no WebRTC session {match['session_id']!r}")
        path = request.path_qs.replace(match["session_id"], session, 1)
        return Owner(info.node, info.url), path
    if request.match_info.route.name == "export-download":
        return await _producer(request, node), request.path_qs
    camera = match.get("camera_id")
    if camera is None or not node.knows(camera):
        return None, request.path_qs
    owner = node.owner(camera)
    if owner is None:
        raise Unavailable(f"camera {camera} is moving between nodes; try again in a few seconds")
    return owner, request.path_qs


async def _proxy(request: web.Request, target: Owner, path_qs: str, node: ClusterNode) -> web.StreamResponse:
    body = await request.read()
    client = client_address(request)
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED)
    headers.update(hop_headers(request.app[CLUSTER_SECRET], node.node, method=request.method, path_qs=path_qs, client=client, body=body))
    http = request.app[CLUSTER_HTTP]
    try:
        upstream = await http.request(
            request.method, target.url + path_qs, headers=headers, data=body or None, allow_redirects=False,
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("cluster: node %s (%s) unreachable for %s: %s", target.node, target.url, request.path, exc)
        raise Unavailable(f"the node running this camera ({target.node}) cannot be reached; try again shortly") from exc
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() in _NOT_FORWARDED:
                continue
            if key.lower() == "location" and value.startswith("/api/whep/sessions/"):
                value = f"/api/whep/sessions/{target.node}{SESSION_SEP}{value.rsplit('/', 1)[1]}"
            response.headers.add(key, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    return response
