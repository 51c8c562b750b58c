"""Evidence packages: production through the export format plugins (in the background, on the
node that claimed it), download by the requester, deletion after ``package-days``, and the
sweep of packages whose producing node died.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gateway.access.audit import AuditLog
from gateway.access.guard import Principal
from gateway.access.policy import Action
from gateway.config import Config, EvidenceConfig
from gateway.db import Database, cluster_nodes, export_requests
from gateway.errors import Conflict, Forbidden, Gone, NotFound, Tampered
from gateway.evidence.package import CameraExtract, ExportJob, iso, package_file
from gateway.evidence.request_model import APPROVED, FAILED, PRODUCED, PRODUCING, SYSTEM, ExportRequest, request_from_row
from gateway.evidence.signing import Signer
from gateway.interfaces import ExportFormat
from gateway.recording.index import Segment
from gateway.recording.service import RecordingService

logger = logging.getLogger(__name__)


class Production:
    """The production part of ``ExportService`` (``gateway.evidence.requests``), which holds the
    state below. Checks rights and audits refusals through the workflow part
    (``_on_every_camera``, ``refused``) and writes the register (``_log``)."""

    config: Config
    settings: EvidenceConfig
    db: Database
    audit: AuditLog
    clock: Callable[[], float]
    node: str | None
    recording: RecordingService
    formats: dict[str, type[ExportFormat]]
    mask_filters: dict[str, Any]
    package_dir: Path
    signer: Signer | None
    _tasks: set[asyncio.Task[None]]
    _bad_packages: set[int]

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

    async def delete_old_packages(self, now: float | None = None, *, producer: str | None = None) -> list[int]:
        """Delete packages produced more than ``package-days`` ago; returns the request ids.

        The file goes first, then the request is marked and the register says so; a file
        already missing (deleted by hand) is recorded the same way.

        In a cluster a package lies in the data dir of the node that produced it, so only
        that node can delete it: each node sweeps its own (``producer`` = its node id), and
        the cluster-wide job (no ``producer``) those no node produced (made before the
        gateway became a cluster). Each package is thus deleted once, where it lies."""
        if not self.settings.package_days:
            return []
        now = self.clock() if now is None else now
        cutoff = now - self.settings.package_days * 86400
        r = export_requests.c
        where = [r.status == PRODUCED, r.package_deleted_at.is_(None), r.produced_at <= cutoff]
        if self.node is not None:
            where.append(r.producer_node == producer if producer is not None else r.producer_node.is_(None))
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(export_requests).where(*where))).all()
        deleted = []
        for row in rows:
            req = request_from_row(row)
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


def _hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
