"""``citygate audit verify`` catches checkpoints removed from the top: with checkpoints on,
entries left unsigned for longer than checkpoint-minutes (plus a margin) mean the newest
checkpoints were deleted, from the database and from the checkpoint file alike."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.access.audit import AuditLog
from gateway.access.checkpoints import AuditCheckpointer
from gateway.db import Database, audit_checkpoints
from gateway.evidence.signing import Signer
from tests.fixtures_app import ROOT

MINUTES = 10


def audit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "audit", *args], capture_output=True, text=True, timeout=120)


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def history(tmp_path: Path, database_url: str):
    """Two hours of a gateway's audit log, signed the way the gateway signs it (a
    checkpoint every ten minutes when the chain grew), with a quiet hour in between; the
    config dir a CLI run reads, and the checkpoint file."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.toml").write_text(
        f'[server]\ndata-dir = "data"\n[database]\nurl = "{database_url}"\n'
        f'[audit]\ncheckpoint-minutes = {MINUTES}\ncheckpoint-file = "anchors/cp.jsonl"\n'
    )
    (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    signer = Signer.load_or_create(conf / "data" / "keys" / "evidence-signing-key.pem")  # the gateway's own key
    anchors = conf / "data" / "anchors" / "cp.jsonl"
    clock = Clock(time.time() - 4 * 3600)
    async with Database(database_url) as db:
        log = AuditLog(db, clock=clock)
        signing = AuditCheckpointer(db, signer, every=MINUTES * 60, file=anchors, clock=clock)
        for minute in range(180):
            quiet = 60 <= minute < 120  # nothing happens for an hour: nothing to sign either
            if not quiet:
                for i in range(3):
                    clock.now += 1
                    await log.record("live.start", user="op", camera=f"cam{i}")
            clock.now += 57
            if minute % MINUTES == MINUTES - 1:
                await signing.checkpoint()
        # the first entry after the quiet hour may wait up to a tick: still fine
        clock.now += 30
        await log.record("login", user="op")
    return conf, database_url, anchors


async def top_checkpoints(url: str, n: int) -> list[int]:
    async with Database(url) as db, db.connect() as conn:
        ids = (await conn.execute(sa.select(audit_checkpoints.c.id).order_by(audit_checkpoints.c.id.desc()).limit(n))).scalars()
        return list(ids)


async def delete_checkpoints(url: str, ids: list[int] | None) -> None:
    async with Database(url) as db, db.begin() as conn:
        query = audit_checkpoints.delete()
        await conn.execute(query if ids is None else query.where(audit_checkpoints.c.id.in_(ids)))


async def test_an_intact_history_with_a_quiet_hour_passes(history):
    conf, _, anchors = history
    ok = await asyncio.to_thread(audit_cli, "verify", "--config", str(conf), "--anchor-file", str(anchors))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit chain intact" in ok.stdout and "  - " not in ok.stdout


async def test_the_newest_checkpoints_deleted_from_the_database_and_the_file_fail(history):
    conf, url, anchors = history
    top = await top_checkpoints(url, 3)
    await delete_checkpoints(url, top)
    lines = anchors.read_text().splitlines(keepends=True)
    anchors.write_text("".join(lines[:-3]))  # the same three, from the copy outside the database
    bad = await asyncio.to_thread(audit_cli, "verify", "--config", str(conf), "--anchor-file", str(anchors))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"the newest signed checkpoint, checkpoint {min(top) - 1} (signed" in bad.stdout
    assert "are not covered: with checkpoint-minutes = 10 a later checkpoint must cover entry" in bad.stdout
    assert "so the newest checkpoints were deleted" in bad.stdout


async def test_all_checkpoints_deleted_fail(history):
    conf, url, anchors = history
    await delete_checkpoints(url, None)
    anchors.unlink()
    bad = await asyncio.to_thread(audit_cli, "verify", "--config", str(conf))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "signed checkpoints: none" in bad.stdout
    assert "no signed checkpoint vouches for any entry, yet entries 1 to" in bad.stdout
    assert "its checkpoints were deleted" in bad.stdout


async def test_with_checkpoints_off_nothing_is_expected(history):
    conf, url, _ = history
    await delete_checkpoints(url, None)
    text = (conf / "gateway.toml").read_text().replace(f"checkpoint-minutes = {MINUTES}", "checkpoint-minutes = 0")
    (conf / "gateway.toml").write_text(text)
    ok = await asyncio.to_thread(audit_cli, "verify", "--config", str(conf))
    assert ok.returncode == 0, ok.stdout + ok.stderr
