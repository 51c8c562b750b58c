"""The guard in front of every route: authenticate, check CSRF, authorize, audit refusals."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.access.guard import CSRF_HEADER, PRINCIPAL, SAFE_METHODS, Principal, RouteAccess, route_access
from gateway.access.relay import ON_BEHALF_HEADER, ON_BEHALF_OF, on_behalf_text
from gateway.appkeys import ACCESS, CONFIG, PLUGINS
from gateway.cluster.hop import hop_of
from gateway.errors import Forbidden, NotFound, Unauthorized

if TYPE_CHECKING:
    from gateway.access.control import AccessControl

logger = logging.getLogger(__name__)


def _trusted(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: web.Request) -> str:
    """The client's address: the TCP peer's, unless the peer is one of ``server.trusted-proxies``.

    Behind trusted proxies it is the right-most ``X-Forwarded-For`` entry that is not itself
    a trusted proxy (entries further left are whatever the client chose to send).
    """
    hop = hop_of(request)
    if hop is not None:  # forwarded by another node of the cluster, which saw the client
        return hop.client
    peer = request.remote or ""
    config = request.app.get(CONFIG)
    if config is None or not config.server.trusted_proxies:
        return peer
    networks = tuple(ipaddress.ip_network(e, strict=False) for e in config.server.trusted_proxies)
    if not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", ())).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # not an address: keep what we know for sure
    return peer  # no header, or only proxies in it


@web.middleware
async def access_middleware(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
    match = request.match_info
    route = match.route
    if match.http_exception is not None:
        # No such route. Under /api/ an anonymous caller learns nothing, not even that.
        if request.path.startswith("/api/") and await request.app[PLUGINS].authenticate(request) is None:
            raise Unauthorized("sign in first")
        raise match.http_exception
    if isinstance(route.resource, web.StaticResource):
        return await handler(request)  # the web client's code: public by nature, holds no data
    access = route_access(route.handler)
    if access is None:
        logger.error("route %s %s has no access declaration; refusing", request.method, route.resource.canonical if route.resource else "?")
        raise Forbidden("this route is not open to anyone")
    if access.public:
        return await handler(request)

    control = request.app[ACCESS]
    who = await request.app[PLUGINS].authenticate(request)
    if who is None:
        raise Unauthorized("sign in first")
    # A federating gateway's user: named in every audit entry of this request, refusals too.
    behalf = ON_BEHALF_OF.set(on_behalf_text(request.headers.get(ON_BEHALF_HEADER), who, control))
    try:
        return await _guarded(request, handler, who, access, control)
    finally:
        ON_BEHALF_OF.reset(behalf)  # requests of one keep-alive connection share a task


async def _guarded(
    request: web.Request, handler: web.RequestHandler, who: Principal, access: RouteAccess, control: AccessControl
) -> web.StreamResponse:
    match = request.match_info
    if who.kind == "cookie" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), who.csrf_token.encode()):
            await control.audit.record(
                "csrf.refused", outcome="refused", user=who.username, client=client_address(request),
                detail={"method": request.method, "path": request.path},
            )
            raise Forbidden(f"missing or wrong {CSRF_HEADER} header")
    if who.must_change_password and not access.pending_password_ok:
        reason = "change your password first"
        await control.audit.record(
            access.action or "request", outcome="refused", user=who.username, client=client_address(request),
            camera=match.get(access.camera_param) if access.camera_param else None,
            detail={"reason": reason, "method": request.method, "path": request.path},
        )
        raise Forbidden(reason)
    if access.action is not None:
        camera = None
        if access.camera_param is not None:
            camera = match.get(access.camera_param)
            if camera is None:
                raise NotFound("no camera in the request")
        decision = control.decide(who, access.action, camera)
        if not decision:
            await control.audit.record(
                f"{access.action}", outcome="refused", user=who.username, client=client_address(request), camera=camera,
                detail={"reason": decision.reason, "method": request.method, "path": request.path},
            )
            raise Forbidden(decision.reason)
    request[PRINCIPAL] = who
    return await handler(request)
