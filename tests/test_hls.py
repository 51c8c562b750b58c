"""LL-HLS live output: a real gateway, the GStreamer camera, ffmpeg/ffprobe and our validator."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_cameras import GstCamera, free_port
from tests.hls_validator import parse_media_playlist, validate

GST_SIZE = (640, 360)
GST_FPS = 25


async def start(make_gateway, url: str, gateway_toml: str = "") -> tuple[RunningGateway, str]:
    gw = await make_gateway(camera_toml("cam", "generic_rtsp", url=url), gateway_toml)
    await gw.wait_online("cam")
    return gw, gw.url + "/api/cameras/cam/hls/"


async def run(*cmd: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run a tool without blocking the event loop the gateway runs on."""
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def get(gw: RunningGateway, url: str) -> tuple[int, str, bytes]:
    async with gw.session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def api_token(gw: RunningGateway) -> str:
    """A bearer token for the signed-in test user, for players that carry no cookies."""
    body = {"username": "tester", "password": TEST_PASSWORD, "kind": "token"}
    async with gw.anonymous.post(gw.url + "/api/session", json=body) as resp:
        assert resp.status == 201, await resp.text()
        return (await resp.json())["token"]


async def test_ffmpeg_plays_five_seconds(make_gateway, shared_gst_camera: GstCamera):
    gw, base = await start(make_gateway, shared_gst_camera.url("h264"))
    token = await api_token(gw)
    code, out, err = await run(
        "ffmpeg", "-hide_banner", "-nostats", "-loglevel", "warning", "-headers", f"Authorization: Bearer {token}\r\n",
        "-i", base + "index.m3u8", "-t", "5", "-f", "null", "-", "-progress", "pipe:1",
    )  # fmt: skip
    assert code == 0, err
    # FFmpeg re-reads the init segment after each playlist reload and says so ("duplicated
    # MOOV atom"); anything else it complains about is a real problem.
    complaints = [line for line in err.splitlines() if "error" in line.lower()]
    assert not complaints, err
    frames = int(re.findall(r"^frame=(\d+)$", out, re.M)[-1])
    assert frames >= 5 * GST_FPS - 2, out


@pytest.mark.parametrize("mount", ["h264", "h265"])
async def test_validator_finds_a_correct_ll_hls_stream(make_gateway, shared_gst_camera: GstCamera, mount: str):
    gw, base = await start(make_gateway, shared_gst_camera.url(mount))
    report = await validate(gw.session, base + "stream.m3u8", seconds=2.0)
    assert not report.problems, "\n".join(report.problems)
    assert report.segments >= 2 and report.parts >= 10, report
    assert report.reloads >= 5, report  # blocking reloads, up to one per part
    assert report.codecs == {"h264/avc1" if mount == "h264" else "hevc/hvc1"}


async def test_long_gop_makes_long_segments_and_an_honest_target_duration(make_gateway):
    # Segments start on keyframes: with a GOP longer than the 1 s target, each segment is
    # a whole GOP, and EXT-X-TARGETDURATION says so.
    gw = await make_gateway(camera_toml("cam", "demo", width=320, height=240, fps=25, keyframe_interval=2.5))
    await gw.wait_online("cam")
    base = gw.url + "/api/cameras/cam/hls/"
    report = await validate(gw.session, base + "stream.m3u8", seconds=1.0)
    # The demo camera runs in this busy test process: starved of the interpreter for 0.2 s
    # it skips frames, the part holding that gap is longer than 0.2 s, and PART-TARGET rises
    # to cover it (as it must). The parts after it are then shorter than 85 % of the target,
    # which the spec only advises against; every other rule still holds.
    problems = [p for p in report.problems if not p.endswith("< 85% of PART-TARGET")]
    assert not problems, "\n".join(problems)
    pl = parse_media_playlist((await get(gw, base + "stream.m3u8"))[2].decode())
    assert pl.target_duration == 3
    durations = [s.duration for s in pl.segments if s.uri]
    assert durations and all(abs(d - 2.5) < 0.05 for d in durations), durations


async def test_multivariant_playlist_names_codec_and_size(make_gateway, shared_gst_camera: GstCamera):
    gw, base = await start(make_gateway, shared_gst_camera.url("h264"))
    status, ctype, body = await get(gw, base + "index.m3u8")
    assert status == 200 and ctype == "application/vnd.apple.mpegurl"
    text = body.decode()
    assert re.search(r'CODECS="avc1\.42[0-9a-f]{4}"', text), text
    assert "RESOLUTION=640x360" in text and text.strip().endswith("stream.m3u8")
    bandwidth = int(re.search(r"BANDWIDTH=(\d+)", text).group(1))
    assert 500_000 < bandwidth < 5_000_000, bandwidth  # the camera sends about 1.5 Mbit/s


@pytest.mark.parametrize(("mount", "codec", "tag"), [("h264", "h264", "avc1"), ("h265", "hevc", "hvc1")])
async def test_ffprobe_reads_init_plus_segment(make_gateway, shared_gst_camera: GstCamera, tmp_path, mount, codec, tag):
    gw, base = await start(make_gateway, shared_gst_camera.url(mount))
    status, ctype, init = await get(gw, base + "init.mp4")
    assert status == 200 and ctype == "video/mp4"
    pl = parse_media_playlist((await get(gw, base + "stream.m3u8"))[2].decode())
    segment = next(s for s in pl.segments if s.uri)
    status, _, media = await get(gw, base + segment.uri)
    assert status == 200
    path = tmp_path / "joined.mp4"
    path.write_bytes(init + media)
    code, out, err = await run(
        "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
        "-show_entries", "stream=codec_name,codec_tag_string,width,height,nb_read_frames", "-of", "json", str(path),
    )  # fmt: skip
    assert code == 0 and not err, err
    stream = json.loads(out)["streams"][0]
    assert (stream["codec_name"], stream["codec_tag_string"]) == (codec, tag)
    assert (stream["width"], stream["height"]) == GST_SIZE
    assert int(stream["nb_read_frames"]) == round(segment.duration * GST_FPS)


