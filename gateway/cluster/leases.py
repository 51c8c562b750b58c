"""Leases with fencing epochs, in the shared database: who owns a camera, who runs a job.

A lease is a row (name, holder, epoch, expires_at). It is taken with one conditional
UPDATE — only if it is free, expired, or already ours — and renewed with another that
names the epoch it holds; the database decides every race, so no two nodes ever both
believe they hold a lease that has not expired. Taking a lease that someone else held
increments its epoch: the *fencing token*. Every write a holder makes on the lease's
behalf (a recorded segment of the camera) carries the epoch and is accepted only while
the lease still has that holder and epoch, so a node that was paused past its lease
(a long GC, a frozen VM, a cut network) can never write over its successor.

Names: ``camera:<id>`` for camera ownership, ``job:<name>`` for cluster-wide jobs
(retention, push expiry, replication, package sweep), which run on whichever node holds
the job's lease.

Times are the nodes' wall clocks: nodes must be NTP-synchronised, and the lease time
(default 10 s) is chosen long against the skew NTP leaves (milliseconds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.db import Database, leases

logger = logging.getLogger(__name__)

#: How long taking a lease waits for a row lock (PostgreSQL) before trying again later.
TAKE_LOCK_TIMEOUT_MS = 500


def _lock_timeout(exc: DBAPIError) -> bool:
    """PostgreSQL's lock_not_available (55P03): a lock_timeout ran out."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return code == "55P03" or "lock timeout" in str(exc).lower()


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    epoch: int
    expires_at: float


class LeaseStore:
    """Take, renew, release and read leases for one node."""

    def __init__(self, db: Database, node: str, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self.node = node
        self._clock = clock

    async def take(self, name: str, ttl: float) -> Lease | None:
        """The lease if it is free, expired or ours (renewed); None if another node holds it."""
        try:
            return await self._take(name, ttl)
        except DBAPIError as exc:
            if not _lock_timeout(exc):
                raise
            # its row is locked by a write of a (frozen) holder: not free now; the server ends
            # that transaction soon, and the next tick tries again
            logger.info("lease %s: its row is locked; not taken this time", name)
            return None

    async def _take(self, name: str, ttl: float) -> Lease | None:
        now = self._clock()
        c = leases.c
        async with self._db.begin() as conn:
            if not self._db.is_sqlite:  # never wait long on a row another node's write holds
                await conn.execute(sa.text(f"SET LOCAL lock_timeout = '{TAKE_LOCK_TIMEOUT_MS}ms'"))
            # ours already: renew without a new epoch
            result = await conn.execute(
                leases.update()
                .where(c.name == name, c.holder == self.node, c.expires_at >= now)
                .values(expires_at=now + ttl, renewed_at=now)
            )
            if result.rowcount == 0:
                # free or expired: a new epoch fences the previous holder out
                result = await conn.execute(
                    leases.update()
                    .where(c.name == name, sa.or_(c.expires_at < now, c.holder.is_(None)))
                    .values(holder=self.node, epoch=c.epoch + 1, expires_at=now + ttl, renewed_at=now, taken_at=now)
                )
            if result.rowcount == 0:
                exists = (await conn.execute(sa.select(c.name).where(c.name == name))).first()
                if exists is not None:
                    return None
        if result.rowcount == 0:
            try:
                async with self._db.begin() as conn:
                    await conn.execute(
                        leases.insert().values(
                            name=name, holder=self.node, epoch=1, expires_at=now + ttl, renewed_at=now, taken_at=now
                        )
                    )
            except IntegrityError:
                return None  # another node inserted it first
        return await self.get(name)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a held lease; None when it was lost (expired and taken, or released)."""
        now = self._clock()
        c = leases.c
        async with self._db.begin() as conn:
            result = await conn.execute(
                leases.update()
                .where(c.name == lease.name, c.holder == self.node, c.epoch == lease.epoch, c.expires_at >= now)
                .values(expires_at=now + ttl, renewed_at=now)
            )
        if result.rowcount != 1:
            return None
        return Lease(lease.name, self.node, lease.epoch, now + ttl)

    async def release(self, lease: Lease) -> None:
        """Give a lease up at once (drain, shutdown): the next node need not wait it out."""
        c = leases.c
        async with self._db.begin() as conn:
            await conn.execute(
                leases.update()
                .where(c.name == lease.name, c.holder == self.node, c.epoch == lease.epoch)
                .values(holder=None, expires_at=0.0)
            )

    async def get(self, name: str) -> Lease | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(leases).where(leases.c.name == name))).mappings().first()
        if row is None or row["holder"] is None:
            return None
        return Lease(row["name"], row["holder"], row["epoch"], row["expires_at"])

    async def all(self, prefix: str = "") -> list[Lease]:
        q = sa.select(leases).where(leases.c.holder.is_not(None))
        if prefix:
            q = q.where(leases.c.name.startswith(prefix))
        async with self._db.connect() as conn:
            rows = (await conn.execute(q.order_by(leases.c.name))).mappings().all()
        return [Lease(r["name"], r["holder"], r["epoch"], r["expires_at"]) for r in rows]


def fenced(name: str, node: str, epoch: int) -> sa.ColumnElement[bool]:
    """A WHERE clause true only while ``node`` still holds lease ``name`` at ``epoch``:
    attach it to every write made on the lease's behalf."""
    c = leases.c
    return sa.exists(sa.select(c.name).where(c.name == name, c.holder == node, c.epoch == epoch))
