"""Liveness and a one-glance summary for monitoring systems."""

from __future__ import annotations

import time
from collections import Counter

import msgspec
from aiohttp import web

from gateway import __version__
from gateway.access.guard import authenticated
from gateway.api.openapi import JsonObject, api
from gateway.api import json_response
from gateway.appkeys import CAMERAS, RECORDING, STARTED_AT


@api(summary="Uptime and the state of every camera", responses={200: JsonObject})
@authenticated
async def health(request: web.Request) -> web.Response:
    states = Counter(str(c.status.state) for c in request.app[CAMERAS].running())
    recording = request.app.get(RECORDING)
    # the database and the recording storage: a fault names what, since when and why
    faults = [msgspec.to_builtins(f) for f in recording.faults.current()] if recording is not None else []
    return json_response(
        {
            "status": "degraded" if faults else "ok",
            "version": __version__,
            "uptime": round(time.monotonic() - request.app[STARTED_AT], 1),
            "cameras": {"total": sum(states.values()), **states},
            "faults": faults,
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/health", health, name="health")
