"""Recordings kept by another system: a federated camera's archive, read through this gateway.

    GET /api/cameras/{camera_id}/archive/recordings                    the remote timeline (JSON)
    GET /api/cameras/{camera_id}/archive/recordings/playlist.m3u8      an HLS VOD playlist
    GET /api/cameras/{camera_id}/archive/recordings/segments/{id}.mp4  a segment (Range passes)

A camera of another Citygate (vendor ``citygate``) is recorded here from the moment it was
added; what the district recorded before stays there. These routes read it from the
district: ``playback.view`` on the camera here decides, the request is audited here
(``playback.view`` / ``playback.segments`` with ``archive: remote``), and the district
serves it to the service account in this user's name — its own audit names them
(``central:alice via <node>``), its privacy masks, hourly caps and refusals apply. Playlists
are rewritten so that a player fetches every segment through here too.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.api.openapi import Media, api
from gateway.access.middleware import client_address
from gateway.appkeys import AUDIT, CAMERAS
from gateway.errors import BadRequest, NotFound
from gateway.interfaces import ACTING_USER

#: What may be asked of a remote archive, and which query parameters pass.
_TAILS = re.compile(r"^recordings(/playlist\.m3u8|/segments/\d{1,19}\.mp4)?$")
_QUERY = frozenset({"from", "to", "detail", "limit", "next", "start", "mask", "part"})
_PLAYLIST_MAX = 16 * 1024 * 1024


@api(summary="A remote camera's own archive through the gateway (audited)", responses={200: Media("application/octet-stream", binary=True), 206: Media("video/mp4", binary=True)})
@requires("playback.view")
async def archive(request: web.Request) -> web.StreamResponse:
    camera = request.app[CAMERAS].get(request.match_info["camera_id"])
    tail = request.match_info["tail"]
    if not _TAILS.match(tail):
        raise BadRequest("an archive answers recordings, recordings/playlist.m3u8 and recordings/segments/<id>.mp4 only")
    query = [(k, v) for k, v in request.query.items() if k in _QUERY]
    who = principal(request)
    acting = ACTING_USER.set(who.username)
    try:
        answer = await camera.vendor.open_archive(tail, query, request.headers.get("Range"))
    except NotImplementedError:
        raise NotFound(f"camera {camera.id} keeps no archive elsewhere; its recordings are at /api/cameras/{camera.id}/recordings") from None
    finally:
        ACTING_USER.reset(acting)
    segment = tail.startswith("recordings/segments/")
    await request.app[AUDIT].record(
        "playback.segments" if segment else "playback.view", user=who.username, client=client_address(request),
        camera=camera.id, detail={"archive": "remote", "path": tail, "query": dict(query), "status": answer.status},
    )
    if tail.endswith(".m3u8"):
        body = b""
        async for chunk in answer.body:
            body += chunk
            if len(body) > _PLAYLIST_MAX:
                raise BadRequest("the remote playlist is too long; ask for a shorter range")
        text = _rewrite(body.decode(), camera.id)
        return web.Response(status=answer.status, text=text, content_type="application/vnd.apple.mpegurl")
    resp = web.StreamResponse(status=answer.status, headers=answer.headers)
    resp.content_type = answer.content_type.split(";")[0]
    await resp.prepare(request)
    async for chunk in answer.body:
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _rewrite(playlist: str, camera_id: str) -> str:
    """Point every segment and map URI of the remote playlist at this gateway's archive route."""
    return re.sub(
        r"/api/cameras/[^/\s\"]+/recordings/segments/",
        f"/api/cameras/{camera_id}/archive/recordings/segments/",
        playlist,
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/cameras/{camera_id}/archive/{tail:.+}", archive, name="camera-archive")
