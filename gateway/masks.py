"""Privacy masks as data: config masks plus versioned database masks, applied to cameras.

A camera's masks are the union of the masks its config declares (kept as code, shown
locked, never removable through the API) and the newest mask set saved in the database.
Every save writes a new version row (who, when, why) and an audit entry; nothing is
updated in place. ``attach`` puts the database masks on the cameras *before* they start,
so not one unmasked picture reaches a reader, the recorder included.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError

from gateway.access.audit import AuditLog
from gateway.appkeys import AUDIT, CONFIG, DATABASE, PLUGINS, POSITIONS
from gateway.cameras import Camera, CameraManager, config_shapes
from gateway.config import CAMERAS_FILE, Config, _split_validation, mask_filter_errors
from gateway.db import Database, mask_versions
from gateway.errors import BadRequest, ConfigErrors, Conflict, Forbidden
from gateway.interfaces import MaskFilter, MaskShape
from gateway.media.mask_projection import MaskProjector
from gateway.polygons import polygon_problem
from gateway.ptz_positions import PoseHistory, PositionLog
from gateway.ptz_tracking import TrackingSettings
from gateway.recording.remask import UNKNOWN_DIGEST, MaskPlan, mask_digest
from gateway.scene import Pose, swept

logger = logging.getLogger(__name__)

MAX_MASKS = 32
#: Mask changes remembered per camera, to say which masks a segment was recorded under.
MASK_HISTORY = 64
MAX_REASON = 500


class MaskEntry(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One mask on the wire and in the database.

    ``drawn_at`` anchors it to the scene of a PTZ camera: ``points`` were drawn while the
    camera stood at that (pan, tilt, zoom), and the mask follows the scene from there."""

    points: tuple[tuple[float, float], ...]
    filter: str = "fill"
    options: dict[str, Any] = {}
    drawn_at: tuple[float, float, float] | None = None

    def shape(self) -> MaskShape:
        return MaskShape(points=self.points, filter=self.filter, options=dict(self.options), drawn_at=self.drawn_at)


class PositionView(msgspec.Struct, kw_only=True, frozen=True):
    """Where a PTZ camera points now, as its tracker last read it."""

    pan: float
    tilt: float
    zoom: float
    moving: bool
    read_at: float


class MaskView(msgspec.Struct, kw_only=True, frozen=True):
    index: int
    points: tuple[tuple[float, float], ...]
    filter: str
    options: dict[str, Any]
    #: "config" (locked: only an edit of the config file removes it) or "database".
    source: str
    locked: bool
    #: "scene": anchored to the scene of a PTZ camera (drawn at ``drawn_at``), follows it;
    #: "picture": stays at the same place in the picture.
    space: str = "picture"
    drawn_at: tuple[float, float, float] | None = None
    #: Where the mask is in the picture now (scene masks at the camera's current position;
    #: absent when the position is unknown or the mask is out of view).
    projected: tuple[tuple[tuple[float, float], ...], ...] | None = None


class MaskSetView(msgspec.Struct, kw_only=True, frozen=True):
    camera: str
    #: The database version in force (0: none saved yet).
    version: int
    masks: tuple[MaskView, ...]
    updated_by: str | None = None
    updated_at: float | None = None
    reason: str | None = None
    filters: tuple[str, ...] = ()
    #: A PTZ camera that reports its position: new masks are anchored to the scene.
    anchors: bool = False
    position: PositionView | None = None


class MaskVersionView(msgspec.Struct, kw_only=True, frozen=True):
    version: int
    masks: tuple[MaskEntry, ...]
    reason: str
    created_by: str
    created_at: float


@dataclass(frozen=True, slots=True)
class _Saved:
    version: int
    masks: tuple[MaskEntry, ...]
    reason: str | None = None
    created_by: str | None = None
    created_at: float | None = None


def parse_masks(raw: Any, filters: Mapping[str, Any], *, key: str = "masks") -> tuple[MaskEntry, ...]:
    """Validate masks from a request; a ``BadRequest`` names the mask and the reason."""
    if not isinstance(raw, list):
        raise BadRequest(f"{key} must be a list of masks")
    if len(raw) > MAX_MASKS:
        raise BadRequest(f"{key}: at most {MAX_MASKS} masks per camera")
    return tuple(parse_mask(item, filters, key=f"{key}[{i}]") for i, item in enumerate(raw))


