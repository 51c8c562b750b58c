"""Access requests from other agencies: ask in writing, four eyes, a grant that ends by itself.

Yên Bái's rules make the camera system shared infrastructure: police, the transport
department and districts use it according to their rights, and an agency that needs
cameras must ask in writing, saying what, for what purpose, and committing to use them only
for that. Here:

- an agency account (``access.request``, the ``agency`` role) files a request: cameras
  and/or areas (resolved to their cameras when filed), live and/or playback, the period
  (from-to), the purpose, and the commitment text of ``[agency-access] commitment``, which
  it must send back word for word and which is stored with the request;
- an administrator of the operating unit (``access.approve`` on EVERY camera of the
  request: areas apply) who is not the requester (four eyes, by user id) approves or
  rejects it with a reason;
- approval creates one time-limited user grant (``live.view`` + ``snapshot.view`` for live,
  ``playback.view`` for playback, source ``agency:<id>``) through the access core, so the
  agency's views are decided and re-checked like every other: when the period ends or the
  request is revoked (by an approver of its cameras, or by the agency itself) its live
  views end within two seconds;
- every step is a row of the access register and an entry of the audit chain (``agency.*``;
  refusals with outcome ``refused``); ``GET /api/access-requests/register`` (JSON, CSV with
  neutralised cells) lists them beside the evidence release register.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import sqlalchemy as sa
from aiohttp import web

from gateway import csvcells
from gateway.access.audit import AuditLog
from gateway.access.control import AccessControl
from gateway.access.guard import Principal
from gateway.access.policy import Action, Decision
from gateway.config import AgencyAccessConfig, Config
from gateway.db import Database, access_register, access_requests
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.events import EventBus
from gateway.evidence.package import iso
from gateway.registers import RegisterEntry, as_time, from_row, read_register
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

AGENCY_ACCESS = web.AppKey("agency_access", "AgencyAccess")

PENDING, APPROVED, REJECTED, REVOKED, EXPIRED = "pending", "approved", "rejected", "revoked", "expired"
STATUSES = (PENDING, APPROVED, REJECTED, REVOKED, EXPIRED)
EVENTS = ("filed", "approved", "rejected", "revoked", "expired")
#: Who sees every request and the register (an agency sees its own requests).
OVERSIGHT_ACTIONS = (Action.ACCESS_APPROVE, Action.AUDIT_READ)
LIVE_ACTIONS = (str(Action.LIVE_VIEW), str(Action.SNAPSHOT_VIEW))
PLAYBACK_ACTIONS = (str(Action.PLAYBACK_VIEW),)
MAX_PURPOSE = 1000
MAX_REASON = 1000
EXPIRY_CHECK = 1.0
LIST_LIMIT = 500
SYSTEM = "system"


class AccessRequest(msgspec.Struct, kw_only=True):
    id: int
    status: str
    cameras: list[str]
    areas: list[str]
    live: bool
    playback: bool
    range_from: float
    range_to: float
    purpose: str
    commitment: str
    requested_by: str
    requested_by_id: int
    requested_at: float
    decided_by: str | None = None
    decided_by_id: int | None = None
    decided_at: float | None = None
    decision_reason: str | None = None
    grant_id: int | None = None
    ended_at: float | None = None
    ended_by: str | None = None
    end_reason: str | None = None

    @property
    def actions(self) -> list[str]:
        return [*(LIVE_ACTIONS if self.live else ()), *(PLAYBACK_ACTIONS if self.playback else ())]


class NewAccessRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    cameras: list[str] = []
    areas: list[str] = []
    live: bool = False
    playback: bool = False
    range_from: float | str = msgspec.field(name="from")
    range_to: float | str = msgspec.field(name="to")
    purpose: str
    #: The configured commitment text (``GET /api/access-requests/commitment``), accepted.
    commitment: str


#: A step of an access request: the register entry shared with evidence exports.
AccessRegisterEntry = RegisterEntry


def _request(row: Any) -> AccessRequest:
    return from_row(AccessRequest, row)


def _text(name: str, value: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise BadRequest(f"give the {name}")
    if len(value) > limit:
        raise BadRequest(f"the {name} is longer than {limit} characters")
    return value


def _same_text(a: str, b: str) -> bool:
    """Word for word, whatever the line breaks and spaces."""
    return a.split() == b.split()


class AgencyAccess:
    """Files, decides, revokes and expires access requests; keeps the register."""

    def __init__(
        self,
        *,
        config: Config,
        db: Database,
        audit: AuditLog,
        access: AccessControl,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings: AgencyAccessConfig = config.agency_access
        self.db = db
        self.audit = audit
        self.access = access
        self.events = events
        self.clock = clock
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def _areas(self) -> dict[str, str]:
        # the cameras as access control knows them now (a reload or the API may add some)
        return self.access.camera_areas()

    async def __aenter__(self) -> AgencyAccess:
        self._watcher = asyncio.create_task(self._watch_expiry(), name="agency-access-expiry")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._watcher)

    # -- questions ---------------------------------------------------------------------
    def oversees(self, who: Principal) -> bool:
        actions = self.access.actions_for(who)
        return any(a in actions for a in OVERSIGHT_ACTIONS)

    def may_see(self, who: Principal, req: AccessRequest) -> bool:
        return req.requested_by_id == who.user_id or self.oversees(who)

    async def get(self, request_id: int) -> AccessRequest:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(access_requests).where(access_requests.c.id == request_id))).first()
        if row is None:
            raise NotFound(f"no access request {request_id}")
        return _request(row)

    async def list(self, *, requested_by_id: int | None = None, status: str | None = None) -> list[AccessRequest]:
        q = sa.select(access_requests).order_by(access_requests.c.id.desc()).limit(LIST_LIMIT)
        if requested_by_id is not None:
            q = q.where(access_requests.c.requested_by_id == requested_by_id)
        if status is not None:
            if status not in STATUSES:
                raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
            q = q.where(access_requests.c.status == status)
        async with self.db.connect() as conn:
            return [_request(r) for r in await conn.execute(q)]

    async def register(
        self, *, request_id: int | None = None, event: str | None = None, user: str | None = None,
        since: float | None = None, until: float | None = None, limit: int = 5000,
    ) -> list[tuple[AccessRegisterEntry, AccessRequest]]:
        """Register entries, newest first, each with its request."""
        e = access_register
        return await read_register(
            self.db, access_requests, e, AccessRequest, since=since, until=until, limit=limit,
            equal=((e.c.request_id, request_id), (e.c.event, event), (e.c.user, user)),
        )

    # -- the register ------------------------------------------------------------------
    async def _log(
        self, req: AccessRequest, event: str, user: str | None, changes: dict[str, Any] | None = None,
        client: str | None = None, **detail: Any,
    ) -> AccessRegisterEntry:
        """Audit the step, then update the request and append the register row together."""
        audit_id = await self.audit.record(
            f"agency.{event}", user=user, client=client, camera=req.cameras[0] if len(req.cameras) == 1 else None,
            range_from=req.range_from, range_to=req.range_to, purpose=req.purpose[:500],
            detail={"request": req.id, "cameras": req.cameras, "areas": req.areas, "actions": req.actions,
                    "requested_by": req.requested_by, **detail},
        )
        values = dict(request_id=req.id, at=self.clock(), event=event, user=user, detail=detail, audit_id=audit_id)
        async with self.db.begin() as conn:
            if changes:
                await conn.execute(access_requests.update().where(access_requests.c.id == req.id).values(**changes))
            entry_id = (await conn.execute(access_register.insert().values(**values))).inserted_primary_key[0]
        logger.info("agency access: request %d %s by %s", req.id, event, user or SYSTEM)
        if self.events is not None:
            self.events.emit(f"agency.{event}", user=user, request=req.id, requested_by=req.requested_by, cameras=req.cameras)
        return AccessRegisterEntry(id=entry_id, **values)

    async def refused(
        self, verb: str, who: Principal, client: str | None, *, reason: str, req: AccessRequest | None = None,
        camera: str | None = None, **detail: Any,
    ) -> None:
        """Audit a refusal (``agency.<verb>``, outcome ``refused``), as the guard does."""
        if req is not None:
            detail = {"request": req.id, "cameras": req.cameras, **detail}
            if camera is None and len(req.cameras) == 1:
                camera = req.cameras[0]
        await self.audit.record(
            f"agency.{verb}", outcome="refused", user=who.username, client=client, camera=camera, detail={**detail, "reason": reason}
        )

    # -- the workflow ------------------------------------------------------------------
    async def file(self, who: Principal, new: NewAccessRequest, *, client: str | None = None) -> AccessRequest:
        now = self.clock()
        if not _same_text(new.commitment, self.settings.commitment):
            reason = "the request must accept the commitment word for word (GET /api/access-requests/commitment)"
            await self.refused("file", who, client, reason=reason)
            raise BadRequest(reason)
        if not (new.live or new.playback):
            raise BadRequest("ask for live and/or playback")
        unknown = [c for c in new.cameras if c not in self._areas]
        if unknown:
            raise BadRequest(f"no camera {unknown[0]!r}")
        known_areas = set(self._areas.values())
        areas = list(dict.fromkeys(new.areas))
        for area in areas:
            if area not in known_areas:
                raise BadRequest(f"no camera in area {area!r}")
        cameras = list(dict.fromkeys([*new.cameras, *(c for c, a in self._areas.items() if a in areas)]))
        if not cameras:
            raise BadRequest("name at least one camera or area")
        if len(cameras) > self.settings.max_cameras:
            raise BadRequest(f"a request covers at most {self.settings.max_cameras} cameras")
        start, end = as_time("from", new.range_from), as_time("to", new.range_to)
        if end <= start:
            raise BadRequest("'to' must be after 'from'")
        if end <= now:
            raise BadRequest("'to' is in the past")
        if end - start > self.settings.max_hours * 3600:
            raise BadRequest(f"a request may cover at most {self.settings.max_hours:g} hours")
        values = dict(
            status=PENDING, cameras=cameras, areas=areas, live=new.live, playback=new.playback, range_from=start, range_to=end,
            purpose=_text("purpose", new.purpose, MAX_PURPOSE), commitment=self.settings.commitment,
            requested_by=who.username, requested_by_id=who.user_id, requested_at=now,
        )
        async with self.db.begin() as conn:
            request_id = (await conn.execute(access_requests.insert().values(**values))).inserted_primary_key[0]
        req = AccessRequest(id=request_id, **values)
        await self._log(req, "filed", who.username, client=client, commitment=req.commitment)
        self._wake.set()
        return req

    async def _decidable(self, who: Principal, request_id: int, verb: str, client: str | None) -> AccessRequest:
        """The pending request, if ``who`` may decide it: not their own (by user id), and
        ``access.approve`` on every camera of it. Refusals are audited."""
        req = await self.get(request_id)
        if req.requested_by_id == who.user_id:
            await self.refused(verb, who, client, req=req, reason="four eyes: the requester may not decide their own request")
            raise Forbidden(f"four eyes: {who.username} filed access request {req.id} and may not {verb} it")
        await self._on_every_camera(who, req, verb, client)
        if req.status == PENDING and req.range_to <= self.clock():
            await self._expire(req)
            req = await self.get(request_id)
        if req.status != PENDING:
            raise Conflict(f"access request {req.id} is {req.status}, not pending")
        return req

    async def _on_every_camera(self, who: Principal, req: AccessRequest, verb: str, client: str | None) -> None:
        for camera in req.cameras:
            try:
                decision = self.access.decide(who, Action.ACCESS_APPROVE, camera)
            except NotFound:
                decision = Decision(False, f"camera {camera} is no longer configured")
            if not decision:
                await self.refused(verb, who, client, req=req, camera=camera, reason=decision.reason)
                raise Forbidden(f"{decision.reason} (access request {req.id} includes camera {camera})")

    async def _claim(self, req: AccessRequest, status: str, who: Principal, reason: str) -> float:
        now = self.clock()
        async with self.db.begin() as conn:
            done = (await conn.execute(
                access_requests.update().where(access_requests.c.id == req.id, access_requests.c.status == PENDING)
                .values(status=status, decided_by=who.username, decided_by_id=who.user_id, decided_at=now, decision_reason=reason)
            )).rowcount
        if not done:
            raise Conflict(f"access request {req.id} was decided meanwhile")
        return now

    async def approve(self, who: Principal, request_id: int, reason: str, *, client: str | None = None) -> AccessRequest:
        reason = _text("reason", reason, MAX_REASON)
        async with self._lock:
            req = await self._decidable(who, request_id, "approve", client)
            await self._claim(req, APPROVED, who, reason)
            try:
                grant = await self.access.add_grant(
                    cameras=req.cameras, actions=req.actions, expires_at=req.range_to, starts_at=req.range_from,
                    reason=f"access request {req.id}: {req.purpose}"[:500], by=who.username, user_id=req.requested_by_id,
                    source=f"agency:{req.id}",
                )
            except BaseException:
                async with self.db.begin() as conn:  # no grant, no approval
                    await conn.execute(
                        access_requests.update().where(access_requests.c.id == req.id)
                        .values(status=PENDING, decided_by=None, decided_by_id=None, decided_at=None, decision_reason=None)
                    )
                raise
            await self._log(req, "approved", who.username, changes={"grant_id": grant.id}, client=client, reason=reason, grant=grant.id)
        self._wake.set()
        return await self.get(request_id)

    async def reject(self, who: Principal, request_id: int, reason: str, *, client: str | None = None) -> AccessRequest:
        reason = _text("reason", reason, MAX_REASON)
        async with self._lock:
            req = await self._decidable(who, request_id, "reject", client)
            await self._claim(req, REJECTED, who, reason)
            await self._log(req, "rejected", who.username, client=client, reason=reason)
        return await self.get(request_id)

    async def revoke(self, who: Principal, request_id: int, reason: str, *, client: str | None = None) -> AccessRequest:
        """End an approved request now: the agency itself, or an approver of all its cameras."""
        reason = _text("reason", reason, MAX_REASON)
        async with self._lock:
            req = await self.get(request_id)
            if req.requested_by_id != who.user_id:
                if not self.may_see(who, req):
                    await self.refused("revoke", who, client, req=req, reason="neither the requester nor an approver")
                    raise NotFound(f"no access request {request_id}")
                await self._on_every_camera(who, req, "revoke", client)
            if req.status != APPROVED:
                raise Conflict(f"access request {req.id} is {req.status}, not approved")
            await self._end(req, REVOKED, who.username, reason, client=client)
        return await self.get(request_id)

    async def _end(self, req: AccessRequest, status: str, by: str | None, reason: str, *, client: str | None = None) -> None:
        now = self.clock()
        async with self.db.begin() as conn:
            done = (await conn.execute(
                access_requests.update().where(access_requests.c.id == req.id, access_requests.c.status == req.status)
                .values(status=status, ended_at=now, ended_by=by, end_reason=reason)
            )).rowcount
        if not done:
            return
        if status == REVOKED and req.grant_id is not None:
            await self.access.revoke_grant(req.grant_id, by=by or SYSTEM)  # closes the views at once
        else:
            self.access.recheck_soon()  # the grant lapses by itself; close the views now
        await self._log(req, status, by, client=client, reason=reason, grant=req.grant_id)

    async def _expire(self, req: AccessRequest) -> None:
        await self._end(req, EXPIRED, None, "the period of the request ended")

    async def expire_due(self) -> None:
        now = self.clock()
        async with self.db.connect() as conn:
            rows = (await conn.execute(
                sa.select(access_requests).where(access_requests.c.status.in_((PENDING, APPROVED)), access_requests.c.range_to <= now)
            )).all()
        for req in map(_request, rows):
            async with self._lock:
                await self._expire(req)

    async def _watch_expiry(self) -> None:
        while True:
            self._wake.clear()
            delay = EXPIRY_CHECK
            try:
                await self.expire_due()
                async with self.db.connect() as conn:
                    upcoming = (await conn.execute(
                        sa.select(sa.func.min(access_requests.c.range_to)).where(access_requests.c.status.in_((PENDING, APPROVED)))
                    )).scalar()
                if upcoming is not None:
                    delay = min(EXPIRY_CHECK, max(0.0, upcoming - self.clock()))
            except Exception:
                logger.exception("agency access: expiring requests failed")
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass


REGISTER_CSV_FIELDS = (
    "entry", "at", "event", "user", "request", "status", "requested_by", "cameras", "areas", "live", "playback", "from", "to",
    "purpose", "commitment", "decided_by", "decision_reason", "grant", "detail", "audit_entry",
)


def register_csv(rows: list[tuple[AccessRegisterEntry, AccessRequest]]) -> str:
    out = io.StringIO()
    writer = csvcells.writer(out)
    writer.writerow(REGISTER_CSV_FIELDS)
    for entry, req in rows:
        writer.writerow([
            entry.id, iso(entry.at), entry.event, entry.user or SYSTEM, req.id, req.status, req.requested_by, " ".join(req.cameras),
            " ".join(req.areas), "yes" if req.live else "no", "yes" if req.playback else "no", iso(req.range_from),
            iso(req.range_to), req.purpose, req.commitment, req.decided_by or "", req.decision_reason or "",
            req.grant_id if req.grant_id is not None else "", msgspec.json.encode(entry.detail).decode(), entry.audit_id,
        ])
    return out.getvalue()


async def agency_access_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context, after the security core's (``app.py`` appends it)."""
    from gateway.appkeys import ACCESS, AUDIT, CONFIG, DATABASE, EVENTS

    service = AgencyAccess(config=app[CONFIG], db=app[DATABASE], audit=app[AUDIT], access=app[ACCESS], events=app[EVENTS])
    async with service:
        app[AGENCY_ACCESS] = service
        yield
