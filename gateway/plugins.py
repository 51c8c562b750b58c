"""The plugin manager and the typed facade through which the core calls every hook.

Built-in plugins are entry points in group ``gateway`` of Citygate's own distribution,
so they are discovered exactly like third-party ones. Environment variables:

``CITYGATE_DISABLE_PLUGINS``
    comma-separated plugin names (entry point names) that must not load.
``CITYGATE_TRACE_HOOKS``
    when set, every hook call is logged at DEBUG level.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import CodeType
from typing import Any, TypeVar

import msgspec
import pluggy

from gateway import PROJECT_NAME, hookimpl, hookspecs
from gateway.config import GATEWAY_FILE, event_sink_options
from gateway.interfaces import EventSink
from gateway.errors import ConfigError, ConfigErrors, PluginError
from gateway.plugin_facade import Gateway, facade_of, sink_plugin_name
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
            _register(pm, plugin, ep.name)
            dist_name = dist.metadata["name"]
            where = "built-in" if dist_name == OWN_DISTRIBUTION else "entry point"
            origins[ep.name] = f"{dist_name} {dist.version} ({where}, {ep.value})"


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Register a plugin; a hook implementation whose arguments the spec lacks is named."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {name!r} does not match the hook specifications: {exc}; lifecycle hooks take "
            "`gateway` (gateway.plugin_api.Gateway), not the aiohttp app (see gateway/hookspecs.py)"
        ) from exc


def check(pm: pluggy.PluginManager) -> None:
    """Fail loudly on a hook implementation that matches no spec (a misspelt hook name)."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc}; is the hook name misspelt? (see gateway/hookspecs.py)") from exc


#: What a registered id may look like (it is written in config files and URLs).
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_registered(cls: Any, base: type | None, *, plugin: str, kind: str) -> str:
    """The id of a class a plugin registered, after checking it against its interface."""
    what = f"plugin {plugin!r} registered {cls!r} as a {kind}"
    if not isinstance(cls, type):
        raise PluginError(f"{what}, but that is not a class")
    if base is not None and not issubclass(cls, base):
        raise PluginError(f"{what}, but it is not a subclass of gateway.plugin_api.{base.__name__}")
    try:
        ident = cls.id()
    except Exception as exc:
        raise PluginError(f"{what} without a usable static id(): {type(exc).__name__}: {exc}") from exc
    if not isinstance(ident, str) or not _ID.match(ident):
        raise PluginError(f"{what} with the id {ident!r}: an id is 1-64 letters, digits, '_', '.', '-', starting with a letter or digit")
    options = getattr(cls, "Options", None)
    if options is not None and not (isinstance(options, type) and issubclass(options, msgspec.Struct)):
        raise PluginError(f"{what} whose Options is not a msgspec Struct (subclass gateway.plugin_api.PluginOptions)")
    return ident


def _impl_owners(impls: Iterable[Any]) -> dict[CodeType, list[Any]]:
    owners: dict[CodeType, list[Any]] = {}
    for impl in impls:
        function = getattr(impl.function, "__func__", impl.function)
        code = getattr(function, "__code__", None)
        if code is not None:
            owners.setdefault(code, []).append(impl)
    return owners


def _calling_plugin(owners: dict[CodeType, list[Any]]) -> str:
    """The plugin whose hook implementation is (somewhere up the stack) calling ``register``."""
    frame = sys._getframe(2)
    while frame is not None:
        impls = owners.get(frame.f_code)
        if impls:
            this = frame.f_locals.get("self")
            for impl in impls:
                if len(impls) == 1 or getattr(impl.function, "__self__", None) is this:
                    return impl.plugin_name
            return impls[0].plugin_name
        frame = frame.f_back
    return "?"


