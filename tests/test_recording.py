"""Recording end to end: a demo camera through a real Camera and hub, recorded into local
disk and into S3 (a real moto server); an S3 outage; kill -9 mid-segment; a recorder that
falls behind; and the catalogue's timeline over many rows."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

import citygate_plugins.storage.local as local_plugin
import citygate_plugins.storage.s3 as s3_plugin
from citygate_plugins.cameras.demo import DemoCamera, DemoOptions
from citygate_plugins.storage.local import LocalOptions
from citygate_plugins.storage.s3 import S3Options
from gateway.access.audit import AuditLog
from gateway.cameras import CameraManager
from gateway.config import (
    CameraConfig,
    Config,
    DatabaseConfig,
    HlsConfig,
    IngestConfig,
    LiveConfig,
    RecordingConfig,
    ReplicaConfig,
    ServerConfig,
    StorageConfig,
)
from gateway.db import Database, audit, segments
from gateway.events import EventBus
from gateway.interfaces import Event
from gateway.media.hub import StreamHub
from gateway.plugins import Plugins, load_plugins
from gateway.recording.index import Catalogue, Gap, Segment
from gateway.recording.recorder import FELL_BEHIND, GATEWAY_DOWN, Recorder
from gateway.recording.service import RecordingService
from tests.fixtures_s3 import MotoServer
from tests.media_fixtures import make_packets

GOP = 1.0  # demo camera keyframe interval, seconds


# -- helpers -------------------------------------------------------------------------------


def demo_camera(camera_id: str = "cam1") -> CameraConfig:
    return CameraConfig(
        id=camera_id, vendor="demo", area="centre",
        options=DemoOptions(width=320, height=240, keyframe_interval=GOP, bitrate=300_000),
    )


def make_config(root: Path, storage: StorageConfig, *, cameras: tuple[CameraConfig, ...], **recording: Any) -> Config:
    return Config(
        root=str(root), server=ServerConfig(data_dir=str(root / "data")), database=DatabaseConfig(),
        ingest=IngestConfig(), live=LiveConfig(), hls=HlsConfig(), storage=storage, cameras=cameras,
        recording=RecordingConfig(**recording),
    )


def storage_plugins() -> Plugins:
    plugins = load_plugins(entry_points=False)
    plugins.register(local_plugin, "local_storage")
    plugins.register(s3_plugin, "s3_storage")
    return plugins


def s3_storage(server: MotoServer, bucket: str, **extra: Any) -> StorageConfig:
    return StorageConfig(backend="s3", options=msgspec.convert(server.storage_options(bucket, **extra), S3Options))


def ffprobe(data: bytes, tmp: Path) -> dict[str, Any]:
    """ffprobe one segment on its own, decoding every frame."""
    path = tmp / f"probe-{hashlib.sha256(data).hexdigest()[:12]}.mp4"
    path.write_bytes(data)
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-count_packets", "-show_entries",
         "format=duration,start_time:stream=codec_name,width,height,nb_read_frames,nb_read_packets", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0 and not out.stderr.strip(), f"ffprobe: {out.stderr}"
    info = json.loads(out.stdout)
    path.unlink()
    fmt = info["format"]
    # Media time is the wall clock (epoch x 90 kHz), so the stream starts where the
    # segment starts in real time; ffprobe reports the end time as "duration".
    start = float(fmt["start_time"])
    return {"duration": float(fmt["duration"]) - start, "start_time": start, **info["streams"][0]}


async def check_segments_play(segs: list[Segment], read: Callable[[Segment], Any], tmp: Path) -> None:
    for seg in segs:
        data = await read(seg)
        assert len(data) == seg.bytes, seg
        assert hashlib.sha256(data).hexdigest() == seg.sha256, seg
        probe = await asyncio.to_thread(ffprobe, data, tmp)
        assert probe["codec_name"] == "h264" and (probe["width"], probe["height"]) == (320, 240)
        assert abs(probe["duration"] - seg.duration) < 0.1, (probe, seg)
        assert abs(probe["start_time"] - seg.start) < 0.05, (probe, seg)
        # every stored picture decodes (the demo camera may skip frames on a loaded machine,
        # so the count is compared with what was stored, not with 25 fps)
        assert int(probe["nb_read_frames"]) == int(probe["nb_read_packets"]) > 0, probe
        assert int(probe["nb_read_packets"]) >= seg.duration * 25 * 0.5, probe


async def audit_actions(db: Database, action: str) -> list[Any]:
    async with db.connect() as conn:
        return (await conn.execute(sa.select(audit).where(audit.c.action == action))).all()


@asynccontextmanager
async def gateway_parts(config: Config, events: EventBus | None = None) -> AsyncIterator[tuple[Database, AuditLog, CameraManager]]:
    events = events or EventBus()
    async with Database(config.database_url) as db, AuditLog(db) as log:
        async with CameraManager(config, {"demo": DemoCamera}, events) as cameras:
            yield db, log, cameras


@asynccontextmanager
async def idle_service(cfg: Config, plugins: Plugins, db: Database, log: AuditLog) -> AsyncIterator[RecordingService]:
    """A recording service that records nothing: for reading back what was recorded."""
    idle_cfg = msgspec.structs.replace(cfg, cameras=())
    async with RecordingService(idle_cfg, plugins, db, log, EventBus(), CameraManager(idle_cfg, {}, EventBus())) as rec:
        yield rec


async def check_recording(rec: RecordingService, tag: str, wall_seconds: float, tmp_path: Path) -> None:
    segs = await rec.catalogue.all_segments("cam1")
    assert len(segs) >= 4, (tag, segs)
    for a, b in zip(segs, segs[1:]):
        assert abs(b.start - a.end) < 0.01, (tag, "segments must be contiguous", a, b)
    for seg in segs[:-1]:  # the last one was cut by the stop
        # cut at the first keyframe after 5 s; a demo camera starved of CPU skips frame slots,
        # and a skipped keyframe slot puts the next keyframe one GOP later
        assert 5 - 0.05 <= seg.duration <= 5 + 2 * GOP + 0.05, seg
    recorded = sum(s.duration for s in segs)
    assert abs(recorded - (segs[-1].end - segs[0].start)) < 0.01
    assert 20 - 3 <= recorded <= wall_seconds + GOP, (tag, recorded)
    timeline = await rec.timeline("cam1", segs[0].start, segs[-1].end)
    assert timeline == segs  # no gaps inside a continuous recording

    async def read(seg: Segment) -> bytes:
        return b"".join([c async for c in rec.segment_stream(seg)])

    await check_segments_play(segs, read, tmp_path)


# -- recording into local disk and S3 at once ----------------------------------------------------


async def test_record_local_and_s3_segments_play_and_match(tmp_path: Path, moto_server: MotoServer) -> None:  # noqa: F811
    """One camera, three copies: local primary (replicated to a second bucket) and S3 primary."""
    cam = demo_camera()
    primary_bucket, replica_bucket = moto_server.create_bucket(), moto_server.create_bucket()
    replica = ReplicaConfig(backend="s3", options=msgspec.convert(moto_server.storage_options(replica_bucket), S3Options))
    local_cfg = make_config(tmp_path / "local", StorageConfig(backend="local", options=LocalOptions()),
                            cameras=(cam,), segment_seconds=5, replicate_to=replica)
    s3_cfg = make_config(tmp_path / "s3", s3_storage(moto_server, primary_bucket), cameras=(cam,), segment_seconds=5)
    plugins = storage_plugins()
    started = time.time()
    async with gateway_parts(local_cfg) as (db, log, cameras), Database(s3_cfg.database_url) as s3_db, AuditLog(s3_db) as s3_log:
        async with (
            RecordingService(local_cfg, plugins, db, log, EventBus(), cameras) as local_rec,
            RecordingService(s3_cfg, plugins, s3_db, s3_log, EventBus(), cameras) as s3_rec,
        ):
            await asyncio.sleep(20)
        stopped = time.time()
        # The last segment was stored as the service stopped; one more pass replicates it.
        async with idle_service(local_cfg, plugins, db, log) as again:
            await again.replicate_pending()
            lag = await again.replication_lag()
            assert lag is not None and lag.pending == 0

        for cfg, rec_db, rec_log, tag in ((local_cfg, db, log, "local"), (s3_cfg, s3_db, s3_log, "s3")):
            async with idle_service(cfg, plugins, rec_db, rec_log) as rec:  # serves what was recorded
                await check_recording(rec, tag, stopped - started, tmp_path)

        # catalogue and stored objects agree: count, bytes, SHA-256
        local_segs = await local_rec.catalogue.all_segments()
        files = {str(p.relative_to(local_cfg.data_dir / "recordings")): p for p in (local_cfg.data_dir / "recordings").rglob("*.mp4")}
        assert set(files) == {s.storage_key for s in local_segs}
        for seg in local_segs:
            assert seg.storage_key.startswith("cam1/") and seg.storage_key.endswith(f"cam1-{round(seg.start * 1000)}.mp4")
            data = files[seg.storage_key].read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (seg.bytes, seg.sha256)
        replicated = moto_server.list_keys(replica_bucket)
        assert replicated == {s.storage_key: s.bytes for s in local_segs}
        s3_segs = await s3_rec.catalogue.all_segments()
        assert moto_server.list_keys(primary_bucket) == {s.storage_key: s.bytes for s in s3_segs}
        for seg in s3_segs:
            assert hashlib.sha256(moto_server.get(primary_bucket, seg.storage_key)).hexdigest() == seg.sha256


# -- S3 outage -----------------------------------------------------------------------------------


async def test_s3_outage_every_segment_arrives_exactly_once(tmp_path: Path, own_moto_server: MotoServer) -> None:  # noqa: F811
    server = own_moto_server
    bucket = server.create_bucket()
    cfg = make_config(tmp_path, s3_storage(server, bucket, retries=2, timeout=1.0), cameras=(demo_camera(),), segment_seconds=2)
    async with gateway_parts(cfg) as (db, log, cameras):
        async with RecordingService(cfg, storage_plugins(), db, log, EventBus(), cameras) as rec:
            await asyncio.sleep(4)
            outage_started = time.time()
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(10)
            assert rec.storage.spooled >= 3  # segments kept coming, durably spooled
            spooled_segments = await rec.catalogue.all_segments()
            await asyncio.to_thread(server.start)  # same port, bucket re-created (empty: moto is in memory)
            await asyncio.sleep(4)
            await rec.storage.wait_drained(timeout=20)
        segs = [s for s in await rec.catalogue.all_segments() if s.created_at >= outage_started]
        assert len(segs) >= 6
        assert any(s.created_at < outage_started + 10 for s in segs) and spooled_segments
        stored = server.list_keys(bucket)
        # every segment written during and after the outage is there, once, complete
        assert {s.storage_key: s.bytes for s in segs}.items() <= stored.items()
        assert len(stored) == len(set(stored))
        assert not list(rec.storage.spool_path.iterdir())

        async def read(seg: Segment) -> bytes:
            return await asyncio.to_thread(server.get, bucket, seg.storage_key)

        await check_segments_play(segs, read, tmp_path)
        timeline = await rec.timeline("cam1", segs[0].start, segs[-1].end)
        assert all(not isinstance(e, Gap) for e in timeline)  # the outage cost no recording


# -- kill -9 mid-segment -------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tests.test_recording import child_main
    asyncio.run(child_main(Path(sys.argv[1]), float(sys.argv[2])))
    """
)