def parse_mask(raw: Any, filters: Mapping[str, Any], *, key: str = "mask") -> MaskEntry:
    if not isinstance(raw, dict):
        raise BadRequest(f"{key} must be an object with points and filter")
    unknown = set(raw) - {"points", "filter", "options", "drawn_at"}
    if unknown:
        raise BadRequest(f"{key}: unknown field {sorted(unknown)[0]!r}")
    points = raw.get("points")
    problem = polygon_problem(points) if points is not None else "points are missing"
    if problem is not None:
        raise BadRequest(f"{key}: {problem}")
    name = raw.get("filter", "fill")
    if name not in filters:
        raise BadRequest(f"{key}: unknown filter {name!r} (known: {', '.join(sorted(filters))})")
    options = raw.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, (int, float, str, bool)) for v in options.values()):
        raise BadRequest(f"{key}: options must be an object of plain values")
    options_type = getattr(filters[name], "Options", None)
    if options_type is not None:  # the filter's own declaration: names, types, limits
        try:
            msgspec.convert(options, type=options_type, str_keys=True)
        except msgspec.ValidationError as exc:
            option, reason = _split_validation(exc, "")
            raise BadRequest(f"{key}: option {option!r} of {name}: {reason}" if option else f"{key}: options of {name}: {reason}") from exc
    drawn_at = raw.get("drawn_at")
    if drawn_at is not None:
        if (
            not isinstance(drawn_at, list) or len(drawn_at) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in drawn_at)
            or not (-1 <= drawn_at[0] <= 1 and -1 <= drawn_at[1] <= 1 and 0 <= drawn_at[2] <= 1)
        ):
            raise BadRequest(f"{key}: drawn_at must be [pan -1..1, tilt -1..1, zoom 0..1], where the camera stood")
        drawn_at = (float(drawn_at[0]), float(drawn_at[1]), float(drawn_at[2]))
    return MaskEntry(
        points=tuple((float(x), float(y)) for x, y in points), filter=name, options=options, drawn_at=drawn_at
    )


