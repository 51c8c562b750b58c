"""Access control at run time: decisions per request, grants, and live sessions re-checked.

Every long-running view (a WebRTC viewer, an HLS viewer) is registered here with a
``close`` callback. A watcher re-checks each one every second and at once when a user,
a role or a grant changes: a viewer whose session expired, whose user was disabled, or
who lost the right or the area is closed within two seconds and the closing is audited.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from gateway.access.audit import AuditLog
from gateway.access.guard import Principal
from gateway.access.policy import Action, Decision, Grant, Policy, Subject
from gateway.config import Config
from gateway.db import Database, grants
from gateway.errors import BadRequest, NotFound
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
VIEW_ACTIONS = (Action.LIVE_VIEW, Action.PLAYBACK_VIEW, Action.SNAPSHOT_VIEW)


class SessionSource(Protocol):
    """What the watcher needs from identity: the current state of a session."""

    async def principal_for_session(self, session_id: str) -> Principal | None: ...

    def add_listener(self, callback: Callable[[int], Any]) -> None: ...


@dataclass(eq=False)
class LiveTicket:
    """One open view, bound to the user and session that opened it."""

    id: int
    principal: Principal
    camera: str
    action: str
    kind: str  #: "webrtc" | "hls" | ...
    close: Callable[[str], Awaitable[None]]
    client: str | None
    started_at: float = field(default_factory=time.time)
    closed: bool = False
    #: The principal as of now, or None if it is gone, for views not opened with a session
    #: (RTSP Digest); views opened with a session token are re-read through the session.
    refresh: Callable[[], Awaitable[Principal | None]] | None = None


class AccessControl:
    def __init__(
        self,
        *,
        db: Database,
        policy: Policy,
        audit: AuditLog,
        config: Config,
        sessions: SessionSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.policy = policy
        self.audit = audit
        self._areas = {c.id: c.area for c in config.cameras}
        self._sessions = sessions
        self._clock = clock
        self._grants: list[Grant] = []
        self._tickets: dict[int, LiveTicket] = {}
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AccessControl:
        await self.reload_grants()
        if self._sessions is not None:
            self._sessions.add_listener(lambda _user_id: self.recheck_soon())
        self._watcher = asyncio.create_task(self._watch(), name="access-watcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_and_wait(self._watcher)

    def set_cameras(self, cameras: Iterable[Any]) -> None:
        """The cameras now (after a reload or an API change): areas as of now, every open
        view re-checked at once (a camera moved out of a viewer's areas closes the view)."""
        self._areas = {c.id: c.area for c in cameras}
        self.recheck_soon()

    def camera_areas(self) -> dict[str, str]:
        """Camera id -> area, for every camera now."""
        return dict(self._areas)

    # -- decisions ---------------------------------------------------------------------
    def camera_area(self, camera_id: str) -> str:
        try:
            return self._areas[camera_id]
        except KeyError:
            raise NotFound(f"no camera {camera_id!r}") from None

    @staticmethod
    def subject(principal: Principal) -> Subject:
        return Subject(principal.username, principal.role, principal.areas, principal.all_areas, principal.user_id)

    def decide(self, principal: Principal, action: str, camera: str | None = None) -> Decision:
        area = self.camera_area(camera) if camera is not None else None
        return self.policy.decide(
            self.subject(principal), action, camera=camera, camera_area=area, grants=self._grants, now=self._clock()
        )

    def cameras_for(self, principal: Principal, actions: Iterable[str] = VIEW_ACTIONS) -> set[str]:
        """The cameras on which the principal may do at least one of ``actions``."""
        return {c for c in self._areas if any(self.decide(principal, a, c) for a in actions)}

    def actions_for(self, principal: Principal) -> list[str]:
        subject = self.subject(principal)
        now = self._clock()
        return sorted(a for a in Action if self.policy.may_sometimes(subject, a, self._grants, now))

    # -- grants ------------------------------------------------------------------------
    @property
    def grants(self) -> list[Grant]:
        return list(self._grants)

    async def reload_grants(self) -> None:
        now = self._clock()
        async with self.db.connect() as conn:
            rows = (
                await conn.execute(sa.select(grants).where(grants.c.revoked_at.is_(None), grants.c.expires_at > now))
            ).mappings().all()
        self._grants = [_grant(r) for r in rows]

    async def add_grant(
        self,
        *,
        cameras: Iterable[str],
        actions: Iterable[str],
        expires_at: float,
        reason: str,
        by: str,
        user_id: int | None = None,
        role: str | None = None,
        source: str = "manual",
        starts_at: float | None = None,
    ) -> Grant:
        cams, acts = sorted(set(cameras)), sorted(set(actions))
        if (user_id is None) == (role is None):
            raise BadRequest("a grant names exactly one user or one role")
        for camera in cams:
            if camera != "*":
                self.camera_area(camera)
        for action in acts:
            if action not in set(Action):
                raise BadRequest(f"unknown action {action!r}")
        now = self._clock()
        values = dict(
            user_id=user_id, role=role, cameras=cams, actions=acts, starts_at=starts_at or now, expires_at=expires_at,
            reason=reason, created_by=by, created_at=now, source=source,
        )
        async with self.db.begin() as conn:
            grant_id = (await conn.execute(grants.insert().values(**values).returning(grants.c.id))).scalar_one()
        await self.audit.record(
            "grant.create", user=by, detail={"grant": grant_id, "user_id": user_id, "role": role, "cameras": cams,
                                             "actions": acts, "expires_at": expires_at, "reason": reason, "source": source},
        )
        await self.reload_grants()
        self.recheck_soon()
        return _grant(dict(values, id=grant_id, revoked_at=None))

    async def revoke_grant(self, grant_id: int, *, by: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(
                grants.update().where(grants.c.id == grant_id, grants.c.revoked_at.is_(None)).values(revoked_at=self._clock(), revoked_by=by)
            )
        await self.audit.record("grant.revoke", user=by, detail={"grant": grant_id})
        await self.reload_grants()
        self.recheck_soon()

    async def extend_grant(self, grant_id: int, expires_at: float, *, by: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(grants.update().where(grants.c.id == grant_id).values(expires_at=expires_at))
        await self.audit.record("grant.extend", user=by, detail={"grant": grant_id, "expires_at": expires_at})
        await self.reload_grants()

    # -- live sessions -----------------------------------------------------------------
    def track(
        self, principal: Principal, camera: str, action: str, kind: str, close: Callable[[str], Awaitable[None]], client: str | None,
        *, refresh: Callable[[], Awaitable[Principal | None]] | None = None,
    ) -> LiveTicket:
        ticket = LiveTicket(next(self._ids), principal, camera, action, kind, close, client, refresh=refresh)
        self._tickets[ticket.id] = ticket
        return ticket

    def release(self, ticket: LiveTicket) -> None:
        self._tickets.pop(ticket.id, None)

    def tickets(self) -> list[LiveTicket]:
        return list(self._tickets.values())

    def recheck_soon(self) -> None:
        self._wake.set()

    async def _watch(self) -> None:
        last_reload = 0.0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), CHECK_INTERVAL)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                now = time.monotonic()
                if now - last_reload >= 5.0:  # grants made by other nodes or the CLI
                    await self.reload_grants()
                    last_reload = now
                await self.recheck()
            except Exception:
                logger.exception("access: re-checking live sessions failed")

    async def recheck(self) -> None:
        """Close every live view whose user may no longer see it."""
        now = self._clock()
        self._grants = [g for g in self._grants if g.expires_at > now]
        for ticket in list(self._tickets.values()):
            reason = await self._still_allowed(ticket)
            if reason is None:
                continue
            self.release(ticket)
            ticket.closed = True
            logger.info("camera %s: closing %s view of %s: %s", ticket.camera, ticket.kind, ticket.principal.username, reason)
            try:
                await ticket.close(reason)
            except Exception:
                logger.exception("camera %s: closing a revoked view failed", ticket.camera)
            await self.audit.record(
                f"{ticket.action.split('.')[0]}.revoked", outcome="ok", user=ticket.principal.username, client=ticket.client,
                camera=ticket.camera, detail={"kind": ticket.kind, "reason": reason, "duration": round(time.time() - ticket.started_at, 3)},
            )

    async def _still_allowed(self, ticket: LiveTicket) -> str | None:
        principal = ticket.principal
        if ticket.refresh is not None:
            current = await ticket.refresh()
            if current is None:
                return "the account was disabled, removed or its credentials changed"
            principal = current
            ticket.principal = current
        elif self._sessions is not None:
            current = await self._sessions.principal_for_session(principal.session_id)
            if current is None:
                return "the session ended, expired or the account was disabled"
            principal = current
            ticket.principal = current
        if ticket.camera not in self._areas:
            return "the camera was removed from the configuration"
        decision = self.decide(principal, ticket.action, ticket.camera)
        return None if decision else decision.reason


def _grant(row: Any) -> Grant:
    return Grant(
        id=row["id"], user_id=row["user_id"], role=row["role"], cameras=frozenset(row["cameras"]),
        actions=frozenset(row["actions"]), starts_at=row["starts_at"], expires_at=row["expires_at"],
        reason=row["reason"], source=row["source"], revoked_at=row["revoked_at"],
    )
