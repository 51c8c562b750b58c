"""Changes without restarts: ``conf/`` read again, and cameras managed through the API.

``Reloader.reload`` reads ``gateway.toml``, ``cameras.toml`` and ``roles.toml`` again and
checks them exactly like at start. Anything wrong and nothing changes: the errors (file,
key, reason) are returned and audited, the running config stays. Otherwise

- roles replace the running ones in the one ``Policy`` every check reads;
- cameras are compared one by one (``CameraManager.apply``): removed ones stop (their
  recordings stay), changed ones restart alone, added ones start, the others are not
  touched; a change of ``[ingest]``, ``[live]``, ``[masking]`` or ``[ptz]`` restarts all;
- access control learns the cameras' areas, and re-checks every open view at once: a view
  whose user lost the right (role, area, camera gone) ends within two seconds, audited;
- other ``gateway.toml`` sections apply at the next restart; the result names them.

Every reload is audited (``config.reload``: who, through what, what changed or why refused).

Cameras managed through the API live in the ``managed_cameras`` table, beside those of
``cameras.toml`` (an id is in one or the other), checked by the same function. A change is
applied here at once; in a cluster every node re-reads the table every ``MANAGED_POLL``
seconds, so the owner of a camera restarts or stops it and a new one becomes takeable.

How a reload is asked for: SIGHUP (``citygate serve`` installs the handler and writes its
process id to ``citygate.pid`` in the data directory); ``citygate reload`` writes who asks to
``reload-request.json`` there, sends the signal and waits for ``reload-result.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from aiohttp import web

from gateway import config as config_mod
from gateway.access.audit import AuditLog
from gateway.access.control import AccessControl
from gateway.access.policy import Policy, Role, load_roles
from gateway.cameras import CameraManager, CameraSettings
from gateway.config import CAMERAS_FILE, CameraConfig, Config
from gateway.db import Database, managed_cameras
from gateway.errors import BadRequest, ConfigError, ConfigErrors, Conflict, NotFound
from gateway.plugins import Plugins

logger = logging.getLogger(__name__)

RELOADER = web.AppKey("reloader", "Reloader")
PID_FILE = "citygate.pid"
REQUEST_FILE = "reload-request.json"
RESULT_FILE = "reload-result.json"
#: A request file older than this is not the sender of a signal (a bare ``kill -HUP``).
REQUEST_FRESH = 30.0
#: The "file" named by errors of cameras managed through the API.
MANAGED = "managed camera"
#: In a cluster: how often each node re-reads the managed cameras.
MANAGED_POLL = 2.0
#: Sections of ``gateway.toml`` a reload applies (every camera restarts with them).
CAMERA_SECTIONS = ("ingest", "live", "masking", "ptz")
#: Option keys never shown back by the API (a PUT that sends the mask keeps the stored value).
SECRET_MASK = "********"
_SECRET_WORDS = ("password", "secret", "token")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    errors: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Cameras whose config changed (``restarted``: those that ran here and restarted).
    changed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)
    #: ``gateway.toml`` sections that changed but apply only at the next restart.
    restart_needed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _roles_diff(old: Mapping[str, Role], new: Mapping[str, Role]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(r for r in set(old) & set(new) if old[r] != new[r]),
    }


def _restart_needed(old: Config, new: Config) -> list[str]:
    skip = {"root", "cameras", *CAMERA_SECTIONS}
    return [
        f.encode_name.replace("_", "-") for f in msgspec.structs.fields(Config)
        if f.name not in skip and getattr(old, f.name) != getattr(new, f.name)
    ]


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def masked_table(table: Mapping[str, Any]) -> dict[str, Any]:
    """A stored camera table as the API shows it: secret options replaced by the mask."""
    shown = dict(table)
    options = shown.get("options")
    if isinstance(options, dict):
        shown["options"] = {k: SECRET_MASK if _is_secret(k) and isinstance(v, str) else v for k, v in options.items()}
    return shown


class Reloader:
    """The running configuration as of the last reload, and the cameras of the database."""

    def __init__(
        self,
        *,
        config: Config,
        plugins: Plugins,
        policy: Policy,
        cameras: CameraManager,
        access: AccessControl,
        audit: AuditLog,
        db: Database,
        cluster: bool = False,
    ) -> None:
        #: The running configuration: as at start, with the reloadable parts as last reloaded.
        self.config = config
        #: The files as last read (what the next reload compares with).
        self._files = config
        self._plugins = plugins
        self._policy = policy
        self._cameras = cameras
        self._access = access
        self._audit = audit
        self._db = db
        self._cluster = cluster
        #: Camera id -> its validated config, for the valid rows of ``managed_cameras``.
        self.managed: dict[str, CameraConfig] = {}
        #: Camera id -> why its row is not run (a vendor plugin uninstalled since, say).
        self.invalid: dict[str, list[str]] = {}
        self._raw: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reloader:
        async with self._lock:
            await self._read_managed()
            await self._apply(self.config)
            try:  # the files themselves (a worker of --workers runs with its own [cluster])
                self._files = (await asyncio.to_thread(self._load))[0]
            except ConfigErrors:
                pass
        if self._cluster:
            self._poller = asyncio.create_task(self._poll(), name="managed-cameras-poll")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the cameras --------------------------------------------------------------------
    def camera_configs(self) -> list[CameraConfig]:
        """Every camera: those of ``cameras.toml``, then those managed through the API."""
        return [*self.config.cameras, *self.managed.values()]

    def in_files(self, camera_id: str) -> bool:
        return self.config.camera(camera_id) is not None

    async def _apply(self, config: Config) -> Any:
        configs = [*config.cameras, *self.managed.values()]
        changes = await self._cameras.apply(configs, CameraSettings.of(config))
        # disabled cameras and those removed since start keep their area: their recordings
        # stay, and who may play them back is still decided by it
        self._access.set_cameras([*self._cameras.removed(), *config.cameras, *self.managed.values()])
        return changes

    # -- conf/ read again ---------------------------------------------------------------
    def _load(self) -> tuple[Config, Policy]:
        root = self.config.root
        plugins = self._plugins
        errors: list[ConfigError] = []
        config = policy = None
        try:
            config = config_mod.load(
                root, vendors=plugins.camera_vendors(), storage_backends=plugins.storage_backends() or None,
                mask_filters=plugins.mask_filters(), export_formats=plugins.export_formats(), analyzers=plugins.analyzers(),
                event_sinks=plugins.event_sinks(),
            )  # the registries `citygate serve` loads with (gateway.loading.load_all)
        except ConfigErrors as exc:
            errors += exc.errors
        try:
            policy = load_roles(root)
        except ConfigErrors as exc:
            errors += exc.errors
        if config is not None:
            display = str(Path(root) / CAMERAS_FILE)
            for index, camera in enumerate(config.cameras):
                if camera.id in self._raw:
                    errors.append(ConfigError(
                        display, f"camera[{index}].id", f"camera id {camera.id!r} is managed through the API (remove it there first)"
                    ))
        if errors or config is None or policy is None:
            raise ConfigErrors(errors)
        return config, policy

    async def reload(self, *, by: str, via: str, client: str | None = None) -> ReloadResult:
        """Read ``conf/`` again and apply it whole, or refuse it whole (audited either way)."""
        async with self._lock:
            try:
                config, policy = await asyncio.to_thread(self._load)
            except ConfigErrors as exc:
                messages = [e.message for e in exc.errors]
                logger.error("reload refused (%s, %s); the running config stays:\n  %s", via, by, "\n  ".join(messages))
                await self._audit.record(
                    "config.reload", outcome="refused", user=by, client=client, detail={"via": via, "errors": messages}
                )
                return ReloadResult(False, errors=messages)
            roles = _roles_diff(self._policy.roles, policy.roles)
            self._policy.roles = policy.roles  # the one Policy every check reads
            restart_needed = _restart_needed(self._files, config)
            self._files = config
            running = msgspec.structs.replace(
                self.config, cameras=config.cameras, **{name: getattr(config, name) for name in CAMERA_SECTIONS}
            )
            changes = await self._apply(running)
            self.config = running
            result = ReloadResult(
                True, added=list(changes.added), removed=list(changes.removed), changed=list(changes.changed),
                restarted=list(changes.restarted), roles=roles, restart_needed=restart_needed,
            )
            if restart_needed:
                logger.warning("reload: changed sections apply at the next restart: %s", ", ".join(restart_needed))
            logger.info(
                "reload (%s, %s): cameras +%s -%s ~%s; roles %s", via, by, result.added, result.removed, result.changed, roles
            )
            detail = {k: v for k, v in result.to_json().items() if k not in ("ok", "errors")}
            await self._audit.record("config.reload", user=by, client=client, detail={"via": via, **detail})
            return result

    def signalled(self, request_file: Path, result_file: Path) -> None:
        """SIGHUP: reload in a task; the sender named by a fresh request file, if any."""
        task = asyncio.get_running_loop().create_task(self._on_signal(request_file, result_file), name="reload-signal")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_signal(self, request_file: Path, result_file: Path) -> None:
        request = await asyncio.to_thread(_read_request, request_file)
        by = f"os:{request['user']}" if request.get("user") else "os:unknown (SIGHUP)"
        via = "citygate reload" if request else "SIGHUP"
        try:
            result = await self.reload(by=by, via=via)
        except Exception as exc:
            logger.exception("reload failed")
            result = ReloadResult(False, errors=[f"reload failed: {exc}"])
        body = {"request": request.get("id"), "pid": os.getpid(), "at": time.time(), **result.to_json()}
        await asyncio.to_thread(_write_atomically, result_file, json.dumps(body, indent=2))

    # -- cameras managed through the API -----------------------------------------------
    def _check(self, table: Any, errors: list[ConfigError]) -> CameraConfig | None:
        plugins = self._plugins
        # never the server's environment: a camera table from the API naming `password-env`
        # would otherwise send any of the gateway's secrets to a camera of its choosing
        return config_mod.camera_from_table(
            table, vendors=plugins.camera_vendors(), file=MANAGED, key="camera", env={}, errors=errors,
            mask_filters=plugins.mask_filters(), analyzers=plugins.analyzers(),
        )

    async def _read_managed(self) -> bool:
        """Read the table; True if it differs from what runs."""
        async with self._db.connect() as conn:
            rows = (await conn.execute(sa.select(managed_cameras.c.id, managed_cameras.c.config).order_by(managed_cameras.c.created_at))).all()
        raw = {cid: table for cid, table in rows}
        if raw == self._raw:
            return False
        managed: dict[str, CameraConfig] = {}
        invalid: dict[str, list[str]] = {}
        for cid, table in raw.items():
            errors: list[ConfigError] = []
            checked = self._check(table, errors)
            if checked is None or errors or self.in_files(cid):
                invalid[cid] = [e.message for e in errors] or [f"camera id {cid!r} is configured in {CAMERAS_FILE}"]
                logger.error("managed camera %s is not run: %s", cid, "; ".join(invalid[cid]))
                continue
            managed[cid] = checked
        self._raw, self.managed, self.invalid = raw, managed, invalid
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(MANAGED_POLL)
            try:
                async with self._lock:
                    if await self._read_managed():
                        await self._apply(self.config)
            except Exception as exc:  # the database is away: keep what runs
                logger.warning("managed cameras: reading the table failed: %s", exc)

    async def managed_rows(self) -> list[dict[str, Any]]:
        async with self._db.connect() as conn:
            rows = (await conn.execute(sa.select(managed_cameras).order_by(managed_cameras.c.created_at))).mappings().all()
        return [
            {
                "id": r["id"], "camera": masked_table(r["config"]), "created_by": r["created_by"], "created_at": r["created_at"],
                "updated_by": r["updated_by"], "updated_at": r["updated_at"], "errors": self.invalid.get(r["id"], []),
            }
            for r in rows
        ]

    def validate(self, table: Any, *, camera_id: str | None = None) -> CameraConfig:
        """A camera table from the API checked like one of ``cameras.toml`` (400 naming the
        key otherwise)."""
        if not isinstance(table, dict):
            raise BadRequest(f"{MANAGED}: camera: expected a table (a JSON object)")
        if camera_id is not None:
            table = {"id": camera_id, **table}
            if table["id"] != camera_id:
                raise BadRequest(f"{MANAGED}: camera.id: the id cannot change (remove the camera and add a new one)")
        errors: list[ConfigError] = []
        checked = self._check(table, errors)
        if errors or checked is None:
            raise BadRequest("\n".join(e.message for e in errors))
        return checked

    async def add_managed(self, table: dict[str, Any], *, by: str) -> CameraConfig:
        async with self._lock:
            camera = self.validate(table)
            if self.in_files(camera.id):
                raise Conflict(f"camera {camera.id!r} is configured in {CAMERAS_FILE}: change it there")
            if camera.id in self._raw:
                raise Conflict(f"camera {camera.id!r} exists")
            now = time.time()
            async with self._db.begin() as conn:
                await conn.execute(managed_cameras.insert().values(
                    id=camera.id, config=dict(table), created_by=by, created_at=now, updated_by=by, updated_at=now
                ))
            await self._read_managed()
            await self._apply(self.config)
            return camera

    async def edit_managed(self, camera_id: str, table: dict[str, Any], *, by: str) -> tuple[CameraConfig, list[str]]:
        """Replace a managed camera's table; returns it and the keys that changed."""
        async with self._lock:
            old = self._stored(camera_id)
            table = dict(table)
            options = table.get("options")
            if isinstance(options, dict) and isinstance(old.get("options"), dict):  # the mask keeps what is stored
                table["options"] = {
                    k: old["options"].get(k, v) if v == SECRET_MASK and _is_secret(k) else v for k, v in options.items()
                }
            if table.get("id") == camera_id:
                del table["id"]
            camera = self.validate(table, camera_id=camera_id)
            stored = {"id": camera_id, **table}
            changed = sorted(k for k in set(old) | set(stored) if old.get(k) != stored.get(k))
            async with self._db.begin() as conn:
                await conn.execute(managed_cameras.update().where(managed_cameras.c.id == camera_id).values(
                    config=stored, updated_by=by, updated_at=time.time()
                ))
            await self._read_managed()
            await self._apply(self.config)
            return camera, changed

    async def remove_managed(self, camera_id: str) -> None:
        async with self._lock:
            self._stored(camera_id)
            async with self._db.begin() as conn:
                await conn.execute(managed_cameras.delete().where(managed_cameras.c.id == camera_id))
            await self._read_managed()
            await self._apply(self.config)

    def _stored(self, camera_id: str) -> dict[str, Any]:
        if camera_id not in self._raw:
            if self.in_files(camera_id):
                raise Conflict(f"camera {camera_id!r} is configured in {CAMERAS_FILE}: change it there (then reload)")
            raise NotFound(f"no managed camera {camera_id!r}")
        return dict(self._raw[camera_id])


