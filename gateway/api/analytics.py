"""Video analytics routes: vehicle counts (JSON and CSV) and what runs where.

Rights: ``analytics.view`` on each camera, area-limited like every camera right. A request
naming a camera outside the user's areas is refused (403) and audited, never answered with
an empty list; without a camera it covers the cameras of the user's areas. Every answer is
audited too (``analytics.view``, with the range asked for).
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from gateway import csvcells
from gateway.access.guard import principal, requires
from gateway.access.middleware import client_address
from gateway.access.policy import Action
from gateway.api import json_response
from gateway.api.audit import parse_time
from gateway.api.openapi import Media, Text, Time, api, enum_of
from gateway.appkeys import ACCESS, ANALYTICS, ANALYTICS_STORE, CAMERAS
from gateway.errors import BadRequest, Forbidden, NotFound

INTERVALS = ("hour", "day", "week")
#: The range one request may cover, and the default range per interval (seconds).
MAX_RANGE = {"hour": 93 * 86400, "day": 3 * 366 * 86400, "week": 10 * 366 * 86400}
DEFAULT_RANGE = {"hour": 86400, "day": 31 * 86400, "week": 12 * 7 * 86400}


class CountView(msgspec.Struct, kw_only=True):
    camera: str
    line: str
    lane: str  #: "" when the line has no lanes
    direction: str
    start: float  #: the interval's start (epoch seconds, the gateway's local time)
    count: int


class CountsView(msgspec.Struct, kw_only=True):
    interval: str
    start: float
    end: float
    counts: list[CountView]


class LaneView(msgspec.Struct, kw_only=True):
    name: str
    one_way: str | None = None


class LineView(msgspec.Struct, kw_only=True):
    name: str
    directions: list[str]
    lanes: list[LaneView]


class AnalyzerView(msgspec.Struct, kw_only=True):
    analyzer: str
    fps: float
    state: str
    frames: int
    crashes: int
    lines: list[LineView] = []


class AnalyticsCameraView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    area: str
    analyzers: list[AnalyzerView]


async def _refuse(request: web.Request, camera: str | None, reason: str) -> None:
    who = principal(request)
    await request.app[ACCESS].audit.record(
        Action.ANALYTICS_VIEW, outcome="refused", user=who.username, client=client_address(request), camera=camera,
        detail={"reason": reason},
    )
    raise Forbidden(reason)


async def _cameras(request: web.Request, camera: str | None) -> list[str]:
    """The cameras asked for that the user may see counts of (403 audited otherwise)."""
    access = request.app[ACCESS]
    who = principal(request)
    if camera is not None:
        if request.app[CAMERAS].config(camera) is None:  # configured now, or removed since start
            raise NotFound(f"no camera {camera!r}")
        decision = access.decide(who, Action.ANALYTICS_VIEW, camera)
        if not decision:
            await _refuse(request, camera, decision.reason)
        return [camera]
    return sorted(access.cameras_for(who, (Action.ANALYTICS_VIEW,)))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@api(
    summary="Vehicle counts per camera, line, lane, direction and interval",
    query={"camera": Text, "line": Text, "from": Time, "to": Time, "interval": enum_of(*INTERVALS), "format": enum_of("json", "csv")},
    responses={200: (CountsView, Media("text/csv"))},
    tag="analytics",
)
@requires("analytics.view", camera_param=None)
async def counts(request: web.Request) -> web.StreamResponse:
    """Counts of vehicles that crossed counting lines (``vehicle-count`` analyzers), summed per
    hour, day or week (weeks from Monday; the gateway's local time). Without ``camera``:
    every camera of the user's areas. ``from``/``to`` default to the last day (hours), 31
    days (days) or 12 weeks (weeks)."""
    q = request.query
    interval = q.get("interval", "hour")
    if interval not in INTERVALS:
        raise BadRequest(f"interval must be one of {', '.join(INTERVALS)}")
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("format must be json or csv")
    end = parse_time("to", q.get("to"))
    end = time.time() if end is None else end
    start = parse_time("from", q.get("from"))
    start = end - DEFAULT_RANGE[interval] if start is None else start
    if end <= start:
        raise BadRequest("'to' must be after 'from'")
    if end - start > MAX_RANGE[interval]:
        raise BadRequest(f"at most {MAX_RANGE[interval] // 86400} days per request at interval={interval}")
    camera = q.get("camera") or None
    line = q.get("line") or None
    cameras = await _cameras(request, camera)
    rows = await request.app[ANALYTICS_STORE].counts(cameras, start=start, end=end, interval=interval, line=line)
    who = principal(request)
    await request.app[ACCESS].audit.record(
        Action.ANALYTICS_VIEW, user=who.username, client=client_address(request), camera=camera,
        range_from=start, range_to=end, detail={"interval": interval, "format": fmt, "line": line, "cameras": len(cameras)},
    )
    if fmt == "csv":
        out = io.StringIO()
        writer = csvcells.writer(out)
        writer.writerow(["camera", "line", "lane", "direction", "start", "interval", "count"])
        for r in rows:
            writer.writerow([r.camera, r.line, r.lane, r.direction, _iso(r.start), interval, r.count])
        return web.Response(
            text=out.getvalue(), content_type="text/csv", charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="citygate-counts.csv"'},
        )
    return json_response(
        CountsView(interval=interval, start=start, end=end, counts=[
            CountView(camera=r.camera, line=r.line, lane=r.lane, direction=r.direction, start=r.start, count=r.count)
            for r in rows
        ])
    )


def _lines(options: object) -> list[LineView]:
    lines = getattr(options, "lines", None) or ()
    out = []
    for line in lines:
        name, directions, lanes = getattr(line, "name", None), getattr(line, "directions", None), getattr(line, "lanes", ())
        if isinstance(name, str) and directions:
            out.append(LineView(name=name, directions=[str(d) for d in directions],
                                lanes=[LaneView(name=ln.name, one_way=ln.one_way) for ln in lanes]))
    return out


@api(summary="The cameras with video analytics one may see, their analyzers and counting lines", responses={200: list[AnalyticsCameraView]}, tag="analytics")
@requires("analytics.view", camera_param=None)
async def cameras(request: web.Request) -> web.Response:
    visible = set(await _cameras(request, None))
    runner = request.app[ANALYTICS]
    out = []
    for camera in request.app[CAMERAS]:
        if camera.id not in visible:
            continue
        stats = {s.camera: s for s in runner.stats(camera.id)}.get(camera.id)
        running = stats.analyzers if stats is not None else []
        analyzers = []
        for index, (cls, entry) in enumerate(runner.entries(camera)):
            st = running[index] if index < len(running) else None
            analyzers.append(AnalyzerView(
                analyzer=entry.analyzer, fps=float(entry.fps or cls.default_fps), state=st.state if st else "stopped",
                frames=st.frames if st else 0, crashes=st.crashes if st else 0, lines=_lines(entry.options),
            ))
        if analyzers:
            out.append(AnalyticsCameraView(id=camera.id, name=camera.config.title, area=camera.config.area, analyzers=analyzers))
    return json_response(out)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/analytics/counts", counts, name="analytics-counts")
    app.router.add_get("/api/analytics/cameras", cameras, name="analytics-cameras")