async def child_main(root: Path, seconds: float) -> None:
    """The gateway side of the crash test: record ``cam1`` for ``seconds`` (in a subprocess)."""
    cfg = make_config(root, StorageConfig(backend="local", options=LocalOptions()), cameras=(demo_camera(),), segment_seconds=2)
    async with gateway_parts(cfg) as (db, log, cameras):
        async with RecordingService(cfg, storage_plugins(), db, log, EventBus(), cameras):
            print("recording", flush=True)
            await asyncio.sleep(seconds)


def catalogued(db_path: Path) -> list[dict[str, Any]]:
    if not db_path.exists():
        return []
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM segments ORDER BY start")]
        except sqlite3.OperationalError:  # not migrated yet
            return []


async def test_kill_9_mid_segment_leaves_only_complete_segments(tmp_path: Path) -> None:
    root = tmp_path / "gw"
    root.mkdir()
    db_path = root / "data" / "citygate.db"
    recordings = root / "data" / "recordings"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), "60"], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while len(catalogued(db_path)) < 2:
            assert child.poll() is None, "recorder process died"
            assert time.monotonic() < deadline, "no segments from the recorder process"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # halfway through the next 2 s segment
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    before = catalogued(db_path)
    # A write cut short by the kill leaves a .part file; make sure there is one to clean.
    day_dir = (recordings / before[-1]["storage_key"]).parent
    (day_dir / "cam1-1.mp4.part").write_bytes(b"\x00\x00\x00\x18ftypiso6 partial")

    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", CHILD, str(root), "5"], env=env, check=True, timeout=60, capture_output=True)

    after = catalogued(db_path)
    assert len(after) > len(before)
    assert not list(recordings.rglob("*.part"))
    for row in after:
        data = (recordings / row["storage_key"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["bytes"]
        probe = await asyncio.to_thread(ffprobe, data, tmp_path)
        assert abs(probe["duration"] - row["duration"]) < 0.1
    with sqlite3.connect(db_path) as conn:
        gaps = conn.execute("SELECT start, end, reason FROM recording_gaps").fetchall()
    first_new = next(r for r in after if r["id"] > before[-1]["id"])
    assert [(g[0], g[1], g[2]) for g in gaps] == [(before[-1]["end"], first_new["start"], GATEWAY_DOWN)]


# -- the recorder falls behind ---------------------------------------------------------------------


@dataclasses.dataclass
class SmallBufferCamera:
    """A camera whose lossless reader has a tiny buffer, so a burst overflows it."""

    hub: StreamHub
    id: str = "cam1"

    def open_reader(self, name: str, *, lossless: bool = False, on_overflow=None):  # noqa: ANN001
        return self.hub.open_reader(name, lossless=lossless, max_packets=20, on_overflow=on_overflow)


async def test_recorder_falling_behind_alarms_audits_and_records_gap(tmp_path: Path) -> None:
    source = make_packets(200, gop=10)
    t0 = time.time() - 10
    packets = [dataclasses.replace(p, wallclock=t0 + i / 25) for i, p in enumerate(source)]
    hub = StreamHub("cam1")
    events: list[Event] = []
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}") as db, AuditLog(db) as log:
        async with local_plugin.LocalStorage(LocalOptions(), data_dir=str(tmp_path)) as storage:
            hub.publish(packets[0])
            catalogue = Catalogue(db, log)
            async with Recorder(SmallBufferCamera(hub), storage, catalogue, segment_seconds=1.0,
                                events=EventBus(sink=events.append), audit=log):
                for p in packets[1:60]:  # at the camera's pace
                    hub.publish(p)
                    await asyncio.sleep(0.002)
                for p in packets[60:140]:  # a burst the recorder cannot take in
                    hub.publish(p)
                for p in packets[140:]:
                    hub.publish(p)
                    await asyncio.sleep(0.002)
                await asyncio.sleep(0.2)
            segs = await catalogue.all_segments()
            gaps = await catalogue.gaps("cam1", 0, time.time())
            assert [g.reason for g in gaps] == [FELL_BEHIND]
            assert gaps[0].end - gaps[0].start > 1.0
            assert any(e.kind == "recording.alarm" and e.detail["reason"] == FELL_BEHIND for e in events)
            await log.flush()
            assert await audit_actions(db, "recording.alarm")
            timeline = await catalogue.timeline("cam1", segs[0].start, segs[-1].end)
            assert [e.reason for e in timeline if isinstance(e, Gap)] == [FELL_BEHIND]

            async def read(seg: Segment) -> bytes:
                return b"".join([c async for c in storage.open_segment(seg.storage_key)])

            for seg in segs:
                data = await read(seg)
                assert hashlib.sha256(data).hexdigest() == seg.sha256
                assert (await asyncio.to_thread(ffprobe, data, tmp_path))["codec_name"] == "h264"


async def test_camera_silence_closes_segment_and_reconnect_records_gap(tmp_path: Path) -> None:
    first = make_packets(60, gop=10)
    t0 = time.time() - 30
    first = [dataclasses.replace(p, wallclock=t0 + i / 25) for i, p in enumerate(first)]
    new_info = dataclasses.replace(first[0].info, epoch=1)
    second = [
        dataclasses.replace(p, info=new_info, dts=p.dts + 60 * 3600 + 90_000 * 8, pts=p.pts + 60 * 3600 + 90_000 * 8,
                            wallclock=t0 + 60 / 25 + 8 + i / 25, discontinuity=i == 0)
        for i, p in enumerate(make_packets(30, gop=10))
    ]
    hub = StreamHub("cam1")
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}") as db:
        async with local_plugin.LocalStorage(LocalOptions(), data_dir=str(tmp_path)) as storage:
            catalogue = Catalogue(db)
            hub.publish(first[0])
            async with Recorder(SmallBufferCamera(hub), storage, catalogue, segment_seconds=10.0, idle_flush=0.3):
                for p in first[1:]:
                    hub.publish(p)
                    await asyncio.sleep(0.002)
                await asyncio.sleep(0.8)  # the camera says nothing: the open segment is closed and stored
                [seg] = await catalogue.all_segments()
                assert abs(seg.duration - 60 / 25) < 0.05
                for p in second:  # it comes back, with a new stream epoch, 8 s later
                    hub.publish(p)
                    await asyncio.sleep(0.002)
            segs = await catalogue.all_segments()
            assert len(segs) == 2
            timeline = await catalogue.timeline("cam1", segs[0].start, segs[1].end)
            assert [e.kind for e in timeline] == ["segment", "gap", "segment"]
            assert timeline[1].reason == "camera offline" and abs(timeline[1].duration - 8) < 0.1
            assert timeline[1].id is not None  # a recorded gap, not one inferred


