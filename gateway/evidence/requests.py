"""Evidence release: request → approve (four eyes) → produce → download, and the register.

A user with ``export.request`` on every camera files a request (cameras, range, case
number, requesting authority, legal basis, purpose, format). A user with
``export.approve`` who is NOT the requester approves or rejects it with a reason;
approval places an evidence hold on every camera's range at once, so retention cannot
delete the recording while the package is made or afterwards. A user with
``export.produce`` (or the system, with ``[evidence] auto-produce``) produces the package
through the chosen export format plugin, in the background; the requester downloads it.
A request not decided within ``request-expiry-hours`` expires. When the case no longer
needs the recording, an approver proposes releasing the holds and a second approver (not
the proposer, not the requester) confirms it: four eyes again.

Deciding, producing and releasing need the right on EVERY camera of the request (areas
included); downloading needs ``export.request`` on every camera at the time of the
download, and only the requester downloads. Every refusal is an audit entry (outcome
``refused``, the action, the user and the camera), like the guard's. Package paths read
from the database are checked before a file is served or deleted.

Every step is a row of the release register and an entry of the audit chain (the
register row keeps the audit entry's id); ``GET /api/exports/register`` lists them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import collections
import msgspec
import sqlalchemy as sa
from aiohttp import web

from gateway import csvcells
from gateway.access.audit import AuditLog
from gateway.access.control import AccessControl
from gateway.access.guard import Principal
from gateway.access.policy import Action, Decision
from gateway.config import Config, EvidenceConfig, format_option_errors
from gateway.cluster.role import SINGLE_NODE, ClusterRole
from gateway.db import Database, cluster_nodes, export_register, export_requests
from gateway.errors import BadRequest, ConfigErrors, Conflict, Forbidden, Gone, NotFound, Tampered
from gateway.evidence.package import CameraExtract, ExportJob, iso, package_file
from gateway.evidence.signing import Signer, gateway_signer, outside_web_root
from gateway.interfaces import ExportFormat
from gateway.media.masking import instantiate_filters
from gateway.plugins import Plugins
from gateway.recording.index import Segment
from gateway.recording.service import RecordingService

logger = logging.getLogger(__name__)

EXPORTS = web.AppKey("exports", "ExportService")

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
EXPIRY_CHECK = 60.0
MAX_TEXT = {"case_number": 100, "authority": 200, "legal_basis": 500, "purpose": 1000}
LIST_LIMIT = 500


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


class RegisterEntry(msgspec.Struct, kw_only=True):
    id: int
    request_id: int
    at: float
    event: str
    user: str | None
    detail: dict[str, Any]
    audit_id: int


def _request(row: Any) -> ExportRequest:
    return ExportRequest(**{k: v for k, v in row._mapping.items() if v is not None})


def _as_time(name: str, value: float | str) -> float:
    from gateway.api.audit import parse_time

    parsed = parse_time(name, str(value)) if isinstance(value, str) else float(value)
    if parsed is None:
        raise BadRequest(f"{name} is required")
    return parsed


class ExportService:
    def __init__(
        self,
        config: Config,
        db: Database,
        audit: AuditLog,
        access: AccessControl,
        recording: RecordingService,
        plugins: Plugins,
        *,
        web_root: Path | None = None,
        signer: Signer | None = None,
        clock: Callable[[], float] = time.time,
        cluster: ClusterRole = SINGLE_NODE,
    ) -> None:
        self.config = config
        #: This cluster node's id (None: a single node), and who runs the cluster-wide expiry.
        self.node = config.cluster.node_id
        self.jobs = cluster.jobs
        self.settings: EvidenceConfig = config.evidence
        self.db = db
        self.audit = audit
        self.access = access
        self.recording = recording
        self.formats: dict[str, type[ExportFormat]] = plugins.export_formats()
        self.mask_filters = instantiate_filters(plugins.mask_filters())
        self.clock = clock
        self.package_dir = (config.data_dir / self.settings.package_dir).resolve()
        self._web_root = web_root
        self.signer = signer
        self._tasks: set[asyncio.Task[None]] = set()
        self._expiry: asyncio.Task[None] | None = None
        #: Requests whose stored package path failed the check (reported once each).
        self._bad_packages: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> ExportService:
        errors = format_option_errors(self.settings, self.formats, file="gateway.toml")
        if errors:
            raise ConfigErrors(errors)
        outside_web_root(self.package_dir, self._web_root, "evidence.package-dir")
        if self.signer is None:
            self.signer = await asyncio.to_thread(gateway_signer, self.config, self._web_root)
        await asyncio.to_thread(self.package_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        async with self.db.begin() as conn:  # a restart interrupted these (in a cluster: this node's only)
            await conn.execute(
                export_requests.update()
                .where(export_requests.c.status == PRODUCING, *([export_requests.c.producer_node == self.node] if self.node else []))
                .values(status=FAILED, error="interrupted by a gateway restart; produce again")
            )
        self._expiry = asyncio.create_task(self.jobs.run("export-expiry", self._expire_forever), name="export-expiry")
        logger.info("evidence: %d export formats (%s); signing key %s", len(self.formats), ", ".join(sorted(self.formats)), self.signer.fingerprint)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._expiry, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def fail_orphans(self) -> int:
        """Fail the exports whose producing node is no longer alive (it died mid-package):
        they can be produced again on any node."""
        if self.node is None:
            return 0
        stale = self.clock() - self.config.cluster.lease_seconds * 2
        alive = sa.select(cluster_nodes.c.node).where(cluster_nodes.c.heartbeat_at >= stale)
        async with self.db.begin() as conn:
            result = await conn.execute(
                export_requests.update()
                .where(export_requests.c.status == PRODUCING, export_requests.c.producer_node.is_not(None),
                       export_requests.c.producer_node.not_in(alive))
                .values(status=FAILED, error="the node producing it stopped; produce again")
            )
        if result.rowcount:
            logger.warning("evidence: %d exports failed: their producing node stopped", result.rowcount)
        return result.rowcount or 0

    async def _expire_forever(self) -> None:
        while True:
            try:
                await self.fail_orphans()
                await self.expire_due()
                await self.delete_old_packages()
            except Exception:
                logger.exception("evidence: expiring requests or packages failed")
            await asyncio.sleep(EXPIRY_CHECK)

    # -- reading -----------------------------------------------------------------------
    def oversees(self, who: Principal) -> bool:
        return any(self.access.decide(who, a) for a in OVERSIGHT_ACTIONS)

    def may_see(self, who: Principal, req: ExportRequest) -> bool:
        return req.requested_by == who.username or self.oversees(who)

    async def get(self, request_id: int) -> ExportRequest:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(export_requests).where(export_requests.c.id == request_id))).first()
        if row is None:
            raise NotFound(f"no export request {request_id}")
        return _request(row)

    async def list(
        self,
        *,
        status: str | None = None,
        requested_by: str | None = None,
        camera: str | None = None,
        case_number: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = LIST_LIMIT,
    ) -> list[ExportRequest]:
        q = sa.select(export_requests).order_by(export_requests.c.id.desc()).limit(limit)
        if status is not None:
            q = q.where(export_requests.c.status == status)
        if requested_by is not None:
            q = q.where(export_requests.c.requested_by == requested_by)
        if case_number is not None:
            q = q.where(export_requests.c.case_number == case_number)
        if since is not None:
            q = q.where(export_requests.c.requested_at >= since)
        if until is not None:
            q = q.where(export_requests.c.requested_at < until)
        async with self.db.connect() as conn:
            found = [_request(r) for r in await conn.execute(q)]
        return [r for r in found if camera is None or camera in r.cameras]

    async def register(
        self,
        *,
        request_id: int | None = None,
        event: str | None = None,
        user: str | None = None,
        case_number: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 5000,
    ) -> list[tuple[RegisterEntry, ExportRequest]]:
        """Register entries, newest first, each with its request."""
        r, e = export_requests, export_register
        q = sa.select(e, *[c.label(f"req_{c.name}") for c in r.c]).join(r, r.c.id == e.c.request_id).order_by(e.c.id.desc()).limit(limit)
        for column, value in ((e.c.request_id, request_id), (e.c.event, event), (e.c.user, user), (r.c.case_number, case_number)):
            if value is not None:
                q = q.where(column == value)
        if since is not None:
            q = q.where(e.c.at >= since)
        if until is not None:
            q = q.where(e.c.at < until)
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        out = []
        for row in rows:
            entry = RegisterEntry(**{c.name: row[c.name] for c in e.c})
            req = ExportRequest(**{c.name: row[f"req_{c.name}"] for c in r.c if row[f"req_{c.name}"] is not None})
            out.append((entry, req))
        return out

    # -- the register ------------------------------------------------------------------
    async def _log(
        self, req: ExportRequest, event: str, user: str | None, changes: dict[str, Any] | None = None, client: str | None = None,
        **detail: Any,
    ) -> RegisterEntry:
        """Audit the step, then update the request and append the register row together."""
        now = self.clock()
        audit_id = await self.audit.record(
            f"export.{event}", user=user, client=client, camera=req.cameras[0] if len(req.cameras) == 1 else None,
            range_from=req.range_from, range_to=req.range_to, purpose=req.purpose,
            detail={"request": req.id, "case_number": req.case_number, "cameras": req.cameras, "format": req.format, **detail},
        )
        values = dict(request_id=req.id, at=now, event=event, user=user, detail=detail, audit_id=audit_id)
        async with self.db.begin() as conn:
            if changes:
                await conn.execute(export_requests.update().where(export_requests.c.id == req.id).values(**changes))
            entry_id = (await conn.execute(export_register.insert().values(**values))).inserted_primary_key[0]
        logger.info("evidence: request %d %s by %s", req.id, event, user or SYSTEM)
        return RegisterEntry(id=entry_id, **values)

    # -- the workflow ------------------------------------------------------------------
    async def file(self, who: Principal, new: NewRequest, *, client: str | None = None) -> ExportRequest:
        now = self.clock()
        fmt = self.formats.get(new.format)
        if fmt is None:
            raise BadRequest(f"unknown export format {new.format!r} (known: {', '.join(sorted(self.formats))})")
        cameras = list(dict.fromkeys(new.cameras))
        if len(cameras) != len(new.cameras):
            twice = sorted(c for c, n in collections.Counter(new.cameras).items() if n > 1)
            raise BadRequest(f"each camera may be named once; named more than once: {', '.join(twice[:5])}")
        if not cameras:
            raise BadRequest("name at least one camera")
        limit = min(self.settings.max_cameras, getattr(fmt, "max_cameras", None) or self.settings.max_cameras)
        if len(cameras) > limit:
            raise BadRequest(f"format {new.format} takes at most {limit} cameras per request")
        for camera in cameras:
            decision = self.access.decide(who, Action.EXPORT_REQUEST, camera)
            if not decision:
                await self.refused("request", who, client, camera=camera, reason=decision.reason, cameras=cameras)
                raise Forbidden(decision.reason)
        start, end = _as_time("from", new.range_from), _as_time("to", new.range_to)
        if end <= start:
            raise BadRequest("'to' must be after 'from'")
        if end - start > self.settings.max_range_hours * 3600:
            raise BadRequest(f"a request may cover at most {self.settings.max_range_hours:g} hours")
        if start > now:
            raise BadRequest("'from' is in the future")
        options = self.format_options(new.format, new.options)
        texts = {k: getattr(new, k).strip() for k in MAX_TEXT}
        for key, text in texts.items():
            if not text:
                raise BadRequest(f"{key} is required")
            if len(text) > MAX_TEXT[key]:
                raise BadRequest(f"{key} is longer than {MAX_TEXT[key]} characters")
        values = dict(
            status=PENDING, format=new.format, cameras=cameras, range_from=start, range_to=min(end, now), **texts,
            requested_by=who.username, requested_by_id=who.user_id, requested_at=now,
            expires_at=now + self.settings.request_expiry_hours * 3600, holds=[], downloads=0, options=options,
        )
        async with self.db.begin() as conn:
            request_id = (await conn.execute(export_requests.insert().values(**values))).inserted_primary_key[0]
        req = ExportRequest(id=request_id, **values)
        await self._log(
            req, "filed", who.username, client=client, authority=req.authority, legal_basis=req.legal_basis, options=options,
        )
        return req

    def format_options(self, format_id: str, given: dict[str, Any]) -> dict[str, Any]:
        """The request's options for ``format_id``: the configured defaults with ``given``
        over them, checked against the format's ``Options``; every setting spelled out, so
        the approver sees (and the package records) exactly what will be produced."""
        fmt = self.formats[format_id]
        merged = {**self.settings.format_options.get(format_id, {}), **(given or {})}
        try:
            options = msgspec.convert(merged, fmt.Options, str_keys=True)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"options for format {format_id}: {exc}") from None
        if getattr(options, "watermark", False) and "watermark" not in self.mask_filters:
            raise BadRequest("a watermark needs the 'watermark' mask filter plugin, which is not installed")
        return msgspec.to_builtins(options)

    async def _pending(self, request_id: int) -> ExportRequest:
        req = await self.get(request_id)
        if req.status == PENDING and req.expires_at <= self.clock():
            await self._expire(req)
            req = await self.get(request_id)
        if req.status != PENDING:
            raise Conflict(f"export request {request_id} is {req.status}, not pending")
        return req

    async def _claim(self, req: ExportRequest, status: str, who: Principal, reason: str, now: float) -> None:
        """Decide a pending request exactly once, whoever else tries at the same moment."""
        async with self.db.begin() as conn:
            done = (await conn.execute(
                export_requests.update().where(export_requests.c.id == req.id, export_requests.c.status == PENDING)
                .values(status=status, decided_by=who.username, decided_at=now, decision_reason=reason)
            )).rowcount
        if not done:
            raise Conflict(f"export request {req.id} was decided meanwhile")

    async def refused(
        self, verb: str, who: Principal | None, client: str | None, *, camera: str | None = None, reason: str,
        req: ExportRequest | None = None, **detail: Any,
    ) -> None:
        """Audit a refusal (``export.<verb>``, outcome ``refused``), as the guard does.
        Without a ``camera``, a request of one camera names that camera."""
        if camera is None and req is not None and len(req.cameras) == 1:
            camera = req.cameras[0]
        if req is not None:
            detail = {"request": req.id, "cameras": req.cameras, **detail}
        await self.audit.record(
            f"export.{verb}", outcome="refused", user=who.username if who is not None else None, client=client, camera=camera,
            detail={**detail, "reason": reason},
        )

    async def _four_eyes(self, who: Principal, req: ExportRequest, verb: str, client: str | None) -> None:
        if who.user_id == req.requested_by_id or who.username == req.requested_by:
            await self.refused(verb, who, client, req=req, reason="four eyes: the requester may not decide their own request")
            raise Forbidden(f"four eyes: {who.username} filed request {req.id} and may not {verb} it")
        await self._on_every_camera(who, req, Action.EXPORT_APPROVE, verb, client)

    async def _on_every_camera(self, who: Principal, req: ExportRequest, action: Action, verb: str, client: str | None) -> None:
        """Least privilege: deciding, producing, releasing or downloading a request needs the
        right on each of its cameras, now (a district's leadership decides for the district's
        cameras only; a requester who lost a camera no longer downloads its video)."""
        for camera in req.cameras:
            try:
                decision = self.access.decide(who, action, camera)
            except NotFound:  # a camera removed from the configuration since
                decision = Decision(False, f"camera {camera} is no longer configured")
            if not decision:
                await self.refused(verb, who, client, camera=camera, req=req, reason=decision.reason)
                raise Forbidden(f"{decision.reason} (request {req.id} includes camera {camera})")

    async def approve(self, who: Principal, request_id: int, reason: str, *, client: str | None = None) -> ExportRequest:
        reason = _reason(reason)
        req = await self._pending(request_id)
        await self._four_eyes(who, req, "approve", client)
        now = self.clock()
        await self._claim(req, APPROVED, who, reason, now)
        holds = []
        for camera in req.cameras:
            hold = await self.recording.place_hold(
                camera, req.range_from, req.range_to, f"export request {req.id}, case {req.case_number}", who.username, f"export:{req.id}"
            )
            holds.append(hold.id)
        await self._log(req, "approved", who.username, client=client, reason=reason, holds=holds, changes=dict(holds=holds))
        if self.settings.auto_produce:
            await self.produce(None, req.id)
        return await self.get(req.id)

    async def reject(self, who: Principal, request_id: int, reason: str, *, client: str | None = None) -> ExportRequest:
        reason = _reason(reason)
        req = await self._pending(request_id)
        await self._four_eyes(who, req, "reject", client)
        await self._claim(req, REJECTED, who, reason, self.clock())
        await self._log(req, "rejected", who.username, client=client, reason=reason)
        return await self.get(req.id)

    async def _expire(self, req: ExportRequest) -> None:
        async with self.db.begin() as conn:  # only one caller wins the transition
            done = (await conn.execute(
                export_requests.update().where(export_requests.c.id == req.id, export_requests.c.status == PENDING).values(status=EXPIRED)
            )).rowcount
        if done:
            await self._log(req, "expired", None, hours=self.settings.request_expiry_hours)

    async def expire_due(self, now: float | None = None) -> list[int]:
        """Expire pending requests past their time; returns their ids."""
        now = self.clock() if now is None else now
        async with self.db.connect() as conn:
            rows = (await conn.execute(
                sa.select(export_requests).where(export_requests.c.status == PENDING, export_requests.c.expires_at <= now)
            )).all()
        for row in rows:
            await self._expire(_request(row))
        return [r.id for r in rows]

    async def delete_old_packages(self, now: float | None = None) -> list[int]:
        """Delete packages produced more than ``package-days`` ago; returns the request ids.

        The file goes first, then the request is marked and the register says so; a file
        already missing (deleted by hand) is recorded the same way."""
        if not self.settings.package_days:
            return []
        now = self.clock() if now is None else now
        cutoff = now - self.settings.package_days * 86400
        async with self.db.connect() as conn:
            rows = (await conn.execute(
                sa.select(export_requests).where(
                    export_requests.c.status == PRODUCED, export_requests.c.package_deleted_at.is_(None),
                    export_requests.c.produced_at <= cutoff,
                )
            )).all()
        deleted = []
        for row in rows:
            req = _request(row)
            if req.package_name:
                try:
                    path = await self._package_path(req, "delete_package", None, None, report=req.id not in self._bad_packages)
                except Tampered:
                    self._bad_packages.add(req.id)  # left alone (and reported once), never deleted
                    continue
                await asyncio.to_thread(path.unlink, missing_ok=True)
            await self._log(
                req, "package_deleted", None, package=req.package_name, sha256=req.package_sha256,
                days=self.settings.package_days, changes=dict(package_deleted_at=now),
            )
            deleted.append(req.id)
        return deleted

    async def produce(
        self, who: Principal | None, request_id: int, *, wait: bool = False, client: str | None = None
    ) -> ExportRequest:
        """Start making the package in the background (``wait`` for tests and the CLI).

        ``who`` needs ``export.produce`` on every camera of the request (None: the system,
        with ``auto-produce``). An approved or failed request can be produced, and so can a
        produced one whose package was deleted after ``package-days``."""
        by = who.username if who is not None else SYSTEM
        if who is not None:
            await self._on_every_camera(who, await self.get(request_id), Action.EXPORT_PRODUCE, "produce", client)
        producible = sa.or_(
            export_requests.c.status.in_((APPROVED, FAILED)),
            sa.and_(export_requests.c.status == PRODUCED, export_requests.c.package_deleted_at.is_not(None)),
        )
        async with self.db.begin() as conn:
            done = (await conn.execute(
                export_requests.update()
                .where(export_requests.c.id == request_id, producible)
                .values(status=PRODUCING, produced_by=by, error=None, producer_node=self.node)
            )).rowcount
        req = await self.get(request_id)
        if not done:
            what = "its package exists" if req.status == PRODUCED else f"it is {req.status}"
            raise Conflict(f"export request {request_id} cannot be produced: {what}; only approved requests can be produced")
        task = asyncio.create_task(self._produce(req, by), name=f"export-{request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if wait:
            await asyncio.shield(task)
        return await self.get(request_id)

    async def job(self, req: ExportRequest, by: str) -> ExportJob:
        assert self.signer is not None
        extracts = []
        for camera in req.cameras:
            cfg = self.config.camera(camera)
            items = await self.recording.timeline(camera, req.range_from, req.range_to)
            extracts.append(CameraExtract(camera, cfg.title if cfg else camera, req.range_from, req.range_to, tuple(items)))
        approval = (await self.register(request_id=req.id, event="approved", limit=1))[0][0]

        async def read(seg: Segment) -> bytes:
            return b"".join([chunk async for chunk in self.recording.segment_stream(seg)])

        request = {
            "id": req.id,
            "case_number": req.case_number,
            "authority": req.authority,
            "legal_basis": req.legal_basis,
            "purpose": req.purpose,
            "requested_by": req.requested_by,
            "requested_at": iso(req.requested_at),
            "range": {"from": iso(req.range_from), "to": iso(req.range_to), "from_epoch": req.range_from, "to_epoch": req.range_to},
            "approval": {
                "register_entry": approval.id,
                "audit_entry": approval.audit_id,
                "by": req.decided_by,
                "at": iso(req.decided_at or 0),
                "reason": req.decision_reason,
                "evidence_holds": req.holds,
            },
        }
        return ExportJob(
            request=request, cameras=tuple(extracts), produced_by=by, produced_at=self.clock(), signer=self.signer,
            read_segment=read, loop=asyncio.get_running_loop(), options=dict(req.options), mask_filters=self.mask_filters,
            mask_plans={camera: await self.recording.mask_plan(camera) for camera in req.cameras},
            masking=self.config.masking,
        )

    async def _produce(self, req: ExportRequest, by: str) -> None:
        fmt = self.formats[req.format]
        name = f"export-{req.id}-{req.format}{getattr(fmt, 'suffix', '.bin')}"
        final = self.package_dir / name
        partial = final.with_name(name + ".part")
        started = time.monotonic()
        try:
            job = await self.job(req, by)
            await fmt().produce(job, str(partial))
            digest, size = await asyncio.to_thread(_hash_file, partial)
            await asyncio.to_thread(os.replace, partial, final)
        except asyncio.CancelledError:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            raise
        except Exception as exc:
            logger.exception("evidence: producing request %d failed", req.id)
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            message = exc.message if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}"
            await self._log(req, "production_failed", by, changes=dict(status=FAILED, error=message[:1000]), error=message[:1000])
            return
        seconds = time.monotonic() - started
        await self._log(
            req, "produced", by, package=name, bytes=size, sha256=digest, seconds=round(seconds, 3),
            masks=job.privacy_masks(),  # the mask version each camera's video was served under
            changes=dict(
                status=PRODUCED, produced_by=by, produced_at=self.clock(), package_name=name, package_bytes=size,
                package_sha256=digest, package_deleted_at=None,
            ),
        )

    async def _package_path(
        self, req: ExportRequest, verb: str, who: Principal | None, client: str | None, *, report: bool = True
    ) -> Path:
        """The package file of ``req``, checked (name, resolved path inside the package
        directory); a tampered row raises ``Tampered``, logged and audited (if ``report``)."""
        assert req.package_name is not None
        try:
            return await asyncio.to_thread(package_file, self.package_dir, req.package_name, req.id)
        except Tampered as exc:
            if report:
                logger.error("evidence: request %d: refusing the stored package path: %s", req.id, exc.message)
                await self.refused(verb, who, client, req=req, reason=exc.message, package=req.package_name)
            raise

    async def download(self, who: Principal, request_id: int, *, client: str | None = None) -> tuple[Path, ExportRequest]:
        """The package file, for the requester only, who must still hold ``export.request``
        on every camera of the request."""
        req = await self.get(request_id)
        if req.requested_by != who.username or req.requested_by_id != who.user_id:
            reason = f"only the requester ({req.requested_by}) downloads the package of request {req.id}"
            await self.refused("download", who, client, req=req, reason=reason)
            if not self.may_see(who, req):
                raise NotFound(f"no export request {request_id}")
            raise Forbidden(reason)
        await self._on_every_camera(who, req, Action.EXPORT_REQUEST, "download", client)
        if req.status != PRODUCED or not req.package_name:
            raise Conflict(f"export request {request_id} is {req.status}; there is no package to download yet")
        if req.package_deleted_at is not None:
            raise Gone(
                f"the package of request {req.id} was deleted on {iso(req.package_deleted_at)}, "
                f"{self.settings.package_days:g} days after it was produced; ask for it to be produced again"
            )
        path = await self._package_path(req, "download", who, client)
        await self._log(
            req, "downloaded", who.username, client=client, package=req.package_name, sha256=req.package_sha256,
            changes=dict(downloads=export_requests.c.downloads + 1),
        )
        return path, req

    async def _held(self, request_id: int) -> ExportRequest:
        req = await self.get(request_id)
        if not req.holds or req.holds_released_at is not None or req.holds_released_by is not None:
            raise Conflict(f"export request {request_id} holds no recordings")
        return req

    async def release_holds(self, who: Principal, request_id: int, reason: str, *, client: str | None = None) -> ExportRequest:
        """Propose releasing the request's evidence holds; a second approver confirms
        (``confirm_release``). Needs ``export.approve`` on every camera; never the requester."""
        reason = _reason(reason)
        req = await self._held(request_id)
        await self._four_eyes(who, req, "release_holds", client)
        now = self.clock()
        async with self.db.begin() as conn:
            done = (await conn.execute(
                export_requests.update()
                .where(export_requests.c.id == req.id, export_requests.c.release_proposed_by.is_(None),
                       export_requests.c.holds_released_at.is_(None))
                .values(release_proposed_by=who.username, release_proposed_at=now, release_proposal_reason=reason)
            )).rowcount
        if not done:
            req = await self.get(request_id)
            raise Conflict(
                f"releasing the holds of request {req.id} was already proposed by {req.release_proposed_by}; "
                "another approver confirms it (POST .../release-holds/confirm)"
            )
        await self._log(req, "hold_release_proposed", who.username, client=client, reason=reason, holds=req.holds)
        return await self.get(request_id)

    async def confirm_release(self, who: Principal, request_id: int, reason: str, *, client: str | None = None) -> ExportRequest:
        """Confirm a proposed release: a second approver, not the proposer, not the requester,
        with ``export.approve`` on every camera. Both persons are in the register entry."""
        reason = _reason(reason)
        req = await self._held(request_id)
        if req.release_proposed_by is None:
            raise Conflict(f"nobody proposed releasing the holds of request {req.id}; propose it first (POST .../release-holds)")
        await self._four_eyes(who, req, "confirm_release", client)
        if who.username == req.release_proposed_by:
            why = "four eyes: the proposer may not confirm their own proposal to release the holds"
            await self.refused("confirm_release", who, client, req=req, reason=why, proposed_by=req.release_proposed_by)
            raise Forbidden(f"four eyes: {who.username} proposed releasing the holds of request {req.id}; another approver confirms")
        async with self.db.begin() as conn:  # one confirmation wins
            done = (await conn.execute(
                export_requests.update()
                .where(export_requests.c.id == req.id, export_requests.c.release_proposed_by == req.release_proposed_by,
                       export_requests.c.holds_released_by.is_(None))
                .values(holds_released_by=who.username)
            )).rowcount
        if not done:
            raise Conflict(f"the holds of request {req.id} were released or re-proposed meanwhile")
        try:
            for hold_id in req.holds:
                await self.recording.release_hold(hold_id, who.username)
        except BaseException:
            async with self.db.begin() as conn:
                await conn.execute(export_requests.update().where(export_requests.c.id == req.id).values(holds_released_by=None))
            raise
        await self._log(
            req, "hold_released", who.username, client=client, reason=reason, holds=req.holds,
            proposed_by=req.release_proposed_by, proposed_at=req.release_proposed_at, proposal_reason=req.release_proposal_reason,
            changes=dict(holds_released_at=self.clock()),
        )
        return await self.get(request_id)


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise BadRequest("give a reason")
    if len(reason) > 1000:
        raise BadRequest("the reason is longer than 1000 characters")
    return reason


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


REGISTER_CSV_FIELDS = (
    "entry", "at", "event", "user", "request", "status", "case_number", "authority", "legal_basis", "purpose",
    "cameras", "from", "to", "format", "requested_by", "decided_by", "detail", "audit_entry",
)


def register_csv(rows: list[tuple[RegisterEntry, ExportRequest]]) -> str:
    out = io.StringIO()
    writer = csvcells.writer(out)
    writer.writerow(REGISTER_CSV_FIELDS)
    for entry, req in rows:
        writer.writerow([
            entry.id, iso(entry.at), entry.event, entry.user or SYSTEM, req.id, req.status, req.case_number, req.authority,
            req.legal_basis, req.purpose, " ".join(req.cameras), iso(req.range_from), iso(req.range_to), req.format,
            req.requested_by, req.decided_by or "", msgspec.json.encode(entry.detail).decode(), entry.audit_id,
        ])
    return out.getvalue()


async def exports_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context, after the recording service's."""
    from gateway.webroot import WEBCLIENT_DIR
    from gateway.appkeys import ACCESS, AUDIT, CONFIG, DATABASE, PLUGINS, RECORDING, SIGNER

    from gateway.cluster.role import CLUSTER_ROLE

    service = ExportService(
        app[CONFIG], app[DATABASE], app[AUDIT], app[ACCESS], app[RECORDING], app[PLUGINS],
        web_root=WEBCLIENT_DIR, signer=app.get(SIGNER), cluster=app.get(CLUSTER_ROLE, SINGLE_NODE),
    )
    async with service:
        app[EXPORTS] = service
        yield
