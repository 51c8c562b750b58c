"""Camera list and camera detail."""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.access.guard import authenticated, principal, requires
from gateway.api.openapi import Media, api, whole
from gateway.access.middleware import client_address
from gateway.api import json_response
from gateway.appkeys import ACCESS, CAMERAS
from gateway.cameras import Camera, CameraSnapshot
from gateway.cluster.forward import CLUSTER_NODE
from gateway.errors import BadRequest, CameraUnavailable, Forbidden
from gateway.media.snapshot import snapshot_jpeg


class PtzView(msgspec.Struct, kw_only=True):
    continuous: bool
    absolute: bool
    relative: bool
    presets: bool
    home: bool


class CameraView(msgspec.Struct, kw_only=True):
    id: str
    name: str
    area: str
    tags: tuple[str, ...]
    vendor: str
    state: str
    since: float
    last_error: str | None
    reconnects: int
    codec: str | None
    width: int | None
    height: int | None
    fps: float
    bitrate: int
    recording: bool
    ptz: PtzView
    #: How many privacy masks black out parts of the picture (viewers cannot remove them).
    masks: int
    #: The streams a viewer may ask for (WHEP ``?profile=sub`` for grid tiles).
    profiles: list[str]
    #: A PTZ camera with masks anchored to the scene: False while its position is unknown
    #: and the whole picture is masked ("privacy mask: position unknown"); None otherwise.
    mask_position_known: bool | None = None

    @classmethod
    def of(cls, snap: CameraSnapshot) -> CameraView:
        info = snap.info
        c = snap.config
        p = snap.ptz
        return cls(
            id=c.id,
            name=c.title,
            area=c.area,
            tags=c.tags,
            vendor=c.vendor,
            state=str(snap.status.state),
            since=snap.status.since,
            last_error=snap.status.last_error,
            reconnects=snap.status.reconnects,
            codec=info.codec if info else None,
            width=info.width if info else None,
            height=info.height if info else None,
            fps=snap.stats.fps,
            bitrate=int(snap.stats.bitrate),
            recording=c.record,
            ptz=PtzView(continuous=p.continuous, absolute=p.absolute, relative=p.relative, presets=p.presets, home=p.home),
            masks=snap.masks,
            profiles=[str(p) for p in snap.profiles],
            mask_position_known=snap.mask_position_known,
        )


@api(summary="The cameras one may see", responses={200: list[CameraView]})
@authenticated
async def list_cameras(request: web.Request) -> web.Response:
    """Only the cameras the user may watch (live, recorded or as a still)."""
    visible = request.app[ACCESS].cameras_for(principal(request))
    cameras = request.app[CAMERAS]
    node = request.app.get(CLUSTER_NODE)
    remote = node.remote_views if node is not None else {}
    return json_response([
        remote[c.id] if c.id in remote and not cameras.is_running(c.id) else view(c)
        for c in cameras if c.id in visible
    ])


def view(camera: Camera) -> dict:
    """A camera as the API describes it (also what a cluster node tells the others)."""
    return msgspec.to_builtins(CameraView.of(camera.snapshot()))


@api(summary="One camera", responses={200: CameraView})
@authenticated
async def get_camera(request: web.Request) -> web.Response:
    camera = await visible_camera(request, "camera.view")
    return json_response(CameraView.of(camera.snapshot()))


async def visible_camera(request: web.Request, action: str) -> Camera:
    """The route's camera if the user may see it (watch it live, recorded or as a still);
    otherwise a 403 with the policy's reason, audited as ``action`` refused."""
    camera = request.app[CAMERAS].get(request.match_info["camera_id"])
    access = request.app[ACCESS]
    who = principal(request)
    if camera.id not in access.cameras_for(who):
        reason = access.decide(who, "live.view", camera.id).reason
        await access.audit.record(
            action, outcome="refused", user=who.username, client=client_address(request), camera=camera.id,
            detail={"reason": reason},
        )
        raise Forbidden(reason)
    return camera


#: How long a snapshot waits for a keyframe when none is cached (a mask was just added).
SNAPSHOT_WAIT = 5.0


@api(summary="The latest keyframe as JPEG", query={"width": whole(16, 7680)}, responses={200: Media("image/jpeg", binary=True)}, extra_errors=(503,))
@requires("snapshot.view")
async def get_snapshot(request: web.Request) -> web.Response:
    """The camera's latest keyframe as JPEG, for thumbnails (``?width=`` scales down)."""
    camera = request.app[CAMERAS].get(request.match_info["camera_id"])
    width = request.query.get("width")
    if width is not None and (not width.isdigit() or not 16 <= int(width) <= 7680):
        raise BadRequest("width must be a whole number of pixels between 16 and 7680")
    # None right after a privacy mask was added (the GOP cache is forgotten): the next
    # keyframe comes from the mask stage within moments.
    keyframe = camera.latest_keyframe()
    if keyframe is None and camera.hub.info is not None:
        keyframe = await camera.hub.next_keyframe(SNAPSHOT_WAIT)
    if keyframe is None:
        raise CameraUnavailable(f"camera {camera.id} has no picture yet ({camera.status.state})")
    jpeg = await snapshot_jpeg(keyframe, max_width=int(width) if width else None)
    who = principal(request)
    await request.app[ACCESS].audit.record(
        "snapshot", user=who.username, client=client_address(request), camera=camera.id, range_from=keyframe.wallclock,
    )
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/cameras", list_cameras, name="cameras")
    app.router.add_get("/api/cameras/{camera_id}", get_camera, name="camera")
    app.router.add_get("/api/cameras/{camera_id}/snapshot.jpg", get_snapshot, name="snapshot")