async def test_blocking_reload_waits_for_the_next_segment(make_gateway, shared_gst_camera: GstCamera):
    gw, base = await start(make_gateway, shared_gst_camera.url("h264"))
    pl = parse_media_playlist((await get(gw, base + "stream.m3u8"))[2].decode())
    last = max(s.msn for s in pl.segments if s.uri)
    bound = 3 * pl.target_duration

    started = time.monotonic()
    status, _, body = await get(gw, f"{base}stream.m3u8?_HLS_msn={last + 1}")
    elapsed = time.monotonic() - started
    assert status == 200 and elapsed < bound
    after = parse_media_playlist(body.decode())
    assert any(s.msn == last + 1 and s.uri for s in after.segments), body.decode()

    # A part that does not exist yet: the request returns once it does.
    nxt = after.segments[-1]
    msn, part = (nxt.msn, len(nxt.parts)) if nxt.uri is None else (nxt.msn + 1, 0)
    status, _, body = await get(gw, f"{base}stream.m3u8?_HLS_msn={msn}&_HLS_part={part}")
    assert status == 200
    listed = parse_media_playlist(body.decode())
    assert any(s.msn == msn and len(s.parts) > part for s in listed.segments) or any(
        s.msn == msn and s.uri for s in listed.segments
    ), body.decode()

    # The preload-hinted part is served as soon as it is made.
    started = time.monotonic()
    status, ctype, data = await get(gw, base + listed.preload_hint)
    assert status == 200 and ctype == "video/mp4" and data[4:8] == b"moof"
    assert time.monotonic() - started < bound


async def test_errors(make_gateway, shared_gst_camera: GstCamera):
    dead = camera_toml("dead", "generic_rtsp", url=f"rtsp://127.0.0.1:{free_port()}/x")
    gw = await make_gateway(camera_toml("cam", "generic_rtsp", url=shared_gst_camera.url("h264")) + dead)
    await gw.wait_online("cam")
    base = gw.url + "/api/cameras/cam/hls/"

    async def error(url: str, expected: int) -> str:
        async with gw.session.get(url) as resp:
            assert resp.status == expected, (url, resp.status, await resp.text())
            body = await resp.json()
        assert body["status"] == expected
        return body["error"]

    assert "nope" in await error(gw.url + "/api/cameras/nope/hls/index.m3u8", 404)
    assert "_HLS_msn" in await error(base + "stream.m3u8?_HLS_msn=abc", 400)
    assert "_HLS_msn" in await error(base + "stream.m3u8?_HLS_part=1", 400)
    assert "too far" in await error(base + "stream.m3u8?_HLS_msn=1000", 400)
    await error(base + "seg/100000.m4s", 404)
    await error(base + "part/100000.0.m4s", 404)
    reason = await error(gw.url + "/api/cameras/dead/hls/stream.m3u8", 503)
    assert "dead" in reason and ("offline" in reason or "connecting" in reason), reason


async def test_muxer_stops_when_idle(make_gateway, shared_gst_camera: GstCamera):
    # Not recorded, so the HLS muxer is the camera's only reader.
    cameras = camera_toml("cam", "generic_rtsp", url=shared_gst_camera.url("h264"))
    cameras = cameras.replace("[camera.options]", "record = false\n[camera.options]")
    gw = await make_gateway(cameras, "[hls]\nidle-timeout = 1.0\n")
    await gw.wait_online("cam")
    base = gw.url + "/api/cameras/cam/hls/"
    camera = gw.cameras.get("cam")
    readers = camera.snapshot().stats.readers
    pl = parse_media_playlist((await get(gw, base + "stream.m3u8"))[2].decode())
    assert camera.snapshot().stats.readers == readers + 1
    first = next(s for s in pl.segments if s.uri)
    assert (await get(gw, base + first.uri))[0] == 200

    deadline = time.monotonic() + 3.0
    while camera.snapshot().stats.readers != readers:
        assert time.monotonic() < deadline, "the idle muxer did not stop"
        await asyncio.sleep(0.1)
    assert (await get(gw, base + first.uri))[0] == 404  # gone with its muxer

    # The next request starts a fresh muxer.
    again = parse_media_playlist((await get(gw, base + "stream.m3u8"))[2].decode())
    assert again.segments and camera.snapshot().stats.readers == readers + 1


async def test_camera_restart_is_a_discontinuity_with_a_new_init(make_gateway, gst_camera: GstCamera):
    gw, base = await start(make_gateway, gst_camera.url("h264"))
    assert (await get(gw, base + "stream.m3u8"))[0] == 200
    gst_camera.kill()
    gst_camera.restart()
    deadline = time.monotonic() + 20
    while True:
        status, _, body = await get(gw, base + "stream.m3u8")
        text = body.decode()
        if status == 200 and "#EXT-X-DISCONTINUITY\n" in text and 'URI="init-1.mp4"' in text:
            break
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.3)
    report = await validate(gw.session, base + "stream.m3u8", seconds=1.0)
    assert not report.problems, "\n".join(report.problems)
    pl = parse_media_playlist(text)
    after = [s for s in pl.segments if s.map_uri == "init-1.mp4"]
    assert after[0].discontinuity and not any(s.discontinuity for s in after[1:])
    assert (await get(gw, base + "init-0.mp4"))[0] in (200, 404)
    assert (await get(gw, base + "init-1.mp4"))[0] == 200
