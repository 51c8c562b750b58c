"""Faults of the gateway's own infrastructure (not of a camera): the database and the recording
storage. One board per gateway, owned by the recording service; the recorders and the audit
writer report into it, ``GET /api/health`` shows it.

A fault is raised once when it starts and cleared once when it ends, each time as an event
(``database.unavailable`` / ``database.recovered``, ``storage.full`` / ``storage.failed`` /
``storage.recovered``, which reach the event sinks and the events channel) and an audit entry
of the same name. The audit entry of a database outage is written when the database answers
again (the audit writer keeps its entries through an outage), with the time it began.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from gateway.events import EventBus

logger = logging.getLogger(__name__)

DATABASE = "database"
STORAGE = "storage"


class Fault(msgspec.Struct, kw_only=True):
    subsystem: str  #: "database" or "storage"
    kind: str  #: the event raised: "database.unavailable", "storage.full", "storage.failed"
    since: float
    reason: str


class FaultBoard:
    def __init__(self, events: EventBus | None, audit: Any = None, *, clock: Callable[[], float] = time.time) -> None:
        self.events = events
        self.audit = audit  #: gateway.access.audit.AuditLog (not imported: it imports the database)
        self.clock = clock
        self._faults: dict[str, Fault] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def current(self) -> list[Fault]:
        return list(self._faults.values())

    def get(self, subsystem: str) -> Fault | None:
        return self._faults.get(subsystem)

    def raise_fault(self, subsystem: str, kind: str, reason: str, **detail: Any) -> bool:
        """Record that ``subsystem`` is failing; True if this is news (event and audit sent)."""
        fault = self._faults.get(subsystem)
        if fault is not None and fault.kind == kind:
            fault.reason = reason
            return False
        fault = self._faults[subsystem] = Fault(subsystem=subsystem, kind=kind, since=self.clock(), reason=reason)
        logger.error("%s: %s (%s)", subsystem, kind, reason)
        self._announce(kind, "failed", {"reason": reason, "since": fault.since, **detail})
        return True

    def clear(self, subsystem: str) -> bool:
        """``subsystem`` works again; True if a fault ended (event and audit sent)."""
        fault = self._faults.pop(subsystem, None)
        if fault is None:
            return False
        seconds = round(self.clock() - fault.since, 1)
        logger.warning("%s: recovered after %.1fs (%s)", subsystem, seconds, fault.kind)
        self._announce(f"{subsystem}.recovered", "ok", {"after": fault.kind, "since": fault.since, "seconds": seconds})
        return True

    def _announce(self, kind: str, outcome: str, detail: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.emit(kind, **detail)
        if self.audit is not None:  # never awaited here: during a database outage it waits for the database
            task = asyncio.ensure_future(self._audit(kind, outcome, detail))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _audit(self, kind: str, outcome: str, detail: dict[str, Any]) -> None:
        try:
            await self.audit.record(kind, outcome=outcome, detail=detail)
        except Exception:
            logger.exception("faults: could not audit %s", kind)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for the audit entries still being written."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
