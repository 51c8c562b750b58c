"""The camera map: where the cameras the user may see stand, where they look, their state.

The map works without internet: tiles come only from the city's own server (``[map]
tile-url``); without one the web client draws the city's GeoJSON (``[map] background``:
streets, district borders) as a plain vector background.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from aiohttp import web

from gateway.access.guard import authenticated, principal
from gateway.api.openapi import JsonAny, Media, api
from gateway.api import json_response
from gateway.appkeys import ACCESS, CAMERAS, CONFIG, RECORDING
from gateway.errors import NotFound
from gateway.media.source import SourceState

#: A background larger than this is refused (the client draws it on every open).
MAX_BACKGROUND = 5 * 1024 * 1024


class MapCamera(msgspec.Struct, kw_only=True):
    id: str
    name: str
    area: str
    #: [latitude, longitude]
    location: tuple[float, float]
    heading: float | None
    fov_degrees: float | None
    #: online | offline | connecting | stopped
    state: str
    recording: bool
    masked: bool


class MapView(msgspec.Struct, kw_only=True):
    tile_url: str
    tile_attribution: str
    max_zoom: int
    #: The URL of the GeoJSON background, or None.
    background: str | None
    center: tuple[float, float] | None
    zoom: int
    cameras: list[MapCamera]
    #: Cameras the user may see that have no location (listed beside the map).
    unplaced: list[str]


@api(summary="The map of cameras", responses={200: JsonAny})
@authenticated
async def get_map(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    visible = request.app[ACCESS].cameras_for(principal(request))
    recording = request.app.get(RECORDING)
    placed: list[MapCamera] = []
    unplaced: list[str] = []
    for camera in request.app[CAMERAS]:
        if camera.id not in visible:
            continue
        c = camera.config
        if c.location is None:
            unplaced.append(camera.id)
            continue
        online = camera.status.state == SourceState.ONLINE
        placed.append(MapCamera(
            id=c.id, name=c.title, area=c.area, location=c.location, heading=c.heading, fov_degrees=c.fov_degrees,
            state=str(camera.status.state), masked=camera.masked,
            recording=online and recording is not None and camera.id in recording.recorders,
        ))
    m = config.map
    return json_response(MapView(
        tile_url=m.tile_url, tile_attribution=m.tile_attribution, max_zoom=m.max_zoom,
        background="/api/map/background" if m.background else None, center=m.center, zoom=m.zoom,
        cameras=placed, unplaced=unplaced,
    ))


def _read_background(path: Path) -> bytes:
    if path.stat().st_size > MAX_BACKGROUND:
        raise NotFound(f"the map background {path.name} is larger than {MAX_BACKGROUND // (1024 * 1024)} MB")
    return path.read_bytes()


@api(summary="The map's background picture", responses={200: Media("application/octet-stream", binary=True)})
@authenticated
async def get_background(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if not config.map.background:
        raise NotFound("no map background is configured ([map] background)")
    path = Path(config.root) / config.map.background
    try:
        data = await asyncio.to_thread(_read_background, path)
    except OSError as exc:
        raise NotFound(f"the map background cannot be read: {exc.strerror}") from None
    return web.Response(body=data, content_type="application/geo+json")


def setup(app: web.Application) -> None:
    app.router.add_get("/api/map", get_map, name="map")
    app.router.add_get("/api/map/background", get_background, name="map_background")
