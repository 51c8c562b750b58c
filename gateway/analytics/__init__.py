"""Video analytics: analyzer plugins fed with decoded pictures, their observations stored.

``runner``  decodes each camera's public stream once and runs its analyzers (``attach`` /
            ``detach`` a camera at run time)
``store``   counts per camera, line, lane, direction and minute; other observations
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.analytics.runner import AnalyticsRunner
from gateway.analytics.store import AnalyticsStore
from gateway.appkeys import ANALYTICS, ANALYTICS_STORE, CAMERAS, DATABASE, EVENTS, PLUGINS

if TYPE_CHECKING:
    from gateway.cameras import Camera

__all__ = ["AnalyticsRunner", "AnalyticsStore", "analytics_ctx"]


async def analytics_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the cameras: the analyzers of every camera running here with
    ``[[camera.analytics]]``, and of cameras that start here later (a cluster node taking
    them over); a camera about to stop here is detached first. Stopped before the cameras;
    counts still buffered are written at the end."""
    manager = app[CAMERAS]
    async with (
        AnalyticsStore(app[DATABASE]) as store,
        AnalyticsRunner(app[PLUGINS].analyzers(), app[EVENTS]) as runner,
    ):
        runner.add_listener(store.add)
        app[ANALYTICS_STORE] = store
        app[ANALYTICS] = runner

        async def detach(camera: Camera) -> None:
            await runner.detach(camera.id)

        for camera in manager.running():
            await runner.attach(camera)
        manager.on_started.append(runner.attach)
        manager.on_stopping.append(detach)
        try:
            yield
        finally:
            with contextlib.suppress(ValueError):
                manager.on_started.remove(runner.attach)
                manager.on_stopping.remove(detach)
