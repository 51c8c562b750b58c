"""The guard in front of every route: authenticate, check CSRF, authorize, audit refusals."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from gateway.access.guard import CSRF_HEADER, PRINCIPAL, SAFE_METHODS, route_access
from gateway.appkeys import ACCESS, PLUGINS
from gateway.errors import Forbidden, NotFound, Unauthorized

logger = logging.getLogger(__name__)


def client_address(request: web.Request) -> str:
    return request.remote or ""


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
    if who.kind == "cookie" and request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), who.csrf_token.encode()):
            await control.audit.record(
                "csrf.refused", outcome="refused", user=who.username, client=client_address(request),
                detail={"method": request.method, "path": request.path},
            )
            raise Forbidden(f"missing or wrong {CSRF_HEADER} header")
    if who.must_change_password and not access.pending_password_ok:
        raise Forbidden("change your password first")
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
