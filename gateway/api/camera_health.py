"""Camera health: per camera state, uptime, history, recording gaps and alarms."""

from __future__ import annotations

from aiohttp import web

from gateway.access.guard import authenticated, principal
from gateway.api.openapi import JsonAny, api
from gateway.api import json_response
from gateway.api.cameras import visible_camera
from gateway.appkeys import ACCESS, CAMERAS, HEALTH
from gateway.errors import BadRequest

SORTS = ("worst", "id", "uptime")


@api(summary="Camera health", responses={200: JsonAny})
@authenticated
async def list_health(request: web.Request) -> web.Response:
    """Every camera the user may see; ``?sort=worst`` (default) puts the worst on top."""
    sort = request.query.get("sort", "worst")
    if sort not in SORTS:
        raise BadRequest(f"sort must be one of {', '.join(SORTS)}")
    visible = request.app[ACCESS].cameras_for(principal(request))
    ids = [c.id for c in request.app[CAMERAS] if c.id in visible]
    report = await request.app[HEALTH].report(ids)
    if sort == "worst":
        report.sort(key=lambda h: (-h.score, h.id))
    elif sort == "uptime":
        report.sort(key=lambda h: (h.uptime_24h if h.uptime_24h is not None else 2.0, h.id))
    else:
        report.sort(key=lambda h: h.id)
    return json_response(report)


@api(summary="One camera's health", responses={200: JsonAny})
@authenticated
async def get_health(request: web.Request) -> web.Response:
    """One camera, with its bitrate and frame-rate history."""
    camera = await visible_camera(request, "camera.health")
    (report,) = await request.app[HEALTH].report([camera.id], history=True)
    return json_response(report)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/health/cameras", list_health, name="camera_health")
    app.router.add_get("/api/health/cameras/{camera_id}", get_health, name="camera_health_one")
