"""PTZ control: one controller per camera, control sessions, priorities and idle lapse.

A user's first command on a free camera opens a *control session*: the user holds the
camera's control lock until they release it, until ``ptz.lock-idle-seconds`` pass without
a command, or until a user whose role has a higher ``ptz-priority`` takes control. A
command from anyone else while the lock is held is refused with the holder's name.

Each control session is audited once, when it ends: start, end, how many commands, and
why it ended. Refusals by the lock are audited once per user and session, so a pad that
keeps pressing does not fill the log.

Events on the bus (``gateway.events``):

``ptz.lock``        to everyone who sees the camera: the holder changed (``holder`` is
                    null when the camera became free); ``reason`` says why
``ptz.taken_over``  to the previous holder (``user``): who took control and why
``ptz.lapsed``      to the holder (``user``): control lapsed after the idle time
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import msgspec
from aiohttp import web

from gateway.appkeys import ACCESS, AUDIT, CAMERAS, CONFIG, EVENTS, POLICY, PTZ
from gateway.errors import BadRequest, CameraUnavailable, Conflict, GatewayError
from gateway.access.relay import ON_BEHALF_OF
from gateway.interfaces import ACTING_USER, CameraVendor

if TYPE_CHECKING:
    from gateway.access.audit import AuditLog
    from gateway.access.guard import Principal
    from gateway.access.policy import Policy
    from gateway.cameras import Camera, CameraManager
    from gateway.config import PtzConfig
    from gateway.events import EventBus

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Controller:
    """Who holds (or asks for) control."""

    username: str
    role: str
    priority: int
    client: str | None


@dataclass(eq=False)
class ControlSession:
    camera: str
    holder: Controller
    started_at: float  #: wall clock
    last_command: float  #: monotonic
    commands: int = 0
    moving: bool = False
    refused: set[str] = field(default_factory=set)
    #: Central users a federating gateway sent commands for (``central:alice via central``).
    on_behalf_of: set[str] = field(default_factory=set)


class LockView(msgspec.Struct, kw_only=True):
    """The control lock of a camera, as one user sees it."""

    camera: str
    holder: str | None
    role: str | None
    priority: int | None
    since: float | None
    #: Seconds until the lock lapses unless its holder sends a command.
    expires_in: float | None
    commands: int
    yours: bool
    #: The asking user could take control now (free, theirs, or held by a lower priority).
    can_take: bool
    your_priority: int


class PtzService:
    """Owns the control sessions of every camera; an async context for the gateway's life."""

    def __init__(
        self,
        *,
        cameras: CameraManager,
        policy: Policy,
        audit: AuditLog,
        events: EventBus,
        config: PtzConfig,
        may_edit_masks: Callable[[Principal, str], bool] = lambda principal, camera: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cameras = cameras
        self._may_edit_masks = may_edit_masks
        self._policy = policy
        self._audit = audit
        self._events = events
        self._config = config
        self._clock = clock
        self._sessions: dict[str, ControlSession] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PtzService:
        self._watcher = asyncio.create_task(self._watch(), name="ptz-watcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for session in list(self._sessions.values()):
            await self._end(session, "gateway stopping")

    # -- who ---------------------------------------------------------------------------
    def controller(self, principal: Principal, client: str | None = None) -> Controller:
        role = self._policy.role(principal.role)
        return Controller(principal.username, principal.role, role.ptz_priority if role else 0, client)

    def _lapsed(self, session: ControlSession) -> bool:
        return self._clock() - session.last_command >= self._config.lock_idle_seconds

    def status(self, camera: str, principal: Principal) -> LockView:
        me = self.controller(principal)
        session = self._sessions.get(camera)
        if session is None or self._lapsed(session):
            return LockView(
                camera=camera, holder=None, role=None, priority=None, since=None, expires_in=None, commands=0,
                yours=False, can_take=True, your_priority=me.priority,
            )
        h = session.holder
        yours = h.username == me.username
        left = self._config.lock_idle_seconds - (self._clock() - session.last_command)
        return LockView(
            camera=camera, holder=h.username, role=h.role, priority=h.priority, since=session.started_at,
            expires_in=round(max(0.0, left), 3), commands=session.commands, yours=yours,
            can_take=yours or me.priority > h.priority, your_priority=me.priority,
        )

    # -- lock --------------------------------------------------------------------------
    async def take(self, principal: Principal, camera: str, client: str | None = None) -> LockView:
        """Take control: free, lapsed, already ours, or held by a lower priority."""
        self._cameras.get(camera)
        me = self.controller(principal, client)
        session = await self._current(camera)
        if session is None:
            self._open(camera, me, "taken")
        elif session.holder.username == me.username:
            session.last_command = self._clock()
        else:
            holder = session.holder
            if me.priority <= holder.priority:
                await self._refuse(session, me)
            why = (
                f"{me.username} ({me.role}, PTZ priority {me.priority}) took control of camera {camera} "
                f"from {holder.username} ({holder.role}, priority {holder.priority})"
            )
            logger.info("camera %s: %s", camera, why)
            self._open(camera, me, "taken over", previous=holder.username)
            self._events.emit(
                "ptz.taken_over", camera=camera, user=holder.username, by=me.username, by_role=me.role,
                by_priority=me.priority, reason=why,
            )
            # The new holder steers from here; the old move is stopped.
            await self._end(session, "taken over", by=me.username, announce=False)
        return self.status(camera, principal)

    async def release(self, principal: Principal, camera: str) -> LockView:
        self._cameras.get(camera)
        session = await self._current(camera)
        if session is not None:
            if session.holder.username != principal.username:
                raise Conflict(f"camera {camera} is controlled by {session.holder.username}, not by you")
            self._sessions.pop(camera, None)
            await self._end(session, "released")
        return self.status(camera, principal)

    # -- commands ----------------------------------------------------------------------
    async def command(
        self,
        principal: Principal,
        camera: str,
        name: str,
        call: Callable[[CameraVendor], Awaitable[T]],
        *,
        client: str | None = None,
        moving: bool | None = None,
        moves: bool = True,
        supported: bool = True,
    ) -> T:
        """Run one command under the control lock: open or renew the caller's session,
        refuse anyone else. ``moving`` says whether the camera moves on after it (True for
        a continuous move, False for stop; None leaves it). ``moves`` is False for commands
        that never turn the camera (stop, storing a preset)."""
        target = self._cameras.get(camera)
        vendor = target.vendor
        if not supported:
            raise BadRequest(f"camera {camera} does not support {name}")
        me = self.controller(principal, client)
        if moves:
            await self._check_masks(target, principal, me, name)
        session = await self._current(camera)
        if session is not None and session.holder.username != me.username:
            await self._refuse(session, me)
        if session is None:
            session = self._open(camera, me, "taken")
        session.commands += 1
        session.last_command = self._clock()
        if (behalf := ON_BEHALF_OF.get()) is not None:
            session.on_behalf_of.add(behalf)
        tracker = target.tracker
        if tracker is not None:
            tracker.command_started()  # positions read before this no longer hold
        acting = ACTING_USER.set(principal.username)  # a federated camera names them remotely
        try:
            result = await asyncio.wait_for(call(vendor), self._config.command_timeout_seconds)
        except NotImplementedError:
            raise BadRequest(f"camera {camera} does not support {name}") from None
        except TimeoutError:
            raise CameraUnavailable(f"camera {camera}: no answer to {name} within {self._config.command_timeout_seconds:g}s") from None
        finally:
            ACTING_USER.reset(acting)
            if tracker is not None:
                tracker.command_done()
        if moving is not None:
            session.moving = moving
        return result

    async def holder(self, camera: str) -> str | None:
        """Who holds the camera's control lock now (None: free, or lapsed)."""
        session = await self._current(camera)
        return session.holder.username if session is not None else None

    async def system_command(self, camera: str, name: str, call: Callable[[CameraVendor], Awaitable[T]], *, by: str) -> T:
        """A command of the gateway itself (a patrol tour): the lowest priority of all. It
        runs only while nobody holds the camera's control lock, and opens no control session,
        so any user's first command takes the camera at once. Refused (Conflict) while
        someone holds it, and on a masked camera that cannot report where it points."""
        target = self._cameras.get(camera)
        session = await self._current(camera)
        if session is not None:
            raise Conflict(f"camera {camera} is controlled by {session.holder.username}")
        if target.masked and not target.reports_position:
            raise Conflict(f"camera {camera} has privacy masks and cannot report where it points; {by} may not move it")
        tracker = target.tracker
        if tracker is not None:
            tracker.command_started()
        try:
            return await asyncio.wait_for(call(target.vendor), self._config.command_timeout_seconds)
        except NotImplementedError:
            raise BadRequest(f"camera {camera} does not support {name}") from None
        except TimeoutError:
            raise CameraUnavailable(f"camera {camera}: no answer to {name} within {self._config.command_timeout_seconds:g}s") from None
        finally:
            if tracker is not None:
                tracker.command_done()

    async def _check_masks(self, target: Camera, principal: Principal, me: Controller, name: str) -> None:
        """A masked camera whose vendor cannot report its position must not move: its masks
        stay where they were drawn in the picture, and a move would uncover what they hide.
        Only someone who may edit its masks (and so redraw them) may move it."""
        if not target.masked or target.reports_position:
            return
        if self._may_edit_masks(principal, target.id):
            logger.warning("camera %s: %s moves a masked camera that cannot report its position; its masks stay "
                           "in picture space and may need redrawing", target.id, me.username)
            return
        reason = (
            f"camera {target.id} has privacy masks and cannot report where it points, so moving it would uncover "
            "what they hide; only a user with mask.edit may move it"
        )
        await self._audit.record(
            "ptz.control", outcome="refused", user=me.username, client=me.client, camera=target.id,
            detail={"reason": reason, "command": name},
        )
        raise Conflict(reason)

    # -- internals ---------------------------------------------------------------------
    async def _current(self, camera: str) -> ControlSession | None:
        session = self._sessions.get(camera)
        if session is not None and self._lapsed(session):
            self._sessions.pop(camera, None)
            await self._lapse(session)
            return None
        return session

    def _open(self, camera: str, me: Controller, reason: str, previous: str | None = None) -> ControlSession:
        session = ControlSession(camera, me, time.time(), self._clock())
        self._sessions[camera] = session
        self._events.emit(
            "ptz.lock", camera=camera, holder=me.username, role=me.role, priority=me.priority, reason=reason,
            previous=previous,
        )
        logger.info("camera %s: %s took PTZ control", camera, me.username)
        return session

    async def _refuse(self, session: ControlSession, me: Controller) -> None:
        holder = session.holder
        hint = " (a higher PTZ priority may take control)" if me.priority <= holder.priority else ""
        reason = f"camera {session.camera} is controlled by {holder.username} ({holder.role}){hint}"
        if me.username not in session.refused:  # once per user and session, not per key press
            session.refused.add(me.username)
            await self._audit.record(
                "ptz.control", outcome="refused", user=me.username, client=me.client, camera=session.camera,
                detail={"reason": reason, "holder": holder.username},
            )
        raise Conflict(reason)

    async def _lapse(self, session: ControlSession) -> None:
        self._events.emit(
            "ptz.lapsed", camera=session.camera, user=session.holder.username,
            reason=f"no command for {self._config.lock_idle_seconds:g}s",
        )
        await self._end(session, "lapsed")

    async def _end(self, session: ControlSession, reason: str, *, by: str | None = None, announce: bool = True) -> None:
        """Close a session: stop its move, tell everyone, audit it once."""
        if self._sessions.get(session.camera) is session:
            self._sessions.pop(session.camera, None)
        if announce:
            self._events.emit("ptz.lock", camera=session.camera, holder=None, role=None, priority=None, reason=reason)
        if session.moving:
            session.moving = False
            await self._stop_camera(session.camera)
        detail = {"commands": session.commands, "ended": reason, "role": session.holder.role}
        if by is not None:
            detail["taken_by"] = by
        if session.on_behalf_of:  # audited after the requests, so named here
            detail["on_behalf_of"] = ", ".join(sorted(session.on_behalf_of))
        try:
            await self._audit.record(
                "ptz.control", user=session.holder.username, client=session.holder.client, camera=session.camera,
                range_from=session.started_at, range_to=time.time(), detail=detail,
            )
        except Exception:
            logger.exception("camera %s: auditing the end of a PTZ control session failed", session.camera)
        logger.info("camera %s: PTZ control of %s ended (%s, %d commands)", session.camera, session.holder.username, reason, session.commands)

    async def _stop_camera(self, camera: str) -> None:
        tracker = None
        try:
            target = self._cameras.get(camera)
            tracker = target.tracker
            if tracker is not None:
                tracker.command_started()
            await asyncio.wait_for(target.vendor.ptz_stop(), self._config.command_timeout_seconds)
        except (GatewayError, NotImplementedError, TimeoutError, OSError) as exc:
            logger.warning("camera %s: stopping the PTZ move failed: %s", camera, exc)
        finally:
            if tracker is not None:
                tracker.command_done()

    async def _watch(self) -> None:
        interval = min(0.5, self._config.lock_idle_seconds / 5, self._config.move_timeout_seconds / 5)
        while True:
            await asyncio.sleep(interval)
            try:
                now = self._clock()
                for session in list(self._sessions.values()):
                    if self._sessions.get(session.camera) is not session:
                        continue
                    if self._lapsed(session):
                        self._sessions.pop(session.camera, None)
                        await self._lapse(session)
                    elif session.moving and now - session.last_command >= self._config.move_timeout_seconds:
                        session.moving = False
                        logger.info("camera %s: no PTZ command for %.1fs; stopping the move", session.camera, now - session.last_command)
                        await self._stop_camera(session.camera)
            except Exception:
                logger.exception("ptz: watching control sessions failed")


async def ptz_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PTZ service, started after the cameras and stopped before them."""
    access = app[ACCESS]
    async with PtzService(
        cameras=app[CAMERAS], policy=app[POLICY], audit=app[AUDIT], events=app[EVENTS], config=app[CONFIG].ptz,
        may_edit_masks=lambda principal, camera: bool(access.decide(principal, "mask.edit", camera)),
    ) as service:
        app[PTZ] = service
        yield