def parse_reason(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest("a reason is required for every mask change")
    if len(raw) > MAX_REASON:
        raise BadRequest(f"the reason is longer than {MAX_REASON} characters")
    return raw.strip()


class MaskService:
    """Owns mask persistence and keeps every camera's mask stage in step with it."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        config: Config,
        cameras: CameraManager,
        filters: Mapping[str, type[MaskFilter]],
        *,
        positions: PositionLog | None = None,
    ) -> None:
        self._db = db
        self._positions = positions
        self._audit = audit
        self._config = config
        self._cameras = cameras
        self.filters = dict(filters)
        self._saved: dict[str, _Saved] = {}
        #: Per camera: (since wall clock, version, digest) of each mask set applied, oldest first.
        self._history: dict[str, list[tuple[float, int, str]]] = {}

    async def load(self) -> None:
        """Read the newest version of every camera and apply it (before cameras start)."""
        newest = (
            sa.select(mask_versions.c.camera, sa.func.max(mask_versions.c.version).label("v"))
            .group_by(mask_versions.c.camera)
            .subquery()
        )
        q = sa.select(mask_versions).join(
            newest, sa.and_(mask_versions.c.camera == newest.c.camera, mask_versions.c.version == newest.c.v)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        for row in rows:
            self._saved[row["camera"]] = _row_to_saved(row)
        for camera in self._cameras:
            await self._apply(camera)
            self._applied(camera, since=0.0)  # before the cameras start: every picture has it

    async def prepare(self, camera: Camera) -> None:
        """A camera about to start in this process: its filters, and the newest masks in
        the database — another node may have changed them while it ran there."""
        camera.set_filters(self.filters)
        q = sa.select(mask_versions).where(mask_versions.c.camera == camera.id).order_by(mask_versions.c.version.desc()).limit(1)
        async with self._db.connect() as conn:
            row = (await conn.execute(q)).mappings().first()
        if row is not None:
            self._saved[camera.id] = _row_to_saved(row)
        await self._apply(camera)
        self._applied(camera)

    def _config_entries(self, camera: Camera) -> tuple[MaskEntry, ...]:
        return tuple(
            MaskEntry(points=s.points, filter=s.filter, options=dict(s.options), drawn_at=s.drawn_at)
            for s in config_shapes(camera.config)
        )

    async def _apply(self, camera: Camera) -> None:
        saved = self._saved.get(camera.id)
        shapes = list(config_shapes(camera.config))
        if saved is not None:
            shapes += [m.shape() for m in saved.masks]
        await camera.set_masks(shapes)

    # -- reading -------------------------------------------------------------------------
    def view(self, camera_id: str) -> MaskSetView:
        camera = self._cameras.get(camera_id)
        saved = self._saved.get(camera.id) or _Saved(0, ())
        views: list[MaskView] = []
        now = _now_pose(camera)
        for source, entries in (("config", self._config_entries(camera)), ("database", saved.masks)):
            for entry in entries:
                views.append(MaskView(
                    index=len(views), points=entry.points, filter=entry.filter, options=entry.options, source=source,
                    locked=source == "config", space="scene" if entry.drawn_at is not None else "picture",
                    drawn_at=entry.drawn_at, projected=_projected(camera, entry, now),
                ))
        newest = camera.tracker.newest() if camera.tracker is not None else None
        return MaskSetView(
            camera=camera.id,
            version=saved.version,
            masks=tuple(views),
            updated_by=saved.created_by,
            updated_at=saved.created_at,
            reason=saved.reason,
            filters=tuple(sorted(self.filters)),
            anchors=camera.reports_position,
            position=PositionView(pan=newest.pan, tilt=newest.tilt, zoom=newest.zoom, moving=newest.moving, read_at=newest.at)
            if newest is not None else None,
        )

    def anchor(self, camera_id: str, entry: MaskEntry, space: str | None) -> MaskEntry:
        """Anchor a new mask of a PTZ camera to the scene where it was drawn.

        ``space`` "picture" keeps it in the picture; "scene" (the default on a PTZ camera that
        reports its position) anchors it at ``entry.drawn_at`` — which must be where the camera
        still stands — or at the camera's current position. A camera that is moving, or whose
        position is unknown, cannot take a scene mask now (409: stop it, then draw)."""
        camera = self._cameras.get(camera_id)
        if space not in (None, "scene", "picture"):
            raise BadRequest("space must be 'scene' or 'picture'")
        if space == "picture":
            return msgspec.structs.replace(entry, drawn_at=None)
        if not camera.reports_position:
            if space == "scene" or entry.drawn_at is not None:
                raise Conflict(f"camera {camera.id} cannot report where it points, so its masks stay in picture space")
            return entry
        tracker = camera.tracker
        assert tracker is not None
        newest = tracker.newest()
        if newest is None or newest.moving or tracker.known_until() != float("inf"):
            raise Conflict(f"camera {camera.id} is moving or its position is not known yet; stop it, then draw the mask")
        here = (newest.pan, newest.tilt, newest.zoom)
        if entry.drawn_at is not None and max(abs(a - b) for a, b in zip(entry.drawn_at, here)) > DRAWN_AT_TOLERANCE:
            raise Conflict(
                f"camera {camera.id} moved since the mask was drawn (drawn at {_fmt(entry.drawn_at)}, now at {_fmt(here)}); "
                "draw it again on the current picture"
            )
        return msgspec.structs.replace(entry, drawn_at=entry.drawn_at or here)

    def database_masks(self, camera_id: str) -> tuple[MaskEntry, ...]:
        saved = self._saved.get(camera_id)
        return saved.masks if saved is not None else ()

    # -- the masks in force, for recordings -----------------------------------------------
    def _applied(self, camera: Camera, since: float | None = None) -> None:
        """Note the mask set the camera applies from now on. Taken *after* the camera
        applied it, so a picture captured (received) at or after ``since`` carries it; a
        picture from just before may carry it too, and is then re-masked needlessly (safe)."""
        history = self._history.setdefault(camera.id, [])
        saved = self._saved.get(camera.id)
        history.append((time.time() if since is None else since, saved.version if saved else 0, mask_digest(camera.masks)))
        del history[:-MASK_HISTORY]

    def state(self, camera_id: str) -> tuple[int, str]:
        """(database version, digest of the complete mask set) in force now."""
        history = self._history.get(camera_id)
        return history[-1][1:] if history else (0, "")

    def recorded_state(self, camera_id: str, wallclock: float) -> tuple[int, str]:
        """The mask state in force for a picture received at ``wallclock`` (what a recorded
        segment starting there carries); ``UNKNOWN_DIGEST`` if older than the history."""
        for since, version, digest in reversed(self._history.get(camera_id, ())):
            if since <= wallclock:
                return version, digest
        return -1, UNKNOWN_DIGEST

    async def plan(self, camera_id: str) -> MaskPlan:
        """The masks in force on the camera now, to apply to its recorded pictures."""
        camera = self._cameras.get(camera_id)
        version, digest = self.state(camera.id)
        if any(s.drawn_at is not None for s in camera.masks):
            return ScenePlan(
                camera=camera.id, version=version, digest=digest, shapes=camera.masks, projector=camera.projector,
                log=self._positions, settings=camera.tracking,
            )
        return MaskPlan(camera=camera.id, version=version, digest=digest, shapes=camera.masks)

    async def versions(self, camera_id: str, limit: int = 100) -> list[MaskVersionView]:
        camera = self._cameras.get(camera_id)
        q = (
            sa.select(mask_versions)
            .where(mask_versions.c.camera == camera.id)
            .order_by(mask_versions.c.version.desc())
            .limit(limit)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [
            MaskVersionView(
                version=r["version"], masks=msgspec.convert(r["masks"], tuple[MaskEntry, ...]), reason=r["reason"],
                created_by=r["created_by"], created_at=r["created_at"],
            )
            for r in rows
        ]

    # -- changing ------------------------------------------------------------------------
    async def save(
        self,
        camera_id: str,
        masks: Sequence[MaskEntry],
        *,
        reason: str,
        user: str,
        client: str | None = None,
        change: str = "replace",
        expected_version: int | None = None,
    ) -> MaskSetView:
        """Store ``masks`` (the database masks of the camera) as a new version; apply; audit."""
        camera = self._cameras.get(camera_id)
        masks = tuple(masks)
        now = time.time()
        try:
            async with self._db.begin() as conn:
                current = (
                    await conn.execute(
                        sa.select(sa.func.max(mask_versions.c.version)).where(mask_versions.c.camera == camera.id)
                    )
                ).scalar() or 0
                if expected_version is not None and expected_version != current:
                    raise Conflict(
                        f"the masks of camera {camera.id} changed meanwhile (version {current}, not {expected_version}); reload and retry"
                    )
                version = current + 1
                await conn.execute(
                    mask_versions.insert().values(
                        camera=camera.id, version=version, masks=msgspec.to_builtins(masks), reason=reason,
                        created_by=user, created_at=now,
                    )
                )
        except IntegrityError as exc:
            raise Conflict(f"the masks of camera {camera.id} changed meanwhile; reload and retry") from exc
        self._saved[camera.id] = _Saved(version, masks, reason, user, now)
        await self._apply(camera)
        self._applied(camera)
        await self._audit.record(
            "mask.edit", user=user, client=client, camera=camera.id, purpose=reason,
            detail={"change": change, "version": version, "database_masks": len(masks), "config_masks": len(camera.config.masks)},
        )
        logger.info("camera %s: masks version %d by %s (%s)", camera.id, version, user, change)
        return self.view(camera.id)

    async def add(self, camera_id: str, mask: MaskEntry, **kw: Any) -> MaskSetView:
        return await self.save(camera_id, (*self.database_masks(camera_id), mask), change="add", **kw)

    async def delete(self, camera_id: str, index: int, *, user: str, client: str | None, reason: str) -> MaskSetView:
        """Remove mask ``index`` of the combined list; a config mask cannot be removed."""
        camera = self._cameras.get(camera_id)
        n_config = len(camera.config.masks)
        db_masks = self.database_masks(camera.id)
        if not 0 <= index < n_config + len(db_masks):
            raise BadRequest(f"camera {camera.id} has no mask {index}")
        if index < n_config:
            await self._audit.record(
                "mask.edit", outcome="refused", user=user, client=client, camera=camera.id, purpose=reason,
                detail={"change": "delete", "index": index, "reason": "declared in the config"},
            )
            raise Forbidden(f"mask {index} of camera {camera.id} is declared in {CAMERAS_FILE}; only a config change removes it")
        kept = db_masks[: index - n_config] + db_masks[index - n_config + 1 :]
        return await self.save(camera.id, kept, reason=reason, user=user, client=client, change="delete")


#: How far (generic units) the camera may be from where the editor says a mask was drawn.
DRAWN_AT_TOLERANCE = 0.002


def _fmt(position: tuple[float, float, float]) -> str:
    return "pan {:+.3f} tilt {:+.3f} zoom {:.3f}".format(*position)


def _now_pose(camera: Camera) -> Pose | None:
    if camera.projector is None:
        return None
    info = camera.hub.info
    aspect = info.height / info.width if info is not None and info.width else 9 / 16
    return camera.projector.current_pose(aspect)


def _projected(camera: Camera, entry: MaskEntry, pose: Pose | None) -> tuple[tuple[tuple[float, float], ...], ...] | None:
    if entry.drawn_at is None:
        return (entry.points,)
    if pose is None or camera.projector is None:
        return None
    polygons = swept(camera.projector.directions(entry.shape(), _aspect(camera)), [pose])
    return tuple(tuple((round(x, 5), round(y, 5)) for x, y in p) for p in polygons) or None


def _aspect(camera: Camera) -> float:
    info = camera.hub.info
    return info.height / info.width if info is not None and info.width else 9 / 16


@dataclass(frozen=True)
class ScenePlan(MaskPlan):
    """A plan with masks anchored to a PTZ camera's scene: each recorded picture gets them
    where the position log says the camera pointed when it was taken; the whole picture
    where the log cannot say (before the log began, a gap, a move nobody read)."""

    projector: MaskProjector | None = None
    log: PositionLog | None = None
    settings: TrackingSettings = TrackingSettings()
    history: PoseHistory | None = None

    async def prepare(self, start: float, end: float) -> MaskPlan:
        if self.log is None:
            return self
        history = await self.log.history(self.camera, start, end, self.settings)
        return dataclasses.replace(self, history=history)

    def shapes_at(self, wallclock: float, width: int, height: int) -> tuple[MaskShape, ...] | None:
        if self.history is None or self.projector is None or self.projector.optics is None:
            return None
        samples = self.history.samples_for(wallclock)
        if not samples:
            return None
        aspect = height / width
        return self.projector.project(self.shapes, self.projector.poses(samples, aspect), aspect)


def _row_to_saved(row: Any) -> _Saved:
    return _Saved(
        version=row["version"], masks=msgspec.convert(row["masks"], tuple[MaskEntry, ...]), reason=row["reason"],
        created_by=row["created_by"], created_at=row["created_at"],
    )


MASKS = web.AppKey("masks", MaskService)


async def attach(app: web.Application, cameras: CameraManager) -> MaskService:
    """Give the cameras their filter plugins and database masks; call before they start."""
    config: Config = app[CONFIG]
    filters = app[PLUGINS].mask_filters()
    display = str(Path(config.root) / CAMERAS_FILE)
    errors = [
        e
        for i, c in enumerate(config.cameras)
        for e in mask_filter_errors(c, filters, file=display, key=f"camera[{i}]")
    ]
    if errors:
        raise ConfigErrors(errors)
    for camera in cameras:
        camera.set_filters(filters)
    service = MaskService(app[DATABASE], app[AUDIT], config, cameras, filters, positions=app.get(POSITIONS))
    await service.load()
    cameras.on_prepare.append(service.prepare)
    app[MASKS] = service
    return service
