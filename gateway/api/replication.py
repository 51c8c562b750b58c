"""The replication report: does the city data centre's replica hold every segment?

``GET /api/recordings/replication``          per camera: segments expected (catalogued),
                                             verified on the replica with the same SHA-256,
                                             missing, corrupted, pending (not yet copied),
                                             unverified (copied since the last check), and
                                             when it was last verified; the problem
                                             segments; the last run. Needs ``system.monitor``.
``POST /api/recordings/replication/verify``  read the replica back now, in the background
                                             (202; 409 while a run is going on); optional
                                             ``?camera=``. Needs ``cameras.manage``
                                             (administrators). Audited (``replication.verify``).

Both answer 404 when no ``recording.replicate-to`` is configured. The same figures are
in ``/metrics`` (``citygate_replica_segments``, ``citygate_replica_last_verified_timestamp_seconds``).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.access.guard import principal, requires
from gateway.api.openapi import JsonObject, Text, api
from gateway.access.middleware import client_address
from gateway.access.policy import Action
from gateway.api import json_response
from gateway.appkeys import RECORDING
from gateway.errors import Conflict, NotFound
from gateway.recording.replication import ReplicaVerifier


def verifier(app: web.Application) -> ReplicaVerifier:
    service = app.get(RECORDING)
    found = service.verifier if service is not None else None
    if found is None:
        raise NotFound("no replica is configured (recording.replicate-to)")
    return found


@api(summary="The replication report", responses={200: JsonObject})
@requires(Action.SYSTEM_MONITOR, camera_param=None)
async def report(request: web.Request) -> web.Response:
    found = await verifier(request.app).report()
    body = msgspec.to_builtins(found)
    body["complete"] = found.complete
    return json_response(body)


@api(summary="Verify the replica now (202)", query={"camera": Text}, responses={202: JsonObject})
@requires(Action.CAMERAS_MANAGE, camera_param=None)
async def verify_now(request: web.Request) -> web.Response:
    checker = verifier(request.app)
    camera = request.query.get("camera") or None
    if camera is not None and request.app[RECORDING].cameras.config(camera) is None:
        raise NotFound(f"no camera {camera!r}")
    if not checker.start(camera, by=principal(request).username, client=client_address(request)):
        raise Conflict("a verification of the replica is running; see GET /api/recordings/replication")
    return json_response({"started": True, "camera": camera, "report": "/api/recordings/replication"}, status=202)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/recordings/replication", report, name="recordings-replication")
    app.router.add_post("/api/recordings/replication/verify", verify_now, name="recordings-replication-verify")