# -- the signal and the files beside the data --------------------------------------------
def _read_request(path: Path) -> dict[str, Any]:
    try:
        request = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(request, dict) or time.time() - float(request.get("at", 0)) > REQUEST_FRESH:
        return {}
    return request


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


#: Set by ``citygate serve`` (never by tests running several gateways in one process):
#: SIGHUP reloads; True also writes ``citygate.pid`` (a worker of ``--workers`` does not:
#: its supervisor writes it and passes the signal on).
RELOAD_SIGNALS = web.AppKey("reload_signals", bool)


async def reload_ctx(app: web.Application) -> AsyncIterator[None]:
    """After the cameras: API-managed cameras join them; reloads apply to them."""
    from gateway.appkeys import ACCESS, AUDIT, CAMERAS, CONFIG, DATABASE, PLUGINS, POLICY

    config = app[CONFIG]
    reloader = Reloader(
        config=config, plugins=app[PLUGINS], policy=app[POLICY], cameras=app[CAMERAS], access=app[ACCESS], audit=app[AUDIT],
        db=app[DATABASE], cluster=config.cluster.enabled,
    )
    async with reloader:
        app[RELOADER] = reloader
        if RELOAD_SIGNALS not in app:
            yield
            return
        loop = asyncio.get_running_loop()
        data_dir = config.data_dir
        loop.add_signal_handler(signal.SIGHUP, reloader.signalled, data_dir / REQUEST_FILE, data_dir / RESULT_FILE)
        pid_file = data_dir / PID_FILE if app[RELOAD_SIGNALS] else None
        if pid_file is not None:
            await asyncio.to_thread(_write_atomically, pid_file, f"{os.getpid()}\n")
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            if pid_file is not None:
                with contextlib.suppress(OSError):
                    pid_file.unlink()
