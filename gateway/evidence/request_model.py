"""Export requests as data: their statuses, the register's events, a request as stored, and
what filing one takes. (The workflow is ``gateway.evidence.workflow``, the register
``gateway.evidence.register``, packages ``gateway.evidence.production``; ``ExportService`` in
``gateway.evidence.requests`` is the one object over them.)
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from gateway.access.policy import Action
from gateway.registers import from_row

PENDING, APPROVED, REJECTED, EXPIRED = "pending", "approved", "rejected", "expired"
PRODUCING, PRODUCED, FAILED = "producing", "produced", "failed"
#: The most cameras one request may name (formats and [exports] allow fewer).
MAX_CAMERAS_NAMED = 256
STATUSES = (PENDING, APPROVED, REJECTED, EXPIRED, PRODUCING, PRODUCED, FAILED)
EVENTS = (
    "filed", "approved", "rejected", "expired", "produced", "production_failed", "downloaded", "hold_release_proposed",
    "hold_released", "package_deleted",
)
#: Who may see every request and the register (others see their own requests).
OVERSIGHT_ACTIONS = (Action.EXPORT_APPROVE, Action.EXPORT_PRODUCE, Action.AUDIT_READ)
SYSTEM = "system"
MAX_TEXT = {"case_number": 100, "authority": 200, "legal_basis": 500, "purpose": 1000}


class ExportRequest(msgspec.Struct, kw_only=True):
    id: int
    status: str
    format: str
    cameras: list[str]
    range_from: float
    range_to: float
    case_number: str
    authority: str
    legal_basis: str
    purpose: str
    requested_by: str
    requested_by_id: int
    requested_at: float
    expires_at: float
    decided_by: str | None = None
    decided_at: float | None = None
    decision_reason: str | None = None
    holds: list[int] = []
    holds_released_at: float | None = None
    produced_by: str | None = None
    produced_at: float | None = None
    package_name: str | None = None
    package_bytes: int | None = None
    package_sha256: str | None = None
    error: str | None = None
    downloads: int = 0
    #: The format's options, as validated at filing with the configured defaults merged in.
    options: dict[str, Any] = {}
    package_deleted_at: float | None = None
    #: Releasing the holds takes two approvers: who proposed it, when and why ...
    release_proposed_by: str | None = None
    release_proposed_at: float | None = None
    release_proposal_reason: str | None = None
    #: ... and who confirmed it (``holds_released_at``).
    holds_released_by: str | None = None
    #: The cluster node that produces (produced) the package: it lies in that node's data dir.
    producer_node: str | None = None


class NewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    #: Each camera once; never more than any format takes (the decoder refuses longer lists).
    cameras: Annotated[list[str], msgspec.Meta(max_length=MAX_CAMERAS_NAMED, extra_json_schema={"uniqueItems": True})]
    range_from: float | str = msgspec.field(name="from")
    range_to: float | str = msgspec.field(name="to")
    case_number: str
    authority: str
    legal_basis: str
    purpose: str
    format: str = "evidence"
    #: The format's options (e.g. ``{"watermark": true}``); see ``GET /api/exports/formats``.
    options: dict[str, Any] = {}


def request_from_row(row: Any) -> ExportRequest:
    return from_row(ExportRequest, row)
