"""Account administration (``users.manage``): list, create, change, reset passwords.

``GET /api/users``                             every account
``POST /api/users``                            create; answers the generated one-time password
``PATCH /api/users/{username}``                ``disabled``, ``role``, ``areas``, ``all_areas``,
                                               ``display_name``, ``locked: false`` (unlock)
``POST /api/users/{username}/reset-password``  new one-time password; ends the user's sessions

Every change is audited with the administrator as ``user``. Administrators cannot
disable themselves or change their own role, so the last one cannot lock everyone out.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.access.guard import PRINCIPAL, requires
from gateway.api import json_response
from gateway.api.session import read_json, user_view
from gateway.appkeys import IDENTITY
from gateway.errors import BadRequest


class CreateUser(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    username: str
    role: str
    areas: list[str] = []
    all_areas: bool = False
    display_name: str = ""
    #: Omit to have a random one generated (returned once).
    password: str | None = None


class PatchUser(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    disabled: bool | msgspec.UnsetType = msgspec.UNSET
    role: str | msgspec.UnsetType = msgspec.UNSET
    areas: list[str] | msgspec.UnsetType = msgspec.UNSET
    all_areas: bool | msgspec.UnsetType = msgspec.UNSET
    display_name: str | msgspec.UnsetType = msgspec.UNSET
    locked: bool | msgspec.UnsetType = msgspec.UNSET


@requires("users.manage", camera_param=None)
async def list_users(request: web.Request) -> web.Response:
    users = await request.app[IDENTITY].list_users()
    return json_response([user_view(request, u) for u in users])


@requires("users.manage", camera_param=None)
async def create_user(request: web.Request) -> web.Response:
    req = await read_json(request, CreateUser)
    assert isinstance(req, CreateUser)
    user, password = await request.app[IDENTITY].create_user(
        req.username, role=req.role, areas=req.areas, all_areas=req.all_areas,
        display_name=req.display_name, password=req.password, by=request[PRINCIPAL].username,
    )
    body: dict = {"user": user_view(request, user)}
    if password is not None:
        body["password"] = password
    return json_response(body, status=201)


@requires("users.manage", camera_param=None)
async def patch_user(request: web.Request) -> web.Response:
    req = await read_json(request, PatchUser)
    assert isinstance(req, PatchUser)
    identity = request.app[IDENTITY]
    username = request.match_info["username"]
    by = request[PRINCIPAL].username
    user = await identity.get_user(username)  # 404 before any change
    # Validate everything first, so a refused request changes nothing.
    if req.locked is True:
        raise BadRequest("accounts are locked by failed sign-ins only; use 'disabled' to stop an account")
    if req.role is not msgspec.UNSET:
        identity.check_role(req.role)
        identity.not_self(username, by, "change the role of")
    if req.disabled is True:
        identity.not_self(username, by, "disable")
    if req.display_name is not msgspec.UNSET:
        user = await identity.set_display_name(username, req.display_name, by=by)
    if req.role is not msgspec.UNSET:
        user = await identity.set_role(username, req.role, by=by)
    if req.areas is not msgspec.UNSET or req.all_areas is not msgspec.UNSET:
        areas = user.areas if req.areas is msgspec.UNSET else req.areas
        all_areas = user.all_areas if req.all_areas is msgspec.UNSET else req.all_areas
        user = await identity.set_areas(username, areas, all_areas, by=by)
    if req.locked is False:
        user = await identity.unlock(username, by=by)
    if req.disabled is not msgspec.UNSET:
        user = await identity.set_disabled(username, req.disabled, by=by)
    return json_response(user_view(request, user))


@requires("users.manage", camera_param=None)
async def reset_password(request: web.Request) -> web.Response:
    password = await request.app[IDENTITY].reset_password(request.match_info["username"], by=request[PRINCIPAL].username)
    return json_response({"password": password, "must_change_password": True})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/users", list_users, name="users")
    app.router.add_post("/api/users", create_user, name="users-create")
    app.router.add_patch("/api/users/{username}", patch_user, name="user-patch")
    app.router.add_post("/api/users/{username}/reset-password", reset_password, name="user-reset-password")
