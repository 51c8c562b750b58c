"""Cameras managed through the API by ``cameras.manage`` (stored in the database).

A camera is a ``[[camera]]`` table as JSON, with the keys of ``cameras.toml`` (``id``,
``vendor``, ``area``, ``options``...), checked by the same function, so the errors are the
same ones (named ``managed camera: camera.<key>``). The cameras of ``cameras.toml`` are
listed beside them, read-only here: they change in the file, then ``citygate reload``.
A change starts, restarts or stops the camera at once (``gateway.reload``). The editor
must hold the camera's area (old and new) unless they hold all areas. Every change and
every refusal is audited.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.access.middleware import client_address
from gateway.access.policy import Action
from gateway.api import json_response
from gateway.api.openapi import JsonObject, api
from gateway.api.session import read_json
from gateway.appkeys import ACCESS
from gateway.config import CAMERAS_FILE
from gateway.errors import BadRequest, Conflict, Forbidden, GatewayError
from gateway.reload import RELOADER, Reloader


class ManagedCamera(msgspec.Struct, kw_only=True):
    """A camera managed through the API: its table (secret options masked) and who made it."""

    id: str
    camera: dict[str, Any]
    created_by: str
    created_at: float
    updated_by: str
    updated_at: float
    #: Why a stored camera is not run now (a vendor plugin uninstalled since, say).
    errors: list[str]


class ConfiguredCamera(msgspec.Struct, kw_only=True):
    """A camera of ``cameras.toml``: read-only through the API."""

    id: str
    name: str
    vendor: str
    area: str
    tags: tuple[str, ...]
    record: bool


class ManagedCameras(msgspec.Struct, kw_only=True):
    managed: list[ManagedCamera]
    #: The cameras of ``cameras.toml`` in the editor's areas (change them in the file).
    configured: list[ConfiguredCamera]
    configured_file: str


async def _audit(request: web.Request, action: str, camera: str | None, *, outcome: str = "ok", **detail: Any) -> None:
    await request.app[ACCESS].audit.record(
        action, outcome=outcome, user=principal(request).username, client=client_address(request),
        camera=camera[:64] if camera else None, detail=detail,
    )


async def _may_manage(request: web.Request, camera: str, *areas: str) -> None:
    """The editor holds ``cameras.manage`` in every one of ``areas`` (403 audited otherwise)."""
    access = request.app[ACCESS]
    subject = access.subject(principal(request))
    for area in areas:
        decision = access.policy.decide(subject, Action.CAMERAS_MANAGE, camera=camera, camera_area=area, now=time.time())
        if not decision:
            await _audit(request, "cameras.manage", camera, outcome="refused", reason=decision.reason)
            raise Forbidden(decision.reason)


async def _body(request: web.Request) -> dict[str, Any]:
    table = await read_json(request, dict[str, Any])
    assert isinstance(table, dict)
    return table


async def _refused(request: web.Request, action: str, camera: str | None, exc: GatewayError) -> None:
    """A change that was checked and refused (invalid table, id taken): audited with its reason."""
    await _audit(request, action, camera, outcome="refused", reason=exc.message)


def _reloader(request: web.Request) -> Reloader:
    return request.app[RELOADER]


@api(summary="Cameras managed through the API, beside the configured ones", responses={200: ManagedCameras})
@requires(Action.CAMERAS_MANAGE, camera_param=None)
async def list_managed(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    access = request.app[ACCESS]
    subject = access.subject(principal(request))
    now = time.time()

    def mine(camera_id: str, area: Any) -> bool:
        return bool(access.policy.decide(subject, Action.CAMERAS_MANAGE, camera=camera_id, camera_area=area, now=now))

    managed = [row for row in await reloader.managed_rows() if mine(row["id"], row["camera"].get("area"))]
    configured = [
        ConfiguredCamera(id=c.id, name=c.title, vendor=c.vendor, area=c.area, tags=c.tags, record=c.record)
        for c in reloader.config.cameras if mine(c.id, c.area)
    ]
    return json_response(ManagedCameras(
        managed=[ManagedCamera(**row) for row in managed], configured=configured, configured_file=CAMERAS_FILE,
    ))


async def _row(reloader: Reloader, camera_id: str) -> ManagedCamera:
    return next(ManagedCamera(**r) for r in await reloader.managed_rows() if r["id"] == camera_id)


@api(summary="Add a camera (a [[camera]] table as JSON)", body=JsonObject, responses={201: ManagedCamera})
@requires(Action.CAMERAS_MANAGE, camera_param=None)
async def add_managed(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    table = await _body(request)
    camera_id = table.get("id") if isinstance(table.get("id"), str) else None
    try:
        camera = reloader.validate(table)
        await _may_manage(request, camera.id, camera.area)
        await reloader.add_managed(table, by=principal(request).username)
    except (BadRequest, Conflict) as exc:
        await _refused(request, "cameras.add", camera_id, exc)
        raise
    await _audit(request, "cameras.add", camera.id, vendor=camera.vendor, area=camera.area)
    return json_response(await _row(reloader, camera.id), status=201)


@api(summary="Change a camera managed through the API", body=JsonObject, responses={200: ManagedCamera})
@requires(Action.CAMERAS_MANAGE, camera_param=None)
async def edit_managed(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    camera_id = request.match_info["camera_id"]
    table = await _body(request)
    try:
        old = reloader.managed.get(camera_id)
        camera = reloader.validate({k: v for k, v in table.items() if k != "id" or v == camera_id}, camera_id=camera_id)
        await _may_manage(request, camera_id, *{camera.area, *([old.area] if old is not None else [])})
        camera, changed = await reloader.edit_managed(camera_id, table, by=principal(request).username)
    except (BadRequest, Conflict) as exc:
        await _refused(request, "cameras.edit", camera_id, exc)
        raise
    await _audit(request, "cameras.edit", camera_id, changed=changed)
    return json_response(await _row(reloader, camera_id))


@api(summary="Remove a camera managed through the API (its recordings stay)", responses={200: JsonObject})
@requires(Action.CAMERAS_MANAGE, camera_param=None)
async def remove_managed(request: web.Request) -> web.Response:
    reloader = _reloader(request)
    camera_id = request.match_info["camera_id"]
    old = reloader.managed.get(camera_id)
    try:
        if old is not None:
            await _may_manage(request, camera_id, old.area)
        elif not principal(request).all_areas:  # a stored camera not run: its area is not checked
            await _may_manage(request, camera_id, "")
        await reloader.remove_managed(camera_id)
    except Conflict as exc:
        await _refused(request, "cameras.remove", camera_id, exc)
        raise
    await _audit(request, "cameras.remove", camera_id)
    return json_response({"removed": camera_id})


def setup(app: web.Application) -> None:
    """Routes only; the reloader is started by the composition root. Added before the
    camera routes (whose ``{camera_id}`` would match ``managed``)."""
    app.router.add_get("/api/cameras/managed", list_managed, name="cameras-managed")
    app.router.add_post("/api/cameras/managed", add_managed, name="cameras-managed-add")
    app.router.add_put("/api/cameras/managed/{camera_id}", edit_managed, name="cameras-managed-edit")
    app.router.add_delete("/api/cameras/managed/{camera_id}", remove_managed, name="cameras-managed-remove")
