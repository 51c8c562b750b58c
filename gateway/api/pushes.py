"""Emergency pushes (see ``gateway.dispatch.push``).

``POST /api/pushes``                 ``{cameras, stations, reason, minutes}``; needs ``push.send``
                                     on every camera; answers the push (201)
``GET /api/pushes?state=active|past`` pushes the user may see (``push.send`` holders: all)
``GET /api/pushes/mine``             a station's own active pushes
``GET /api/pushes/stations``         the station accounts a push can go to, and the limits
``GET /api/pushes/{id}``             one push
``POST /api/pushes/{id}/extend``     ``{minutes}``: add time (at most ``max-minutes`` from now);
                                     needs ``push.send`` on every camera of the push, now
``DELETE /api/pushes/{id}``          revoke (the sender, or ``push.send`` on every camera): the
                                     stations' views end within two seconds
Refusals are audited (``push.extend`` / ``push.revoke``, outcome ``refused``, the camera).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.access.guard import authenticated, principal, requires
from gateway.api.openapi import Id, JsonObject, JsonObjects, api, enum_of
from gateway.access.middleware import client_address
from gateway.api import json_response, path_id
from gateway.api.session import read_json
from gateway.appkeys import PUSHES
from gateway.errors import NotFound


class CreatePush(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    cameras: list[str]
    stations: list[str]
    reason: str
    #: Decimals allowed (at least 0.05); the configured default when omitted.
    minutes: float | None = None


class ExtendPush(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    minutes: float | None = None


def _push_id(request: web.Request) -> int:
    return path_id(request, "push_id")


@api(summary="Push cameras to stations for a while", body=CreatePush, responses={201: JsonObject})
@requires("push.send", camera_param=None)
async def create_push(request: web.Request) -> web.Response:
    req = await read_json(request, CreatePush)
    assert isinstance(req, CreatePush)
    service = request.app[PUSHES]
    push = await service.create(
        principal(request), cameras=req.cameras, stations=req.stations, reason=req.reason, minutes=req.minutes,
        client=client_address(request),
    )
    return json_response(push.view(service.now()), status=201)


@api(summary="Pushes, active or past", query={"state": enum_of("active", "past")}, responses={200: JsonObjects})
@authenticated
async def list_pushes(request: web.Request) -> web.Response:
    service = request.app[PUSHES]
    found = await service.list(principal(request), state=request.query.get("state", "active"))
    now = service.now()
    return json_response([p.view(now) for p in found])


@api(summary="The pushes a station receives", responses={200: JsonObject})
@authenticated
async def my_pushes(request: web.Request) -> web.Response:
    service = request.app[PUSHES]
    who = principal(request)
    now = service.now()
    return json_response({"now": now, "pushes": [p.view(now, station=who.username) for p in service.active_for_station(who.username)]})


@api(summary="The stations one may push to, with the default and longest minutes", responses={200: JsonObject})
@requires("push.send", camera_param=None)
async def list_stations(request: web.Request) -> web.Response:
    service = request.app[PUSHES]
    return json_response(
        {
            "stations": await service.stations(),
            "default_minutes": service.config.default_minutes,
            "max_minutes": service.config.max_minutes,
        }
    )


@api(summary="One push", path={"push_id": Id}, responses={200: JsonObject})
@authenticated
async def get_push(request: web.Request) -> web.Response:
    service = request.app[PUSHES]
    who = principal(request)
    push = await service.get(_push_id(request))
    now = service.now()
    if service.may_see(who, push):
        return json_response(push.view(now))
    if who.username in push.stations and push.state(now) == "active":
        return json_response(push.view(now, station=who.username))
    raise NotFound(f"no push {push.id}")


@api(summary="Extend a push", path={"push_id": Id}, body=ExtendPush, responses={200: JsonObject})
@authenticated
async def extend_push(request: web.Request) -> web.Response:
    req = await read_json(request, ExtendPush)
    assert isinstance(req, ExtendPush)
    service = request.app[PUSHES]
    push = await service.extend(principal(request), _push_id(request), req.minutes, client=client_address(request))
    return json_response(push.view(service.now()))


@api(summary="Revoke a push (its views end at once)", path={"push_id": Id}, responses={200: JsonObject})
@authenticated
async def revoke_push(request: web.Request) -> web.Response:
    service = request.app[PUSHES]
    push = await service.revoke(principal(request), _push_id(request), client=client_address(request))
    return json_response(push.view(service.now()))


def setup(app: web.Application) -> None:
    app.router.add_post("/api/pushes", create_push, name="pushes-create")
    app.router.add_get("/api/pushes", list_pushes, name="pushes")
    app.router.add_get("/api/pushes/mine", my_pushes, name="pushes-mine")
    app.router.add_get("/api/pushes/stations", list_stations, name="pushes-stations")
    app.router.add_get(r"/api/pushes/{push_id:\d+}", get_push, name="push")
    app.router.add_post(r"/api/pushes/{push_id:\d+}/extend", extend_push, name="push-extend")
    app.router.add_delete(r"/api/pushes/{push_id:\d+}", revoke_push, name="push-revoke")
