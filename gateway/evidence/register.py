"""The release register of evidence exports: every step of a request is a register row and an
audit entry (the row keeps the entry's id); read newest first, and as CSV.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from gateway import csvcells
from gateway.access.audit import AuditLog
from gateway.config import Config, EvidenceConfig
from gateway.db import Database, export_register, export_requests
from gateway.evidence.package import iso
from gateway.evidence.request_model import SYSTEM, ExportRequest
from gateway.registers import RegisterEntry, read_register

logger = logging.getLogger(__name__)

REGISTER_CSV_FIELDS = (
    "entry", "at", "event", "user", "request", "status", "case_number", "authority", "legal_basis", "purpose",
    "cameras", "from", "to", "format", "requested_by", "decided_by", "detail", "audit_entry",
)


class Register:
    """The register part of ``ExportService`` (``gateway.evidence.requests``), which holds the
    state below."""

    config: Config
    settings: EvidenceConfig
    db: Database
    audit: AuditLog
    clock: Callable[[], float]

    async def register(
        self,
        *,
        request_id: int | None = None,
        event: str | None = None,
        user: str | None = None,
        case_number: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 5000,
    ) -> list[tuple[RegisterEntry, ExportRequest]]:
        """Register entries, newest first, each with its request."""
        r, e = export_requests, export_register
        return await read_register(
            self.db, r, e, ExportRequest, since=since, until=until, limit=limit,
            equal=((e.c.request_id, request_id), (e.c.event, event), (e.c.user, user), (r.c.case_number, case_number)),
        )

    async def _log(
        self, req: ExportRequest, event: str, user: str | None, changes: dict[str, Any] | None = None, client: str | None = None,
        **detail: Any,
    ) -> RegisterEntry:
        """Audit the step, then update the request and append the register row together."""
        now = self.clock()
        audit_id = await self.audit.record(
            f"export.{event}", user=user, client=client, camera=req.cameras[0] if len(req.cameras) == 1 else None,
            range_from=req.range_from, range_to=req.range_to, purpose=req.purpose,
            detail={"request": req.id, "case_number": req.case_number, "cameras": req.cameras, "format": req.format, **detail},
        )
        values = dict(request_id=req.id, at=now, event=event, user=user, detail=detail, audit_id=audit_id)
        async with self.db.begin() as conn:
            if changes:
                await conn.execute(export_requests.update().where(export_requests.c.id == req.id).values(**changes))
            entry_id = (await conn.execute(export_register.insert().values(**values))).inserted_primary_key[0]
        logger.info("evidence: request %d %s by %s", req.id, event, user or SYSTEM)
        return RegisterEntry(id=entry_id, **values)


def register_csv(rows: list[tuple[RegisterEntry, ExportRequest]]) -> str:
    out = io.StringIO()
    writer = csvcells.writer(out)
    writer.writerow(REGISTER_CSV_FIELDS)
    for entry, req in rows:
        writer.writerow([
            entry.id, iso(entry.at), entry.event, entry.user or SYSTEM, req.id, req.status, req.case_number, req.authority,
            req.legal_basis, req.purpose, " ".join(req.cameras), iso(req.range_from), iso(req.range_to), req.format,
            req.requested_by, req.decided_by or "", msgspec.json.encode(entry.detail).decode(), entry.audit_id,
        ])
    return out.getvalue()
