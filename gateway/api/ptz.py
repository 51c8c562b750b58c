"""PTZ routes: moves, presets, home and the control lock of one camera.

Every command goes through ``gateway.ptz.PtzService`` (the control lock). Velocities and
positions use ONVIF's generic spaces: pan and tilt -1..1, zoom 0..1 for positions and
-1..1 for velocities and relative steps. Positive pan turns right, positive tilt up.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from gateway.access.guard import principal, requires
from gateway.api.openapi import JsonObject, api
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.api.session import read_json
from gateway.appkeys import CAMERAS, CONFIG, PTZ
from gateway.errors import BadRequest, CameraUnavailable
from gateway.interfaces import PtzCapabilities

Unit = Annotated[float, Meta(ge=-1.0, le=1.0)]
Zoom = Annotated[float, Meta(ge=0.0, le=1.0)]


class Velocity(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pan: Unit = 0.0
    tilt: Unit = 0.0
    zoom: Unit = 0.0


class Position(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pan: Unit
    tilt: Unit
    zoom: Zoom


class Step(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pan: Unit = 0.0
    tilt: Unit = 0.0
    zoom: Unit = 0.0


class NewPreset(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)]


class PresetView(msgspec.Struct, kw_only=True):
    token: str
    name: str


def _ids(request: web.Request) -> tuple[str, PtzCapabilities]:
    camera_id = request.match_info["camera_id"]
    return camera_id, request.app[CAMERAS].get(camera_id).vendor.ptz_capabilities()


def _done(request: web.Request, camera_id: str) -> web.Response:
    return json_response({"lock": request.app[PTZ].status(camera_id, principal(request))})


@api(summary="Move continuously", body=Velocity, responses={200: JsonObject, 204: None})
@requires("ptz.control")
async def continuous_move(request: web.Request) -> web.Response:
    """Start (or change) a continuous move; it runs until stop, or until
    ``ptz.move-timeout-seconds`` pass without a command (clients repeat it while held)."""
    body = await read_json(request, Velocity)
    assert isinstance(body, Velocity)
    camera_id, caps = _ids(request)
    still = body.pan == 0 and body.tilt == 0 and body.zoom == 0
    await request.app[PTZ].command(
        principal(request), camera_id, "continuous moves",
        lambda v: v.ptz_stop() if still else v.ptz_continuous_move(body.pan, body.tilt, body.zoom),
        client=client_address(request), moving=not still, moves=not still, supported=caps.continuous,
    )
    return _done(request, camera_id)


@api(summary="Stop moving", responses={200: JsonObject, 204: None})
@requires("ptz.control")
async def stop(request: web.Request) -> web.Response:
    camera_id, caps = _ids(request)
    await request.app[PTZ].command(
        principal(request), camera_id, "stop", lambda v: v.ptz_stop(),
        client=client_address(request), moving=False, moves=False, supported=caps.any,
    )
    return _done(request, camera_id)


@api(summary="Move to a position", body=Position, responses={200: JsonObject, 204: None})
@requires("ptz.control")
async def absolute_move(request: web.Request) -> web.Response:
    body = await read_json(request, Position)
    assert isinstance(body, Position)
    camera_id, caps = _ids(request)
    await request.app[PTZ].command(
        principal(request), camera_id, "absolute moves", lambda v: v.ptz_absolute_move(body.pan, body.tilt, body.zoom),
        client=client_address(request), moving=False, supported=caps.absolute,
    )
    return _done(request, camera_id)


@api(summary="Move by a step", body=Step, responses={200: JsonObject, 204: None})
@requires("ptz.control")
async def relative_move(request: web.Request) -> web.Response:
    body = await read_json(request, Step)
    assert isinstance(body, Step)
    camera_id, caps = _ids(request)
    await request.app[PTZ].command(
        principal(request), camera_id, "relative moves", lambda v: v.ptz_relative_move(body.pan, body.tilt, body.zoom),
        client=client_address(request), moving=False, supported=caps.relative,
    )
    return _done(request, camera_id)


@api(summary="Go to the home position", responses={200: JsonObject, 204: None})
@requires("ptz.control")
async def home(request: web.Request) -> web.Response:
    camera_id, caps = _ids(request)
    await request.app[PTZ].command(
        principal(request), camera_id, "a home position", lambda v: v.ptz_home(),
        client=client_address(request), moving=False, supported=caps.home,
    )
    return _done(request, camera_id)


@api(summary="The camera's presets", responses={200: list[PresetView]})
@requires("ptz.control")
async def list_presets(request: web.Request) -> web.Response:
    camera_id, caps = _ids(request)
    if not caps.presets:
        return json_response([])
    vendor = request.app[CAMERAS].get(camera_id).vendor
    timeout = request.app[CONFIG].ptz.command_timeout_seconds
    try:
        presets = await asyncio.wait_for(vendor.ptz_presets(), timeout)
    except TimeoutError:
        raise CameraUnavailable(f"camera {camera_id}: no answer to GetPresets within {timeout:g}s") from None
    return json_response([PresetView(token=p.token, name=p.name) for p in presets])


@api(summary="Go to a preset", responses={200: JsonObject, 204: None})
@requires("ptz.control")
async def goto_preset(request: web.Request) -> web.Response:
    camera_id, caps = _ids(request)
    token = request.match_info["token"]
    await request.app[PTZ].command(
        principal(request), camera_id, "presets", lambda v: v.ptz_goto_preset(token),
        client=client_address(request), moving=False, supported=caps.presets,
    )
    return _done(request, camera_id)


@api(summary="Store the current position as a preset", body=NewPreset, responses={201: PresetView})
@requires("cameras.manage")
async def set_preset(request: web.Request) -> web.Response:
    """Store the current position as a preset (under the control lock, like a move)."""
    body = await read_json(request, NewPreset)
    assert isinstance(body, NewPreset)
    camera_id, caps = _ids(request)
    preset = await request.app[PTZ].command(
        principal(request), camera_id, "presets", lambda v: v.ptz_set_preset(body.name),
        client=client_address(request), moves=False, supported=caps.presets,
    )
    return json_response(PresetView(token=preset.token, name=preset.name), status=201)


@api(summary="Who holds PTZ control", responses={200: JsonObject})
@requires("live.view")
async def get_lock(request: web.Request) -> web.Response:
    """Who holds control: for everyone watching the camera."""
    camera_id, _ = _ids(request)
    return json_response(request.app[PTZ].status(camera_id, principal(request)))


@api(summary="Take PTZ control", responses={200: JsonObject})
@requires("ptz.control")
async def take_lock(request: web.Request) -> web.Response:
    camera_id, caps = _ids(request)
    if not caps.any:
        raise BadRequest(f"camera {camera_id} has no PTZ")
    return json_response(await request.app[PTZ].take(principal(request), camera_id, client_address(request)))


@api(summary="Release PTZ control", responses={200: JsonObject})
@requires("ptz.control")
async def release_lock(request: web.Request) -> web.Response:
    camera_id, _ = _ids(request)
    return json_response(await request.app[PTZ].release(principal(request), camera_id))


def setup(app: web.Application) -> None:
    """The PTZ routes (the service, ``gateway.ptz.ptz_ctx``, is started by ``gateway.app``)."""
    base = "/api/cameras/{camera_id}/ptz"
    app.router.add_post(base + "/move", continuous_move, name="ptz-move")
    app.router.add_post(base + "/stop", stop, name="ptz-stop")
    app.router.add_post(base + "/absolute", absolute_move, name="ptz-absolute")
    app.router.add_post(base + "/relative", relative_move, name="ptz-relative")
    app.router.add_post(base + "/home", home, name="ptz-home")
    app.router.add_get(base + "/presets", list_presets, name="ptz-presets")
    app.router.add_post(base + "/presets", set_preset, name="ptz-preset-set")
    app.router.add_post(base + "/presets/{token}/go", goto_preset, name="ptz-preset-go")
    app.router.add_get(base + "/lock", get_lock, name="ptz-lock")
    app.router.add_post(base + "/lock", take_lock, name="ptz-lock-take")
    app.router.add_delete(base + "/lock", release_lock, name="ptz-lock-release")
