"""Who is watching over HLS, for the audit log and for revocation.

HLS is plain request/response, so a "viewer" is a signed-in session fetching one camera's
stream: its first request opens the view (``live.start``), and ``IDLE`` seconds without a
request close it (``live.stop`` with the duration). Every request is still authorized on
its own by the guard; registering the view with access control makes a revocation show in
the audit log like any other live view's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.access.control import AccessControl, LiveTicket
from gateway.access.guard import Principal
from gateway.tasks import TaskSet, cancel_and_wait

logger = logging.getLogger(__name__)

IDLE = 10.0


@dataclass(slots=True)
class _View:
    ticket: LiveTicket
    started: float
    last_seen: float
    in_flight: int = 0


class HlsViewers:
    def __init__(self, access: AccessControl, *, idle: float = IDLE) -> None:
        self.access = access
        self.idle = idle
        self._views: dict[tuple[str, str], _View] = {}
        self._task: asyncio.Task[None] | None = None
        #: ``live.start`` writes begun from a request; flushed before the audit log closes.
        self._audits = TaskSet("hls viewers")

    async def __aenter__(self) -> HlsViewers:
        self._task = asyncio.create_task(self._sweep_forever(), name="hls-viewers")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._task)
        await self._audits.drain()  # every live.start before its live.stop
        for key in list(self._views):
            await self._end(key, "gateway shutting down")

    def __len__(self) -> int:
        return len(self._views)

    def views(self) -> list[tuple[str, str]]:
        """(session id, camera) of every HLS view now."""
        return list(self._views)

    @contextlib.contextmanager
    def request(self, who: Principal, camera: str, client: str) -> Iterator[None]:
        """One HLS request of a view; a view with a request in flight (a blocking
        playlist reload) is being watched, however long the request waits."""
        view = self.touch(who, camera, client)
        view.in_flight += 1
        try:
            yield
        finally:
            view.in_flight -= 1
            view.last_seen = time.time()

    def touch(self, who: Principal, camera: str, client: str) -> _View:
        key = (who.session_id, camera)
        now = time.time()
        view = self._views.get(key)
        if view is not None:
            view.last_seen = now
            return view

        async def revoked(reason: str, _key: tuple[str, str] = key) -> None:
            # The guard refuses the next request; just forget the view (the access
            # watcher audits the revocation itself).
            self._views.pop(_key, None)

        ticket = self.access.track(who, camera, "live.view", "hls", revoked, client)
        view = self._views[key] = _View(ticket, now, now)
        self._audits.spawn(
            self.access.audit.record("live.start", user=who.username, client=client, camera=camera, detail={"kind": "hls"}),
            name=f"hls live.start {camera}",
        )
        return view

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for key, view in list(self._views.items()):
                if not view.in_flight and now - view.last_seen > self.idle:
                    await self._end(key, f"no request for {self.idle:.0f}s")

    async def _end(self, key: tuple[str, str], reason: str) -> None:
        view = self._views.pop(key, None)
        if view is None:
            return
        self.access.release(view.ticket)
        ticket = view.ticket
        await self.access.audit.record(
            "live.stop", user=ticket.principal.username, client=ticket.client, camera=ticket.camera,
            detail={"kind": "hls", "duration": round(view.last_seen - view.started, 3), "reason": reason},
        )
