"""Local accounts: the built-in auth provider.

A request carries its session either as the session cookie (browsers; ``citygate_session``,
``__Host-citygate_session`` under HTTPS, see ``gateway.access.headers``) or as
``Authorization: Bearer <token>`` (API clients, players, other systems). Marked
``trylast`` so an installed provider (LDAP, OIDC) is asked first.
"""

from __future__ import annotations

from aiohttp import web

from gateway import hookimpl
from gateway.access.guard import Principal
from gateway.access.headers import session_cookie_name
from gateway.appkeys import IDENTITY


def request_token(request: web.Request) -> tuple[str, str] | None:
    """(token, "bearer" | "cookie") of a request: the bearer header first, then the cookie."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    cookie = request.cookies.get(session_cookie_name(request))  # __Host- under HTTPS
    return (cookie, "cookie") if cookie else None


@hookimpl(trylast=True)
async def gateway_authenticate(request: web.Request) -> Principal | None:
    """The principal behind the request's session cookie or bearer token, if valid."""
    identity = request.app.get(IDENTITY)
    found = request_token(request)
    if identity is None or found is None:
        return None
    token, carrier = found
    principal = await identity.authenticate(token)
    if principal is not None and carrier == "cookie" and principal.kind != "cookie":
        # API tokens are exempt from CSRF checks, so they are only accepted as a header.
        return None
    return principal
