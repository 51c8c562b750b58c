"""Video analytics: analyzer plugins fed with decoded pictures, their observations stored.

``runner``  decodes each camera's public stream once and runs its analyzers (``attach`` /
            ``detach`` a camera at run time)
``store``   counts per camera, line, lane, direction and minute; other observations
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.analytics.runner import AnalyticsRunner
from gateway.analytics.store import AnalyticsStore
from gateway.appkeys import ANALYTICS, ANALYTICS_STORE, CAMERAS, DATABASE, EVENTS, PLUGINS

__all__ = ["AnalyticsRunner", "AnalyticsStore", "analytics_ctx"]


async def analytics_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the cameras: the analyzers of every local camera with ``[[camera.analytics]]``.
    Stopped before the cameras; counts still buffered are written at the end."""
    async with (
        AnalyticsStore(app[DATABASE]) as store,
        AnalyticsRunner(app[PLUGINS].analyzers(), app[EVENTS]) as runner,
    ):
        runner.add_listener(store.add)
        app[ANALYTICS_STORE] = store
        app[ANALYTICS] = runner
        for camera in app[CAMERAS]:
            await runner.attach(camera)
        yield
