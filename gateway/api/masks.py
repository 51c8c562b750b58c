"""Privacy masks of a camera: read, replace, add, delete, history. ``mask.edit`` only.

    GET    /api/cameras/{camera_id}/masks            the masks in force (config ones locked)
    PUT    /api/cameras/{camera_id}/masks            {"masks": [...], "reason": "...", "version": n}
                                                     replaces the database masks (a new version)
    POST   /api/cameras/{camera_id}/masks            {"points": [[x, y], ...], "filter": "fill",
                                                      "options": {}, "reason": "...",
                                                      "space": "scene"|"picture", "drawn_at": [p, t, z]}
                                                     adds one
    DELETE /api/cameras/{camera_id}/masks/{index}    {"reason": "..."}  (or ?reason=)
    GET    /api/cameras/{camera_id}/masks/versions   every saved version: who, when, why

A mask is a polygon in normalised coordinates (0..1, origin top left). On a PTZ camera that
reports its position a new mask is anchored to the scene where the camera stands (or at
``drawn_at``, which must still be where it stands: the editor sends the position it drew at)
and follows the camera from then on; ``"space": "picture"`` keeps it fixed in the picture.
Every change needs a reason, makes a new version and is audited; a refused attempt is
audited by the guard.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.api.openapi import JsonObject, JsonObjects, Text, api, whole
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.errors import BadRequest
from gateway.masks import MASKS, parse_mask, parse_masks, parse_reason


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest("the body must be JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


@api(summary="The camera's privacy masks", responses={200: JsonObject})
@requires("mask.edit")
async def get_masks(request: web.Request) -> web.Response:
    return json_response(request.app[MASKS].view(request.match_info["camera_id"]))


@api(summary="Replace the privacy masks (reason required)", body=JsonObject, responses={200: JsonObject})
@requires("mask.edit")
async def put_masks(request: web.Request) -> web.Response:
    service = request.app[MASKS]
    body = await _body(request)
    camera_id = request.match_info["camera_id"]
    raw = body.get("masks")
    spaces = [item.pop("space", None) if isinstance(item, dict) else None for item in raw] if isinstance(raw, list) else []
    masks = parse_masks(raw, service.filters)
    # Masks read back with their anchor keep it; new ones are anchored where the camera stands.
    masks = tuple(
        m if m.drawn_at is not None and space != "picture" else service.anchor(camera_id, m, space)
        for m, space in zip(masks, spaces)
    )
    reason = parse_reason(body.get("reason"))
    version = body.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise BadRequest("version must be the whole number last read")
    who = principal(request)
    view = await service.save(
        request.match_info["camera_id"], masks, reason=reason, user=who.username, client=client_address(request),
        expected_version=version,
    )
    return json_response(view)


@api(summary="Add a privacy mask (reason required)", body=JsonObject, responses={201: JsonObject})
@requires("mask.edit")
async def post_mask(request: web.Request) -> web.Response:
    service = request.app[MASKS]
    body = await _body(request)
    reason = parse_reason(body.pop("reason", None))
    space = body.pop("space", None)
    mask = service.anchor(request.match_info["camera_id"], parse_mask(body, service.filters), space)
    who = principal(request)
    view = await service.add(request.match_info["camera_id"], mask, reason=reason, user=who.username, client=client_address(request))
    return json_response(view, status=201)


@api(summary="Remove a privacy mask (reason required)", path={"index": whole(0, 10000)}, query={"reason": Text}, responses={200: JsonObject})
@requires("mask.edit")
async def delete_mask(request: web.Request) -> web.Response:
    service = request.app[MASKS]
    body = await _body(request)
    reason = parse_reason(body.get("reason", request.query.get("reason")))
    raw = request.match_info["index"]
    who = principal(request)
    view = await service.delete(
        request.match_info["camera_id"], int(raw), user=who.username, client=client_address(request), reason=reason
    )
    return json_response(view)


@api(summary="Every version of the masks", responses={200: JsonObjects})
@requires("mask.edit")
async def mask_versions(request: web.Request) -> web.Response:
    return json_response(await request.app[MASKS].versions(request.match_info["camera_id"]))


def setup(app: web.Application) -> None:
    base = "/api/cameras/{camera_id}/masks"
    app.router.add_get(base, get_masks, name="masks")
    app.router.add_put(base, put_masks, name="masks-put")
    app.router.add_post(base, post_mask, name="masks-add")
    app.router.add_get(base + "/versions", mask_versions, name="mask-versions")
    app.router.add_delete(base + "/{index:\\d+}", delete_mask, name="mask-delete")
