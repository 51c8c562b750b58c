"""Emergency pushes: live cameras sent to rescue and crisis-management stations.

A push names cameras, stations (accounts with the station role, ``[push] station-role``),
an incident reason and a duration. It is carried out as one time-limited user grant per
station (``live.view`` and ``snapshot.view`` on the pushed cameras, source ``push:<id>``),
so the access core decides and re-checks every view: when a push is revoked or expires,
the stations' live sessions end within two seconds and HLS requests are refused.

Every step is audited (``push.create``, ``push.extend``, ``push.revoke``, ``push.expire``)
and announced on the event bus (``push.created``, ``push.extended``, ``push.revoked``,
``push.expired``), from where the events channel tells the stations and event-sink
plugins tell other dispatch systems.

Who may do what:
- sending needs ``push.send`` on EVERY camera of the push (role and areas, as always);
- extending needs ``push.send`` on every camera of the push at the time of extending (a
  sender who lost the right or an area can no longer keep a push alive);
- the sender, or anyone who may push every camera of the push, may revoke it (ending
  access is never refused to the one who gave it);
- every refusal is an audit entry (``push.send``, ``push.extend``, ``push.revoke``,
  outcome ``refused``, with the camera that was missing);
- holders of ``push.send`` see every push; others see the pushes they sent;
- a station sees its own active pushes only (``GET /api/pushes/mine``, the events channel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import msgspec
import sqlalchemy as sa
from aiohttp import web

from gateway.access.control import AccessControl
from gateway.access.guard import Principal
from gateway.access.identity import Identity
from gateway.access.policy import Action
from gateway.appkeys import ACCESS, CONFIG, DATABASE, EVENTS, IDENTITY, PUSHES
from gateway.config import PushConfig
from gateway.db import Database, pushes
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.events import EventBus
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

#: What a station may do with a pushed camera.
PUSH_ACTIONS = (str(Action.LIVE_VIEW), str(Action.SNAPSHOT_VIEW))
MIN_MINUTES = 0.05
MAX_CAMERAS = 16  #: a station's wall shows at most 16 tiles
MAX_STATIONS = 50
MAX_REASON = 500
#: The expiry watcher looks at least this often (and at once when a push changes).
EXPIRY_CHECK = 1.0
LIST_LIMIT = 200


class Push(msgspec.Struct, kw_only=True):
    id: int
    created_by: str
    created_at: float
    reason: str
    cameras: list[str]
    stations: list[str]
    grants: dict[str, int]
    expires_at: float
    ended_at: float | None = None
    end_reason: str | None = None  #: "revoked" | "expired"
    ended_by: str | None = None

    def state(self, now: float) -> str:
        if self.end_reason is not None:
            return self.end_reason
        return "active" if self.expires_at > now else "expired"

    def view(self, now: float, *, station: str | None = None) -> dict[str, Any]:
        """The push as clients see it; a station sees only itself among the stations."""
        return {
            "id": self.id,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "reason": self.reason,
            "cameras": list(self.cameras),
            "stations": [station] if station is not None else list(self.stations),
            "expires_at": self.expires_at,
            "state": self.state(now),
            "ended_at": self.ended_at,
            "ended_by": self.ended_by if station is None else None,
        }


def _push(row: Any) -> Push:
    return Push(
        id=row["id"], created_by=row["created_by"], created_at=row["created_at"], reason=row["reason"],
        cameras=list(row["cameras"]), stations=list(row["stations"]), grants=dict(row["grants"] or {}),
        expires_at=row["expires_at"], ended_at=row["ended_at"], end_reason=row["end_reason"], ended_by=row["ended_by"],
    )


class PushService:
    """Creates, extends, revokes and expires pushes; keeps the active ones in memory."""

    def __init__(
        self,
        *,
        db: Database,
        access: AccessControl,
        identity: Identity,
        events: EventBus,
        config: PushConfig,
        clock: Callable[[], float] = time.time,
        clustered: bool = False,
    ) -> None:
        self.db = db
        self.access = access
        self.identity = identity
        self.events = events
        self.config = config
        self._clock = clock
        self._active: dict[int, Push] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        #: One of several nodes: pushes come and go on the others too.
        self.clustered = clustered

    async def _reload_active(self) -> None:
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(pushes).where(pushes.c.ended_at.is_(None)))).mappings().all()
        self._active = {p.id: p for p in map(_push, rows)}

    async def __aenter__(self) -> PushService:
        await self._reload_active()
        self._watcher = asyncio.create_task(self._watch_expiry(), name="push-expiry")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._watcher)

    # -- questions -----------------------------------------------------------------------
    def now(self) -> float:
        return self._clock()

    def is_sender(self, who: Principal) -> bool:
        """May the user push at all (some camera, by role or grant)?"""
        return Action.PUSH_SEND in self.access.actions_for(who)

    def may_see(self, who: Principal, push: Push) -> bool:
        return push.created_by == who.username or self.is_sender(who)

    def _missing_right(self, who: Principal, push: Push) -> tuple[str, str] | None:
        """The first camera of the push the user may not push now, and why; None if none."""
        for camera in push.cameras:
            try:
                decision = self.access.decide(who, Action.PUSH_SEND, camera)
            except NotFound:
                return camera, f"camera {camera} is no longer configured"
            if not decision:
                return camera, decision.reason
        return None

    def active(self) -> list[Push]:
        now = self._clock()
        return sorted((p for p in self._active.values() if p.expires_at > now), key=lambda p: p.id)

    def active_for_station(self, username: str) -> list[Push]:
        return [p for p in self.active() if username in p.stations]

    async def get(self, push_id: int) -> Push:
        if push_id in self._active:
            return self._active[push_id]
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(pushes).where(pushes.c.id == push_id))).mappings().first()
        if row is None:
            raise NotFound(f"no push {push_id}")
        return _push(row)

    async def list(self, who: Principal, *, state: str = "active") -> list[Push]:
        if state not in ("active", "past"):
            raise BadRequest("state must be 'active' or 'past'")
        now = self._clock()
        query = sa.select(pushes)
        if state == "active":
            query = query.where(pushes.c.ended_at.is_(None), pushes.c.expires_at > now)
        else:
            query = query.where(sa.or_(pushes.c.ended_at.is_not(None), pushes.c.expires_at <= now))
        if not self.is_sender(who):
            query = query.where(pushes.c.created_by == who.username)
        query = query.order_by(pushes.c.id.desc()).limit(LIST_LIMIT)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_push(r) for r in rows]

    async def stations(self) -> list[dict[str, Any]]:
        """The accounts pushes can go to (for the sender's dialog)."""
        role = self.config.station_role
        return [
            {"username": u.username, "display_name": u.display_name or u.username, "disabled": u.disabled}
            for u in await self.identity.list_users()
            if u.role == role
        ]

    # -- changes -------------------------------------------------------------------------
    def _minutes(self, minutes: float | None) -> float:
        minutes = self.config.default_minutes if minutes is None else float(minutes)
        if not MIN_MINUTES <= minutes <= self.config.max_minutes:
            raise BadRequest(f"minutes must be between {MIN_MINUTES} and {self.config.max_minutes:g}")
        return minutes

    async def create(
        self,
        who: Principal,
        *,
        cameras: Iterable[str],
        stations: Iterable[str],
        reason: str,
        minutes: float | None = None,
        client: str | None = None,
    ) -> Push:
        cams = list(dict.fromkeys(cameras))
        names = list(dict.fromkeys(stations))
        reason = reason.strip()
        if not cams:
            raise BadRequest("name at least one camera")
        if len(cams) > MAX_CAMERAS:
            raise BadRequest(f"a push carries at most {MAX_CAMERAS} cameras")
        if not names:
            raise BadRequest("name at least one station")
        if len(names) > MAX_STATIONS:
            raise BadRequest(f"a push goes to at most {MAX_STATIONS} stations")
        if not reason:
            raise BadRequest("give the incident reason")
        if len(reason) > MAX_REASON:
            raise BadRequest(f"the reason is longer than {MAX_REASON} characters")
        duration = self._minutes(minutes) * 60
        for camera in cams:
            try:
                decision = self.access.decide(who, Action.PUSH_SEND, camera)
            except NotFound:
                raise BadRequest(f"no camera {camera!r}") from None
            if not decision:
                await self.access.audit.record(
                    "push.send", outcome="refused", user=who.username, client=client, camera=camera,
                    detail={"reason": decision.reason, "stations": names},
                )
                raise Forbidden(f"you may not push camera {camera}: {decision.reason}")
        users = {}
        for name in names:
            try:
                user = await self.identity.get_user(name)
            except NotFound:
                raise BadRequest(f"no station {name!r}") from None
            if user.role != self.config.station_role:
                raise BadRequest(f"{name!r} is not a station (role {user.role!r}, not {self.config.station_role!r})")
            if user.disabled:
                raise BadRequest(f"station {name!r} is disabled")
            users[name] = user

        now = self._clock()
        expires_at = now + duration
        async with self._lock:
            async with self.db.begin() as conn:
                push_id = (
                    await conn.execute(
                        pushes.insert()
                        .values(created_by=who.username, created_at=now, reason=reason, cameras=cams, stations=names,
                                grants={}, expires_at=expires_at)
                        .returning(pushes.c.id)
                    )
                ).scalar_one()
            grant_ids: dict[str, int] = {}
            try:
                for name, user in users.items():
                    grant = await self.access.add_grant(
                        cameras=cams, actions=PUSH_ACTIONS, expires_at=expires_at, reason=reason, by=who.username,
                        user_id=user.id, source=f"push:{push_id}",
                    )
                    grant_ids[name] = grant.id
            except BaseException:
                for grant_id in grant_ids.values():
                    await self.access.revoke_grant(grant_id, by=who.username)
                async with self.db.begin() as conn:
                    await conn.execute(
                        pushes.update().where(pushes.c.id == push_id)
                        .values(grants=grant_ids, ended_at=self._clock(), end_reason="revoked", ended_by="system")
                    )
                raise
            async with self.db.begin() as conn:
                await conn.execute(pushes.update().where(pushes.c.id == push_id).values(grants=grant_ids))
            push = Push(
                id=push_id, created_by=who.username, created_at=now, reason=reason, cameras=cams, stations=names,
                grants=grant_ids, expires_at=expires_at,
            )
            self._active[push_id] = push
        await self.access.audit.record(
            "push.create", user=who.username, client=client,
            detail={"push": push_id, "cameras": cams, "stations": names, "reason": reason, "expires_at": expires_at},
        )
        logger.info("push %d: %s pushed %s to %s until %s (%s)", push_id, who.username, ",".join(cams), ",".join(names),
                    time.strftime("%H:%M:%S", time.localtime(expires_at)), reason)
        self._announce("push.created", push)
        self._wake.set()
        return push

    async def _active_push(self, who: Principal, push_id: int, verb: str, client: str | None) -> Push:
        """The push, if ``who`` may ``verb`` ("extend" or "revoke") it; refusals are audited."""
        push = await self.get(push_id)
        missing = self._missing_right(who, push)
        if verb == "revoke" and push.created_by == who.username:
            missing = None  # the sender may always end their push
        if missing is not None:
            camera, reason = missing
            await self.access.audit.record(
                f"push.{verb}", outcome="refused", user=who.username, client=client, camera=camera,
                detail={"push": push_id, "created_by": push.created_by, "reason": reason},
            )
            if not self.may_see(who, push):
                raise NotFound(f"no push {push_id}")
            raise Forbidden(f"you may not {verb} push {push_id}: it includes camera {camera}, and {reason}")
        if push.state(self._clock()) != "active":
            raise Conflict(f"push {push_id} has ended ({push.state(self._clock())})")
        return push

    async def extend(self, who: Principal, push_id: int, minutes: float | None, *, client: str | None = None) -> Push:
        """Add ``minutes`` to the push; it may then run at most ``max-minutes`` from now.
        Needs ``push.send`` on every camera of the push, now (the sender too)."""
        add = self._minutes(minutes) * 60
        async with self._lock:
            push = await self._active_push(who, push_id, "extend", client)
            now = self._clock()
            expires_at = push.expires_at + add
            if expires_at - now > self.config.max_minutes * 60 + 1e-6:
                raise BadRequest(f"a push may run at most {self.config.max_minutes:g} minutes from now")
            async with self.db.begin() as conn:
                await conn.execute(pushes.update().where(pushes.c.id == push_id).values(expires_at=expires_at))
            for grant_id in push.grants.values():
                await self.access.extend_grant(grant_id, expires_at, by=who.username)
            push.expires_at = expires_at
        await self.access.audit.record(
            "push.extend", user=who.username, client=client, detail={"push": push_id, "expires_at": expires_at}
        )
        self._announce("push.extended", push)
        self._wake.set()
        return push

    async def revoke(self, who: Principal, push_id: int, *, client: str | None = None) -> Push:
        async with self._lock:
            push = await self._active_push(who, push_id, "revoke", client)
            await self._end(push, "revoked", by=who.username, client=client)
        return push

    async def _end(self, push: Push, reason: str, *, by: str | None, client: str | None = None) -> None:
        now = self._clock()
        async with self.db.begin() as conn:
            ended = await conn.execute(
                pushes.update().where(pushes.c.id == push.id, pushes.c.ended_at.is_(None))
                .values(ended_at=now, end_reason=reason, ended_by=by)
            )
        self._active.pop(push.id, None)
        if ended.rowcount != 1:
            return  # another node of the cluster ended it first, and audited it
        push.ended_at, push.end_reason, push.ended_by = now, reason, by
        if reason == "revoked":
            for grant_id in push.grants.values():
                await self.access.revoke_grant(grant_id, by=by or "system")
        else:
            self.access.recheck_soon()  # the grants lapse by themselves; close views now
        action = "push.revoke" if reason == "revoked" else "push.expire"
        await self.access.audit.record(action, user=by, client=client, detail={"push": push.id, "stations": push.stations})
        logger.info("push %d: %s%s", push.id, reason, f" by {by}" if by else "")
        self._announce(f"push.{reason}", push)

    def _announce(self, kind: str, push: Push) -> None:
        self.events.emit(kind, user=push.created_by, **push.view(self._clock()))

    async def _watch_expiry(self) -> None:
        while True:
            self._wake.clear()
            try:
                if self.clustered:  # pushes made on other nodes: every node expires them; one UPDATE wins
                    await self._reload_active()
                now = self._clock()
                due = [p for p in self._active.values() if p.expires_at <= now]
                for push in due:
                    async with self._lock:
                        if push.id in self._active:
                            await self._end(push, "expired", by=None)
                upcoming = [p.expires_at for p in self._active.values()]
                delay = min([EXPIRY_CHECK, *(max(0.0, t - self._clock()) for t in upcoming)])
            except Exception:
                logger.exception("pushes: ending expired pushes failed")
                delay = EXPIRY_CHECK
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass


async def push_ctx(app: web.Application) -> AsyncIterator[None]:
    service = PushService(
        db=app[DATABASE], access=app[ACCESS], identity=app[IDENTITY], events=app[EVENTS], config=app[CONFIG].push,
        clustered=app[CONFIG].cluster.enabled,
    )
    async with service:
        app[PUSHES] = service
        yield
