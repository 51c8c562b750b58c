"""The workflow of an evidence export: file → approve or reject (four eyes, the right on every
camera) → expire when undecided; releasing the evidence holds (proposed, then confirmed by a
second approver). Every refusal is audited like the guard's.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa

from gateway.access.audit import AuditLog
from gateway.access.control import AccessControl
from gateway.access.guard import Principal
from gateway.access.policy import Action, Decision
from gateway.config import Config, EvidenceConfig
from gateway.db import Database, export_requests
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.evidence.request_model import APPROVED, EXPIRED, MAX_TEXT, PENDING, REJECTED, ExportRequest, NewRequest, request_from_row
from gateway.interfaces import ExportFormat
from gateway.recording.service import RecordingService
from gateway.registers import as_time


class Workflow:
    """The workflow part of ``ExportService`` (``gateway.evidence.requests``), which holds the
    state below. Writes the register (``_log``) and starts production (``produce``) through its
    other parts."""

    config: Config
    settings: EvidenceConfig
    db: Database
    audit: AuditLog
    clock: Callable[[], float]
    access: AccessControl
    recording: RecordingService
    formats: dict[str, type[ExportFormat]]
    mask_filters: dict[str, Any]

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
        start, end = as_time("from", new.range_from), as_time("to", new.range_to)
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
            await self._expire(request_from_row(row))
        return [r.id for r in rows]

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
