"""PTZ patrol tour routes: list (``live.view``), edit (``cameras.manage``), start and stop
on demand (``ptz.control``). The tours themselves run in ``gateway.ptz_tours``."""

from __future__ import annotations

from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.api.openapi import JsonAny, api
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.api.session import read_json
from gateway.errors import BadRequest
from gateway.ptz_tours import TOURS, TourSpec


def _ids(request: web.Request) -> tuple[str, int]:
    try:
        return request.match_info["camera_id"], int(request.match_info["tour_id"])
    except ValueError:
        raise BadRequest("a tour id is a number") from None


@api(summary="PTZ tours", responses={200: JsonAny})
@requires("live.view")
async def list_tours(request: web.Request) -> web.Response:
    return json_response(request.app[TOURS].list(request.match_info["camera_id"]))


@api(summary="Create a PTZ tour", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@requires("cameras.manage")
async def create_tour(request: web.Request) -> web.Response:
    spec = await read_json(request, TourSpec)
    assert isinstance(spec, TourSpec)
    tour = await request.app[TOURS].create(request.match_info["camera_id"], spec, principal(request).username, client_address(request))
    return json_response(tour, status=201)


@api(summary="Change a PTZ tour", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@requires("cameras.manage")
async def update_tour(request: web.Request) -> web.Response:
    camera, tour_id = _ids(request)
    spec = await read_json(request, TourSpec)
    assert isinstance(spec, TourSpec)
    return json_response(await request.app[TOURS].update(camera, tour_id, spec, principal(request).username, client_address(request)))


@api(summary="Delete a PTZ tour", responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@requires("cameras.manage")
async def delete_tour(request: web.Request) -> web.Response:
    camera, tour_id = _ids(request)
    await request.app[TOURS].delete(camera, tour_id, principal(request).username, client_address(request))
    return json_response({"deleted": tour_id})


@api(summary="Start a PTZ tour", responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@requires("ptz.control")
async def start_tour(request: web.Request) -> web.Response:
    camera, tour_id = _ids(request)
    return json_response(await request.app[TOURS].start(camera, tour_id, principal(request).username, client=client_address(request)))


@api(summary="Stop a PTZ tour", responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@requires("ptz.control")
async def stop_tour(request: web.Request) -> web.Response:
    camera, tour_id = _ids(request)
    return json_response(await request.app[TOURS].stop(camera, tour_id, principal(request).username, client=client_address(request)))


def setup(app: web.Application) -> None:
    """Routes only; the tour service is started by the composition root."""
    base = "/api/cameras/{camera_id}/tours"
    app.router.add_get(base, list_tours, name="ptz-tours")
    app.router.add_post(base, create_tour, name="ptz-tour-create")
    app.router.add_put(base + "/{tour_id}", update_tour, name="ptz-tour-update")
    app.router.add_delete(base + "/{tour_id}", delete_tour, name="ptz-tour-delete")
    app.router.add_post(base + "/{tour_id}/start", start_tour, name="ptz-tour-start")
    app.router.add_post(base + "/{tour_id}/stop", stop_tour, name="ptz-tour-stop")
