"""Backup to the city data centre: the replication report proves the replica holds every
segment with the same SHA-256, finds a deleted and a corrupted replica object, and
``citygate recordings restore`` (a real subprocess) brings back a segment the primary lost.

Real parts: a gateway recording a live demo camera to local disk, replicated to a real S3
server (moto) on loopback; the report and the segment read over HTTP; the CLI run as its
own process against the same database and storage.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.appkeys import AUDIT, RECORDING
from gateway.recording.index import Segment
from tests.fixtures_app import ROOT, RunningGateway, camera_toml
from tests.fixtures_s3 import MotoServer
from tests.test_metrics import api_token, scrape, value

CAM = "cam"


async def poll(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Await ``check()`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.1)


@pytest.fixture
async def gw(make_gateway, moto_server: MotoServer, s3_bucket: str) -> RunningGateway:
    options = moto_server.storage_options(s3_bucket)
    replica = "".join(f'{key} = "{val}"\n' for key, val in options.items())
    gw = await make_gateway(
        camera_toml(CAM, "demo", width=160, height=120, fps=10, keyframe_interval=1.0, pattern="bars"),
        "[recording]\nsegment-seconds = 1\n"
        # read back every 2 s here (a day by default)
        '[recording.replicate-to]\nbackend = "s3"\nverify-interval-hours = 0.0005\n'
        f"[recording.replicate-to.options]\n{replica}",
    )
    gw.bucket = s3_bucket  # type: ignore[attr-defined]
    gw.s3 = moto_server  # type: ignore[attr-defined]
    await gw.wait_online(CAM)
    return gw


async def report(session: aiohttp.ClientSession, gw: RunningGateway) -> dict:
    async with session.get(gw.url + "/api/recordings/replication") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def camera_row(body: dict) -> dict:
    return next((c for c in body["cameras"] if c["camera"] == CAM), {})


async def verified_segments(gw: RunningGateway, count: int) -> list[Segment]:
    """Wait until the background verification has read ``count`` segments back intact."""
    catalogue = gw.app[RECORDING].catalogue

    async def enough() -> list[Segment] | None:
        body = await report(gw.session_admin, gw)  # type: ignore[attr-defined]
        if camera_row(body).get("verified", 0) < count:
            return None
        return [s for s in await catalogue.all_segments(CAM) if s.replicated_at is not None][:count]

    return await poll(enough, f"{count} segments verified on the replica")


async def test_report_finds_a_deleted_and_a_corrupted_replica_object(gw: RunningGateway) -> None:
    admin = gw.session_admin = await gw.sign_in("admin1", role="admin")  # type: ignore[attr-defined]
    operator = await gw.sign_in("op", role="operator", all_areas=True)
    a, b, *_ = await verified_segments(gw, 3)

    body = await report(admin, gw)
    row = camera_row(body)
    assert body["replica"] == "s3" and row["verified"] >= 3 and row["missing"] == row["corrupted"] == 0
    assert row["last_verified"] is not None and body["last_run"]["by"] is None  # the background job

    # The city data centre loses one object, and another one is damaged.
    s3 = gw.s3.client()  # type: ignore[attr-defined]
    await asyncio.to_thread(s3.delete_object, Bucket=gw.bucket, Key=a.storage_key)  # type: ignore[attr-defined]
    garbage = b"not the segment" * 100
    await asyncio.to_thread(s3.put_object, Bucket=gw.bucket, Key=b.storage_key, Body=garbage)  # type: ignore[attr-defined]

    asked = time.time()
    async with admin.post(gw.url + "/api/recordings/replication/verify") as resp:
        assert resp.status == 202, await resp.text()

    async def found() -> dict | None:
        body = await report(admin, gw)
        problems = {(p["segment"], p["state"]) for p in body["problems"]}
        return body if {(a.id, "missing"), (b.id, "corrupted")} <= problems else None

    body = await poll(found, "the deleted and the corrupted object in the report")
    row = camera_row(body)
    assert (row["missing"], row["corrupted"]) == (1, 1) and body["complete"] is False
    assert row["expected"] == row["verified"] + row["missing"] + row["corrupted"] + row["pending"] + row["unverified"]
    corrupted = next(p for p in body["problems"] if p["segment"] == b.id)
    assert corrupted["found_sha256"] == hashlib.sha256(garbage).hexdigest() and corrupted["sha256"] == b.sha256

    # The administrator's run is in the audit log with what it found.
    audit = gw.app[AUDIT]

    async def admins_run() -> list[dict]:
        await audit.flush()
        return [e for e in await audit.query(action="replication.verify", user="admin1") if e["at"] >= asked]

    entry = (await poll(admins_run, "the administrator's verification in the audit log"))[0]
    assert (entry["detail"]["missing"], entry["detail"]["corrupted"], entry["outcome"]) == (1, 1, "ok")

    # The metric says the same.
    samples = await scrape(gw, await api_token(gw, "prom", "monitoring"))
    assert value(samples, "citygate_replica_segments", camera=CAM, state="missing") == 1
    assert value(samples, "citygate_replica_segments", camera=CAM, state="corrupted") == 1
    assert value(samples, "citygate_replica_last_verified_timestamp_seconds", camera=CAM) >= asked

    # An operator neither reads the report nor starts a verification; both refusals audited.
    async with operator.get(gw.url + "/api/recordings/replication") as resp:
        assert resp.status == 403 and "system.monitor" in (await resp.json())["error"]
    async with operator.post(gw.url + "/api/recordings/replication/verify") as resp:
        assert resp.status == 403 and "cameras.manage" in (await resp.json())["error"]
    await audit.flush()
    refused = {e["action"] for e in await audit.query(user="op", outcome="refused")}
    assert {"system.monitor", "cameras.manage"} <= refused


async def test_restore_brings_back_a_segment_the_primary_lost(gw: RunningGateway) -> None:
    gw.session_admin = await gw.sign_in("admin1", role="admin")  # type: ignore[attr-defined]
    _, c, d, *_ = await verified_segments(gw, 4)
    recordings = gw.app[RECORDING].config.data_dir / "recordings"
    # The primary loses two segments; the replica's copy of one of them is damaged too.
    (recordings / c.storage_key).unlink()
    (recordings / d.storage_key).unlink()
    s3 = gw.s3.client()  # type: ignore[attr-defined]
    await asyncio.to_thread(s3.put_object, Bucket=gw.bucket, Key=d.storage_key, Body=b"damaged")  # type: ignore[attr-defined]

    async def run_restore(start: float, end: float) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "recordings", "restore", "--config", str(gw.conf_dir), "--camera", CAM,
            "--from", repr(start), "--to", repr(end),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode, out.decode() + err.decode()

    code, output = await run_restore(c.start + 0.01, d.end - 0.01)
    assert code == 1, output  # one segment could not be restored
    assert f"restored: segment {c.id}" in output, output
    assert f"NOT restored: segment {d.id}" in output and "corrupted" in output, output
    # c is back on the primary, byte for byte; d's damaged replica copy was never written there.
    assert hashlib.sha256((recordings / c.storage_key).read_bytes()).hexdigest() == c.sha256
    assert not (recordings / d.storage_key).exists()

    # It plays from the primary: the replica's copy is not needed any more.
    await asyncio.to_thread(s3.delete_object, Bucket=gw.bucket, Key=c.storage_key)  # type: ignore[attr-defined]
    async with gw.session.get(f"{gw.url}/api/cameras/{CAM}/recordings/segments/{c.id}.mp4") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "video/mp4"
        assert hashlib.sha256(await resp.read()).hexdigest() == c.sha256

    # Run again over c alone: nothing to do.
    code, output = await run_restore(c.start + 0.01, c.end - 0.01)
    assert code == 0 and "1 intact, 0 restored" in output, output

    audit = gw.app[AUDIT]
    await audit.flush()
    runs = await audit.query(action="recording.restore", camera=CAM)
    assert [e["outcome"] for e in runs] == ["ok", "failed"]  # newest first
    failed = runs[1]
    assert failed["user"].startswith("cli:") and failed["detail"]["restored"] == [c.id]
    assert [u["segment"] for u in failed["detail"]["unrecoverable"]] == [d.id]
