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
from gateway.access.middleware import client_address
from gateway.api import json_response
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
    return int(request.match_info["push_id"])


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


@authenticated
async def list_pushes(request: web.Request) -> web.Response:
    service = request.app[PUSHES]
    found = await service.list(principal(request), state=request.query.get("state", "active"))
    now = service.now()
    return json_response([p.view(now) for p in found])


@authenticated
async def my_pushes(request: web.Request) -> web.Response:
    service = request.app[PUSHES]
    who = principal(request)
    now = service.now()
    return json_response({"now": now, "pushes": [p.view(now, station=who.username) for p in service.active_for_station(who.username)]})


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


@authenticated
async def extend_push(request: web.Request) -> web.Response:
    req = await read_json(request, ExtendPush)
    assert isinstance(req, ExtendPush)
    service = request.app[PUSHES]
    push = await service.extend(principal(request), _push_id(request), req.minutes, client=client_address(request))
    return json_response(push.view(service.now()))


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
