"""The plugin manager and the typed facade through which the core calls every hook.

Built-in plugins are entry points in group ``gateway`` of Citygate's own distribution,
so they are discovered exactly like third-party ones. Environment variables:

``CITYGATE_DISABLE_PLUGINS``
    comma-separated plugin names (entry point names) that must not load.
``CITYGATE_TRACE_HOOKS``
    when set, every hook call is logged at DEBUG level.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

import pluggy

from gateway import PROJECT_NAME, hookspecs
from gateway.errors import PluginError
from gateway.interfaces import Analyzer, AuthProvider, CameraVendor, Event, ExportFormat, MaskFilter, StorageBackend

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT_NAME
DISABLE_ENV = "CITYGATE_DISABLE_PLUGINS"
TRACE_ENV = "CITYGATE_TRACE_HOOKS"
OWN_DISTRIBUTION = "citygate"

T = TypeVar("T")


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable (a hook implemented as a coroutine)."""
    if inspect.isawaitable(value):
        return await value
    return value


def load_plugins(*, disabled: Iterable[str] | None = None, entry_points: bool = True) -> Plugins:
    """Build the manager: specs, blocked names, entry point plugins; then check for typos."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    origins: dict[str, str] = {}
    pm.add_hookspecs(hookspecs)
    names = set(disabled or ()) | {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
    for name in sorted(names):
        pm.set_blocked(name)
    if entry_points:
        _load_entry_points(pm, origins)
    check(pm)
    if os.environ.get(TRACE_ENV):
        pm.trace.root.setwriter(lambda msg: logger.debug("hook: %s", msg.rstrip()))
        pm.enable_tracing()
    return Plugins(pm, origins)


def _load_entry_points(pm: pluggy.PluginManager, origins: dict[str, str]) -> None:
    """Like pluggy's ``load_setuptools_entrypoints``, but a failure names the plugin."""
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} from {dist.metadata['name']} {dist.version} failed to load "
                    f"({ep.value}): {type(exc).__name__}: {exc}; set {DISABLE_ENV}={ep.name} to start without it"
                ) from exc
            pm.register(plugin, name=ep.name)
            dist_name = dist.metadata["name"]
            where = "built-in" if dist_name == OWN_DISTRIBUTION else "entry point"
            origins[ep.name] = f"{dist_name} {dist.version} ({where}, {ep.value})"


