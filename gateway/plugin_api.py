"""The plugin API: the one stable surface a Citygate plugin is written against.

Plugins (built-in ones under ``plugins/`` and third-party packages alike) import from this
module and from third-party libraries, never from other ``gateway.*`` modules: those are
the gateway's own business and change without notice (a test enforces it for the
built-ins). Everything here keeps its name and meaning within a major version.

What it holds, by section:

* the hook marker ``hookimpl`` (hook specifications: ``gateway.hookspecs``, documented in
  the README's plugin author's guide);
* the interfaces registered through ``gateway_register_<kind>(register)`` hooks: each a
  class with a static ``id()`` and an ``Options`` msgspec Struct (base ``PluginOptions``)
  that the config loader validates, reporting mistakes by file, key and reason;
* the types hooks receive: ``Gateway`` (the facade handed to lifecycle hooks, the auth hook
  and event sinks), ``Event``, ``Principal``, the frozen config types;
* route declarations for ``Gateway.add_route``: ``api``, ``requires``, ``authenticated``,
  ``public``, ``principal``, ``client_address``;
* the errors a plugin may raise (each maps to an HTTP status in the API);
* toolkits for the heavier kinds: stream profiles and PTZ types for camera vendors, the
  package-writing helpers export formats build on, the media helpers a camera simulator
  uses (the demo camera).
"""

from __future__ import annotations

# --- the hook marker -----------------------------------------------------------------------
from gateway import PROJECT_NAME, __version__, hookimpl

# --- interfaces and options ------------------------------------------------------------------
from gateway.interfaces import (
    ACTING_USER,
    Analyzer,
    AnalyzerFrame,
    ArchiveAnswer,
    AuthProvider,
    CameraVendor,
    DeviceInfo,
    DirectoryAccount,
    Event,
    EventSink,
    ExportFormat,
    MaskFilter,
    MaskShape,
    NoOptions,
    Observation,
    PluginOptions,
    PtzCapabilities,
    PtzPreset,
    PtzStatus,
    REDIRECT_CALLBACK_PATH,
    RedirectSignIn,
    RedirectStart,
    StorageBackend,
    StorageUsage,
    StreamProfile,
)

# --- the types hooks receive -------------------------------------------------------------------
from gateway.plugin_facade import Gateway
from gateway.access.guard import Principal, authenticated, principal, public, requires
from gateway.access.headers import clear_session_cookie, session_cookie_name, set_session_cookie
from gateway.access.middleware import client_address
from gateway.api.openapi import JsonObject, JsonObjects, Media, api
from gateway.config import CameraConfig, Config, WebhookConfig

# --- errors ------------------------------------------------------------------------------------
from gateway.errors import (
    BadRequest,
    CameraUnavailable,
    ConfigError,
    Conflict,
    Forbidden,
    GatewayError,
    Gone,
    NotFound,
    PluginError,
    StorageFailed,
    StorageFull,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)

# --- toolkit: scenes and pictures (camera simulators, PTZ) ------------------------------------
from gateway.scene import Optics, Pose, wrap_degrees
from gateway.media.bitmapfont import ADVANCE, GLYPH_HEIGHT, draw_text, text_mask, text_size
from gateway.media.timecode import STRIP_HEIGHT, draw_timecode, read_timecode
from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo
from gateway.media.h26x import ParameterSetKeeper
from gateway.media.hub import StreamHub
from gateway.rtsp.server import RtspServer

# --- toolkit: number plates (plate-reading analyzers) ------------------------------------------
from gateway.plates.text import Plate, fold, normalise, similar

# --- toolkit: export formats --------------------------------------------------------------------
from gateway.evidence.package import CameraExtract, ExportJob, HashingWriter, PackageWriter, camera_description, join_segments
from gateway.evidence.transcode import TIME_BASE, Encoder, decoded_frames, encode_into_package, wallclock
from gateway.evidence.watermark import COPY_CRF, COPY_PRESET, WatermarkOptions, Watermarker, watermarked_copy


def session_token(request: object) -> tuple[str, str] | None:
    """(token, "bearer" | "cookie") a request carries: the bearer header first, then the
    session cookie (``__Host-`` prefixed under HTTPS). For auth providers."""
    headers = getattr(request, "headers")
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), "bearer"
    cookie = getattr(request, "cookies").get(session_cookie_name(request))  # type: ignore[arg-type]
    return (cookie, "cookie") if cookie else None


__all__ = [
    # hook marker
    "PROJECT_NAME", "__version__", "hookimpl",
    # interfaces and options
    "PluginOptions", "NoOptions", "CameraVendor", "StorageBackend", "MaskFilter", "ExportFormat", "AuthProvider",
    "EventSink", "Analyzer",
    # types hooks receive and return
    "Gateway", "Event", "Principal", "DirectoryAccount", "Config", "CameraConfig", "WebhookConfig", "MaskShape",
    "StreamProfile", "PtzCapabilities", "PtzPreset", "PtzStatus", "DeviceInfo", "ArchiveAnswer", "ACTING_USER",
    "StorageUsage", "AnalyzerFrame", "Observation",
    "RedirectStart", "RedirectSignIn", "REDIRECT_CALLBACK_PATH",  # redirect sign-in (OIDC)
    # routes
    "api", "Media", "JsonObject", "JsonObjects", "requires", "authenticated", "public", "principal", "client_address",
    "session_token", "session_cookie_name", "set_session_cookie", "clear_session_cookie",
    # errors
    "GatewayError", "ConfigError", "PluginError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict",
    "Gone", "TooManyRequests", "Unavailable", "CameraUnavailable", "StorageFull", "StorageFailed",
    # toolkit: scenes and pictures
    "Optics", "Pose", "wrap_degrees", "ADVANCE", "GLYPH_HEIGHT", "draw_text", "text_mask", "text_size", "STRIP_HEIGHT",
    "draw_timecode", "read_timecode", "CLOCK_RATE", "MediaPacket", "StreamInfo", "ParameterSetKeeper", "StreamHub",
    "RtspServer",
    # toolkit: number plates
    "Plate", "normalise", "fold", "similar",
    # toolkit: export formats
    "ExportJob", "CameraExtract", "PackageWriter", "HashingWriter", "join_segments", "camera_description",
    "encode_into_package", "Encoder", "decoded_frames", "wallclock", "TIME_BASE", "WatermarkOptions", "Watermarker",
    "watermarked_copy", "COPY_CRF", "COPY_PRESET",
]
