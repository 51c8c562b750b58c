"""Leases with fencing epochs in the shared database (SQLite here; PostgreSQL in CI's second
pass): one holder at a time, takeover only after expiry with a new epoch, a paused former
holder can neither renew nor write, a release hands over at once."""

from __future__ import annotations

import sqlalchemy as sa

from gateway.cluster.leases import LeaseStore, fenced
from gateway.db import Database

TTL = 10.0


async def test_one_holder_takeover_after_expiry_and_fencing(database_url) -> None:
    now = [1000.0]
    async with Database(database_url) as db:
        await db.migrate()
        a = LeaseStore(db, "node-a", clock=lambda: now[0])
        b = LeaseStore(db, "node-b", clock=lambda: now[0])

        first = await a.take("camera:dome", TTL)
        assert first is not None and first.holder == "node-a" and first.epoch == 1
        assert await b.take("camera:dome", TTL) is None  # held: refused
        again = await a.take("camera:dome", TTL)  # ours: renewed, same epoch
        assert again is not None and again.epoch == 1

        async def may_write(store: LeaseStore, epoch: int) -> bool:
            async with db.connect() as conn:
                row = (await conn.execute(sa.select(sa.literal(1)).where(fenced("camera:dome", store.node, epoch)))).first()
            return row is not None

        assert await may_write(a, 1)
        now[0] += TTL + 0.1  # node-a paused past its lease
        taken = await b.take("camera:dome", TTL)
        assert taken is not None and taken.holder == "node-b" and taken.epoch == 2
        assert await a.renew(first, TTL) is None  # the former holder learns it lost the lease
        assert not await may_write(a, 1)  # and its late writes are fenced out
        assert await may_write(b, 2)

        await b.release(taken)  # a drain: the next node need not wait out the lease
        handed = await a.take("camera:dome", TTL)
        assert handed is not None and handed.holder == "node-a" and handed.epoch == 3
        assert [(l.name, l.holder, l.epoch) for l in await a.all("camera:")] == [("camera:dome", "node-a", 3)]


async def test_racing_nodes_never_both_hold_a_lease(database_url) -> None:
    import asyncio

    async with Database(database_url) as db:
        await db.migrate()
        stores = [LeaseStore(db, f"node-{i}") for i in range(5)]
        for round_ in range(5):
            results = await asyncio.gather(*(s.take(f"job:sweep-{round_}", TTL) for s in stores))
            holders = {r.holder for r in results if r is not None}
            assert len(holders) == 1, results
