"""Typed keys for the long-lived resources the composition root puts on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.cameras import CameraManager
    from gateway.config import Config
    from gateway.events import EventBus
    from gateway.plugins import Plugins

CONFIG = web.AppKey("config", "Config")
PLUGINS = web.AppKey("plugins", "Plugins")
EVENTS = web.AppKey("events", "EventBus")
CAMERAS = web.AppKey("cameras", "CameraManager")
STARTED_AT = web.AppKey("started_at", float)
