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

The service is one object over three jobs: ``gateway.evidence.workflow`` (file, approve,
reject, expire, release holds), ``gateway.evidence.register`` (register rows, CSV) and
``gateway.evidence.production`` (packages: production, download, deletion, orphan sweep);
the request as data is ``gateway.evidence.request_model``. Their names are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import sqlalchemy as sa
from aiohttp import web

from gateway.access.audit import AuditLog
from gateway.access.control import AccessControl
from gateway.access.guard import Principal
from gateway.cluster.role import SINGLE_NODE, ClusterRole
from gateway.config import Config, EvidenceConfig, format_option_errors
from gateway.db import Database, export_requests
from gateway.errors import ConfigErrors, NotFound
from gateway.evidence.production import Production
from gateway.evidence.register import Register
from gateway.evidence.request_model import request_from_row
from gateway.evidence.signing import Signer, gateway_signer, outside_web_root
from gateway.evidence.workflow import Workflow
from gateway.interfaces import ExportFormat
from gateway.media.masking import instantiate_filters
from gateway.plugins import Plugins
from gateway.recording.service import RecordingService

# re-exported: the names callers import from here
from gateway.evidence.register import REGISTER_CSV_FIELDS, register_csv
from gateway.evidence.request_model import (
    APPROVED,
    EVENTS,
    EXPIRED,
    FAILED,
    MAX_CAMERAS_NAMED,
    MAX_TEXT,
    OVERSIGHT_ACTIONS,
    PENDING,
    PRODUCED,
    PRODUCING,
    REJECTED,
    STATUSES,
    SYSTEM,
    ExportRequest,
    NewRequest,
)
from gateway.registers import RegisterEntry

__all__ = [
    "APPROVED",
    "EVENTS",
    "EXPIRED",
    "EXPIRY_CHECK",
    "EXPORTS",
    "FAILED",
    "LIST_LIMIT",
    "MAX_CAMERAS_NAMED",
    "MAX_TEXT",
    "OVERSIGHT_ACTIONS",
    "PENDING",
    "PRODUCED",
    "PRODUCING",
    "REGISTER_CSV_FIELDS",
    "REJECTED",
    "STATUSES",
    "SYSTEM",
    "ExportRequest",
    "ExportService",
    "NewRequest",
    "RegisterEntry",
    "exports_ctx",
    "register_csv",
]

logger = logging.getLogger(__name__)

EXPORTS = web.AppKey("exports", "ExportService")
EXPIRY_CHECK = 60.0
LIST_LIMIT = 500


class ExportService(Workflow, Register, Production):
    """Evidence release over one database, audit log, recording service and package directory."""

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
        self._own_packages: asyncio.Task[None] | None = None
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
        if self.node is not None:  # a cluster: each node deletes the packages that lie in its data dir
            self._own_packages = asyncio.create_task(self._delete_own_packages_forever(), name="export-own-packages")
        logger.info("evidence: %d export formats (%s); signing key %s", len(self.formats), ", ".join(sorted(self.formats)), self.signer.fingerprint)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._expiry, self._own_packages, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _expire_forever(self) -> None:
        while True:
            try:
                await self.fail_orphans()
                await self.expire_due()
                await self.delete_old_packages()
            except Exception:
                logger.exception("evidence: expiring requests or packages failed")
            await asyncio.sleep(EXPIRY_CHECK)

    async def _delete_own_packages_forever(self) -> None:
        while True:
            try:
                await self.delete_old_packages(producer=self.node)
            except Exception:
                logger.exception("evidence: deleting this node's old packages failed")
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
        return request_from_row(row)

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
            found = [request_from_row(r) for r in await conn.execute(q)]
        return [r for r in found if camera is None or camera in r.cameras]


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