# -- the catalogue at scale ----------------------------------------------------------------------


async def test_timeline_over_65000_segments(tmp_path: Path) -> None:
    async with Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}") as db:
        catalogue = Catalogue(db)
        t0 = 1_700_000_000.0
        rows = []
        for cam in ("cam1", "cam2"):
            for i in range(65_000):
                start = t0 + i * 60 + (3600 if i >= 1000 else 0)  # one hour missing after segment 1000
                rows.append(dict(camera=cam, start=start, end=start + 60, duration=60.0, bytes=1, sha256="0" * 64,
                                 storage_key=f"{cam}/{i}.mp4", backend="local", codec="h264", width=1, height=1,
                                 created_at=start + 60))
        async with db.begin() as conn:
            await conn.execute(segments.insert(), rows)
        await catalogue.add_gap("cam1", t0 + 1000 * 60, t0 + 1000 * 60 + 3600, "camera offline")

        # (how fast: bench/recording.py; a unit test asserts no wall-clock bound)
        window = await catalogue.timeline("cam1", t0 + 990 * 60, t0 + 1010 * 60 + 3600)
        kinds = [e.kind for e in window]
        assert kinds == ["segment"] * 10 + ["gap"] + ["segment"] * 10
        assert window[10].reason == "camera offline" and window[10].end - window[10].start == 3600

        whole = await catalogue.timeline("cam1", t0, t0 + 65_000 * 60 + 3600)
        assert len(whole) == 65_001
        seg = await catalogue.segment("cam1", whole[5].id)
        assert seg == whole[5]
