"""PTZ patrol tours: a camera visits its presets in turn, each for its dwell time.

A tour belongs to one camera: a sequence of steps (preset, dwell seconds, optional speed
0..1 for vendors whose ``ptz_goto_preset`` takes a ``speed``), and optional daily time
windows (local time, ``"22:00"``-``"06:00"`` crosses midnight) in which it runs by itself.
Tours are edited with ``cameras.manage`` and started or stopped on demand with
``ptz.control``; the node that owns the camera runs them.

Tours steer through ``PtzService.system_command``: the gateway is the controller with the
lowest priority. A tour never moves a camera someone holds: when an operator takes control
the tour pauses (state ``paused``), and when their control lock lapses or is released it
resumes at the step it was on, going to that preset again. Vendors' own preset tours (ONVIF
PresetTour) are not used, so the lock, the masks' position tracking and the audit rules
hold for tours as for people.

Audited: ``ptz.tour.edit`` (create, change, delete), ``ptz.tour.start`` and
``ptz.tour.stop`` (who, or ``schedule``, and why). Events: ``ptz.tour`` with the state
(``running``, ``paused``, ``stopped``), the step and the preset.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from aiohttp import web
from msgspec import Meta

from gateway.appkeys import AUDIT, CAMERAS, DATABASE, EVENTS, PTZ
from gateway.db import Database, ptz_tours
from gateway.errors import BadRequest, Conflict, GatewayError, NotFound
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

TOURS = web.AppKey("tours", "TourService")
#: How often a running tour looks whether someone took the camera, and the scheduler ticks.
POLL = 0.2
SCHEDULE_TICK = 1.0
#: The longest a tour waits for the camera to arrive at a preset before dwelling anyway.
ARRIVAL_TIMEOUT = 60.0
HHMM = Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class TourStep(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    preset: Annotated[str, Meta(min_length=1, max_length=64)]
    dwell_seconds: Annotated[float, Meta(ge=0.5, le=3600)] = 10.0
    speed: Annotated[float, Meta(gt=0, le=1)] | None = None


class Window(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, rename={"start": "from", "end": "to"}):
    start: HHMM
    end: HHMM

    def contains(self, minute: int) -> bool:
        a, b = _minutes(self.start), _minutes(self.end)
        return a <= minute < b if a <= b else minute >= a or minute < b


class TourSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    steps: Annotated[list[TourStep], Meta(min_length=1, max_length=64)]
    schedule: Annotated[list[Window], Meta(max_length=16)] = []
    enabled: bool = True


class TourView(msgspec.Struct, kw_only=True):
    id: int
    camera: str
    name: str
    steps: list[TourStep]
    schedule: list[Window]
    enabled: bool
    updated_by: str
    updated_at: float
    state: str  #: stopped | running | paused
    step: int | None
    started_by: str | None


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


@dataclass(eq=False)
class _Run:
    tour_id: int
    camera: str
    started_by: str
    by_schedule: bool
    state: str = "running"
    step: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class TourService:
    def __init__(
        self, *, db: Database, ptz: Any, cameras: Any, audit: Any, events: Any,
        clock: Callable[[], float] = time.time, poll: float = POLL,
    ) -> None:
        self.db = db
        self.ptz = ptz
        self.cameras = cameras
        self.audit = audit
        self.events = events
        self.clock = clock
        self.poll = poll
        self._tours: dict[int, TourView] = {}
        self._runs: dict[str, _Run] = {}  #: by camera: one tour runs per camera
        self._scheduler: asyncio.Task[None] | None = None
        #: Tours a user stopped inside their time window: not restarted until it ends.
        self._held_off: set[int] = set()

    async def __aenter__(self) -> TourService:
        async with self.db.connect() as conn:
            for row in await conn.execute(sa.select(ptz_tours).order_by(ptz_tours.c.id)):
                self._tours[row.id] = self._view(row)
        self._scheduler = asyncio.create_task(self._schedule_forever(), name="ptz-tour-scheduler")
        self.cameras.on_started.append(self._camera_started)
        self.cameras.on_stopping.append(self._camera_stopping)
        return self

    async def _camera_started(self, camera: Any) -> None:
        """A camera now runs here: its tours as the database has them (another node may
        have edited them while it ran there)."""
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(ptz_tours).where(ptz_tours.c.camera == camera.id))).all()
        for tour_id in [t.id for t in self._tours.values() if t.camera == camera.id]:
            del self._tours[tour_id]
        for row in rows:
            self._tours[row.id] = self._view(row)

    async def _camera_stopping(self, camera: Any) -> None:
        run = self._runs.get(camera.id)
        if run is not None:
            await self._stop_run(run, "system", "the camera moved to another node")

    async def __aexit__(self, *exc: object) -> None:
        for hooks, hook in ((self.cameras.on_started, self._camera_started), (self.cameras.on_stopping, self._camera_stopping)):
            if hook in hooks:
                hooks.remove(hook)
        await cancel_and_wait(self._scheduler)
        for run in list(self._runs.values()):
            await self._stop_run(run, "system", "gateway stopping")

    # -- views -----------------------------------------------------------------------
    def _view(self, row: Any) -> TourView:
        return TourView(
            id=row.id, camera=row.camera, name=row.name, steps=msgspec.convert(row.steps, list[TourStep]),
            schedule=msgspec.convert(row.schedule, list[Window]), enabled=row.enabled, updated_by=row.updated_by,
            updated_at=row.updated_at, state="stopped", step=None, started_by=None,
        )

    def _live(self, tour: TourView) -> TourView:
        run = self._runs.get(tour.camera)
        if run is None or run.tour_id != tour.id:
            return msgspec.structs.replace(tour, state="stopped", step=None, started_by=None)
        return msgspec.structs.replace(tour, state=run.state, step=run.step, started_by=run.started_by)

    def get(self, camera: str, tour_id: int) -> TourView:
        tour = self._tours.get(tour_id)
        if tour is None or tour.camera != camera:
            raise NotFound(f"camera {camera} has no tour {tour_id}")
        return self._live(tour)

    def list(self, camera: str) -> list[TourView]:
        self.cameras.get(camera)
        return [self._live(t) for t in self._tours.values() if t.camera == camera]

    # -- editing (cameras.manage) ------------------------------------------------------
    async def _check_presets(self, camera: str, spec: TourSpec) -> None:
        vendor = self.cameras.get(camera).vendor
        if not vendor.ptz_capabilities().presets:
            raise BadRequest(f"camera {camera} has no presets")
        known = {p.token for p in await vendor.ptz_presets()}
        for i, step in enumerate(spec.steps):
            if step.preset not in known:
                raise BadRequest(f"steps[{i}]: camera {camera} has no preset {step.preset!r} (known: {', '.join(sorted(known))})")

    async def create(self, camera: str, spec: TourSpec, by: str, client: str | None = None) -> TourView:
        await self._check_presets(camera, spec)
        values = self._values(spec, by)
        async with self.db.begin() as conn:
            tour_id = (await conn.execute(ptz_tours.insert().values(camera=camera, **values).returning(ptz_tours.c.id))).scalar_one()
        self._tours[tour_id] = TourView(id=tour_id, camera=camera, state="stopped", step=None, started_by=None,
                                        **{**values, "steps": spec.steps, "schedule": spec.schedule})
        await self._audit_edit("created", camera, tour_id, spec, by, client)
        return self._live(self._tours[tour_id])

    async def update(self, camera: str, tour_id: int, spec: TourSpec, by: str, client: str | None = None) -> TourView:
        self.get(camera, tour_id)
        await self._check_presets(camera, spec)
        values = self._values(spec, by)
        async with self.db.begin() as conn:
            await conn.execute(ptz_tours.update().where(ptz_tours.c.id == tour_id).values(**values))
        self._tours[tour_id] = msgspec.structs.replace(self._tours[tour_id], **{**values, "steps": spec.steps, "schedule": spec.schedule})
        await self._audit_edit("changed", camera, tour_id, spec, by, client)
        run = self._runs.get(camera)
        if run is not None and run.tour_id == tour_id and not spec.enabled:
            await self._stop_run(run, by, "tour disabled", client)
        return self._live(self._tours[tour_id])

    async def delete(self, camera: str, tour_id: int, by: str, client: str | None = None) -> None:
        tour = self.get(camera, tour_id)
        run = self._runs.get(camera)
        if run is not None and run.tour_id == tour_id:
            await self._stop_run(run, by, "tour deleted", client)
        async with self.db.begin() as conn:
            await conn.execute(ptz_tours.delete().where(ptz_tours.c.id == tour_id))
        self._tours.pop(tour_id, None)
        await self.audit.record("ptz.tour.edit", user=by, client=client, camera=camera,
                                detail={"tour": tour_id, "name": tour.name, "change": "deleted"})

    def _values(self, spec: TourSpec, by: str) -> dict[str, Any]:
        return dict(name=spec.name, steps=msgspec.to_builtins(spec.steps), schedule=msgspec.to_builtins(spec.schedule),
                    enabled=spec.enabled, updated_by=by, updated_at=self.clock())

    async def _audit_edit(self, change: str, camera: str, tour_id: int, spec: TourSpec, by: str, client: str | None) -> None:
        await self.audit.record("ptz.tour.edit", user=by, client=client, camera=camera, detail={
            "tour": tour_id, "name": spec.name, "change": change, "steps": msgspec.to_builtins(spec.steps),
            "schedule": msgspec.to_builtins(spec.schedule), "enabled": spec.enabled,
        })

    # -- running -----------------------------------------------------------------------
    async def start(self, camera: str, tour_id: int, by: str, *, client: str | None = None, by_schedule: bool = False) -> TourView:
        tour = self.get(camera, tour_id)
        if not tour.enabled:
            raise Conflict(f"tour {tour_id} is disabled")
        current = self._runs.get(camera)
        if current is not None:
            if current.tour_id == tour_id:
                return self._live(tour)
            await self._stop_run(current, by, f"tour {tour_id} started", client)
        run = _Run(tour_id, camera, by, by_schedule)
        self._runs[camera] = run
        run.task = asyncio.create_task(self._run(run), name=f"ptz-tour-{tour_id}")
        await self.audit.record("ptz.tour.start", user=None if by_schedule else by, client=client, camera=camera,
                                detail={"tour": tour_id, "name": tour.name, "by": by,
                                        "reason": "schedule" if by_schedule else "on demand"})
        logger.info("camera %s: tour %d (%s) started by %s", camera, tour_id, tour.name, by)
        self._announce(run)
        return self._live(tour)

    async def stop(self, camera: str, tour_id: int, by: str, *, client: str | None = None) -> TourView:
        tour = self.get(camera, tour_id)
        run = self._runs.get(camera)
        if run is not None and run.tour_id == tour_id:
            await self._stop_run(run, by, "stopped", client)
        if tour.schedule:
            self._held_off.add(tour_id)  # until its window ends
        return self._live(tour)

    async def _stop_run(self, run: _Run, by: str, reason: str, client: str | None = None) -> None:
        if self._runs.get(run.camera) is run:
            self._runs.pop(run.camera, None)
        await cancel_and_wait(run.task)
        run.state = "stopped"
        self._announce(run)
        await self.audit.record("ptz.tour.stop", user=None if by in ("schedule", "system") else by, client=client,
                                camera=run.camera, detail={"tour": run.tour_id, "by": by, "reason": reason})
        logger.info("camera %s: tour %d stopped by %s (%s)", run.camera, run.tour_id, by, reason)

    def _announce(self, run: _Run) -> None:
        tour = self._tours.get(run.tour_id)
        preset = tour.steps[run.step].preset if tour is not None and run.step < len(tour.steps) else None
        self.events.emit("ptz.tour", camera=run.camera, tour=run.tour_id, state=run.state, step=run.step, preset=preset)

    async def _set_state(self, run: _Run, state: str) -> None:
        if run.state != state:
            run.state = state
            self._announce(run)

    async def _run(self, run: _Run) -> None:
        tag = f"tour {run.tour_id}"
        while True:
            tour = self._tours.get(run.tour_id)
            if tour is None:
                return
            run.step %= len(tour.steps)
            step = tour.steps[run.step]
            # paused while someone holds the camera; resumes when their lock lapses
            while await self.ptz.holder(run.camera) is not None:
                await self._set_state(run, "paused")
                await asyncio.sleep(self.poll)
            try:
                await self.ptz.system_command(run.camera, "presets", self._goto(step), by=tag)
            except Conflict:
                continue  # taken between the look and the move: pause
            except GatewayError as exc:
                logger.warning("camera %s: %s could not go to preset %s: %s", run.camera, tag, step.preset, exc.message)
            await self._set_state(run, "running")
            self._announce(run)
            loop = asyncio.get_running_loop()
            await self._arrival(run.camera, loop.time() + ARRIVAL_TIMEOUT)
            deadline = loop.time() + step.dwell_seconds
            taken = False
            while (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(self.poll, left))
                if await self.ptz.holder(run.camera) is not None:
                    taken = True
                    break
            if not taken:
                run.step = (run.step + 1) % len(tour.steps)

    async def _arrival(self, camera_id: str, deadline: float) -> None:
        """Wait until a camera that reports its position says it stands still (a preset
        approached at a speed takes a while: the dwell starts on arrival, not at the
        command). A camera that cannot say is taken to be there at once."""
        tracker = self.cameras.get(camera_id).tracker
        if tracker is None or not tracker.supported:
            return
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            newest = tracker.newest()
            if newest is not None and not newest.moving and tracker.known_until() == float("inf"):
                return
            await asyncio.sleep(min(self.poll, 0.1))

    @staticmethod
    def _goto(step: TourStep) -> Callable[[Any], Any]:
        def call(vendor: Any) -> Any:
            if step.speed is not None and "speed" in inspect.signature(vendor.ptz_goto_preset).parameters:
                return vendor.ptz_goto_preset(step.preset, speed=step.speed)
            return vendor.ptz_goto_preset(step.preset)

        return call

    # -- schedule ----------------------------------------------------------------------
    async def check_schedule(self) -> None:
        """Start tours whose window began, stop those started by the schedule whose window ended."""
        now = time.localtime(self.clock())
        minute = now.tm_hour * 60 + now.tm_min
        for tour in list(self._tours.values()):
            if not tour.schedule or not self.cameras.is_running(tour.camera):
                continue  # a tour runs where its camera runs (the camera's node in a cluster)
            inside = tour.enabled and any(w.contains(minute) for w in tour.schedule)
            if not inside:
                self._held_off.discard(tour.id)
            elif tour.id in self._held_off:
                continue
            run = self._runs.get(tour.camera)
            mine = run is not None and run.tour_id == tour.id
            if inside and run is None:
                await self.start(tour.camera, tour.id, "schedule", by_schedule=True)
            elif not inside and mine and run.by_schedule:
                await self._stop_run(run, "schedule", "time window ended")

    async def _schedule_forever(self) -> None:
        while True:
            try:
                await self.check_schedule()
            except Exception:
                logger.exception("ptz tours: checking the schedule failed")
            await asyncio.sleep(SCHEDULE_TICK)


async def tours_ctx(app: web.Application) -> AsyncIterator[None]:
    async with TourService(db=app[DATABASE], ptz=app[PTZ], cameras=app[CAMERAS], audit=app[AUDIT], events=app[EVENTS]) as service:
        app[TOURS] = service
        yield
