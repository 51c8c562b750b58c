"""Playback over HTTP from a real recording: timeline with a gap, VOD playlist in ffmpeg."""

import asyncio
import re
import subprocess
import time
from datetime import datetime

import pytest

from gateway.appkeys import AUDIT
from tests.fixtures_app import camera_toml

pytestmark = pytest.mark.gstreamer


@pytest.fixture
async def recorded(make_gateway, gst_camera):
    """~4 s recorded, the camera away for ~4 s, then ~4 s more: one real gap."""
    gw = await make_gateway(
        camera_toml("cam", "generic_rtsp", url=gst_camera.url("h264")),
        "[recording]\nsegment-seconds = 2\n",
    )
    await gw.wait_online("cam")
    t0 = time.time()
    await asyncio.sleep(4.5)
    await asyncio.to_thread(gst_camera.kill)
    await asyncio.sleep(4.0)
    await asyncio.to_thread(gst_camera.restart)
    await gw.wait_online("cam", timeout=20)
    await asyncio.sleep(5.0)
    return gw, t0, time.time()


async def test_timeline_playlist_and_segments(recorded):
    gw, t0, t1 = recorded
    async with gw.session.get(f"{gw.url}/api/cameras/cam/recordings", params={"from": t0 - 5, "to": t1}) as resp:
        assert resp.status == 200, await resp.text()
        timeline = await resp.json()
    items = timeline["items"]
    segs = [i for i in items if i["kind"] == "segment"]
    gaps = [i for i in items if i["kind"] == "gap"]
    assert len(segs) >= 3
    inner = [g for g in gaps if g["start"] > segs[0]["start"] and g["end"] < segs[-1]["end"]]
    assert inner and inner[0]["end"] - inner[0]["start"] >= 2.0, gaps
    assert inner[0]["reason"] in ("camera offline", "no recording")

    # long ranges come as spans of contiguous recording: the same coverage, few items
    async with gw.session.get(
        f"{gw.url}/api/cameras/cam/recordings", params={"from": t0 - 5, "to": t1, "detail": "spans"}
    ) as resp:
        spans = [i for i in (await resp.json())["items"] if i["kind"] == "span"]
    assert len(spans) == len(inner) + 1 and sum(s["segments"] for s in spans) == len(segs)
    assert spans[0]["start"] == segs[0]["start"] and spans[-1]["end"] == segs[-1]["end"]
    async with gw.session.get(f"{gw.url}/api/cameras/cam/recordings", params={"from": t0 - 86400 * 3, "to": t1}) as resp:
        assert (await resp.json())["detail"] == "spans"  # the default beyond a day

    # the VOD playlist: one discontinuity per segment, PDTs equal to the catalogue
    async with gw.session.get(
        f"{gw.url}/api/cameras/cam/recordings/playlist.m3u8", params={"from": t0 - 5, "to": t1}
    ) as resp:
        assert resp.status == 200 and resp.content_type == "application/vnd.apple.mpegurl"
        playlist = await resp.text()
    pdts = [datetime.fromisoformat(m.replace("Z", "+00:00")).timestamp() for m in re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", playlist)]
    # to the millisecond the tag carries (it truncates: rounding both sides to 1/100 s could
    # land them on either side of a half)
    assert len(pdts) == len(segs) and all(-1e-6 <= s["start"] - p < 0.001 for p, s in zip(pdts, segs)), (pdts, segs)
    assert playlist.count("#EXT-X-DISCONTINUITY\n") == len(segs) - 1 and playlist.rstrip().endswith("#EXT-X-ENDLIST")

    # ffmpeg plays it end to end, across the gap, as a client with a bearer token
    token = await gw.api_token("tester")
    url = f"{gw.url}/api/cameras/cam/recordings/playlist.m3u8?from={t0 - 5}&to={t1}"
    proc = await asyncio.to_thread(
        subprocess.run,
        ["ffmpeg", "-v", "error", "-headers", f"Authorization: Bearer {token}\r\n", "-i", url,
         "-progress", "pipe:1", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr[-2000:]
    frames = int(re.findall(r"^frame=(\d+)", proc.stdout, re.M)[-1])
    recorded_seconds = sum(s["duration"] for s in segs)
    assert frames >= recorded_seconds * 25 * 0.8, (frames, recorded_seconds)

    # the playlist request is audited with the range viewed
    entry = (await gw.app[AUDIT].query(action="playback.view", user="tester"))[0]
    assert entry["camera"] == "cam" and abs(entry["range_from"] - (t0 - 5)) < 0.01

    # range requests on a segment
    seg = segs[1]
    path = f"{gw.url}/api/cameras/cam/recordings/segments/{seg['id']}.mp4"
    async with gw.session.get(path) as resp:
        whole = await resp.read()
        assert resp.status == 200 and len(whole) == seg["bytes"] and resp.headers["Accept-Ranges"] == "bytes"
    async with gw.session.get(path, headers={"Range": "bytes=100-199"}) as resp:
        assert resp.status == 206 and resp.headers["Content-Range"] == f"bytes 100-199/{seg['bytes']}"
        assert await resp.read() == whole[100:200]
    async with gw.session.get(path, headers={"Range": f"bytes={seg['bytes']}-"}) as resp:
        assert resp.status == 416

    # seeking by wall-clock time: the playlist starts at the segment holding that moment
    target = segs[1]["start"] + 0.5
    async with gw.session.get(
        f"{gw.url}/api/cameras/cam/recordings/playlist.m3u8", params={"from": t0 - 5, "to": t1, "start": target}
    ) as resp:
        text = await resp.text()
    offset = float(re.search(r"#EXT-X-START:TIME-OFFSET=([\d.]+)", text).group(1))
    assert abs(offset - (segs[0]["duration"] + 0.5)) < 0.01


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"from": 2000, "to": 1000}, 400, "'to' must be after 'from'"),
        ({"from": 0, "to": 10**10}, 400, "at most"),
        ({"from": "yesterday"}, 400, "from must be"),
        ({"from": time.time() + 86400 * 10, "to": time.time() + 86400 * 11}, 400, "future"),
    ],
)
async def test_bad_ranges_are_refused_with_a_reason(make_gateway, query, status, message):
    gw = await make_gateway(camera_toml("d", "demo", width=320, height=240))
    async with gw.session.get(f"{gw.url}/api/cameras/d/recordings", params=query) as resp:
        assert resp.status == status
        assert message in (await resp.json())["error"]


async def test_unknown_camera_and_no_right(make_gateway):
    gw = await make_gateway(camera_toml("d", "demo", width=320, height=240))
    async with gw.session.get(f"{gw.url}/api/cameras/nope/recordings") as resp:
        assert resp.status in (403, 404)
    police = await gw.sign_in("pol", role="district-police", all_areas=True)  # live only, no playback
    async with police.get(f"{gw.url}/api/cameras/d/recordings/playlist.m3u8", params={"from": 0, "to": 10}) as resp:
        assert resp.status == 403 and "playback.view" in (await resp.json())["error"]
