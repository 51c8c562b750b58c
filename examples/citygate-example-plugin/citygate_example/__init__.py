"""An example Citygate plugin, written only against ``gateway.plugin_api``.

* ``IncidentLogSink`` (event sink ``incident-log``): appends incident events to a JSON Lines
  file in the data directory. ``handle`` only queues; a task writes batches in a thread, so
  the event loop never waits for the disk.
* ``GET /api/plugins/example/incidents``: the last entries of that file, for users with
  ``incident.manage``, only of cameras they may manage incidents on; every read is audited
  (refusals are audited by the guard).

Configured in ``gateway.toml``::

    [events.sinks.incident-log]
    path = "incident-log.jsonl"
    kinds = ["incident.*"]
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import Meta

from gateway.plugin_api import (
    BadRequest,
    Event,
    EventSink,
    Gateway,
    NotFound,
    PluginOptions,
    api,
    client_address,
    hookimpl,
    principal,
    requires,
)

logger = logging.getLogger(__name__)

SINK_ID = "incident-log"
ROUTE = "/api/plugins/example/incidents"
#: Entries one request may ask for.
MAX_LIMIT = 1000


class IncidentLogOptions(PluginOptions):
    """``[events.sinks.incident-log]``: checked when the configuration is loaded."""

    #: The file, relative to the gateway's data directory.
    path: Annotated[str, Meta(min_length=1, max_length=255)] = "incident-log.jsonl"
    #: Event kinds to write: shell-style patterns.
    kinds: tuple[str, ...] = ("incident.*",)
    #: Events waiting for the disk; when full, new events are dropped (and logged).
    queue_size: Annotated[int, Meta(ge=1, le=100_000)] = 1000

    def __post_init__(self) -> None:
        where = PurePath(self.path)
        if where.is_absolute() or ".." in where.parts:
            raise ValueError(f"path {self.path!r} must be relative to the data directory, without '..'")
        if not self.kinds or any(not k.strip() for k in self.kinds):
            raise ValueError("kinds must list at least one event kind pattern")


class Entry(msgspec.Struct, kw_only=True, frozen=True):
    """One line of the file (and of the route's answer)."""

    kind: str
    at: float
    camera: str | None = None
    user: str | None = None
    detail: dict[str, Any] = {}


class EntryList(msgspec.Struct, kw_only=True, frozen=True):
    entries: list[Entry]
    dropped: int  #: events the sink had to drop since the gateway started


_decoder = msgspec.json.Decoder(Entry)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def _tail(path: Path, limit: int) -> list[Entry]:
    try:
        with path.open("rb") as f:
            lines = deque(f, maxlen=limit)
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        with contextlib.suppress(msgspec.DecodeError):
            entries.append(_decoder.decode(line))
    return entries


class IncidentLogSink(EventSink):
    Options = IncidentLogOptions

    @staticmethod
    def id() -> str:
        return SINK_ID

    def __init__(self, options: IncidentLogOptions, gateway: Gateway) -> None:
        super().__init__(options, gateway)
        self.path = gateway.data_dir / options.path
        self.dropped = 0
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(options.queue_size)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> IncidentLogSink:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._write_forever(), name=f"event sink {SINK_ID}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5.0)  # what is queued reaches the disk
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def handle(self, event: Event) -> None:
        if not any(fnmatch.fnmatchcase(event.kind, pattern) for pattern in self.options.kinds):
            return
        entry = Entry(kind=event.kind, at=event.at, camera=event.camera, user=event.user, detail=event.detail)
        try:
            line = msgspec.json.encode(entry) + b"\n"
        except (TypeError, msgspec.EncodeError) as exc:
            logger.error("incident log: cannot write %s as JSON: %s", event.kind, exc)
            return
        try:
            self._queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1
            logger.error("incident log: queue full (%d); dropping %s", self._queue.maxsize, event.kind)

    async def _write_forever(self) -> None:
        while True:
            lines = [await self._queue.get()]
            while not self._queue.empty():
                lines.append(self._queue.get_nowait())
            try:
                await asyncio.to_thread(_append, self.path, b"".join(lines))
            except OSError as exc:
                logger.error("incident log: cannot write %s: %s; %d events lost", self.path, exc, len(lines))
            finally:
                for _ in lines:
                    self._queue.task_done()

    async def tail(self, limit: int) -> list[Entry]:
        """The last ``limit`` entries written (read in a thread)."""
        return await asyncio.to_thread(_tail, self.path, limit)


def make_list_route(gateway: Gateway) -> Callable[[web.Request], Any]:
    @api(
        summary="The last incident events the example plugin's incident log wrote",
        query={"limit": Annotated[int, Meta(ge=1, le=MAX_LIMIT)]},
        responses={200: EntryList},
        tag="plugins",
    )
    @requires("incident.manage", camera_param=None)
    async def list_incidents(request: web.Request) -> web.Response:
        who = principal(request)
        raw = request.query.get("limit", "100")
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
        sink = gateway.event_sink(SINK_ID)
        if not isinstance(sink, IncidentLogSink):
            raise NotFound(f"the incident log is not configured ([events.sinks.{SINK_ID}])")
        entries = [
            e for e in await sink.tail(int(raw)) if e.camera is None or gateway.may(who, "incident.manage", e.camera)
        ]
        await gateway.audit(
            "example.incidents.read", user=who.username, client=client_address(request), detail={"entries": len(entries)}
        )
        body = msgspec.json.encode(EntryList(entries=entries, dropped=sink.dropped))
        return web.Response(body=body, content_type="application/json")

    return list_incidents


# --- the hooks ---------------------------------------------------------------------------------


@hookimpl
def gateway_register_event_sinks(register: Callable[[type[EventSink]], None]) -> None:
    """Provide the ``incident-log`` event sink."""
    register(IncidentLogSink)


@hookimpl
def gateway_add_routes(gateway: Gateway) -> None:
    """``GET /api/plugins/example/incidents``, behind the guard."""
    gateway.add_route("GET", ROUTE, make_list_route(gateway))


__all__ = ["IncidentLogSink", "IncidentLogOptions", "Entry", "EntryList"]
