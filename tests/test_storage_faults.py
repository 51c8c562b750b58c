"""Faults of the recording storage and the database, with real parts: a full disk (a tmpfs the
test mounts), a database locked by another connection (SQLite) or stopped (PostgreSQL, CI's
second pass), and an S3 bucket that will never answer (the moto server)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from gateway.appkeys import AUDIT, CAMERAS, EVENTS, IDENTITY, RECORDING
from gateway.interfaces import Event
from tests.fixtures_app import ROOT, TEST_PASSWORD, RunningGateway, camera_toml

#: A small, cheap camera: 1 s segments of a few kilobytes.
CAMERA = camera_toml("cam", "demo", width=320, height=180, fps=10, bitrate=60_000, keyframe_interval=0.5, pattern="bars")
RECORDING_TOML = """
[recording]
segment-seconds = 1
free-space-min-gb = 0
sweep-interval = 3600
"""


async def poll(fetch: Callable[[], Any], until: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if until(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {value}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def collected(gw: RunningGateway) -> AsyncIterator[list[Event]]:
    """The gateway's events while the block runs."""
    events: list[Event] = []
    ready = asyncio.Event()

    async def collect() -> None:
        stream = gw.app[EVENTS].subscribe()
        waiting = asyncio.ensure_future(stream.__anext__())
        ready.set()
        while True:
            events.append(await waiting)
            waiting = asyncio.ensure_future(stream.__anext__())

    task = asyncio.create_task(collect())
    await ready.wait()
    try:
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


async def audited(gw: RunningGateway, action: str) -> list[dict[str, Any]]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(action=action)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of the test's own (needs root, as CI runs); unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def check_playable(path: Path, size: int, sha256: str) -> None:
    data = path.read_bytes()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256, path
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).width == 320


async def test_a_full_disk_drops_the_oldest_unheld_recordings_then_records_a_gap_and_resumes(make_gateway, small_disk: Path) -> None:
    gw = await make_gateway(CAMERA, RECORDING_TOML + f'[storage.options]\npath = "{small_disk}"\n')
    recording = gw.app[RECORDING]
    await gw.wait_online("cam")
    stats = recording.recorders["cam"].stats
    await poll(lambda: asyncio.sleep(0, stats.segments), lambda n: n >= 2, 20, "two segments")
    first = (await recording.catalogue.segments("cam", 0, time.time()))[0]
    await recording.place_hold("cam", first.start, first.end, "case 1", by="tester")

    async with collected(gw) as events:
        # 1. the disk fills with recordings: the oldest that no hold keeps make way
        filler = small_disk / "not-a-recording"
        filler.write_bytes(b"\0" * max(0, shutil.disk_usage(small_disk).free - 80_000))
        await poll(lambda: audited(gw, "retention.delete"), lambda rows: any(r["detail"].get("reason") == "disk full" for r in rows), 20,
                   "recordings deleted to make room")
        assert (small_disk / first.storage_key).exists(), "a held segment was deleted"
        assert stats.failing is None and "storage.full" not in kinds(events)

        # 2. everything is held: nothing may go, so the recording stops with a gap "disk full"
        await recording.place_hold("cam", time.time() - 3600, time.time() + 3600, "case 2", by="tester")
        filler2 = small_disk / "not-a-recording-either"
        with contextlib.suppress(OSError):
            filler2.write_bytes(b"\0" * shutil.disk_usage(small_disk).free)
        await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "storage.full" in k, 20, "the storage.full alarm")
        alarm = next(e for e in events if e.kind == "recording.alarm")
        assert alarm.camera == "cam" and alarm.detail["reason"] == "disk full"
        health = await gw.get_json("/api/health")
        assert health["status"] == "degraded" and health["faults"][0]["kind"] == "storage.full", health
        await poll(lambda: gw.get_json("/api/health/cameras/cam"), lambda h: any(a["kind"] == "disk_full" for a in h["alarms"]), 10,
                   "the camera's disk_full alarm")
        gaps = await poll(lambda: recording.catalogue.timeline("cam", 0, time.time() + 1),
                          lambda t: any(getattr(g, "reason", None) == "disk full" for g in t), 10, "a gap 'disk full'")
        # live video goes on meanwhile
        async with gw.session.get(gw.url + "/api/cameras/cam/hls/index.m3u8") as resp:
            assert resp.status == 200
        before = gw.app[CAMERAS].get("cam").hub.stats().packets
        await poll(lambda: asyncio.sleep(0, gw.app[CAMERAS].get("cam").hub.stats().packets), lambda n: n > before + 5, 10, "live packets")
        assert not list(small_disk.rglob("*.part")), "a partial segment was left on the full disk"

        # 3. space returns: recording resumes by itself
        filler.unlink()
        filler2.unlink(missing_ok=True)
        stored = stats.segments
        await poll(lambda: asyncio.sleep(0, stats.segments), lambda n: n >= stored + 1, 20, "recording resumed")
        await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "storage.recovered" in k, 10, "storage.recovered")
        assert (await gw.get_json("/api/health"))["faults"] == []
    assert [r["outcome"] for r in await audited(gw, "storage.full")] == ["failed"]
    assert len(await audited(gw, "storage.recovered")) == 1

    # no corrupt segment was ever catalogued: each one is whole and plays
    timeline = await recording.catalogue.segments("cam", 0, time.time() + 1)
    assert timeline and any(g.reason == "disk full" for g in gaps if hasattr(g, "reason"))
    for seg in timeline:
        check_playable(small_disk / seg.storage_key, seg.bytes, seg.sha256)


