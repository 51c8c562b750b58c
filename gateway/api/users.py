"""Account administration (``users.manage``): list, create, change, reset passwords.

``GET /api/users``                             every account
``POST /api/users``                            create; answers the generated one-time password
``PATCH /api/users/{username}``                ``disabled``, ``role``, ``areas``, ``all_areas``,
                                               ``display_name``, ``locked: false`` (unlock)
``POST /api/users/{username}/reset-password``  new one-time password; ends the user's sessions
``GET /api/users/pending``                     changes waiting for a second administrator
``POST /api/users/pending/{id}/confirm``       confirm one (another administrator than the requester)
``POST /api/users/pending/{id}/cancel``        withdraw or reject one

Every change is audited with the administrator as ``user``. Administrators cannot
disable themselves or change their own role, so the last one cannot lock everyone out.

Two-person rule: a change that gives an account ``export.approve``, ``export.produce`` or
``users.manage`` (creating it with such a role, changing its role or widening its areas,
resetting its password) answers 202 with ``pending``: it takes effect only when a second
administrator confirms it, and the confirming administrator receives the one-time password.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.access.guard import PRINCIPAL, requires
from gateway.api.openapi import Id, JsonObject, JsonObjects, api
from gateway.access.middleware import client_address
from gateway.api import json_response, path_id
from gateway.api.session import read_json, user_view
from gateway.access.accounts import NO_CHOSEN_PASSWORD
from gateway.appkeys import IDENTITY
from gateway.errors import BadRequest

PENDING_MESSAGE = "this change needs a second administrator's confirmation before it takes effect"


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


@api(summary="Every account", responses={200: JsonObjects})
@requires("users.manage", camera_param=None)
async def list_users(request: web.Request) -> web.Response:
    users = await request.app[IDENTITY].list_users()
    return json_response([user_view(request, u) for u in users])


@api(summary="Create an account (202 when a second administrator must confirm)", body=CreateUser, responses={201: JsonObject, 202: JsonObject})
@requires("users.manage", camera_param=None)
async def create_user(request: web.Request) -> web.Response:
    req = await read_json(request, CreateUser)
    assert isinstance(req, CreateUser)
    identity = request.app[IDENTITY]
    by = request[PRINCIPAL].username
    changes = {"role": req.role, "areas": req.areas, "all_areas": req.all_areas, "display_name": req.display_name}
    identity.check_role(req.role)
    if await identity.needs_second_person("create", req.username, changes):
        if req.password is not None:
            raise BadRequest(NO_CHOSEN_PASSWORD)
        pending = await identity.request_change("create", req.username, changes, by=by, client=client_address(request))
        return json_response({"pending": pending.to_json(), "message": PENDING_MESSAGE}, status=202)
    user, password = await identity.create_user(
        req.username, role=req.role, areas=req.areas, all_areas=req.all_areas,
        display_name=req.display_name, password=req.password, by=by,
    )
    body: dict = {"user": user_view(request, user)}
    if password is not None:
        body["password"] = password
    return json_response(body, status=201)


@api(summary="Change an account", body=PatchUser, responses={200: JsonObject, 202: JsonObject})
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
    # Role and areas together: under the two-person rule they wait as one pending change.
    guarded: dict = {}
    if req.role is not msgspec.UNSET and req.role != user.role:
        guarded["role"] = req.role
    if req.areas is not msgspec.UNSET or req.all_areas is not msgspec.UNSET:
        guarded["areas"] = sorted(user.areas) if req.areas is msgspec.UNSET else req.areas
        guarded["all_areas"] = user.all_areas if req.all_areas is msgspec.UNSET else req.all_areas
    pending = None
    if guarded and await identity.needs_second_person("update", username, guarded):
        pending = await identity.request_change("update", username, guarded, by=by, client=client_address(request))
        guarded = {}
    if req.display_name is not msgspec.UNSET:
        user = await identity.set_display_name(username, req.display_name, by=by)
    if "role" in guarded:
        user = await identity.set_role(username, guarded["role"], by=by)
    if "areas" in guarded:
        user = await identity.set_areas(username, guarded["areas"], guarded["all_areas"], by=by)
    if req.locked is False:
        user = await identity.unlock(username, by=by)
    if req.disabled is not msgspec.UNSET:
        user = await identity.set_disabled(username, req.disabled, by=by)
    if pending is not None:
        return json_response({"user": user_view(request, user), "pending": pending.to_json(), "message": PENDING_MESSAGE}, status=202)
    return json_response(user_view(request, user))


@api(summary="A new one-time password", responses={200: JsonObject, 202: JsonObject})
@requires("users.manage", camera_param=None)
async def reset_password(request: web.Request) -> web.Response:
    identity = request.app[IDENTITY]
    username, by = request.match_info["username"], request[PRINCIPAL].username
    if await identity.needs_second_person("reset-password", username, {}):
        pending = await identity.request_change("reset-password", username, {}, by=by, client=client_address(request))
        return json_response({"pending": pending.to_json(), "message": PENDING_MESSAGE}, status=202)
    password = await identity.reset_password(username, by=by)
    return json_response({"password": password, "must_change_password": True})


def _change_id(request: web.Request) -> int:
    return path_id(request, "change_id")  # beyond 64 bits is a 400, never a database error


@api(summary="Changes waiting for a second administrator", responses={200: JsonObjects})
@requires("users.manage", camera_param=None)
async def list_pending(request: web.Request) -> web.Response:
    return json_response([c.to_json() for c in await request.app[IDENTITY].pending_changes()])


@api(summary="Confirm a pending change", path={"change_id": Id}, responses={200: JsonObject})
@requires("users.manage", camera_param=None)
async def confirm_pending(request: web.Request) -> web.Response:
    change, user, password = await request.app[IDENTITY].confirm_change(
        _change_id(request), by=request[PRINCIPAL].username, client=client_address(request)
    )
    body: dict = {"pending": change.to_json(), "user": user_view(request, user)}
    if password is not None:
        body["password"] = password
    return json_response(body)


@api(summary="Cancel a pending change", path={"change_id": Id}, responses={200: JsonObject})
@requires("users.manage", camera_param=None)
async def cancel_pending(request: web.Request) -> web.Response:
    change = await request.app[IDENTITY].cancel_change(_change_id(request), by=request[PRINCIPAL].username, client=client_address(request))
    return json_response({"pending": change.to_json()})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/users", list_users, name="users")
    app.router.add_post("/api/users", create_user, name="users-create")
    app.router.add_patch("/api/users/{username}", patch_user, name="user-patch")
    app.router.add_post("/api/users/{username}/reset-password", reset_password, name="user-reset-password")
    app.router.add_get("/api/users/pending", list_pending, name="users-pending")
    app.router.add_post("/api/users/pending/{change_id}/confirm", confirm_pending, name="users-pending-confirm")
    app.router.add_post("/api/users/pending/{change_id}/cancel", cancel_pending, name="users-pending-cancel")
