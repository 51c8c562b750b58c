"""What the request registers share (evidence exports in ``gateway.evidence``, agencies'
access requests in ``gateway.access.agency``): the register entry, a request row read into its
struct, a request's times, and a register read newest first with each entry's request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa

from gateway.db import Database
from gateway.errors import BadRequest

S = TypeVar("S", bound=msgspec.Struct)


class RegisterEntry(msgspec.Struct, kw_only=True):
    """One step of a request: a register row, which keeps its audit entry's id."""

    id: int
    request_id: int
    at: float
    event: str
    user: str | None
    detail: dict[str, Any]
    audit_id: int


def from_row(struct: type[S], row: Any) -> S:
    """A request struct from its table row (NULL columns take the struct's defaults)."""
    return struct(**{k: v for k, v in row._mapping.items() if v is not None})


def as_time(name: str, value: float | str) -> float:
    """A request's time, given as epoch seconds or as text ``parse_time`` reads; BadRequest
    names ``name`` when it is missing or unreadable."""
    from gateway.api.audit import parse_time

    parsed = parse_time(name, str(value)) if isinstance(value, str) else float(value)
    if parsed is None:
        raise BadRequest(f"{name} is required")
    return parsed


async def read_register(
    db: Database,
    requests: sa.Table,
    register: sa.Table,
    struct: type[S],
    *,
    equal: Iterable[tuple[Any, Any]] = (),
    since: float | None = None,
    until: float | None = None,
    limit: int = 5000,
) -> list[tuple[RegisterEntry, S]]:
    """Register entries, newest first, each with its request; ``equal`` pairs a column (of
    either table) with the value it must have (None: any)."""
    r, e = requests, register
    q = sa.select(e, *[c.label(f"req_{c.name}") for c in r.c]).join(r, r.c.id == e.c.request_id).order_by(e.c.id.desc()).limit(limit)
    for column, value in equal:
        if value is not None:
            q = q.where(column == value)
    if since is not None:
        q = q.where(e.c.at >= since)
    if until is not None:
        q = q.where(e.c.at < until)
    async with db.connect() as conn:
        rows = (await conn.execute(q)).mappings().all()
    return [
        (
            RegisterEntry(**{c.name: row[c.name] for c in e.c}),
            struct(**{c.name: row[f"req_{c.name}"] for c in r.c if row[f"req_{c.name}"] is not None}),
        )
        for row in rows
    ]
