"""Typed keys for the long-lived resources the composition root puts on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.access.audit import AuditLog
    from gateway.analytics.runner import AnalyticsRunner
    from gateway.analytics.store import AnalyticsStore
    from gateway.access.control import AccessControl
    from gateway.access.policy import Policy
    from gateway.db import Database
    from gateway.dispatch.notify import EventsChannel
    from gateway.dispatch.push import PushService
    from gateway.cameras import CameraManager
    from gateway.config import Config
    from gateway.access.identity import Identity
    from gateway.events import EventBus
    from gateway.health import HealthMonitor
    from gateway.plugins import Plugins
    from gateway.ptz import PtzService
    from gateway.evidence.signing import Signer
    from gateway.recording.reads import PlaybackReads
    from gateway.recording.service import RecordingService

CONFIG = web.AppKey("config", "Config")
PLUGINS = web.AppKey("plugins", "Plugins")
EVENTS = web.AppKey("events", "EventBus")
CAMERAS = web.AppKey("cameras", "CameraManager")
STARTED_AT = web.AppKey("started_at", float)
DATABASE = web.AppKey("database", "Database")
AUDIT = web.AppKey("audit", "AuditLog")
#: The gateway's Ed25519 key: signs evidence packages and audit checkpoints.
SIGNER = web.AppKey("signer", "Signer")
ACCESS = web.AppKey("access", "AccessControl")
IDENTITY = web.AppKey("identity", "Identity")
RECORDING = web.AppKey("recording", "RecordingService")
#: Segment reads of recordings: audited per session and camera, capped per session and hour.
PLAYBACK_READS = web.AppKey("playback_reads", "PlaybackReads")
POLICY = web.AppKey("policy", "Policy")
PTZ = web.AppKey("ptz", "PtzService")
POSITIONS = web.AppKey("positions", "PositionLog")
PUSHES = web.AppKey("pushes", "PushService")
EVENTS_CHANNEL = web.AppKey("events_channel", "EventsChannel")
#: Camera health: state changes, uptime, history and alarms (gateway.health).
HEALTH = web.AppKey("health", "HealthMonitor")
#: Video analytics: the runner of the analyzers (attach/detach cameras) and its count store.
ANALYTICS = web.AppKey("analytics", "AnalyticsRunner")
ANALYTICS_STORE = web.AppKey("analytics_store", "AnalyticsStore")
