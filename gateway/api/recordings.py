"""Recorded video: timeline, HLS VOD playback by time range, segments with range requests.

Everything here needs ``playback.view`` on the camera. The playlist request is the moment
a user looks at a time range, so it is audited with that range; the segment requests are
what actually leaves, so they are audited too, merged per session and camera into time
ranges, and capped per session and hour (``gateway.recording.reads``). A playlist spans at
most ``recording.max-playlist-hours``; the timeline comes in pages (``limit``, ``next``).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.api.openapi import Id, JsonObject, Media, Text, Time, api, enum_of, whole
from gateway.access.middleware import client_address
from gateway.api import json_response, whole_number
from gateway.api.audit import parse_time
from gateway.appkeys import ACCESS, CAMERAS, CONFIG, PLAYBACK_READS, RECORDING
from gateway.errors import BadRequest, GatewayError
from gateway.recording.index import Gap, Segment, Span
from gateway.recording.playback import mask_tag, vod_playlist
from gateway.recording.remask import MaskPlan, fmp4_init_length

def served_as(seg: Segment, plan: MaskPlan) -> Segment:
    """The segment as playback serves it under ``plan``: carrying the plan's digest, and
    with no known init size when it is re-masked (players then fetch it by part)."""
    if plan.serves_as_recorded(seg):
        return replace(seg, mask_digest=plan.digest)
    return replace(seg, mask_digest=plan.digest, init_bytes=0)


#: The widest range one request may ask for: longer than any retention anyone keeps.
MAX_RANGE = 400 * 86400
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(GatewayError):
    status = 416


def time_range(request: web.Request, *, default_span: float | None = None) -> tuple[float, float]:
    q = request.query
    now = time.time()
    end = parse_time("to", q.get("to"))
    start = parse_time("from", q.get("from"))
    if start is None:
        if default_span is None:
            raise BadRequest("from is required (epoch seconds or ISO 8601)")
        start = (end or now) - default_span
    if end is None:
        end = now
    if end <= start:
        raise BadRequest("'to' must be after 'from'")
    if end - start > MAX_RANGE:
        raise BadRequest(f"a range may span at most {MAX_RANGE // 86400} days")
    if start > now + 60:
        raise BadRequest("'from' is in the future")
    return start, end


def _camera(request: web.Request) -> str:
    return request.app[CAMERAS].get(request.match_info["camera_id"]).id


#: Beyond this range the timeline merges contiguous segments into spans by default.
SPANS_BEYOND = 86400 + 60
#: Items of one timeline page unless ``limit`` says otherwise, and the most it may ask for.
PAGE_ITEMS = 2000
MAX_PAGE_ITEMS = 10000


def _item(i: Segment | Span | Gap) -> dict:
    if isinstance(i, Segment):
        return {"kind": "segment", "id": i.id, "start": i.start, "end": i.end, "duration": round(i.duration, 3), "bytes": i.bytes}
    if isinstance(i, Span):
        return {"kind": "span", "start": i.start, "end": i.end, "segments": i.segments, "bytes": i.bytes}
    return {"kind": "gap", "start": i.start, "end": i.end, "reason": i.reason}


def _page_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return PAGE_ITEMS
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest("limit must be a whole number") from None
    if not 1 <= limit <= MAX_PAGE_ITEMS:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE_ITEMS}")
    return limit


@api(summary="Recorded segments (or spans) and gaps, in pages", query={"from": Time, "to": Time, "detail": enum_of("segments", "spans"), "limit": whole(1, MAX_PAGE_ITEMS)}, responses={200: JsonObject})
@requires("playback.view")
async def timeline(request: web.Request) -> web.Response:
    """Segments and gaps; with ``detail=spans`` (the default beyond a day) contiguous
    recording is merged into spans, so weeks of 60 s segments stay a small answer.

    At most ``limit`` recorded items per answer: when there are more, the answer covers
    ``[from, next)`` and ``next`` is the ``from`` of the following page (else null)."""
    camera = _camera(request)
    start, end = time_range(request, default_span=86400)
    detail = request.query.get("detail") or ("spans" if end - start > SPANS_BEYOND else "segments")
    if detail not in ("segments", "spans"):
        raise BadRequest("detail must be segments or spans")
    limit = _page_limit(request)
    catalogue = request.app[RECORDING].catalogue
    page = catalogue.spans_page if detail == "spans" else catalogue.timeline_page
    items, following = await page(camera, start, end, limit)
    return json_response(
        {"camera": camera, "from": start, "to": end, "detail": detail, "items": [_item(i) for i in items], "next": following}
    )


@api(summary="HLS VOD playlist of a time range (audited)", query={"from": Time, "to": Time, "start": Time, "purpose": Text}, required_query=("from",), responses={200: Media("application/vnd.apple.mpegurl")})
@requires("playback.view")
async def playlist(request: web.Request) -> web.Response:
    camera = _camera(request)
    start, end = time_range(request)
    longest = request.app[CONFIG].recording.max_playlist_hours
    if end - start > longest * 3600:
        raise BadRequest(
            f"a playlist may span at most {longest:g} hours (recording.max-playlist-hours); "
            "ask for a shorter range (the timeline shows what is recorded)"
        )
    seek = parse_time("start", request.query.get("start"))
    if seek is not None and not start <= seek < end:
        raise BadRequest("'start' must lie within the range")
    who = principal(request)
    await request.app[PLAYBACK_READS].admit_playlist(who, client_address(request), camera)
    items = await request.app[RECORDING].timeline(camera, start, end)
    # Segments recorded before the masks in force are re-masked when played: the playlist
    # names the masks in every URL and addresses those by part (their layout is new).
    plan = await request.app[RECORDING].mask_plan(camera)
    items = [served_as(i, plan) if isinstance(i, Segment) else i for i in items]
    remasked = sum(1 for i in items if isinstance(i, Segment) and i.init_bytes == 0)
    await request.app[ACCESS].audit.record(
        "playback.view", user=who.username, client=client_address(request), camera=camera, range_from=start, range_to=end,
        purpose=request.query.get("purpose") or None,
        detail={"masks": {**plan.describe(), "remasked_segments": remasked}},
    )
    # a day of short segments is tens of thousands of lines: build them off the event loop
    body = await asyncio.to_thread(vod_playlist, items, f"/api/cameras/{camera}/recordings/segments/{{id}}.mp4", start_at=seek)
    return web.Response(text=body, content_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "no-store"})


@api(summary="One recorded segment (range requests)", path={"segment_id": Id}, query={"part": enum_of("init", "media"), "mask": Text}, responses={200: Media("video/mp4", binary=True), 206: Media("video/mp4", binary=True)})
@requires("playback.view")
async def segment(request: web.Request) -> web.StreamResponse:
    camera = _camera(request)
    segment_id = whole_number("segment id", request.match_info["segment_id"])
    service = request.app[RECORDING]
    seg = await service.segment(camera, segment_id)
    # audited (merged per session and camera) and counted against the session's hour
    await request.app[PLAYBACK_READS].admit_segment(principal(request), client_address(request), seg)
    # Privacy masks drawn since the segment was recorded apply to it too.
    plan = await service.mask_plan(camera)
    remasked = await service.masked_segment(seg, plan)
    size, init = (len(remasked.data), remasked.init_bytes) if remasked is not None else (seg.bytes, seg.init_bytes)
    lo, hi = 0, size
    part = request.query.get("part")
    if part is not None:
        if part not in ("init", "media"):
            raise BadRequest("part must be init or media")
        if init <= 0:  # catalogued before init sizes were kept
            init = fmp4_init_length(await service.read_segment(seg))
        lo, hi = (0, init) if part == "init" else (init, size)
    length = hi - lo
    start, end, partial = 0, length, False
    header = request.headers.get("Range")
    if header:
        m = _RANGE.match(header.strip())
        if not m or (m.group(1) == "" and m.group(2) == ""):
            raise BadRequest(f"unsupported Range header {header!r} (one range in bytes)")
        if m.group(1) == "":  # the last N bytes
            start = max(0, length - int(m.group(2)))
        else:
            start = int(m.group(1))
            end = min(length, int(m.group(2)) + 1) if m.group(2) else length
        if start >= length or start >= end:
            raise RangeNotSatisfiable(f"range {header} is outside the segment's {length} bytes")
        partial = True
    resp = web.StreamResponse(status=206 if partial else 200)
    resp.content_type = "video/mp4"
    resp.content_length = end - start
    resp.headers["Accept-Ranges"] = "bytes"
    # Cached by the browser only under the URL naming the masks it was served under
    # (playlists add it), so a mask added later is never bypassed by a cached copy.
    current = request.query.get("mask") == mask_tag(plan.digest)
    resp.headers["Cache-Control"] = "private, max-age=3600" if current else "no-store"
    resp.headers["X-Mask-Version"] = str(plan.version)
    resp.headers["X-Mask-Applied"] = "re-masked" if remasked is not None else "as recorded"
    if partial:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{length}"
    await resp.prepare(request)
    if remasked is not None:
        await resp.write(remasked.data[lo + start : lo + end])
    else:
        async for chunk in service.segment_stream(seg, lo + start, lo + end):
            await resp.write(chunk)
    await resp.write_eof()
    return resp


def setup(app: web.Application) -> None:
    base = "/api/cameras/{camera_id}/recordings"
    app.router.add_get(base, timeline, name="recordings")
    app.router.add_get(base + "/playlist.m3u8", playlist, name="recordings-playlist")
    app.router.add_get(base + "/segments/{segment_id}.mp4", segment, name="recordings-segment")
