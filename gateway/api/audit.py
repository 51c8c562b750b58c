"""The audit log over HTTP, for auditors: filters, paging, JSON or CSV."""

from __future__ import annotations

import math
from datetime import datetime

from aiohttp import web

from gateway.access.audit import to_csv
from gateway.access.checkpoints import stored_checkpoints
from gateway.access.guard import requires
from gateway.api.openapi import Id, JsonObject, Media, Text, Time, api, enum_of, whole
from gateway.api import json_response
from gateway.appkeys import AUDIT, DATABASE
from gateway.errors import BadRequest

MAX_LIMIT = 10_000
#: 9999-12-31: the last time ISO 8601 can name.
MAX_EPOCH = 253402300799.0


def parse_time(name: str, value: str | None) -> float | None:
    """Epoch seconds or ISO 8601 (``2026-11-21T14:00:00Z``); None when not given. An empty
    value (``?to=``) is a mistake, refused like any other that is not a time."""
    if value is None:
        return None
    if value == "":
        raise BadRequest(f"{name} must be a time (epoch seconds or ISO 8601), not empty; leave it out for no bound")
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # nan, inf and times beyond year 9999 are no times: refused, never compared
        if not math.isfinite(seconds) or not -MAX_EPOCH <= seconds <= MAX_EPOCH:
            raise BadRequest(f"{name} must be a finite time (epoch seconds or ISO 8601), not {value[:40]!r}")
        return seconds
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(f"{name} must be epoch seconds or an ISO 8601 time, not {value!r}") from None


def _int(name: str, value: str | None, default: int | None, low: int, high: int) -> int | None:
    if value is None or value == "":
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(value)


@api(summary="Audit entries, newest first", query={"user": Text, "camera": Text, "action": Text, "outcome": Text, "from": Time, "to": Time, "before": Id, "limit": whole(1, MAX_LIMIT), "format": enum_of("json", "csv")}, responses={200: (JsonObject, Media("text/csv"))})
@requires("audit.read", camera_param=None)
async def list_audit(request: web.Request) -> web.StreamResponse:
    q = request.query
    since, until = parse_time("from", q.get("from")), parse_time("to", q.get("to"))
    if since is not None and until is not None and until < since:
        raise BadRequest("'to' is before 'from'")
    fmt = q.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("format must be json or csv")
    rows = await request.app[AUDIT].query(
        user=q.get("user") or None,
        camera=q.get("camera") or None,
        action=q.get("action") or None,
        outcome=q.get("outcome") or None,
        since=since,
        until=until,
        before_id=_int("before", q.get("before"), None, 1, 2**62),
        limit=_int("limit", q.get("limit"), 200, 1, MAX_LIMIT),
    )
    if fmt == "csv":
        return web.Response(
            text=to_csv(rows), content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="citygate-audit.csv"'},
        )
    return json_response({"entries": rows, "next_before": rows[-1]["id"] if rows else None})


@api(summary="Signed checkpoints of the audit chain", query={"limit": whole(1, MAX_LIMIT)}, responses={200: JsonObject})
@requires("audit.read", camera_param=None)
async def list_checkpoints(request: web.Request) -> web.StreamResponse:
    """The newest signed checkpoints, newest first: what an external system copies to be
    able to prove later that the chain was not rewritten."""
    limit = _int("limit", request.query.get("limit"), 100, 1, MAX_LIMIT)
    checkpoints = await stored_checkpoints(request.app[DATABASE], limit=limit)
    return json_response({"checkpoints": [cp.to_json() for cp in reversed(checkpoints)]})


def setup(app: web.Application) -> None:
    app.router.add_get("/api/audit", list_audit, name="audit")
    app.router.add_get("/api/audit/checkpoints", list_checkpoints, name="audit-checkpoints")
