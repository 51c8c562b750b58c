"""Signed audit checkpoints: a chain rewritten or cut short by someone who can write the
database is caught, by the checkpoints in the database or by the copies kept elsewhere."""

import asyncio
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.access.audit import FIELDS, AuditLog, chain_hash
from gateway.access.checkpoints import AuditCheckpointer, read_anchor_file, sign_checkpoint, verify_chain
from gateway.appkeys import CONFIG, SIGNER
from gateway.db import Database, audit, audit_checkpoints
from gateway.evidence.signing import Signer, public_pem

@pytest.fixture
async def db(database_url):
    async with Database(database_url) as database:
        yield database


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def trusted(signer):
    return {signer.fingerprint: signer.public_key}


async def write(log: AuditLog, n: int) -> None:
    for i in range(n):
        await log.record("playback.start", user="officer", camera=f"cam{i % 3}")


async def rewrite_from(db: Database, entry_id: int, **changes) -> None:
    """What someone with write access to the database and this source code can do: edit an
    entry and recompute every hash after it, so the chain is consistent again."""
    async with db.begin() as conn:
        await conn.execute(audit.update().where(audit.c.id == entry_id).values(**changes))
        prev = (await conn.execute(sa.select(audit.c.hash).where(audit.c.id == entry_id - 1))).scalar_one()
        rows = (await conn.execute(sa.select(*[audit.c[f] for f in FIELDS]).where(audit.c.id >= entry_id).order_by(audit.c.id))).mappings().all()
        for row in rows:
            new = chain_hash(prev, dict(row))
            await conn.execute(audit.update().where(audit.c.id == row["id"]).values(prev_hash=prev, hash=new))
            prev = new


async def test_checkpoints_vouch_for_the_head_and_only_when_it_moved(db, signer, trusted, tmp_path):
    events = []
    file = tmp_path / "anchors" / "audit-checkpoints.jsonl"
    async with AuditLog(db) as log:
        checkpointer = AuditCheckpointer(db, signer, every=0, file=file, publish=events.append)
        assert await checkpointer.checkpoint() is None  # empty chain: nothing to vouch for
        await write(log, 20)
        first = await checkpointer.checkpoint()
        assert (first.id, first.entry_id) == (1, 20)
        assert await checkpointer.checkpoint() is None  # head unchanged
        await write(log, 5)
        second = await checkpointer.checkpoint()
        assert (second.id, second.entry_id) == (2, 25)
    assert [e.kind for e in events] == ["audit.checkpoint", "audit.checkpoint"]
    assert events[1].detail == second.to_json()
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert lines == [first.to_json(), second.to_json()]

    report = await verify_chain(db, trusted, anchors=read_anchor_file(file)[0])
    assert report.ok, report
    assert (report.chain.checked, report.chain.vouched, report.checkpoints) == (25, 2, 2)


async def test_a_recomputed_chain_is_caught_by_the_checkpoint(db, signer, trusted):
    async with AuditLog(db) as log:
        await write(log, 20)
        await AuditCheckpointer(db, signer, every=0).checkpoint()
        await write(log, 10)
    await rewrite_from(db, 7, user="someone-else")
    # the chain alone is consistent again: this is what checkpoints are for
    assert (await AuditLog(db).verify()).ok
    report = await verify_chain(db, trusted)
    assert not report.ok and report.chain.broken_id == 20
    assert "entry 20 is not the entry checkpoint 1 (signed" in report.chain.reason
    assert "the chain up to it was rewritten" in report.chain.reason


async def test_entries_rewritten_after_the_newest_checkpoint_are_not_caught(db, signer, trusted):
    """The limit, stated: what was written since the newest checkpoint can still be
    rewritten unnoticed, which is why checkpoints are made every few minutes."""
    async with AuditLog(db) as log:
        await write(log, 10)
        await AuditCheckpointer(db, signer, every=0).checkpoint()
        await write(log, 10)
    await rewrite_from(db, 15, user="someone-else")
    assert (await verify_chain(db, trusted)).ok


async def test_a_truncated_chain_with_its_checkpoints_deleted_is_caught_by_the_file(db, signer, trusted, tmp_path):
    file = tmp_path / "audit-checkpoints.jsonl"
    checkpointer = AuditCheckpointer(db, signer, every=0, file=file)
    async with AuditLog(db) as log:
        await write(log, 10)
        await checkpointer.checkpoint()
        await write(log, 10)
        await checkpointer.checkpoint()
    async with db.begin() as conn:  # remove the last ten entries and the checkpoint vouching for them
        await conn.execute(audit.delete().where(audit.c.id > 10))
        await conn.execute(audit_checkpoints.delete().where(audit_checkpoints.c.id == 2))
    assert (await verify_chain(db, trusted)).ok  # the database alone cannot tell
    report = await verify_chain(db, trusted, anchors=read_anchor_file(file)[0])
    assert not report.ok
    assert report.chain.broken_id == 11
    assert "the chain ends at entry 10 but checkpoint 2 (signed" in report.chain.reason
    assert "vouches for entry 20: entries after 10 were deleted" in report.chain.reason
    assert any("checkpoint 2 (signed" in p and "audit-checkpoints.jsonl line 2) is missing from the database" in p for p in report.problems)


