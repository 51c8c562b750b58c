"""Plate routes: search of reads (with a purpose), crops, the watchlist.

The guard lets through only roles with ``plates.search`` / ``plates.watch`` (refusals audited
there); ``gateway.plates.store`` limits everything to the cameras and areas of the user and
audits every search, crop and watchlist change with its purpose, refusals included.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web
from msgspec import Meta

from gateway.access.guard import principal, requires
from gateway.access.middleware import client_address
from gateway.api import json_response, path_id, whole_number
from gateway.api.audit import parse_time
from gateway.api.openapi import Id, Media, Text, Time, api, whole
from gateway.api.session import read_json
from gateway.errors import BadRequest
from gateway.plates.store import MAX_PURPOSE, MAX_SEARCH_LIMIT, PLATES, SEARCH_LIMIT, PlateRead, SearchFilters, WatchEntry
from gateway.plates.text import parse_query

Pattern = Annotated[str, Meta(min_length=1, max_length=64)]
Purpose = Annotated[str, Meta(max_length=500)]
Label = Annotated[str, Meta(max_length=200)]
Epoch = Annotated[float, Meta(ge=0, le=253402300799)]


class Links(msgspec.Struct, kw_only=True):
    crop: str | None
    playback: str
    recordings: str


class ReadView(PlateRead, kw_only=True):
    """One plate read as the API shows it (``PlateRead.view``): where, when, what; its crop
    and the recording at that moment."""

    links: Links


class SearchAnswer(msgspec.Struct, kw_only=True):
    query: str
    reads: list[ReadView]


class WatchView(msgspec.Struct, kw_only=True):
    id: int
    pattern: str
    label: str
    purpose: str
    areas: list[str]
    all_areas: bool
    expires_at: float | None
    created_by: str
    created_at: float
    updated_by: str
    updated_at: float
    active: bool


class NewWatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pattern: Pattern
    purpose: Purpose
    label: Label = ""
    expires_at: Epoch | None = None


class WatchChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    purpose: Purpose
    pattern: Pattern | None = None
    label: Label | None = None
    #: A new expiry; ``null`` together with ``clear_expiry`` removes it.
    expires_at: Epoch | None = None
    clear_expiry: bool = False


def _check_purpose(purpose: str | None) -> None:
    if purpose is not None and len(purpose) > MAX_PURPOSE:
        raise BadRequest(f"purpose has at most {MAX_PURPOSE} characters")


def _watch_view(request: web.Request, entry: WatchEntry) -> dict:
    return entry.view(request.app[PLATES].clock())


@api(
    summary="Search plate reads (wildcards * and ?, tolerant of OCR confusions); purpose required",
    query={"q": Pattern, "camera": Text, "from": Time, "to": Time, "purpose": Purpose, "limit": whole(1, MAX_SEARCH_LIMIT)},
    required_query=("q", "purpose"),
    responses={200: SearchAnswer},
    tag="plates",
)
@requires("plates.search", camera_param=None)
async def search(request: web.Request) -> web.Response:
    q = request.query
    since, until = parse_time("from", q.get("from")), parse_time("to", q.get("to"))
    if since is not None and until is not None and until < since:
        raise BadRequest("'to' is before 'from'")
    limit = whole_number("limit", q["limit"], low=1, high=MAX_SEARCH_LIMIT) if q.get("limit") else SEARCH_LIMIT
    _check_purpose(q.get("purpose"))
    filters = SearchFilters(
        query=q.get("q", ""), purpose=q.get("purpose", ""), camera=q.get("camera") or None, since=since, until=until, limit=limit,
    )
    if not filters.query:
        raise BadRequest("q is required: a plate, perhaps with * and ?")
    store = request.app[PLATES]
    reads = await store.search(principal(request), filters, client_address(request))
    return json_response({"query": parse_query(filters.query).text, "reads": [r.view() for r in reads]})


@api(
    summary="The crop of a plate read (JPEG); audited",
    path={"read_id": Id},
    query={"purpose": Purpose},
    responses={200: Media("image/jpeg", binary=True)},
    tag="plates",
)
@requires("plates.search", camera_param=None)
async def crop(request: web.Request) -> web.Response:
    read_id = path_id(request, "read_id")
    _check_purpose(request.query.get("purpose"))
    data = await request.app[PLATES].crop(
        principal(request), read_id, client_address(request), purpose=request.query.get("purpose") or None
    )
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "private, no-store"})


@api(summary="The plate watchlist of the user's areas", responses={200: list[WatchView]}, tag="plates")
@requires("plates.watch", camera_param=None)
async def watchlist(request: web.Request) -> web.Response:
    entries = await request.app[PLATES].watchlist(principal(request), client_address(request))
    return json_response([_watch_view(request, e) for e in entries])


@api(summary="Watch for a plate (purpose required; audited)", body=NewWatch, responses={201: WatchView}, tag="plates")
@requires("plates.watch", camera_param=None)
async def add_watch(request: web.Request) -> web.Response:
    body = await read_json(request, NewWatch)
    assert isinstance(body, NewWatch)
    entry = await request.app[PLATES].add_watch(
        principal(request), pattern=body.pattern, label=body.label, purpose=body.purpose, expires_at=body.expires_at,
        client=client_address(request),
    )
    return json_response(_watch_view(request, entry), status=201)


@api(summary="Change a watchlist entry (purpose required; audited)", path={"watch_id": Id}, body=WatchChange,
     responses={200: WatchView}, tag="plates")
@requires("plates.watch", camera_param=None)
async def update_watch(request: web.Request) -> web.Response:
    watch_id = path_id(request, "watch_id")
    body = await read_json(request, WatchChange)
    assert isinstance(body, WatchChange)
    entry = await request.app[PLATES].update_watch(
        principal(request), watch_id, pattern=body.pattern, label=body.label, purpose=body.purpose,
        expires_at=body.expires_at, clear_expiry=body.clear_expiry, client=client_address(request),
    )
    return json_response(_watch_view(request, entry))


@api(summary="Remove a watchlist entry (purpose required; audited)", path={"watch_id": Id}, query={"purpose": Purpose},
     required_query=("purpose",), responses={204: None}, tag="plates")
@requires("plates.watch", camera_param=None)
async def delete_watch(request: web.Request) -> web.Response:
    watch_id = path_id(request, "watch_id")
    await request.app[PLATES].delete_watch(
        principal(request), watch_id, purpose=request.query.get("purpose"), client=client_address(request)
    )
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    """Routes only; the store is started by the composition root (``plates_ctx``)."""
    app.router.add_get("/api/plates", search, name="plates-search")
    app.router.add_get("/api/plates/reads/{read_id}/crop", crop, name="plates-crop")
    app.router.add_get("/api/plates/watchlist", watchlist, name="plates-watchlist")
    app.router.add_post("/api/plates/watchlist", add_watch, name="plates-watch-add")
    app.router.add_patch("/api/plates/watchlist/{watch_id}", update_watch, name="plates-watch-update")
    app.router.add_delete("/api/plates/watchlist/{watch_id}", delete_watch, name="plates-watch-delete")
