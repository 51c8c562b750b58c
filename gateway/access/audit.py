"""The audit log: append-only, hash-chained, written in batches.

Each entry stores the SHA-256 of its predecessor's hash plus its own canonical encoding,
so altering, inserting or deleting any entry breaks the chain from there on, and
``citygate audit verify`` names the first broken entry. Entry ids are assigned here,
consecutively, and are part of the hashed content: a deleted row leaves a gap.

Writes go through one writer task that batches whatever is queued into one transaction
(thousands of entries per second on SQLite WAL); ``record`` returns once its entry is
committed. The chain head is re-read inside every write transaction, so several writers
(the server and a CLI command, or several nodes on PostgreSQL) extend one chain: a
conflicting insert fails on the primary key and the batch is retried on the new head.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway import csvcells
from gateway.access.relay import ON_BEHALF_OF
from gateway.db import Database, audit, is_unavailable
from gateway.interfaces import Event
from gateway.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
BATCH = 1000
RETRIES = 20
#: While the database is locked or unreachable, a batch is kept and retried this long.
OUTAGE_MAX = 300.0
OUTAGE_BACKOFF = 0.2
OUTAGE_BACKOFF_MAX = 2.0
#: Columns in the order they are hashed and exported.
FIELDS = ("id", "at", "user", "client", "action", "outcome", "camera", "range_from", "range_to", "purpose", "detail")


def canonical(entry: dict[str, Any]) -> bytes:
    """The exact bytes hashed for an entry: fixed keys, sorted, compact JSON."""
    return json.dumps({k: entry[k] for k in FIELDS}, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(entry)).hexdigest()


def encode_detail(detail: dict[str, Any] | None) -> str:
    return json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str = ""
    head: str = GENESIS
    #: How many of the hashes vouched for from outside (signed checkpoints) matched.
    vouched: int = 0


class AuditLog:
    def __init__(
        self, db: Database, *, sink: Callable[[Event], Any] | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self._sink = sink
        self._clock = clock
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[int] | None]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AuditLog:
        self._writer = asyncio.create_task(self._write_forever(), name="audit-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.flush()
        await cancel_and_wait(self._writer)
        self._writer = None

    # -- writing -----------------------------------------------------------------------
    def _entry(self, action: str, outcome: str, **fields: Any) -> dict[str, Any]:
        detail = fields.pop("detail", None)
        entry = {k: fields.get(k) for k in ("user", "client", "camera", "range_from", "range_to", "purpose")}
        entry.update(at=self._clock(), action=action, outcome=outcome, detail=encode_detail(detail))
        return entry

    async def record(
        self,
        action: str,
        *,
        outcome: str = "ok",
        user: str | None = None,
        client: str | None = None,
        camera: str | None = None,
        range_from: float | None = None,
        range_to: float | None = None,
        purpose: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append an entry; returns its id once it is committed.

        Written while serving a federated request (``ON_BEHALF_OF`` set), the detail
        names the central user the request was made for."""
        behalf = ON_BEHALF_OF.get()
        if behalf is not None and user is not None:
            detail = {**(detail or {}), "on_behalf_of": behalf}
        entry = self._entry(
            action, outcome, user=user, client=client, camera=camera,
            range_from=range_from, range_to=range_to, purpose=purpose, detail=detail,
        )
        if self._writer is None or self._writer.done():
            # not started (CLI use), or cancelled (a start that failed is being unwound): write
            # directly; a future queued for a writer that is gone would never be answered
            return (await self._write_batch([entry]))[0]
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((entry, future))
        return await future

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._writer is not None and not self._writer.done():
            await self._queue.join()

    async def _write_forever(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                ids = await self._write_outage_proof([entry for entry, _ in items])
            except Exception as exc:
                logger.exception("audit: writing %d entries failed", len(items))
                for _, fut in items:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
            else:
                for (_, fut), ident in zip(items, ids):
                    if fut is not None and not fut.done():
                        fut.set_result(ident)
            finally:
                for _ in items:
                    self._queue.task_done()

    async def _write_outage_proof(self, entries: list[dict[str, Any]]) -> list[int]:
        """``_write_batch``, retried while the database is locked or unreachable (up to
        ``OUTAGE_MAX`` seconds): the entries keep their times and order, none is lost to a
        short outage; whoever awaits ``record`` waits meanwhile."""
        delay, waited = OUTAGE_BACKOFF, 0.0
        while True:
            try:
                return await self._write_batch(entries)
            except Exception as exc:
                if not is_unavailable(exc) or waited >= OUTAGE_MAX:
                    raise
                if waited == 0:
                    logger.warning("audit: database unavailable (%s); keeping %d entries and retrying", exc, len(entries))
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, OUTAGE_BACKOFF_MAX)

    async def _write_batch(self, entries: list[dict[str, Any]]) -> list[int]:
        for attempt in range(RETRIES):
            try:
                rows = await self._append(entries)
                break
            except (IntegrityError, DBAPIError) as exc:
                if attempt == RETRIES - 1:
                    raise
                logger.debug("audit: chain head moved (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.005 * (attempt + 1))
        if self._sink is not None:
            for row in rows:
                self._emit(row)
        return [row["id"] for row in rows]

    async def _append(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        async with self.db.begin() as conn:
            if not self.db.is_sqlite:
                # One chain across nodes: serialise appends on PostgreSQL.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(724301)"))
            head = (await conn.execute(sa.select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1))).first()
            last_id, prev = (head.id, head.hash) if head else (0, GENESIS)
            rows = []
            for entry in entries:
                last_id += 1
                row = dict(entry, id=last_id)
                row["prev_hash"] = prev
                row["hash"] = prev = chain_hash(prev, row)
                rows.append(row)
            await conn.execute(audit.insert(), rows)
        return rows

    def _emit(self, row: dict[str, Any]) -> None:
        try:
            self._sink(  # type: ignore[misc]
                Event(
                    kind=f"audit.{row['action']}",
                    at=row["at"],
                    camera=row["camera"],
                    user=row["user"],
                    detail={"outcome": row["outcome"], "id": row["id"], **json.loads(row["detail"])},
                )
            )
        except Exception:
            logger.exception("audit: event sink failed")

    # -- reading -----------------------------------------------------------------------
    async def verify(self, *, vouched: Mapping[int, tuple[str, str]] | None = None, chunk: int = 5000) -> VerifyResult:
        """Walk the whole chain; report the first entry that does not fit.

        ``vouched`` maps entry ids to (hash, who vouches for it), e.g. signed checkpoints:
        a chain recomputed after an edit is consistent with itself but not with them, and
        a chain cut short ends before the entries they name."""
        vouched = vouched or {}
        prev, expected_id, checked, matched = GENESIS, 1, 0, 0
        async with self.db.connect() as conn:
            while True:
                result = await conn.execute(
                    sa.select(*[audit.c[f] for f in FIELDS], audit.c.prev_hash, audit.c.hash)
                    .where(audit.c.id >= expected_id)
                    .order_by(audit.c.id)
                    .limit(chunk)
                )
                rows = result.mappings().all()
                if not rows:
                    break
                for row in rows:
                    if row["id"] != expected_id:
                        return VerifyResult(False, checked, expected_id, f"entry {expected_id} is missing (next is {row['id']}): entries were deleted", prev, matched)
                    if row["prev_hash"] != prev:
                        return VerifyResult(False, checked, row["id"], f"entry {row['id']} does not follow entry {row['id'] - 1}: the chain was rewritten", prev, matched)
                    if chain_hash(prev, dict(row)) != row["hash"]:
                        return VerifyResult(False, checked, row["id"], f"entry {row['id']} was altered after it was written", prev, matched)
                    if row["id"] in vouched:
                        want, who = vouched[row["id"]]
                        if row["hash"] != want:
                            return VerifyResult(
                                False, checked, row["id"],
                                f"entry {row['id']} is not the entry {who} vouches for: the chain up to it was rewritten", prev, matched,
                            )
                        matched += 1
                    prev = row["hash"]
                    expected_id += 1
                    checked += 1
        beyond = [i for i in vouched if i >= expected_id]
        if beyond:
            last = max(beyond)
            return VerifyResult(
                False, checked, expected_id,
                f"the chain ends at entry {expected_id - 1} but {vouched[last][1]} vouches for entry {last}: entries after {expected_id - 1} were deleted",
                prev, matched,
            )
        return VerifyResult(True, checked, head=prev, vouched=matched)

    async def query(
        self,
        *,
        user: str | None = None,
        camera: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before_id: int | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Newest first. ``action`` matches a prefix when it ends with ``*`` (``live.*``)."""
        q = sa.select(*[audit.c[f] for f in FIELDS], audit.c.hash).order_by(audit.c.id.desc()).limit(limit)
        if user is not None:
            q = q.where(audit.c.user == user)
        if camera is not None:
            q = q.where(audit.c.camera == camera)
        if action is not None:
            q = q.where(audit.c.action.startswith(action[:-1]) if action.endswith("*") else audit.c.action == action)
        if outcome is not None:
            q = q.where(audit.c.outcome == outcome)
        if since is not None:
            q = q.where(audit.c.at >= since)
        if until is not None:
            q = q.where(audit.c.at < until)
        if before_id is not None:
            q = q.where(audit.c.id < before_id)
        async with self.db.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [dict(r, detail=json.loads(r["detail"])) for r in rows]


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csvcells.writer(out)  # no formula injection into the auditor's spreadsheet
    writer.writerow([*FIELDS, "hash"])
    for row in rows:
        writer.writerow(
            [json.dumps(row[f], sort_keys=True) if f == "detail" else ("" if row[f] is None else row[f]) for f in FIELDS]
            + [row["hash"]]
        )
    return out.getvalue()
