"""The camera inventory, for the city's camera register: ``GET /api/cameras/inventory``.

One row per configured camera on which the user holds ``cameras.inventory`` (their areas,
or a grant), disabled cameras included: id, name, owner organisation, area, address,
coordinates, vendor and what the device says it is (manufacturer, model, firmware, serial;
asked through the vendor's ``device_info()`` and kept for an hour), streams (profile,
codec, size, frame rate), recording and retention, state and when a picture last arrived.
JSON by default, ``?format=csv`` for spreadsheets (cells neutralised against formulas).
Every read is audited (``cameras.inventory`` with the format and the number of cameras).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.api.openapi import Media, api, enum_of
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.appkeys import ACCESS, CAMERAS
from gateway.config import CameraConfig
from gateway.csvcells import writer
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.interfaces import DeviceInfo, StreamProfile
from gateway.reload import RELOADER

logger = logging.getLogger(__name__)

#: How long a device's answer is kept, and how long a failure is before asking again.
DEVICE_INFO_TTL = 3600.0
DEVICE_INFO_RETRY = 60.0
#: The longest the inventory waits for a device to say what it is.
DEVICE_INFO_TIMEOUT = 5.0


class StreamView(msgspec.Struct, kw_only=True):
    profile: str
    codec: str | None
    width: int | None
    height: int | None
    fps: float | None


class InventoryRow(msgspec.Struct, kw_only=True):
    id: str
    name: str
    owner: str
    area: str
    address: str
    latitude: float | None
    longitude: float | None
    tags: tuple[str, ...]
    vendor: str
    manufacturer: str | None
    model: str | None
    firmware: str | None
    serial: str | None
    streams: list[StreamView]
    recording: bool
    retention_days: int
    privacy_masks: int
    #: online, offline, connecting... or "disabled" (``enabled = false`` in cameras.toml).
    state: str
    #: When the state last changed, and when the last picture arrived (Unix time).
    since: float | None
    last_seen: float | None


CSV_COLUMNS = (
    "id", "name", "owner", "area", "address", "latitude", "longitude", "tags", "vendor", "manufacturer", "model",
    "firmware", "serial", "main_codec", "main_width", "main_height", "main_fps", "sub_codec", "sub_width",
    "sub_height", "sub_fps", "recording", "retention_days", "privacy_masks", "state", "since", "last_seen",
)


@dataclass
class DeviceInfoCache:
    """What each camera's device said it is, kept for ``DEVICE_INFO_TTL``."""

    entries: dict[str, tuple[float, DeviceInfo | None]] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def get(self, camera_id: str, vendor: object) -> DeviceInfo | None:
        now = time.monotonic()
        cached = self.entries.get(camera_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.locks.setdefault(camera_id, asyncio.Lock()):
            cached = self.entries.get(camera_id)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            try:
                info = await asyncio.wait_for(vendor.device_info(), DEVICE_INFO_TIMEOUT)  # type: ignore[attr-defined]
            except (GatewayError, NotImplementedError, TimeoutError, OSError) as exc:
                logger.info("camera %s: no device information: %s", camera_id, getattr(exc, "message", exc) or type(exc).__name__)
                self.entries[camera_id] = (time.monotonic() + DEVICE_INFO_RETRY, None)
                return None
            self.entries[camera_id] = (time.monotonic() + DEVICE_INFO_TTL, info)
            return info


DEVICE_INFO = web.AppKey("device_info_cache", DeviceInfoCache)


def _stream(profile: StreamProfile, info: object | None, fps: float | None) -> StreamView:
    return StreamView(
        profile=str(profile), codec=getattr(info, "codec", None), width=getattr(info, "width", None),
        height=getattr(info, "height", None), fps=round(fps, 2) if fps else None,
    )


async def _row(request: web.Request, config: CameraConfig) -> InventoryRow:
    try:
        camera = request.app[CAMERAS].get(config.id)
    except NotFound:
        camera = None
    device: DeviceInfo | None = None
    streams: list[StreamView] = []
    state, since, last_seen, masks = "disabled", None, None, len(config.masks)
    if camera is not None:
        device = await request.app[DEVICE_INFO].get(config.id, camera.vendor)
        snap = camera.snapshot()
        info = snap.info
        streams.append(_stream(StreamProfile.MAIN, info, snap.stats.fps or (info.declared_fps if info else None)))
        if StreamProfile.SUB in camera.vendor.profiles():
            sub_info = camera.sub.hub.info if camera.sub.running else None
            streams.append(_stream(StreamProfile.SUB, sub_info, camera.sub.hub.stats().fps if sub_info else None))
        state, since, last_seen, masks = str(snap.status.state), snap.status.since, snap.stats.last_packet_at, snap.masks
    lat, lon = config.location if config.location is not None else (None, None)
    return InventoryRow(
        id=config.id, name=config.title, owner=config.owner, area=config.area, address=config.address,
        latitude=lat, longitude=lon, tags=config.tags, vendor=config.vendor,
        manufacturer=device.manufacturer or None if device else None, model=device.model or None if device else None,
        firmware=device.firmware or None if device else None, serial=device.serial or None if device else None,
        streams=streams, recording=config.record and config.enabled, retention_days=config.retention_days,
        privacy_masks=masks, state=state, since=since, last_seen=last_seen,
    )


def to_csv(rows: list[InventoryRow]) -> str:
    out = io.StringIO()
    w = writer(out)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        by_profile = {s.profile: s for s in r.streams}
        stream_cells: list[object] = []
        for profile in ("main", "sub"):
            s = by_profile.get(profile)
            stream_cells += [s.codec, s.width, s.height, s.fps] if s else [None] * 4
        w.writerow([
            r.id, r.name, r.owner, r.area, r.address, r.latitude, r.longitude, " ".join(r.tags), r.vendor,
            r.manufacturer, r.model, r.firmware, r.serial, *stream_cells, r.recording, r.retention_days,
            r.privacy_masks, r.state, r.since, r.last_seen,
        ])
    return out.getvalue()


@api(summary="The camera register of the cameras in one's areas", query={"format": enum_of("json", "csv")}, responses={200: (list[InventoryRow], Media("text/csv"))})
@requires("cameras.inventory", camera_param=None)
async def inventory(request: web.Request) -> web.Response:
    """The register of the cameras the user holds ``cameras.inventory`` on."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest(f"format must be json or csv, not {fmt!r}")
    who = principal(request)
    allowed = request.app[ACCESS].cameras_for(who, ("cameras.inventory",))
    # the cameras now: cameras.toml as last (re)loaded, then those managed through the API
    configs = [c for c in request.app[RELOADER].camera_configs() if c.id in allowed]
    rows = list(await asyncio.gather(*(_row(request, c) for c in configs)))
    await request.app[ACCESS].audit.record(
        "cameras.inventory", user=who.username, client=client_address(request),
        detail={"format": fmt, "cameras": len(rows)},
    )
    if fmt == "csv":
        return web.Response(
            text=to_csv(rows), content_type="text/csv", charset="utf-8",
            headers={"Content-Disposition": 'attachment; filename="citygate-cameras.csv"'},
        )
    return json_response(rows)


def setup(app: web.Application) -> None:
    """Register before the camera routes: ``/api/cameras/{camera_id}`` would take the path."""
    app[DEVICE_INFO] = DeviceInfoCache()
    app.router.add_get("/api/cameras/inventory", inventory, name="cameras-inventory")
