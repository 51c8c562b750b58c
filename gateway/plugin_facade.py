"""The running gateway as a plugin sees it: a small typed facade, not the aiohttp application.

Lifecycle hooks (``gateway_startup``, ``gateway_shutdown``, ``gateway_add_routes``), the
auth hook and event sinks receive a ``Gateway``. It offers what a plugin may use and no
more: the validated configuration, the event bus (publish and subscribe), the audit log,
routes that sit behind the guard, stateful plugin objects, and session look-up for auth
providers. Plugin authors import it as ``gateway.plugin_api.Gateway``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.access.guard import route_access
from gateway.api.openapi import api_spec
from gateway.appkeys import ACCESS, AUDIT, CONFIG, EVENTS, IDENTITY, PLUGINS
from gateway.errors import PluginError
from gateway.interfaces import Event

if TYPE_CHECKING:
    from gateway.access.guard import Principal
    from gateway.config import Config
    from gateway.interfaces import EventSink

#: The one facade of an application (made by ``build_app``, shared by every hook call).
GATEWAY_FACADE = web.AppKey("plugin_gateway", "Gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


class Gateway:
    """What a plugin may use of the running gateway.

    Services exist from ``gateway_startup`` until ``gateway_shutdown`` returns; routes may be
    added only from ``gateway_add_routes`` (before the gateway starts serving).
    """

    __slots__ = ("_app",)

    def __init__(self, app: web.Application) -> None:
        self._app = app

    # -- configuration -------------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The whole validated configuration (frozen: a view, never changed by plugins)."""
        return self._app[CONFIG]

    @property
    def data_dir(self) -> Path:
        """The gateway's data directory; a plugin keeps its files in a sub-directory of its own."""
        return self.config.data_dir

    # -- events --------------------------------------------------------------------------
    def _events(self) -> Any:
        bus = self._app.get(EVENTS)
        if bus is None:
            raise PluginError("the event bus exists only between gateway_startup and gateway_shutdown")
        return bus

    def publish(self, event: Event) -> None:
        """Publish an event to the events channel and every event sink (never blocks)."""
        self._events().publish(event)

    def emit(self, kind: str, *, camera: str | None = None, user: str | None = None, **detail: Any) -> Event:
        """Publish a new event of ``kind`` stamped now; returns it."""
        return self._events().emit(kind, camera=camera, user=user, **detail)

    def subscribe(self) -> AsyncIterator[Event]:
        """Every event from now on (a bounded queue: a subscriber that falls behind loses events)."""
        return self._events().subscribe()

    # -- audit ---------------------------------------------------------------------------
    async def audit(
        self,
        action: str,
        *,
        outcome: str = "ok",
        user: str | None = None,
        client: str | None = None,
        camera: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append an entry to the hash-chained audit log; returns its id once committed."""
        log = self._app.get(AUDIT)
        if log is None:
            raise PluginError("the audit log exists only between gateway_startup and gateway_shutdown")
        return await log.record(action, outcome=outcome, user=user, client=client, camera=camera, detail=detail)

    # -- routes --------------------------------------------------------------------------
    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Add an HTTP route behind the guard.

        ``handler`` must declare who may call it (``requires``, ``authenticated`` or
        ``public`` from ``gateway.plugin_api``) and its contract (``api(...)``): a route
        without either is refused here, as the core's own routes are refused by the tests.
        """
        method = method.upper()
        if method not in _METHODS:
            raise PluginError(f"route {method} {path}: unsupported method")
        if not path.startswith("/"):
            raise PluginError(f"route {method} {path}: the path must start with /")
        name = getattr(handler, "__qualname__", repr(handler))
        if route_access(handler) is None:
            raise PluginError(f"route {method} {path} ({name}) declares no access: use requires(...), authenticated or public")
        if api_spec(handler) is None:
            raise PluginError(f"route {method} {path} ({name}) has no api(...) declaration")
        if self._app.frozen:
            raise PluginError(f"route {method} {path}: routes may only be added from gateway_add_routes")
        self._app.router.add_route(method, path, handler)

    # -- plugins -------------------------------------------------------------------------
    def register_plugin(self, plugin: object, name: str) -> None:
        """Register a stateful plugin object (its hook implementations) under ``name``."""
        self._app[PLUGINS].register(plugin, name=name)

    def unregister_plugin(self, name: str) -> None:
        self._app[PLUGINS].unregister(name)

    def event_sink(self, sink_id: str) -> EventSink | None:
        """The running event sink configured as ``[events.sinks.<sink_id>]``, if any (so a
        plugin's routes can reach the sink it provides)."""
        found = self._app[PLUGINS].pm.get_plugin(sink_plugin_name(sink_id, self))
        return getattr(found, "sink", None)

    # -- access ----------------------------------------------------------------------------
    def may(self, who: Principal, action: str, camera: str | None = None) -> bool:
        """Whether ``who`` may do ``action`` (on ``camera``): roles, areas and grants, as the
        guard decides for the core's routes. Refusals are the caller's to audit."""
        control = self._app.get(ACCESS)
        return bool(control is not None and control.decide(who, action, camera))

    # -- sessions (auth providers) -------------------------------------------------------
    async def session_principal(self, token: str) -> Principal | None:
        """The signed-in user of a session or API token, or None (unknown, ended, expired)."""
        identity = self._app.get(IDENTITY)
        if identity is None:
            return None
        return await identity.authenticate(token)


def sink_plugin_name(sink_id: str, gateway: Gateway) -> str:
    """The name a running event sink is registered under with the plugin manager."""
    return f"event-sink.{sink_id}.{id(gateway):x}"


def facade_of(app: web.Application) -> Gateway:
    """The facade of ``app`` (one per application; a bare app in tests gets a fresh one)."""
    found = app.get(GATEWAY_FACADE)
    return found if found is not None else Gateway(app)
