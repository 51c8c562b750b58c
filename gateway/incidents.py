"""Incidents: what an operator saw, on which cameras, when, and what became of it.

An operator opens an incident on a camera at a moment, with a category (``[incidents]
categories``), a note and optional further cameras. Opening one

- places an evidence hold on each camera from ``hold-before-minutes`` before the moment to
  ``hold-after-minutes`` after it (source ``incident:<id>``), so retention keeps the range;
  ``extend`` adds a further hold while the incident is not closed;
- announces ``incident.opened`` on the event bus: the events channel shows it to whoever
  may watch the camera, and event sinks (webhooks) pass it on with the category's services;
- pushes the cameras to the category's stations (``push-stations``) as the opener, where
  configured: an ordinary emergency push with its own rights, audit and expiry.

While it is not closed, anyone who may work on it adds bookmarks (a moment and a note).
States: ``open`` → ``handed_over`` (to another user, who becomes the owner) → ``closed``.

Rights, per role and area (every camera of an incident must be within reach):

- ``incident.open``: open incidents on cameras of one's areas; see, bookmark, hand over and
  close incidents one opened or owns;
- ``incident.manage``: the register of one's areas; see, bookmark, hand over, extend and
  close any incident there.

Every step is audited (``incident.open``, ``incident.bookmark``, ``incident.handover``,
``incident.extend``, ``incident.close``) and every refusal too, with the policy's reason.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from aiohttp import web

from gateway import csvcells
from gateway.access.control import AccessControl
from gateway.access.guard import Principal
from gateway.access.policy import Action
from gateway.appkeys import ACCESS, CONFIG, DATABASE, EVENTS, PUSHES, RECORDING
from gateway.config import IncidentCategory, IncidentsConfig
from gateway.db import Database, incident_log, incidents
from gateway.errors import BadRequest, Conflict, Forbidden, GatewayError, NotFound
from gateway.events import EventBus

logger = logging.getLogger(__name__)

STATES = ("open", "handed_over", "closed")
MAX_NOTE = 2000
LIST_LIMIT = 1000
MINUTE = 60.0

#: Who may see an incident at all.
SEE_ACTIONS = (Action.INCIDENT_OPEN, Action.INCIDENT_MANAGE)

INCIDENTS = web.AppKey("incidents", "IncidentService")


class Bookmark(msgspec.Struct, kw_only=True):
    at: float
    note: str
    camera: str | None
    by: str | None


class LogEntry(msgspec.Struct, kw_only=True):
    logged_at: float
    kind: str
    user: str | None
    moment: float | None
    camera: str | None
    note: str


class Incident(msgspec.Struct, kw_only=True):
    id: int
    camera: str
    cameras: list[str]
    area: str
    areas: list[str]
    category: str
    category_title: str
    services: list[str]
    note: str
    at: float
    opened_by: str
    opened_at: float
    owner: str
    state: str
    hold_from: float
    hold_to: float
    holds: list[int]
    push_id: int | None
    closed_at: float | None
    closed_by: str | None
    log: list[LogEntry] = []

    @property
    def bookmarks(self) -> list[Bookmark]:
        return [Bookmark(at=e.moment or e.logged_at, note=e.note, camera=e.camera, by=e.user) for e in self.log if e.kind == "bookmark"]

    def export_request(self) -> dict[str, Any]:
        """The evidence request this incident pre-fills (the requester adds case number,
        authority and legal basis)."""
        title = f"Incident {self.id}: {self.category_title}"
        return {
            "cameras": list(self.cameras), "from": self.hold_from, "to": self.hold_to,
            "purpose": f"{title}. {self.note}".strip() if self.note else title,
            "case_number": f"INC-{self.id}", "authority": "", "legal_basis": "",
        }


@dataclass(frozen=True, slots=True)
class Filters:
    state: str | None = None
    category: str | None = None
    area: str | None = None
    owner: str | None = None
    camera: str | None = None
    #: Opened within [since, until): a shift, a day, a month.
    since: float | None = None
    until: float | None = None


class IncidentService:
    def __init__(
        self,
        *,
        db: Database,
        access: AccessControl,
        events: EventBus,
        config: IncidentsConfig,
        recording: Any,
        pushes: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.access = access
        self.audit = access.audit
        self.events = events
        self.config = config
        self.recording = recording
        self.pushes = pushes
        self.clock = clock
        self.categories: dict[str, IncidentCategory] = {c.id: c for c in config.categories}

    # -- rights ----------------------------------------------------------------------
    def _reach(self, who: Principal, cameras: list[str], actions: tuple[str, ...]) -> tuple[str, str] | None:
        """(camera, reason) of the first camera none of ``actions`` reaches, or None."""
        for camera in cameras:
            try:
                decisions = [self.access.decide(who, a, camera) for a in actions]
            except NotFound:
                return camera, f"no camera {camera!r}"
            if not any(decisions):
                # the area's reason says more than "your role does not allow" the other action
                area = [d.reason for d in decisions if not d.reason.startswith("role ")]
                return camera, area[0] if area else decisions[-1].reason
        return None

    async def _refuse(self, who: Principal, action: str, camera: str | None, reason: str, client: str | None,
                      incident: int | None = None) -> None:
        detail: dict[str, Any] = {"reason": reason}
        if incident is not None:
            detail["incident"] = incident
        await self.audit.record(f"incident.{action}", outcome="refused", user=who.username, client=client, camera=camera,
                                detail=detail)
        raise Forbidden(reason)

    def _is_manager(self, who: Principal, inc: Incident) -> bool:
        return self._reach(who, inc.cameras, (Action.INCIDENT_MANAGE,)) is None

    def may_see(self, who: Principal, inc: Incident) -> bool:
        if self._is_manager(who, inc):
            return True
        if who.username not in (inc.opened_by, inc.owner):
            return False
        return self._reach(who, inc.cameras, (Action.INCIDENT_OPEN,)) is None

    async def _get_for(self, who: Principal, incident_id: int, action: str, client: str | None) -> Incident:
        inc = await self.get(incident_id)
        if not self.may_see(who, inc):
            missing = self._reach(who, inc.cameras, SEE_ACTIONS)
            if missing is not None:
                reason = f"incident {incident_id}: {missing[1]}"
            else:
                reason = f"incident {incident_id} is owned by {inc.owner}; only its owner, its opener and incident.manage may act on it"
            await self._refuse(who, action, inc.camera, reason, client, incident_id)
        return inc

    # -- reading ---------------------------------------------------------------------
    async def get(self, incident_id: int) -> Incident:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(incidents).where(incidents.c.id == incident_id))).first()
            if row is None:
                raise NotFound(f"no incident {incident_id}")
            log = (await conn.execute(
                sa.select(incident_log).where(incident_log.c.incident_id == incident_id).order_by(incident_log.c.id)
            )).all()
        return self._incident(row, log)

    def _incident(self, row: Any, log: list[Any] = ()) -> Incident:  # type: ignore[assignment]
        category = self.categories.get(row.category)
        return Incident(
            id=row.id, camera=row.camera, cameras=list(row.cameras), area=row.area, areas=list(row.areas),
            category=row.category, category_title=category.title if category else row.category,
            services=list(category.services) if category else [], note=row.note, at=row.at, opened_by=row.opened_by,
            opened_at=row.opened_at, owner=row.owner, state=row.state, hold_from=row.hold_from, hold_to=row.hold_to,
            holds=list(row.holds), push_id=row.push_id, closed_at=row.closed_at, closed_by=row.closed_by,
            log=[LogEntry(logged_at=e.logged_at, kind=e.kind, user=e.user, moment=e.moment, camera=e.camera, note=e.note)
                 for e in log],
        )

    async def view(self, who: Principal, incident_id: int, client: str | None = None) -> Incident:
        return await self._get_for(who, incident_id, "read", client)

    async def register(self, who: Principal, filters: Filters, client: str | None = None) -> list[Incident]:
        """The incidents ``who`` may see, newest first. Asking for an area outside one's
        own is refused (and audited), not answered with an empty list."""
        if not self.access.policy.may_sometimes(self.access.subject(who), Action.INCIDENT_MANAGE, (), self.clock()) \
                and not self.access.policy.may_sometimes(self.access.subject(who), Action.INCIDENT_OPEN, (), self.clock()):
            await self._refuse(who, "register", None, f"role {who.role} does not allow incident.open or incident.manage", client)
        if filters.area is not None and not who.all_areas and filters.area not in who.areas:
            await self._refuse(who, "register", None, f"area {filters.area!r} is outside {who.username}'s areas", client)
        if filters.state is not None and filters.state not in STATES:
            raise BadRequest(f"state must be one of {', '.join(STATES)}")
        q = sa.select(incidents).order_by(incidents.c.opened_at.desc(), incidents.c.id.desc()).limit(LIST_LIMIT)
        for column, value in (("state", filters.state), ("category", filters.category), ("area", filters.area),
                              ("owner", filters.owner), ("camera", filters.camera)):
            if value is not None:
                q = q.where(incidents.c[column] == value)
        if filters.since is not None:
            q = q.where(incidents.c.opened_at >= filters.since)
        if filters.until is not None:
            q = q.where(incidents.c.opened_at < filters.until)
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).all()
            logs: dict[int, list[Any]] = {}
            if rows:
                for e in await conn.execute(sa.select(incident_log).where(
                        incident_log.c.incident_id.in_([r.id for r in rows])).order_by(incident_log.c.id)):
                    logs.setdefault(e.incident_id, []).append(e)
        out = []
        for row in rows:
            try:
                inc = self._incident(row, logs.get(row.id, []))
                if self.may_see(who, inc):
                    out.append(inc)
            except NotFound:  # a camera removed from the configuration since
                continue
        return out

    def csv(self, items: list[Incident]) -> str:
        out = io.StringIO()
        w = csvcells.writer(out)
        w.writerow(["id", "opened_at", "at", "category", "camera", "cameras", "area", "state", "opened_by", "owner",
                    "closed_at", "closed_by", "bookmarks", "hold_from", "hold_to", "note"])
        for i in items:
            w.writerow([i.id, _iso(i.opened_at), _iso(i.at), i.category, i.camera, " ".join(i.cameras), i.area, i.state,
                        i.opened_by, i.owner, _iso(i.closed_at), i.closed_by or "", len(i.bookmarks), _iso(i.hold_from),
                        _iso(i.hold_to), i.note])
        return out.getvalue()

    # -- changes ---------------------------------------------------------------------
    async def _log(self, conn: Any, incident_id: int, kind: str, user: str | None, *, note: str = "",
                   moment: float | None = None, camera: str | None = None) -> None:
        await conn.execute(incident_log.insert().values(
            incident_id=incident_id, logged_at=self.clock(), kind=kind, user=user, moment=moment, camera=camera, note=note,
        ))

    async def open(
        self, who: Principal, *, camera: str, at: float | None, category: str, note: str = "",
        cameras: list[str] | None = None, client: str | None = None,
    ) -> Incident:
        note = _note(note)
        cams = list(dict.fromkeys([camera, *(cameras or [])]))
        if len(cams) > self.config.max_cameras + 1:
            raise BadRequest(f"an incident names at most {self.config.max_cameras} further cameras")
        spec = self.categories.get(category)
        if spec is None:
            raise BadRequest(f"unknown category {category!r} (known: {', '.join(self.categories)})")
        missing = self._reach(who, cams, (Action.INCIDENT_OPEN,))
        if missing is not None:
            if missing[1].startswith("no camera"):
                raise BadRequest(missing[1])
            await self._refuse(who, "open", missing[0], f"you may not open an incident on camera {missing[0]}: {missing[1]}", client)
        now = self.clock()
        at = now if at is None else float(at)
        if at > now + 60:
            raise BadRequest("the moment of an incident cannot be in the future")
        hold_from = at - self.config.hold_before_minutes * MINUTE
        hold_to = at + self.config.hold_after_minutes * MINUTE
        areas = [self.access.camera_area(c) for c in cams]
        async with self.db.begin() as conn:
            incident_id = (await conn.execute(
                incidents.insert().values(
                    camera=camera, cameras=cams, areas=sorted(set(areas)), area=areas[0], category=category, note=note,
                    at=at, opened_by=who.username, opened_at=now, owner=who.username, state="open", hold_from=hold_from,
                    hold_to=hold_to, holds=[],
                ).returning(incidents.c.id)
            )).scalar_one()
            await self._log(conn, incident_id, "opened", who.username, note=note, moment=at, camera=camera)
        holds = [
            (await self.recording.place_hold(c, hold_from, hold_to, f"incident {incident_id}: {spec.title}", who.username,
                                             source=f"incident:{incident_id}")).id
            for c in cams
        ]
        async with self.db.begin() as conn:
            await conn.execute(incidents.update().where(incidents.c.id == incident_id).values(holds=holds))
        await self.audit.record(
            "incident.open", user=who.username, client=client, camera=camera, range_from=hold_from, range_to=hold_to,
            detail={"incident": incident_id, "category": category, "cameras": cams, "note": note, "holds": holds,
                    "at": at, "services": list(spec.services)},
        )
        logger.info("incident %d: %s opened %s on %s", incident_id, who.username, category, ",".join(cams))
        self.events.emit(
            "incident.opened", camera=camera, user=who.username, incident=incident_id, category=category,
            title=spec.title, services=list(spec.services), cameras=cams, at=at, note=note, area=areas[0],
        )
        if spec.push_stations and self.pushes is not None:
            await self._push(who, incident_id, spec, cams, note, client)
        return await self.get(incident_id)

    async def _push(self, who: Principal, incident_id: int, spec: IncidentCategory, cams: list[str], note: str,
                    client: str | None) -> None:
        """Push the cameras to the category's stations; a refused push leaves the incident open
        and says why in its log (the push service audits its own refusals)."""
        reason = f"Incident {incident_id}: {spec.title}" + (f" ({note})" if note else "")
        try:
            push = await self.pushes.create(who, cameras=cams, stations=list(spec.push_stations), reason=reason[:500],
                                            minutes=spec.push_minutes, client=client)
        except GatewayError as exc:
            logger.warning("incident %d: pushing to %s failed: %s", incident_id, ",".join(spec.push_stations), exc.message)
            async with self.db.begin() as conn:
                await self._log(conn, incident_id, "push_failed", who.username, note=exc.message)
            return
        async with self.db.begin() as conn:
            await conn.execute(incidents.update().where(incidents.c.id == incident_id).values(push_id=push.id))
            await self._log(conn, incident_id, "pushed", who.username, note=", ".join(spec.push_stations))

    async def _working(self, who: Principal, incident_id: int, action: str, client: str | None) -> Incident:
        inc = await self._get_for(who, incident_id, action, client)
        if inc.state == "closed":
            raise Conflict(f"incident {incident_id} is closed")
        return inc

    async def bookmark(self, who: Principal, incident_id: int, *, at: float | None, note: str,
                       camera: str | None = None, client: str | None = None) -> Incident:
        inc = await self._working(who, incident_id, "bookmark", client)
        note = _note(note)
        if not note:
            raise BadRequest("a bookmark needs a note")
        camera = camera or inc.camera
        if camera not in inc.cameras:
            raise BadRequest(f"camera {camera} is not one of incident {incident_id}'s cameras")
        moment = self.clock() if at is None else float(at)
        async with self.db.begin() as conn:
            await self._log(conn, incident_id, "bookmark", who.username, note=note, moment=moment, camera=camera)
        await self.audit.record("incident.bookmark", user=who.username, client=client, camera=camera, range_from=moment,
                                range_to=moment, detail={"incident": incident_id, "note": note})
        return await self.get(incident_id)

    async def handover(self, who: Principal, incident_id: int, *, to: str, note: str = "", client: str | None = None,
                       identity: Any = None) -> Incident:
        inc = await self._working(who, incident_id, "handover", client)
        if who.username != inc.owner and not self._is_manager(who, inc):
            await self._refuse(who, "handover", inc.camera, f"incident {incident_id} is owned by {inc.owner}; only its owner "
                               "or incident.manage may hand it over", client, incident_id)
        if identity is not None:
            try:
                user = await identity.get_user(to)
            except NotFound:
                raise BadRequest(f"no user {to!r}") from None
            target = Principal(user.id, user.username, user.role, user.areas, user.all_areas, "", "token", "")
            if user.disabled or self._reach(target, inc.cameras, SEE_ACTIONS) is not None:
                raise BadRequest(f"{to} may not work on incidents of camera {inc.camera} (incident.open or incident.manage "
                                 "in its area)")
        async with self.db.begin() as conn:
            await conn.execute(incidents.update().where(incidents.c.id == incident_id).values(owner=to, state="handed_over"))
            await self._log(conn, incident_id, "handed_over", who.username, note=_note(note) or f"to {to}")
        await self.audit.record("incident.handover", user=who.username, client=client, camera=inc.camera,
                                detail={"incident": incident_id, "from": inc.owner, "to": to, "note": _note(note)})
        self.events.emit("incident.handed_over", camera=inc.camera, user=who.username, incident=incident_id, to=to)
        return await self.get(incident_id)

    async def extend(self, who: Principal, incident_id: int, *, minutes: float, client: str | None = None) -> Incident:
        inc = await self._working(who, incident_id, "extend", client)
        if who.username != inc.owner and not self._is_manager(who, inc):
            await self._refuse(who, "extend", inc.camera, f"incident {incident_id} is owned by {inc.owner}", client, incident_id)
        if not 0 < minutes <= self.config.max_extend_minutes:
            raise BadRequest(f"minutes must be between 0 and {self.config.max_extend_minutes:g}")
        start, end = inc.hold_to, inc.hold_to + minutes * MINUTE
        spec = self.categories.get(inc.category)
        title = spec.title if spec else inc.category
        holds = [
            (await self.recording.place_hold(c, start, end, f"incident {incident_id}: {title} (extended)", who.username,
                                             source=f"incident:{incident_id}")).id
            for c in inc.cameras
        ]
        async with self.db.begin() as conn:
            await conn.execute(incidents.update().where(incidents.c.id == incident_id)
                               .values(hold_to=end, holds=inc.holds + holds))
            await self._log(conn, incident_id, "extended", who.username, note=f"+{minutes:g} min")
        await self.audit.record("incident.extend", user=who.username, client=client, camera=inc.camera, range_from=start,
                                range_to=end, detail={"incident": incident_id, "holds": holds})
        return await self.get(incident_id)

    async def close(self, who: Principal, incident_id: int, *, note: str = "", client: str | None = None) -> Incident:
        """Close: no more bookmarks or extensions. The holds stay (an export, or an
        administrator, releases recordings; closing an incident never does)."""
        inc = await self._working(who, incident_id, "close", client)
        if who.username != inc.owner and not self._is_manager(who, inc):
            await self._refuse(who, "close", inc.camera, f"incident {incident_id} is owned by {inc.owner}; only its owner "
                               "or incident.manage may close it", client, incident_id)
        now = self.clock()
        async with self.db.begin() as conn:
            await conn.execute(incidents.update().where(incidents.c.id == incident_id)
                               .values(state="closed", closed_at=now, closed_by=who.username))
            await self._log(conn, incident_id, "closed", who.username, note=_note(note))
        await self.audit.record("incident.close", user=who.username, client=client, camera=inc.camera,
                                detail={"incident": incident_id, "note": _note(note)})
        self.events.emit("incident.closed", camera=inc.camera, user=who.username, incident=incident_id)
        return await self.get(incident_id)


def _note(note: str | None) -> str:
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise BadRequest(f"a note is at most {MAX_NOTE} characters")
    return note


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


async def incidents_ctx(app: web.Application) -> AsyncIterator[None]:
    """The incident service: after recording (it places holds) and the push service."""
    app[INCIDENTS] = IncidentService(
        db=app[DATABASE], access=app[ACCESS], events=app[EVENTS], config=app[CONFIG].incidents,
        recording=app[RECORDING], pushes=app.get(PUSHES),
    )
    yield
