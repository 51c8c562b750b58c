"""Incident routes: open from a tile or playback, bookmarks, hand-over, extension, closing,
the register (JSON and CSV) and the pre-filled evidence request. Rights are decided per
camera in ``gateway.incidents`` (role and area), where refusals are audited."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from gateway.access.guard import authenticated, principal
from gateway.api.openapi import JsonAny, Media, api
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.api.session import read_json
from gateway.appkeys import IDENTITY
from gateway.errors import BadRequest
from gateway.incidents import INCIDENTS, Filters, Incident

CameraId = Annotated[str, Meta(min_length=1, max_length=64)]


class NewIncident(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    camera: CameraId
    category: Annotated[str, Meta(min_length=1, max_length=64)]
    #: The moment seen (epoch seconds); default: now.
    at: float | None = None
    note: str = ""
    cameras: list[CameraId] = []


class NewBookmark(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    note: str
    at: float | None = None
    camera: CameraId | None = None


class Handover(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    to: Annotated[str, Meta(min_length=1, max_length=64)]
    note: str = ""


class Extension(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    minutes: Annotated[float, Meta(gt=0)]


class Closing(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    note: str = ""


def _view(inc: Incident) -> dict[str, Any]:
    body = msgspec.to_builtins(inc)
    body["bookmarks"] = msgspec.to_builtins(inc.bookmarks)
    body["links"] = {
        "recordings": f"/api/cameras/{inc.camera}/recordings?from={inc.hold_from:.3f}&to={inc.hold_to:.3f}",
        "playback": f"#/playback?camera={inc.camera}&at={inc.at:.3f}",
        "export_request": f"/api/incidents/{inc.id}/export-request",
    }
    return body


def _id(request: web.Request) -> int:
    try:
        return int(request.match_info["incident_id"])
    except ValueError:
        raise BadRequest("an incident id is a number") from None


def _filters(request: web.Request) -> Filters:
    q = request.query

    def num(name: str) -> float | None:
        if name not in q:
            return None
        try:
            return float(q[name])
        except ValueError:
            raise BadRequest(f"{name} must be a number (epoch seconds)") from None

    return Filters(
        state=q.get("state") or None, category=q.get("category") or None, area=q.get("area") or None,
        owner=q.get("owner") or None, camera=q.get("camera") or None, since=num("from"), until=num("to"),
    )


@api(summary="Incident categories", responses={200: JsonAny})
@authenticated
async def categories(request: web.Request) -> web.Response:
    service = request.app[INCIDENTS]
    return json_response([{"id": c.id, "title": c.title, "services": list(c.services)} for c in service.categories.values()])


@api(summary="Open an incident", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def open_incident(request: web.Request) -> web.Response:
    body = await read_json(request, NewIncident)
    assert isinstance(body, NewIncident)
    inc = await request.app[INCIDENTS].open(
        principal(request), camera=body.camera, at=body.at, category=body.category, note=body.note, cameras=body.cameras,
        client=client_address(request),
    )
    return json_response(_view(inc), status=201)


@api(summary="The incident register", responses={200: JsonAny})
@authenticated
async def register(request: web.Request) -> web.Response:
    items = await request.app[INCIDENTS].register(principal(request), _filters(request), client_address(request))
    return json_response([_view(i) for i in items])


@api(summary="The incident register as CSV", responses={200: Media("text/csv")})
@authenticated
async def register_csv(request: web.Request) -> web.Response:
    service = request.app[INCIDENTS]
    items = await service.register(principal(request), _filters(request), client_address(request))
    return web.Response(
        text=service.csv(items), content_type="text/csv", charset="utf-8",
        headers={"Content-Disposition": 'attachment; filename="incidents.csv"'},
    )


@api(summary="One incident", responses={200: JsonAny})
@authenticated
async def get_incident(request: web.Request) -> web.Response:
    inc = await request.app[INCIDENTS].view(principal(request), _id(request), client_address(request))
    return json_response(_view(inc))


@api(summary="An export request drafted from an incident", responses={200: JsonAny})
@authenticated
async def export_request(request: web.Request) -> web.Response:
    """The evidence request this incident pre-fills, for ``POST /api/exports``."""
    inc = await request.app[INCIDENTS].view(principal(request), _id(request), client_address(request))
    return json_response(inc.export_request())


@api(summary="Bookmark a moment", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def add_bookmark(request: web.Request) -> web.Response:
    body = await read_json(request, NewBookmark)
    assert isinstance(body, NewBookmark)
    inc = await request.app[INCIDENTS].bookmark(
        principal(request), _id(request), at=body.at, note=body.note, camera=body.camera, client=client_address(request)
    )
    return json_response(_view(inc), status=201)


@api(summary="Hand an incident over", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def hand_over(request: web.Request) -> web.Response:
    body = await read_json(request, Handover)
    assert isinstance(body, Handover)
    inc = await request.app[INCIDENTS].handover(
        principal(request), _id(request), to=body.to, note=body.note, client=client_address(request),
        identity=request.app[IDENTITY],
    )
    return json_response(_view(inc))


@api(summary="Extend an incident", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def extend(request: web.Request) -> web.Response:
    body = await read_json(request, Extension)
    assert isinstance(body, Extension)
    inc = await request.app[INCIDENTS].extend(principal(request), _id(request), minutes=body.minutes, client=client_address(request))
    return json_response(_view(inc))


@api(summary="Close an incident", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def close(request: web.Request) -> web.Response:
    body = await read_json(request, Closing) if request.can_read_body else Closing()
    assert isinstance(body, Closing)
    inc = await request.app[INCIDENTS].close(principal(request), _id(request), note=body.note, client=client_address(request))
    return json_response(_view(inc))


def setup(app: web.Application) -> None:
    """Routes only; the service is started by the composition root."""
    app.router.add_get("/api/incidents/categories", categories, name="incident-categories")
    app.router.add_get("/api/incidents/register.csv", register_csv, name="incidents-csv")
    app.router.add_get("/api/incidents", register, name="incidents")
    app.router.add_post("/api/incidents", open_incident, name="incident-open")
    app.router.add_get("/api/incidents/{incident_id}", get_incident, name="incident")
    app.router.add_get("/api/incidents/{incident_id}/export-request", export_request, name="incident-export-request")
    app.router.add_post("/api/incidents/{incident_id}/bookmarks", add_bookmark, name="incident-bookmark")
    app.router.add_post("/api/incidents/{incident_id}/handover", hand_over, name="incident-handover")
    app.router.add_post("/api/incidents/{incident_id}/extend", extend, name="incident-extend")
    app.router.add_post("/api/incidents/{incident_id}/close", close, name="incident-close")
