import asyncio
import sqlalchemy as sa

import pytest

from gateway.access.audit import AuditLog
from gateway.db import Database


@pytest.fixture
async def db(database_url):
    async with Database(database_url) as database:
        yield database


async def tamper(db: Database, sql: str) -> None:
    """What someone with write access to the database could do."""
    async with db.begin() as conn:
        await conn.execute(sa.text(sql))


async def test_entries_chain_and_verify(db):
    async with AuditLog(db) as log:
        ids = await asyncio.gather(*(log.record("live.start", user=f"u{i % 3}", camera="cam1", client="10.0.0.1") for i in range(50)))
        assert sorted(ids) == list(range(1, 51))
        result = await log.verify()
    assert result.ok and result.checked == 50


async def test_edited_row_is_named_by_verify(db, tmp_path):
    async with AuditLog(db) as log:
        for i in range(10):
            await log.record("login.ok", user="alice", detail={"n": i})
    await tamper(db, "UPDATE audit SET \"user\" = 'mallory' WHERE id = 7")
    result = await AuditLog(db).verify()
    assert not result.ok and result.broken_id == 7
    assert "entry 7 was altered" in result.reason


async def test_deleted_row_is_detected(db, tmp_path):
    async with AuditLog(db) as log:
        for _ in range(5):
            await log.record("snapshot", user="bob")
    await tamper(db, "DELETE FROM audit WHERE id = 3")
    result = await AuditLog(db).verify()
    assert not result.ok and result.broken_id == 3 and "deleted" in result.reason


async def test_two_writers_extend_one_chain(db, database_url):
    async with Database(database_url) as other_db:
        async with AuditLog(db) as a, AuditLog(other_db) as b:
            await asyncio.gather(*(x.record("ptz.session", user="u") for _ in range(30) for x in (a, b)))
        result = await AuditLog(db).verify()
    assert result.ok and result.checked == 60


async def test_query_filters_and_sink(db):
    seen = []
    async with AuditLog(db, sink=seen.append) as log:
        await log.record("live.start", user="alice", camera="c1")
        await log.record("live.refused", outcome="refused", user="bob", camera="c2", detail={"reason": "area"})
        await log.record("login.ok", user="bob")
        rows = await log.query(user="bob")
        assert [r["action"] for r in rows] == ["login.ok", "live.refused"]
        assert (await log.query(action="live.*", outcome="refused"))[0]["detail"] == {"reason": "area"}
    assert [e.kind for e in seen] == ["audit.live.start", "audit.live.refused", "audit.login.ok"]