# -- S3: permanent errors are not outages ----------------------------------------------------


def s3_toml(moto_server: Any, bucket: str) -> str:
    options = moto_server.storage_options(bucket, retries=1, timeout=2)
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    return f'[storage]\nbackend = "s3"\n[storage.options]\n{lines}'


def test_a_bucket_that_cannot_be_is_named_by_check_config_and_refused_at_start(tmp_path: Path, moto_server: Any, s3_bucket: str) -> None:
    def run(bucket: str, *command: str) -> subprocess.CompletedProcess[str]:
        conf = tmp_path / bucket.replace(" ", "_")
        if not conf.exists():
            conf.mkdir()
            (conf / "gateway.toml").write_text('[server]\ndata-dir = "data"\n' + s3_toml(moto_server, bucket))
            (conf / "cameras.toml").write_text("")
            (conf / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
        return subprocess.run([sys.executable, "-m", "gateway", *command, "--config", str(conf)] if command[0] == "serve"
                              else [sys.executable, "-m", "gateway", *command, str(conf)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)

    missing = run("no-such-bucket", "check-config", "--probe")
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "probe [storage.options]: failed: gateway.toml: storage.options.bucket:" in missing.stdout
    assert "'no-such-bucket': the bucket does not exist" in missing.stdout
    good = run(s3_bucket, "check-config", "--probe")
    assert good.returncode == 0 and "probe [storage.options]: ok: s3: writable" in good.stdout, good.stdout + good.stderr
    # serve refuses to start, naming the key, instead of spooling "until the bucket answers"
    refused = run("no-such-bucket", "serve", "--port", "0")
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "configuration error:\n  gateway.toml: storage.options.bucket: storage s3: bucket 'no-such-bucket': the bucket does not exist" in refused.stderr


async def test_a_bucket_gone_at_run_time_raises_storage_failed_instead_of_spooling(make_gateway, moto_server: Any) -> None:
    bucket = moto_server.create_bucket()
    gw = await make_gateway(CAMERA, RECORDING_TOML + s3_toml(moto_server, bucket))
    recording = gw.app[RECORDING]
    await gw.wait_online("cam")
    stats = recording.recorders["cam"].stats
    await poll(lambda: asyncio.sleep(0, stats.segments), lambda n: n >= 1, 20, "a segment in the bucket")
    async with collected(gw) as events:
        client = moto_server.client()

        async def delete_bucket() -> bool:
            for key in moto_server.list_keys(bucket):
                client.delete_object(Bucket=bucket, Key=key)
            try:
                client.delete_bucket(Bucket=bucket)
            except client.exceptions.ClientError:
                return False  # a segment came in meanwhile
            return True

        await poll(delete_bucket, bool, 10, "the bucket deleted")
        await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "storage.failed" in k, 20, "the storage.failed alarm")
        failed = next(e for e in events if e.kind == "storage.failed")
        assert failed.detail["key"] == "bucket" and "does not exist" in failed.detail["reason"], failed
        assert recording.storage.spooled == 0, "a permanent error must not spool"
        health = await gw.get_json("/api/health")
        assert health["faults"][0]["kind"] == "storage.failed" and bucket in health["faults"][0]["reason"]
        await poll(lambda: gw.get_json("/api/health/cameras/cam"), lambda h: any(a["kind"] == "storage_failed" for a in h["alarms"]),
                   10, "the camera's storage_failed alarm")
        # the bucket is back (made again by its owner): recording resumes by itself
        client.create_bucket(Bucket=bucket)
        await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "storage.recovered" in k, 20, "storage.recovered")
    assert [r["outcome"] for r in await audited(gw, "storage.failed")] == ["failed"]
    gaps = await recording.catalogue.timeline("cam", 0, time.time() + 1)
    assert any(getattr(g, "reason", None) == "storage failed" for g in gaps)