def check(pm: pluggy.PluginManager) -> None:
    """Fail loudly on a hook implementation that matches no spec (a misspelt hook name)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; is the hook name misspelt? (see gateway/hookspecs.py)") from exc


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    kinds: tuple[str, ...]
    hooks: tuple[str, ...]
    source: str  #: "citygate 0.1.0 (built-in)", "acme-cams 1.2 (entry point)", or a module path
    provides: tuple[str, ...]  #: ids registered through registry hooks, e.g. "vendor:onvif"


_KIND_OF_HOOK = {
    "gateway_register_camera_vendors": "camera vendor",
    "gateway_register_storage_backends": "storage backend",
    "gateway_register_mask_filters": "masking filter",
    "gateway_register_export_formats": "export format",
    "gateway_authenticate": "auth provider",
    "gateway_register_auth_providers": "sign-in provider",
    "gateway_register_analyzers": "analyzer",
    "gateway_handle_event": "event sink",
    "gateway_add_routes": "routes",
    "gateway_startup": "lifecycle",
    "gateway_shutdown": "lifecycle",
}

_REGISTRY_PREFIX = {
    "gateway_register_camera_vendors": "vendor",
    "gateway_register_storage_backends": "storage",
    "gateway_register_mask_filters": "filter",
    "gateway_register_export_formats": "export",
    "gateway_register_auth_providers": "auth",
    "gateway_register_analyzers": "analyzer",
}


class Plugins:
    """Typed facade: the core calls hooks only through these methods."""

    def __init__(self, pm: pluggy.PluginManager, origins: dict[str, str] | None = None) -> None:
        self.pm = pm
        self._origins = origins if origins is not None else {}

    def register(self, plugin: object, name: str) -> None:
        """Register a plugin object directly (tests, embedding); checked like any other."""
        self.pm.register(plugin, name=name)
        check(self.pm)

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)

    # -- registries ----------------------------------------------------------------------
    def _registry(self, hook_name: str, base: type[T]) -> dict[str, type[T]]:
        found: dict[str, type[T]] = {}
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy's call order: LIFO, trylast last
            plugin_name = impl.plugin_name

            def register(cls: type[T], _plugin: str = plugin_name) -> None:
                try:
                    ident = cls.id()  # type: ignore[attr-defined]
                except Exception as exc:
                    raise PluginError(f"plugin {_plugin!r} registered {cls!r} without a usable id(): {exc}") from exc
                if not isinstance(ident, str) or not ident:
                    raise PluginError(f"plugin {_plugin!r} registered {cls!r} with an empty id")
                if ident in found:
                    logger.info("plugin %s: %s %r already provided by an earlier plugin; keeping that one", _plugin, base.__name__, ident)
                    return
                found[ident] = cls

            impl.function(register)
        return found

    def camera_vendors(self) -> dict[str, type[CameraVendor]]:
        return self._registry("gateway_register_camera_vendors", CameraVendor)

    def storage_backends(self) -> dict[str, type[StorageBackend]]:
        return self._registry("gateway_register_storage_backends", StorageBackend)

    def mask_filters(self) -> dict[str, type[MaskFilter]]:
        return self._registry("gateway_register_mask_filters", MaskFilter)

    def export_formats(self) -> dict[str, type[ExportFormat]]:
        return self._registry("gateway_register_export_formats", ExportFormat)

    def auth_providers(self) -> dict[str, type[AuthProvider]]:
        """Sign-in providers (the login hook): LDAP and others, configured in ``[auth.<id>]``."""
        return self._registry("gateway_register_auth_providers", AuthProvider)

    def analyzers(self) -> dict[str, type[Analyzer]]:
        """Video analyzers, chosen per camera by ``[[camera.analytics]]``."""
        return self._registry("gateway_register_analyzers", Analyzer)

    # -- lifecycle -----------------------------------------------------------------------
    async def startup(self, app: Any) -> None:
        for result in self.pm.hook.gateway_startup(app=app):
            await await_me_maybe(result)

    async def shutdown(self, app: Any) -> None:
        for result in self.pm.hook.gateway_shutdown(app=app):
            try:
                await await_me_maybe(result)
            except Exception:
                logger.exception("a plugin failed during shutdown")

    def add_routes(self, app: Any) -> None:
        self.pm.hook.gateway_add_routes(app=app)

    # -- auth and events -----------------------------------------------------------------
    async def authenticate(self, request: Any) -> Any | None:
        # firstresult with async providers: walk the implementations ourselves so an
        # awaitable that resolves to None lets the next provider try.
        for impl in self.pm.hook.gateway_authenticate.get_hookimpls()[::-1]:
            result = await await_me_maybe(impl.function(request))
            if result is not None:
                return result
        return None

    async def handle_event(self, event: Event) -> None:
        for result in self.pm.hook.gateway_handle_event(event=event):
            try:
                await await_me_maybe(result)
            except Exception:
                logger.exception("event sink failed on %s", event.kind)

    # -- introspection -------------------------------------------------------------------
    def describe(self) -> list[PluginInfo]:
        rows: list[PluginInfo] = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(c.name for c in self.pm.get_hookcallers(plugin) or ()))
            kinds = tuple(dict.fromkeys(_KIND_OF_HOOK.get(h, h) for h in hooks))
            source = self._origins.get(name) or f"registered directly ({getattr(plugin, '__name__', type(plugin).__qualname__)})"
            rows.append(PluginInfo(name, kinds, hooks, source, self._provides(plugin, hooks)))
        return rows

    def _provides(self, plugin: object, hooks: tuple[str, ...]) -> tuple[str, ...]:
        ids: list[str] = []
        for hook in hooks:
            prefix = _REGISTRY_PREFIX.get(hook)
            if prefix is None:
                continue
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin is plugin:
                    impl.function(lambda cls, _p=prefix: ids.append(f"{_p}:{cls.id()}"))
        return tuple(ids)

    def blocked(self) -> list[str]:
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is None)