async def test_forged_edited_and_deleted_checkpoints_are_named(db, signer, trusted):
    checkpointer = AuditCheckpointer(db, signer, every=0)
    async with AuditLog(db) as log:
        for _ in range(3):
            await write(log, 5)
            await checkpointer.checkpoint()
    head = (await AuditLog(db).verify()).head
    forger = Signer(Ed25519PrivateKey.generate())
    forged = sign_checkpoint(forger, id=4, at=1.0, entry_id=15, entry_hash=head)
    async with db.begin() as conn:
        await conn.execute(audit_checkpoints.insert().values(**forged.to_json()))
        await conn.execute(audit_checkpoints.update().where(audit_checkpoints.c.id == 3).values(entry_hash="0" * 64))
        await conn.execute(audit_checkpoints.delete().where(audit_checkpoints.c.id == 2))
    report = await verify_chain(db, trusted)
    assert not report.ok
    problems = "\n".join(report.problems)
    assert "checkpoint 2 is missing from the database: it was deleted" in problems
    assert "checkpoint 3 (signed" in problems and "has an invalid signature: it was forged or edited" in problems
    assert f"is signed by key {forger.fingerprint[:16]}…, which is not trusted" in problems
    # the forger's key, if someone trusts it, makes its checkpoint count: trust is the verifier's choice
    both = dict(trusted, **{forger.fingerprint: forger.public_key})
    assert "not trusted" not in "\n".join((await verify_chain(db, both)).problems)


def test_a_torn_line_in_the_checkpoint_file_is_named(tmp_path, signer):
    file = tmp_path / "cp.jsonl"
    good = sign_checkpoint(signer, id=1, at=2.0, entry_id=3, entry_hash="a" * 64)
    file.write_text(json.dumps(good.to_json()) + "\n" + '{"id": 2, "at": 3.0, "entry_id"')
    found, problems = read_anchor_file(file)
    assert [cp for cp, _ in found] == [good]
    assert len(problems) == 1 and problems[0].startswith(f"{file} line 2 is not a checkpoint: ")


# --------------------------------------------------------------------------------------
# in the running gateway and through the CLI

GATEWAY = """
[audit]
checkpoint-minutes = 0.01
checkpoint-file = "anchors/audit-checkpoints.jsonl"
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "audit", *args], capture_output=True, text=True, timeout=120)


async def test_gateway_signs_checkpoints_serves_them_to_auditors_and_the_cli_checks_them(make_gateway, tmp_path):
    gw = await make_gateway("", GATEWAY)
    conf = str(gw.conf_dir)
    anchors = gw.conf_dir / "data" / "anchors" / "audit-checkpoints.jsonl"
    auditor = await gw.sign_in("aud", role="auditor")
    for _ in range(100):
        if anchors.exists() and anchors.read_text().count("\n") >= 1:
            break
        await asyncio.sleep(0.1)
    async with gw.session.get(f"{gw.url}/api/audit/checkpoints") as resp:
        assert resp.status == 403  # operators do not read the audit log
    async with auditor.get(f"{gw.url}/api/audit/checkpoints?limit=1") as resp:
        assert resp.status == 200
        newest = (await resp.json())["checkpoints"]
    assert len(newest) == 1 and newest[0]["id"] >= 1
    async with auditor.get(f"{gw.url}/api/evidence/public-key") as resp:
        key_file = tmp_path / "gateway.pem"
        key_file.write_bytes(await resp.read())
    assert newest[0]["key_fingerprint"] == gw.app[SIGNER].fingerprint

    await gw.server.close()  # shutting down signs a last checkpoint after the 'gateway.stop' entry
    db_url = gw.app[CONFIG].database_url
    lines = [json.loads(line) for line in anchors.read_text().splitlines()]
    ok = cli("verify", "--config", conf, "--key", str(key_file), "--anchor-file", str(anchors))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit chain intact" in ok.stdout
    assert f"the newest vouches for entry {lines[-1]['entry_id']}" in ok.stdout
    head_entries = int(ok.stdout.split("audit chain intact: ")[1].split()[0])
    assert lines[-1]["entry_id"] == head_entries  # the last checkpoint covers the shutdown's entries
    assert cli("checkpoint", "--config", conf).stdout.startswith("the newest checkpoint already covers")

    async with Database(db_url) as db:
        await rewrite_from(db, 2, client="198.51.100.7")
    bad = cli("verify", "--config", conf, "--anchor-file", str(anchors))
    assert bad.returncode == 1
    assert "audit chain BROKEN at entry" in bad.stdout and "the chain up to it was rewritten" in bad.stdout
    other = tmp_path / "other.pem"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    untrusted = cli("verify", "--config", conf, "--key", str(other))
    assert untrusted.returncode == 1 and "which is not trusted (give its public key with --key)" in untrusted.stdout