# -- the database locked or away -------------------------------------------------------------


@contextlib.contextmanager
def sqlite_write_lock(path: Path) -> Iterator[None]:
    """Another connection holding the write lock (as a long migration or a backup tool would)."""
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


async def test_a_locked_database_keeps_live_video_and_catalogues_the_segments_afterwards(make_gateway, database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL pass stops the server instead: test_postgresql_stopped_for_seconds")
    gw = await make_gateway(CAMERA, RECORDING_TOML)
    recording = gw.app[RECORDING]
    await gw.wait_online("cam")
    stats = recording.recorders["cam"].stats
    await poll(lambda: asyncio.sleep(0, stats.segments), lambda n: n >= 1, 20, "a segment")
    await gw.app[IDENTITY].create_user("station1", role="rescue-station", password=TEST_PASSWORD)
    async with collected(gw) as events:
        with sqlite_write_lock(gw.conf_dir / "data" / "citygate.db"):
            t0 = time.time()
            await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "database.unavailable" in k, 20, "database.unavailable")
            health = await gw.get_json("/api/health")
            assert health["status"] == "degraded" and health["faults"][0]["kind"] == "database.unavailable", health
            assert "locked" in health["faults"][0]["reason"]
            # a request that must write answers 503 with the reason, not 500
            async with gw.session.post(gw.url + "/api/pushes", json={"cameras": ["cam"], "stations": ["station1"], "reason": "test"}) as resp:
                body = await resp.json()
                assert resp.status == 503 and body["error"].startswith("database unavailable"), (resp.status, body)
            before = gw.app[CAMERAS].get("cam").hub.stats().packets
            await poll(lambda: asyncio.sleep(0, gw.app[CAMERAS].get("cam").hub.stats().packets), lambda n: n > before + 10, 10, "live packets")
            waiting = await poll(lambda: asyncio.sleep(0, stats.uncatalogued), lambda n: n >= 2, 20, "segments waiting")
            t1 = time.time()
        await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "database.recovered" in k, 20, "database.recovered")
    await poll(lambda: asyncio.sleep(0, stats.uncatalogued), lambda n: n == 0, 20, "the backlog catalogued")
    assert waiting >= 2
    # every second of the lock is in the catalogue: no gap at all
    timeline = await recording.catalogue.timeline("cam", t0, min(t1, stats.last_segment_end))
    assert timeline and not [g for g in timeline if getattr(g, "reason", None) is not None and not hasattr(g, "sha256")], timeline
    assert [r["outcome"] for r in await audited(gw, "database.unavailable")] == ["failed"]
    assert len(await audited(gw, "database.recovered")) == 1
    assert (await gw.get_json("/api/health"))["faults"] == []


