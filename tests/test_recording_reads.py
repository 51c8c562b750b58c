"""Segment reads of recordings are audited (merged per session and camera into time ranges)
and capped per session and hour: beyond the cap 429 with the reason, a refused audit
entry and a ``playback.alarm`` event."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from gateway.access.audit import AuditLog
from gateway.access.guard import Principal
from gateway.appkeys import AUDIT, CONFIG, PLAYBACK_READS, RECORDING
from gateway.db import Database
from gateway.errors import TooManyRequests
from gateway.events import EventBus
from gateway.recording.index import Segment
from gateway.recording.reads import PlaybackReads

#: A camera that is not recorded itself: the tests store the segments they read.
CAMERA = '[[camera]]\nid = "d"\nvendor = "demo"\narea = "centre"\nrecord = false\n[camera.options]\nwidth = 320\nheight = 240\n'
LENGTH = 60.0


async def store(gw, starts: list[float]) -> list[Segment]:
    """Segments of ``LENGTH`` seconds stored through the gateway's own storage and catalogue."""
    recording = gw.app[RECORDING]
    out = []
    for start in starts:
        data = hashlib.sha256(str(start).encode()).digest() * 64
        key = f"d/test/{int(start)}.mp4"
        await recording.storage.write_segment(key, data)
        out.append(await recording.catalogue.add_segment(
            camera="d", start=start, end=start + LENGTH, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
            storage_key=key, backend=recording.storage.id(), codec="h264", width=320, height=240,
        ))
    return out


def segment_url(gw, seg: Segment) -> str:
    return f"{gw.url}/api/cameras/d/recordings/segments/{seg.id}.mp4"


async def read(session, gw, seg: Segment, **kw) -> int:
    async with session.get(segment_url(gw, seg), **kw) as resp:
        await resp.read()
        return resp.status


async def test_segment_reads_are_audited_as_merged_ranges_flushed_at_shutdown(make_gateway):
    gw = await make_gateway(CAMERA)
    t0 = float(int(time.time()) - 7200)
    segs = await store(gw, [t0 + i * LENGTH for i in (0, 1, 2, 4, 5)])  # a gap where the fourth would be
    for seg in segs:
        assert await read(gw.session, gw, seg) == 200
    assert await read(gw.session, gw, segs[1], headers={"Range": "bytes=0-99"}) == 206  # the same segment again
    url = gw.app[CONFIG].database_url
    assert await gw.app[AUDIT].query(action="playback.segments") == []  # still being merged

    await gw.server.close()  # shutdown writes what is still open
    async with Database(url) as db:
        entries = await AuditLog(db).query(action="playback.segments")
    assert len(entries) == 1, entries
    entry = entries[0]
    assert (entry["user"], entry["camera"], entry["outcome"]) == ("tester", "d", "ok")
    assert (entry["range_from"], entry["range_to"]) == (t0, t0 + 6 * LENGTH)
    detail = entry["detail"]
    assert detail["ranges"] == [[t0, t0 + 3 * LENGTH], [t0 + 4 * LENGTH, t0 + 6 * LENGTH]]
    assert detail["segments"] == 5 and detail["seconds"] == 5 * LENGTH  # the re-read segment counted once
    assert detail["bytes"] == sum(s.bytes for s in segs)


async def test_reads_idle_for_a_while_are_written_without_waiting_for_shutdown(make_gateway):
    gw = await make_gateway(CAMERA)
    gw.app[PLAYBACK_READS].idle = 0.5
    t0 = float(int(time.time()) - 3600)
    seg, = await store(gw, [t0])
    assert await read(gw.session, gw, seg) == 200
    for _ in range(100):
        entries = await gw.app[AUDIT].query(action="playback.segments", user="tester")
        if entries:
            break
        await asyncio.sleep(0.1)
    assert entries and entries[0]["detail"]["ranges"] == [[t0, t0 + LENGTH]], entries


async def test_over_the_hourly_cap_a_session_gets_429_an_audit_entry_and_an_alarm(make_gateway):
    gw = await make_gateway(CAMERA, "[recording]\nmax-playback-seconds-per-hour = 300\n")
    t0 = float(int(time.time()) - 7200)
    segs = await store(gw, [t0 + i * LENGTH for i in range(8)])
    watcher = await gw.sign_in("watch", role="operator", all_areas=True)
    async with watcher.ws_connect(gw.url.replace("http", "ws", 1) + "/api/events") as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "state"
        for seg in segs[:5]:  # 300 s: exactly the cap
            assert await read(gw.session, gw, seg) == 200
        async with gw.session.get(segment_url(gw, segs[5])) as resp:
            assert resp.status == 429
            reason = (await resp.json())["error"]
        assert "recorded video limit reached: this session has pulled 5 min of recordings in the last hour" in reason
        assert "at most 5 min are allowed (recording.max-playback-seconds-per-hour)" in reason
        assert "approved export request" in reason
        # what was already counted may be fetched again (a player's range requests)
        assert await read(gw.session, gw, segs[0], headers={"Range": "bytes=10-20"}) == 206
        # a new playlist is refused too, with the same reason
        async with gw.session.get(f"{gw.url}/api/cameras/d/recordings/playlist.m3u8", params={"from": t0, "to": t0 + 600}) as resp:
            assert resp.status == 429 and "recorded video limit reached" in (await resp.json())["error"]
        alarm = None
        while alarm is None:
            message = await ws.receive_json(timeout=5)
            if message["type"] == "event" and message["event"]["kind"] == "playback.alarm":
                alarm = message["event"]
    assert alarm["user"] == "tester" and alarm["camera"] == "d"
    assert alarm["detail"]["reason"] == "playback limit reached" and alarm["detail"]["limit_seconds"] == 300

    refused = await gw.app[AUDIT].query(action="playback.segments", outcome="refused")
    assert [e["detail"]["request"] for e in reversed(refused)] == ["segment", "playlist"]
    first = refused[-1]
    assert (first["user"], first["camera"], first["detail"]["segment"]) == ("tester", "d", segs[5].id)
    assert first["detail"]["reason"] == reason and first["detail"]["used_seconds"] == 300

    # the cap is per session: another session's hour is its own
    assert await read(watcher, gw, segs[5]) == 200


async def test_the_hour_slides(database_url):
    """Counted seconds leave the window an hour after they were counted (injected clock)."""
    now = [1_000_000.0]
    seg = lambda i: Segment(i, "d", i * 60.0, i * 60.0 + 60, 60.0, 10, "", "", "local", "h264", 1, 1, 0.0)  # noqa: E731
    who = Principal(1, "op", "operator", frozenset(), True, "s1", "cookie", "x")
    async with Database(database_url) as db, AuditLog(db) as log:
        reads = PlaybackReads(log, EventBus(), db=db, max_seconds_per_hour=120, clock=lambda: now[0])
        await reads.admit_segment(who, "127.0.0.1", seg(1))
        now[0] += 1800
        await reads.admit_segment(who, "127.0.0.1", seg(2))
        with pytest.raises(TooManyRequests, match="Try again in 30 min"):
            await reads.admit_segment(who, "127.0.0.1", seg(3))
        now[0] += 1801  # the first segment left the hour
        await reads.admit_segment(who, "127.0.0.1", seg(3))
        assert await reads.used("s1") == 120
        await reads.flush()
        entries = await log.query(action="playback.segments")
    assert [e["outcome"] for e in entries] == ["ok", "refused"]
    assert entries[0]["detail"]["ranges"] == [[60.0, 240.0]]
