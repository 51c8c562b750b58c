"""Every hook a Citygate plugin can implement, grouped by plugin kind.

Registry hooks (``gateway_register_<kind>``) receive a ``register`` callable and call it
with classes that have a static ``id()``. Hooks may be plain functions or coroutines:
the core awaits any awaitable a hook returns (see ``gateway.plugins``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pluggy

from gateway import PROJECT_NAME

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.access.guard import Principal
    from gateway.interfaces import EventSink
    from gateway.plugin_facade import Gateway

    from gateway.interfaces import Analyzer, AuthProvider, CameraVendor, Event, ExportFormat, MaskFilter, StorageBackend

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_startup(gateway: Gateway) -> Awaitable[None] | None:
    """Every service of the gateway has started (the facade reaches them all); requests are
    served once every plugin's startup has returned."""


@hookspec
def gateway_shutdown(gateway: Gateway) -> Awaitable[None] | None:
    """The gateway is shutting down, before any of its services stops; release what
    ``gateway_startup`` acquired."""


@hookspec
def gateway_add_routes(gateway: Gateway) -> None:
    """Add HTTP routes with ``gateway.add_route``: each behind the guard, declaring its access
    (``requires``/``authenticated``/``public``) and its contract (``api``)."""


# ---------------------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_register_camera_vendors(register: Callable[[type[CameraVendor]], None]) -> None:
    """Register camera vendor classes (``CameraVendor`` subclasses keyed by ``id()``)."""


# ---------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_register_storage_backends(register: Callable[[type[StorageBackend]], None]) -> None:
    """Register storage backend classes for recorded segments."""


# ---------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_register_mask_filters(register: Callable[[type[MaskFilter]], None]) -> None:
    """Register privacy-mask filters (fill, pixelate, blur, ...)."""


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_register_export_formats(register: Callable[[type[ExportFormat]], None]) -> None:
    """Register export formats (evidence package, media release, plain MP4)."""


# ---------------------------------------------------------------------------------------
# Analytics
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_register_analyzers(register: Callable[[type[Analyzer]], None]) -> None:
    """Register video analyzers (``Analyzer`` subclasses keyed by ``id()``): vehicle counting,
    plate reading... chosen per camera by ``[[camera.analytics]] analyzer = "<id>"``."""


# ---------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_authenticate(request: web.Request, gateway: Gateway) -> Principal | Awaitable[Principal | None] | None:
    """Return the principal behind ``request``, or None to let the next provider try.

    The core takes the first answer that is not None (awaiting async providers in call
    order; providers after it are not awaited).
    """


@hookspec
def gateway_register_auth_providers(register: Callable[[type[AuthProvider]], None]) -> None:
    """Register sign-in providers (``AuthProvider`` subclasses keyed by ``id()``): the login hook.

    A provider configured in ``[auth.<id>]`` either checks password sign-ins of names
    without a local password (LDAP, Active Directory) before local accounts are tried, or
    signs people in by sending the browser to it and back (``sign_in = {"redirect"}``:
    OpenID Connect; see ``AuthProvider.redirect_start``).
    """


# ---------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------


@hookspec
def gateway_register_event_sinks(register: Callable[[type[EventSink]], None]) -> None:
    """Register event sink classes (``EventSink`` subclasses keyed by ``id()``), configured
    in ``[events.sinks.<id>]`` and validated against their ``Options``."""


@hookspec
def gateway_handle_event(event: Event) -> Awaitable[None] | None:
    """Called for every audited event and notice (webhooks, syslog, dispatch systems).

    Must not block: a sink that talks to the network should queue and return.
    """
