"""Saved walls: named layouts (grid size, which camera in which tile, main or sub stream).

A wall belongs to the user who saved it; ``shared_roles`` lets users of those roles open it
too (never change it). A user opening a wall sees only the tiles of cameras they may watch:
the others come as ``null`` and are counted in ``hidden``. Saving, changing and deleting are
audited; so is every refusal.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec
import sqlalchemy as sa
from aiohttp import web

from gateway.access.guard import Principal, authenticated, principal
from gateway.api.openapi import JsonAny, api
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.api.session import read_json
from gateway.appkeys import ACCESS, DATABASE, POLICY
from gateway.db import walls
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound

MAX_SIDE = 8


class Tile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    camera: str
    profile: Literal["main", "sub"] = "sub"


class WallBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    columns: Annotated[int, msgspec.Meta(ge=1, le=MAX_SIDE)]
    rows: Annotated[int, msgspec.Meta(ge=1, le=MAX_SIDE)]
    #: Row by row; ``null`` is an empty tile.
    tiles: list[Tile | None] = []
    shared_roles: list[str] = []


class WallView(msgspec.Struct, kw_only=True):
    id: int
    name: str
    owner: str
    mine: bool
    columns: int
    rows: int
    tiles: list[Tile | None]
    #: Tiles of cameras this user may not watch (shown empty).
    hidden: int
    shared_roles: list[str]
    updated_at: float


def _view(row: sa.Row, who: Principal, visible: set[str]) -> WallView:
    layout = row.layout
    tiles: list[Tile | None] = []
    hidden = 0
    for tile in layout.get("tiles", []):
        if tile is not None and tile["camera"] not in visible:
            hidden += 1
            tile = None
        tiles.append(Tile(camera=tile["camera"], profile=tile["profile"]) if tile is not None else None)
    return WallView(
        id=row.id, name=row.name, owner=row.owner, mine=row.owner == who.username, columns=layout["columns"],
        rows=layout["rows"], tiles=tiles, hidden=hidden, shared_roles=list(row.shared_roles), updated_at=row.updated_at,
    )


def _may_open(row: sa.Row, who: Principal) -> bool:
    return row.owner == who.username or who.role in row.shared_roles


async def _refuse(request: web.Request, action: str, reason: str, *, camera: str | None = None, wall: int | None = None) -> None:
    who = principal(request)
    detail: dict[str, object] = {"reason": reason}
    if wall is not None:
        detail["wall"] = wall
    await request.app[ACCESS].audit.record(
        action, outcome="refused", user=who.username, client=client_address(request), camera=camera, detail=detail
    )
    raise Forbidden(reason)


async def _checked_body(request: web.Request, action: str) -> WallBody:
    body = await read_json(request, WallBody)
    assert isinstance(body, WallBody)
    if len(body.tiles) > body.columns * body.rows:
        raise BadRequest(f"a {body.columns}x{body.rows} wall has {body.columns * body.rows} tiles, not {len(body.tiles)}")
    roles = request.app[POLICY].roles
    unknown = [r for r in body.shared_roles if r not in roles]
    if unknown:
        raise BadRequest(f"unknown role {unknown[0]!r} in shared_roles")
    access = request.app[ACCESS]
    who = principal(request)
    visible = access.cameras_for(who)
    for tile in body.tiles:
        if tile is not None and tile.camera not in visible:
            reason = access.decide(who, "live.view", tile.camera).reason
            await _refuse(request, action, f"camera {tile.camera}: {reason}", camera=tile.camera)
    return body


def _layout(body: WallBody) -> dict:
    return {"columns": body.columns, "rows": body.rows, "tiles": [msgspec.to_builtins(t) for t in body.tiles]}


async def _row(request: web.Request, wall_id: int) -> sa.Row:
    async with request.app[DATABASE].connect() as conn:
        row = (await conn.execute(sa.select(walls).where(walls.c.id == wall_id))).first()
    if row is None:
        raise NotFound(f"no wall {wall_id}")
    return row


def _wall_id(request: web.Request) -> int:
    raw = request.match_info["wall_id"]
    if not raw.isdigit():
        raise NotFound(f"no wall {raw!r}")
    return int(raw)


@api(summary="Video walls", responses={200: JsonAny})
@authenticated
async def list_walls(request: web.Request) -> web.Response:
    """The user's walls, then those shared with the user's role."""
    who = principal(request)
    async with request.app[DATABASE].connect() as conn:
        rows = (await conn.execute(sa.select(walls).order_by(walls.c.name, walls.c.id))).all()
    visible = request.app[ACCESS].cameras_for(who)
    mine = [_view(r, who, visible) for r in rows if r.owner == who.username]
    shared = [_view(r, who, visible) for r in rows if r.owner != who.username and who.role in r.shared_roles]
    return json_response(mine + shared)


@api(summary="Create a video wall", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def create_wall(request: web.Request) -> web.Response:
    body = await _checked_body(request, "wall.save")
    who = principal(request)
    now = time.time()
    try:
        async with request.app[DATABASE].begin() as conn:
            result = await conn.execute(walls.insert().values(
                owner=who.username, name=body.name, layout=_layout(body), shared_roles=body.shared_roles,
                created_at=now, updated_at=now,
            ))
            wall_id = result.inserted_primary_key[0]
    except sa.exc.IntegrityError:
        raise Conflict(f"you already have a wall named {body.name!r}") from None
    await request.app[ACCESS].audit.record(
        "wall.save", user=who.username, client=client_address(request),
        detail={"wall": wall_id, "name": body.name, "shared_roles": body.shared_roles},
    )
    row = await _row(request, wall_id)
    return json_response(_view(row, who, request.app[ACCESS].cameras_for(who)), status=201)


@api(summary="One video wall", responses={200: JsonAny})
@authenticated
async def get_wall(request: web.Request) -> web.Response:
    who = principal(request)
    wall_id = _wall_id(request)
    row = await _row(request, wall_id)
    if not _may_open(row, who):
        await _refuse(request, "wall.open", f"wall {wall_id} is neither yours nor shared with role {who.role}", wall=wall_id)
    return json_response(_view(row, who, request.app[ACCESS].cameras_for(who)))


@api(summary="Change a video wall", body=JsonAny, responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def update_wall(request: web.Request) -> web.Response:
    who = principal(request)
    wall_id = _wall_id(request)
    row = await _row(request, wall_id)
    if row.owner != who.username:
        await _refuse(request, "wall.save", f"only {row.owner} may change wall {wall_id}", wall=wall_id)
    body = await _checked_body(request, "wall.save")
    try:
        async with request.app[DATABASE].begin() as conn:
            await conn.execute(walls.update().where(walls.c.id == wall_id).values(
                name=body.name, layout=_layout(body), shared_roles=body.shared_roles, updated_at=time.time(),
            ))
    except sa.exc.IntegrityError:
        raise Conflict(f"you already have a wall named {body.name!r}") from None
    await request.app[ACCESS].audit.record(
        "wall.save", user=who.username, client=client_address(request),
        detail={"wall": wall_id, "name": body.name, "shared_roles": body.shared_roles},
    )
    return json_response(_view(await _row(request, wall_id), who, request.app[ACCESS].cameras_for(who)))


@api(summary="Delete a video wall", responses={200: JsonAny, 201: JsonAny, 202: JsonAny, 204: None})
@authenticated
async def delete_wall(request: web.Request) -> web.Response:
    who = principal(request)
    wall_id = _wall_id(request)
    row = await _row(request, wall_id)
    if row.owner != who.username:
        await _refuse(request, "wall.delete", f"only {row.owner} may delete wall {wall_id}", wall=wall_id)
    async with request.app[DATABASE].begin() as conn:
        await conn.execute(walls.delete().where(walls.c.id == wall_id))
    await request.app[ACCESS].audit.record(
        "wall.delete", user=who.username, client=client_address(request), detail={"wall": wall_id, "name": row.name}
    )
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/walls", list_walls, name="walls")
    app.router.add_post("/api/walls", create_wall)
    app.router.add_get("/api/walls/{wall_id}", get_wall, name="wall")
    app.router.add_put("/api/walls/{wall_id}", update_wall)
    app.router.add_delete("/api/walls/{wall_id}", delete_wall)
