"""Liveness and a one-glance summary for monitoring systems."""

from __future__ import annotations

import time
from collections import Counter

from aiohttp import web

from gateway import __version__
from gateway.access.guard import authenticated
from gateway.api.openapi import JsonObject, api
from gateway.api import json_response
from gateway.appkeys import CAMERAS, STARTED_AT


@api(summary="Uptime and the state of every camera", responses={200: JsonObject})
@authenticated
async def health(request: web.Request) -> web.Response:
    states = Counter(str(c.status.state) for c in request.app[CAMERAS].running())
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "uptime": round(time.monotonic() - request.app[STARTED_AT], 1),
            "cameras": {"total": sum(states.values()), **states},
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/health", health, name="health")