class _SinkPlugin:
    """A running ``EventSink`` as a plugin object: events reach it through the hook."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    @hookimpl
    def gateway_handle_event(self, event: Event) -> Any:
        return self.sink.handle(event)


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
    "gateway_register_event_sinks": "event sink",
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
    "gateway_register_event_sinks": "sink",
    "gateway_register_analyzers": "analyzer",
}


class Plugins:
    """Typed facade: the core calls hooks only through these methods."""

    def __init__(self, pm: pluggy.PluginManager, origins: dict[str, str] | None = None) -> None:
        self.pm = pm
        self._origins = origins if origins is not None else {}

    def register(self, plugin: object, name: str) -> None:
        """Register a plugin object directly (tests, embedding); checked like any other."""
        _register(self.pm, plugin, name)
        check(self.pm)

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)

    # -- registries ----------------------------------------------------------------------
    def is_builtin(self, name: str) -> bool:
        """A plugin of Citygate's own distribution (``plugins/``)."""
        return "(built-in" in self._origins.get(name, "")

    def _registry(self, hook_name: str, base: type[T] | None) -> dict[str, type[T]]:
        """Call a registry hook through pluggy (traced like any hook) and check what it registers.

        A registered class must subclass ``base`` and have a static ``id()`` giving a valid
        id. Where a third-party plugin and a built-in register the same id, the third-party
        class wins (an integrator replaces a default); the same id from two third-party
        plugins, or two built-ins, is an error naming both."""
        found, _ = self._collect(hook_name, base, strict=True)
        return found

    def _collect(self, hook_name: str, base: type[T] | None, *, strict: bool) -> tuple[dict[str, type[T]], list[tuple[str, str]]]:
        caller = getattr(self.pm.hook, hook_name)
        owners = _impl_owners(caller.get_hookimpls())
        kind = _KIND_OF_HOOK.get(hook_name, hook_name)
        found: dict[str, type[T]] = {}
        owner_of: dict[str, str] = {}
        made: list[tuple[str, str]] = []  # (plugin name, id) of every registration

        def register(cls: type[T]) -> None:
            plugin = _calling_plugin(owners)
            try:
                ident = check_registered(cls, base, plugin=plugin, kind=kind)
            except PluginError:
                if strict:
                    raise
                return
            made.append((plugin, ident))
            first = owner_of.get(ident)
            if first is None:
                found[ident], owner_of[ident] = cls, plugin
            elif self.is_builtin(first) != self.is_builtin(plugin):
                if self.is_builtin(first):  # the third-party class replaces the built-in one
                    found[ident], owner_of[ident] = cls, plugin
                logger.debug("plugins: %s %r of plugin %s replaces the built-in one", kind, ident, owner_of[ident])
            elif strict and first != plugin:
                raise PluginError(
                    f"{kind} id {ident!r} is registered by two plugins, {first!r} and {plugin!r}; "
                    f"uninstall one, or block one with {DISABLE_ENV}"
                )
            elif strict:
                raise PluginError(f"plugin {plugin!r} registered {kind} id {ident!r} twice")

        for result in caller(register=register):
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise PluginError(f"{hook_name} must be a plain function (it registers classes; nothing to await)")
        return found, made

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

    def event_sinks(self) -> dict[str, type[EventSink]]:
        """Event sinks, configured in ``[events.sinks.<id>]``."""
        return self._registry("gateway_register_event_sinks", EventSink)

    # -- lifecycle -----------------------------------------------------------------------
    async def startup(self, gateway: Gateway) -> None:
        for result in self.pm.hook.gateway_startup(gateway=gateway):
            await await_me_maybe(result)

    async def shutdown(self, gateway: Gateway) -> None:
        for result in self.pm.hook.gateway_shutdown(gateway=gateway):
            try:
                await await_me_maybe(result)
            except Exception:
                logger.exception("a plugin failed during shutdown")

    def add_routes(self, gateway: Gateway) -> None:
        self.pm.hook.gateway_add_routes(gateway=gateway)

    @contextlib.asynccontextmanager
    async def started(self, gateway: Gateway) -> AsyncIterator[None]:
        """``gateway_startup`` on entry, ``gateway_shutdown`` on exit."""
        await self.startup(gateway)
        try:
            yield
        finally:
            await self.shutdown(gateway)

    @contextlib.asynccontextmanager
    async def event_sinks_running(self, gateway: Gateway) -> AsyncIterator[None]:
        """The configured event sinks, each an async context manager fed through
        ``gateway_handle_event`` while it runs; exited in reverse order."""
        config = gateway.config
        registry = self.event_sinks() if config.events.sinks else {}
        errors: list[ConfigError] = []
        options = event_sink_options(config.events.sinks, registry, file=str(Path(config.root) / GATEWAY_FILE), env=os.environ, errors=errors)
        if errors:
            raise ConfigErrors(errors)
        async with contextlib.AsyncExitStack() as stack:
            for sink_id, opts in options.items():
                sink = await stack.enter_async_context(registry[sink_id](opts, gateway))
                name = sink_plugin_name(sink_id, gateway)
                self.register(_SinkPlugin(sink), name=name)
                stack.callback(self.unregister, name)
            yield

    # -- auth and events -----------------------------------------------------------------
    async def authenticate(self, request: Any) -> Any | None:
        """The identity behind ``request``: the first provider's answer that is not None.

        Called through pluggy (so traced); async providers are awaited in call order, and
        those after the one that answered are never started."""
        app = getattr(request, "app", None)
        gateway = facade_of(app) if app is not None else None
        pending = list(self.pm.hook.gateway_authenticate(request=request, gateway=gateway))
        try:
            while pending:
                result = await await_me_maybe(pending.pop(0))
                if result is not None:
                    return result
            return None
        finally:
            for left in pending:
                if inspect.iscoroutine(left):
                    left.close()

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
        name = self.pm.get_name(plugin)
        ids: list[str] = []
        for hook in hooks:
            prefix = _REGISTRY_PREFIX.get(hook)
            if prefix is None:
                continue
            _, made = self._collect(hook, None, strict=False)
            ids.extend(f"{prefix}:{ident}" for owner, ident in made if owner == name)
        return tuple(ids)

    def blocked(self) -> list[str]:
        return sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is None)
