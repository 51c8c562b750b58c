"""Local accounts: the built-in auth provider.

A request carries its session either as the session cookie (browsers; ``citygate_session``,
``__Host-citygate_session`` under HTTPS, see ``gateway.access.headers``) or as
``Authorization: Bearer <token>`` (API clients, players, other systems). Marked
``trylast`` so an installed provider (LDAP, OIDC) is asked first.
"""

from __future__ import annotations

from aiohttp import web

from gateway.plugin_api import Gateway, Principal, hookimpl, session_token

#: (token, "bearer" | "cookie") of a request: the bearer header first, then the cookie.
request_token = session_token


@hookimpl(trylast=True)
async def gateway_authenticate(request: web.Request, gateway: Gateway | None) -> Principal | None:
    """The principal behind the request's session cookie or bearer token, if valid."""
    found = session_token(request)
    if gateway is None or found is None:
        return None
    token, carrier = found
    principal = await gateway.session_principal(token)
    if principal is not None and carrier == "cookie" and principal.kind != "cookie":
        # API tokens are exempt from CSRF checks, so they are only accepted as a header.
        return None
    return principal
