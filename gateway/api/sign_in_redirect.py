"""Redirect sign-in (OpenID Connect and other providers whose ``sign_in`` has "redirect").

``GET /api/session/providers``                    the sign-in page's "Sign in with ..." buttons
``GET /api/session/redirect/{provider}``          begin: 303 to the provider's sign-in page
``GET /api/session/redirect/{provider}/callback`` the provider sends the browser back here

The provider's ``pending`` value waits in an HttpOnly cookie of this browser, limited to the
callback's path, ``SameSite=Lax`` (it must come along on the provider's top-level redirect
back) and deleted when the browser returns. A sign-in the provider vouched for opens a
browser session (cookie, as a password sign-in does) and sends the browser to the web
client; a refusal sends it there with ``?sign-in-error=<reason>``. Callbacks count against
the address's sign-in budget like password sign-ins (``login.throttled`` past it). Every
refusal is audited as ``login.failed`` (outcome "refused", the reason and the provider),
every success as ``login.ok`` with the provider as ``source``.

At sign-out (``DELETE /api/session``) ``logout_redirect`` ends the provider's session too:
the provider's ``logout_state`` (kept at sign-in in a second HttpOnly cookie) gives the URL
of its own sign-out, which the web client follows.
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

import msgspec
from aiohttp import web

from gateway.access.guard import Principal, public
from gateway.access.headers import is_https, set_session_cookie
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.api.openapi import api
from gateway.appkeys import AUDIT, IDENTITY
from gateway.errors import GatewayError, NotFound, Unauthorized, Unavailable
from gateway.interfaces import REDIRECT_CALLBACK_PATH, AuthProvider

logger = logging.getLogger(__name__)

PENDING_COOKIE = "citygate_sign_in_"  #: + the provider's id
LOGOUT_COOKIE = "citygate_sign_out"
#: The web client, where a finished (or refused) redirect sign-in lands.
LANDING = "/"
ERROR_PARAM = "sign-in-error"
PENDING_SECONDS = 3600


class RedirectProvider(msgspec.Struct, kw_only=True):
    id: str
    title: str  #: "Sign in with <title>"
    url: str  #: where the button leads


def _cookie_name(request: web.Request, name: str) -> str:
    return ("__Secure-" + name) if is_https(request) else name


def _providers(request: web.Request) -> dict[str, AuthProvider]:
    directory = request.app[IDENTITY].directory
    return directory.redirect_providers() if directory is not None else {}


def _provider(request: web.Request) -> tuple[str, AuthProvider]:
    pid = request.match_info["provider"]
    provider = _providers(request).get(pid)
    if provider is None:
        raise NotFound(f"no redirect sign-in provider {pid[:40]!r} is configured")
    return pid, provider


def _see_other(url: str) -> web.Response:
    return web.Response(status=303, headers={"Location": url})


def _pending_path(pid: str) -> str:
    return REDIRECT_CALLBACK_PATH.format(provider=pid)


@api(summary="The redirect sign-in providers (OpenID Connect) offered on the sign-in page",
     responses={200: list[RedirectProvider]}, tag="session")
@public
async def providers(request: web.Request) -> web.Response:
    return json_response([
        RedirectProvider(id=pid, title=p.title(), url=f"/api/session/redirect/{pid}") for pid, p in _providers(request).items()
    ])


@api(summary="Begin a redirect sign-in: 303 to the provider's sign-in page", responses={303: None}, extra_errors=(503,), tag="session")
@public
async def begin(request: web.Request) -> web.StreamResponse:
    pid, provider = _provider(request)
    try:
        start = await provider.redirect_start()
    except Unavailable as exc:
        await request.app[AUDIT].record(
            "login.failed", outcome="failed", client=client_address(request), detail={"reason": f"provider unavailable: {exc}", "source": pid}
        )
        raise
    resp = _see_other(start.url)
    resp.set_cookie(
        _cookie_name(request, PENDING_COOKIE + pid), start.pending, httponly=True, samesite="Lax", secure=is_https(request),
        path=_pending_path(pid), max_age=PENDING_SECONDS,
    )
    return resp


@api(summary="The provider sends the browser back: sign in, then 303 to the web client", responses={303: None}, tag="session")
@public
async def callback(request: web.Request) -> web.StreamResponse:
    pid, provider = _provider(request)
    client = client_address(request)
    pending_name = _cookie_name(request, PENDING_COOKIE + pid)
    pending = request.cookies.get(pending_name, "")
    params = {k: v for k, v in request.query.items()}
    identity = request.app[IDENTITY]
    try:
        await identity.count_attempt(client)  # a flood of forged callbacks meets the sign-in budget
        try:
            signed = await provider.redirect_finish(params, pending)
        except (Unauthorized, Unavailable) as exc:
            await request.app[AUDIT].record(
                "login.failed", outcome="refused" if isinstance(exc, Unauthorized) else "failed", client=client,
                detail={"reason": str(exc), "source": pid},
            )
            raise
        principal, token = await identity.redirect_login(
            pid, signed.account, client=client, user_agent=request.headers.get("User-Agent", "")
        )  # refusals there are audited by identity
    except GatewayError as exc:
        resp = _see_other(f"{LANDING}?{urlencode({ERROR_PARAM: f'Sign-in through {provider.title()} refused: {exc}'})}")
        resp.del_cookie(pending_name, path=_pending_path(pid))
        return resp
    resp = _see_other(LANDING)
    resp.del_cookie(pending_name, path=_pending_path(pid))
    set_session_cookie(resp, request, token)
    if signed.logout_state:
        resp.set_cookie(  # bound to this session: a later session of the browser ignores it
            _cookie_name(request, LOGOUT_COOKIE), f"{pid}.{principal.session_id[:16]}.{signed.logout_state}", httponly=True,
            samesite="Strict", secure=is_https(request), path="/api/session",
        )
    return resp


async def logout_redirect(request: web.Request, response: web.StreamResponse, principal: Principal) -> str | None:
    """At sign-out: the provider's own sign-out URL when a redirect provider opened this
    session (None for others); the kept logout state is deleted from the browser."""
    name = _cookie_name(request, LOGOUT_COOKIE)
    kept = request.cookies.get(name)
    if kept is None:
        return None
    response.del_cookie(name, path="/api/session")
    pid, _, rest = kept.partition(".")
    session, _, state = rest.partition(".")
    provider = _providers(request).get(pid)
    if provider is None or principal.kind != "cookie" or session != principal.session_id[:16]:
        return None  # kept from an earlier session of this browser
    try:
        return await provider.logout_url(state)
    except GatewayError as exc:
        logger.warning("sign-out of %s: no sign-out at %s: %s", principal.username, pid, exc)
        return None


def setup(app: web.Application) -> None:
    app.router.add_get("/api/session/providers", providers, name="session-providers")
    app.router.add_get("/api/session/redirect/{provider}", begin, name="session-redirect")
    app.router.add_get(REDIRECT_CALLBACK_PATH, callback, name="session-redirect-callback")
