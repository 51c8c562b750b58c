"""Sign-in, sign-out, who-am-I and the user's own password change.

``POST /api/session``           sign in; ``kind`` "cookie" (browsers) or "token" (API clients)
``GET /api/session``            the signed-in user, their role's actions and the CSRF token
``DELETE /api/session``         sign out (this session only; after a redirect sign-in the
                                answer names the provider's sign-out page to go to)
``POST /api/session/password``  change one's own password (ends the user's other sessions)

Sign-in answers: 401 for a wrong username or password (the same for unknown users), 423
Locked while the account is locked after too many failures (the message says until when),
403 for a disabled account, 429 when the client address tried too often.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from gateway.access.guard import PRINCIPAL, Principal, authenticated, public
from gateway.api.openapi import JsonObject, api
from gateway.access.headers import clear_session_cookie, set_session_cookie
from gateway.access.accounts import User
from gateway.access.middleware import client_address
from gateway.api import json_response, sign_in_redirect
from gateway.appkeys import ACCESS, CONFIG, IDENTITY
from gateway.config import PushConfig
from gateway.errors import BadRequest


class LoginRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    username: str
    password: str
    kind: Literal["cookie", "token"] = "cookie"
    #: A label for an API token ("wall display 3"), shown in the audit log.
    name: str = ""


class PasswordChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    old_password: str
    new_password: str


async def read_json(request: web.Request, type_: type) -> object:
    """Decode the request body into ``type_``; every mistake is a 400 naming the field."""
    if request.content_type != "application/json":
        raise BadRequest("expected a JSON body (Content-Type: application/json)")
    body = await request.read()
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None


def user_view(request: web.Request, user: User, who: Principal | None = None) -> dict:
    """The user as the web client needs it. ``actions`` include what active grants
    (emergency pushes) add, so a station's client knows it may watch something."""
    policy = request.app[IDENTITY].policy
    role = policy.role(user.role)
    actions = request.app[ACCESS].actions_for(who) if who is not None else sorted(role.actions) if role else []
    view = {**user.to_json(), "role_title": role.title if role else user.role, "actions": actions}
    # A rescue or crisis-management station: its client opens the station page.
    config = request.app.get(CONFIG)
    view["station"] = user.role == (config.push if config is not None else PushConfig()).station_role
    if who is not None and "users.manage" in actions:  # the admin page's role picker
        view["roles"] = [{"name": r.name, "title": r.title} for r in policy.roles.values()]
    return view


@api(summary="Sign in: a cookie session, or an API token with kind=token", body=LoginRequest, responses={201: JsonObject}, tag="session")
@public
async def login(request: web.Request) -> web.Response:
    req = await read_json(request, LoginRequest)
    assert isinstance(req, LoginRequest)
    if not req.username or not req.password:
        raise BadRequest("username and password are required")
    identity = request.app[IDENTITY]
    principal, token = await identity.login(
        req.username, req.password, client=client_address(request),
        user_agent=request.headers.get("User-Agent", ""), kind=req.kind, token_name=req.name,
    )
    user = await identity.get_user(principal.username)
    body = {
        "user": user_view(request, user, principal),
        "csrf_token": principal.csrf_token,
        "must_change_password": principal.must_change_password,
        "expires_at": principal.expires_at,
        "kind": principal.kind,
    }
    if req.kind == "token":
        body["token"] = token
        return json_response(body, status=201)
    resp = json_response(body, status=201)
    set_session_cookie(resp, request, token)
    return resp


@api(summary="The signed-in user, their role, areas and actions", responses={200: JsonObject}, tag="session")
@authenticated(pending_password_ok=True)
async def whoami(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    user = await request.app[IDENTITY].get_user(principal.username)
    return json_response(
        {
            "user": user_view(request, user, principal),
            "csrf_token": principal.csrf_token,
            "must_change_password": principal.must_change_password,
            "expires_at": principal.expires_at,
            "kind": principal.kind,
        }
    )


class LogoutAnswer(msgspec.Struct, kw_only=True):
    #: The provider's own sign-out page, for a session opened by a redirect sign-in (OIDC).
    logout_url: str


@api(summary="Sign out: the session ends (200 with the provider's sign-out URL after an OIDC sign-in)",
     responses={204: None, 200: LogoutAnswer}, tag="session")
@authenticated(pending_password_ok=True)
async def logout(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    await request.app[IDENTITY].end_session(principal.session_id, client=client_address(request))
    resp = web.Response(status=204)
    if principal.kind == "cookie":
        clear_session_cookie(resp, request)
        url = await sign_in_redirect.logout_redirect(request, resp, principal)
        if url is not None:
            resp.set_status(200)
            resp.content_type = "application/json"
            resp.body = msgspec.json.encode(LogoutAnswer(logout_url=url))
    return resp


@api(summary="Change one's own password", body=PasswordChange, responses={200: JsonObject}, tag="session")
@authenticated(pending_password_ok=True)
async def change_password(request: web.Request) -> web.Response:
    req = await read_json(request, PasswordChange)
    assert isinstance(req, PasswordChange)
    principal = request[PRINCIPAL]
    await request.app[IDENTITY].change_password(principal, req.old_password, req.new_password, client=client_address(request))
    return json_response({"must_change_password": False})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/session", login, name="session-login")
    app.router.add_get("/api/session", whoami, name="session")
    app.router.add_delete("/api/session", logout, name="session-logout")
    app.router.add_post("/api/session/password", change_password, name="session-password")