async def test_postgresql_stopped_for_seconds(make_gateway, database_url: str) -> None:
    """CI's second pass: its PostgreSQL (scripts/postgres.sh) stopped for 10 s under a recording gateway."""
    pgdata, pgbin = os.environ.get("CITYGATE_TEST_PGDATA"), os.environ.get("CITYGATE_TEST_PG_BIN")
    if not database_url.startswith("postgresql") or not pgdata or not pgbin:
        pytest.skip("needs CI's PostgreSQL; on SQLite the lock test covers the outage")
    gw = await make_gateway(CAMERA, RECORDING_TOML)
    recording = gw.app[RECORDING]
    await gw.wait_online("cam")
    stats = recording.recorders["cam"].stats
    await poll(lambda: asyncio.sleep(0, stats.segments), lambda n: n >= 1, 20, "a segment")
    await gw.app[IDENTITY].create_user("station1", role="rescue-station", password=TEST_PASSWORD)
    options = " ".join(shlex.quote(a) for a in shlex.split((Path(pgdata) / "postmaster.opts").read_text())[1:])

    def pg_ctl(*args: str) -> None:
        command = " ".join([f"{pgbin}/pg_ctl", "-D", pgdata, *args])
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c", command], check=True, capture_output=True, timeout=60)

    async with collected(gw) as events:
        t0 = time.time()
        pg_ctl("-m", "immediate", "stop")
        try:
            await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "database.unavailable" in k, 20, "database.unavailable")
            async with gw.session.post(gw.url + "/api/pushes", json={"cameras": ["cam"], "stations": ["station1"], "reason": "test"}) as resp:
                body = await resp.json()
                assert resp.status == 503 and body["error"].startswith("database unavailable"), (resp.status, body)
            async with gw.session.get(gw.url + "/api/health") as resp:  # signing in needs the database too
                assert resp.status in (200, 503), resp.status
            assert recording.faults.get("database") is not None
            before = gw.app[CAMERAS].get("cam").hub.stats().packets
            await poll(lambda: asyncio.sleep(0, gw.app[CAMERAS].get("cam").hub.stats().packets), lambda n: n > before + 10, 10, "live packets")
            await poll(lambda: asyncio.sleep(0, time.time() - t0), lambda s: s >= 10, 20, "ten seconds")
            waiting = stats.uncatalogued
        finally:
            pg_ctl("-w", "-l", f"{pgdata}/server.log", "-o", shlex.quote(options), "start")
        t1 = time.time()
        await poll(lambda: asyncio.sleep(0, kinds(events)), lambda k: "database.recovered" in k, 30, "database.recovered")
    await poll(lambda: asyncio.sleep(0, stats.uncatalogued), lambda n: n == 0, 30, "the backlog catalogued")
    assert waiting >= 5
    timeline = await recording.catalogue.timeline("cam", t0, min(t1, stats.last_segment_end))
    assert timeline and not [g for g in timeline if not hasattr(g, "sha256")], timeline
    assert [r["outcome"] for r in await audited(gw, "database.unavailable")] == ["failed"]
    assert (await gw.get_json("/api/health"))["faults"] == []


def test_permanent_s3_errors_name_the_option_and_outages_do_not(tmp_path: Path) -> None:
    """The codes moto cannot produce (it takes any credentials), classified as AWS sends them."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    from citygate_plugins.storage.s3 import S3Options, S3Storage

    storage = S3Storage(S3Options(bucket="cctv"), data_dir=str(tmp_path))

    def error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")

    for code, key in [("SignatureDoesNotMatch", "secret-access-key"), ("InvalidAccessKeyId", "access-key-id"),
                      ("AccessDenied", "access-key-id"), ("NoSuchBucket", "bucket"), ("AuthorizationHeaderMalformed", "region")]:
        failed = storage.permanent(error(code))
        assert failed is not None and failed.key == key and code in failed.message and "'cctv'" in failed.message
    for transient in [error("SlowDown"), error("InternalError"), error("503"), EndpointConnectionError(endpoint_url="http://s3"), TimeoutError()]:
        assert storage.permanent(transient) is None, transient
