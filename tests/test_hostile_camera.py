"""A hostile camera beside a healthy one (issue 21, 3b).

One gateway, four cameras: two healthy demo cameras (one pulled by the FFmpeg ingest, one by
the native client) and two cameras at the hostile RTSP server of ``tests/hostile_rtsp.py``
(again one per client), which cycles through every fault: malformed SDP, an absurd
Content-Length, RTP on the wrong interleaved channel, truncated and oversized RTP, garbage and
bit-flipped H.264/H.265, timestamp jumps, an endless redirect, a slowloris and a disconnect in
the middle of a frame. Then it behaves again.

What must hold: the gateway keeps answering; each fault shows as the hostile camera's
``last_error`` (camera view and camera health) in words that name it; the hostile camera comes
back when the camera behaves, and its recorder survived; the healthy cameras lose no picture
(every 90 kHz step between their hub packets is accounted for by a slot the demo camera itself
skipped) and no recorded segment (their catalogue is one contiguous run, no gap rows).

Plus fast checks of the pure parsers under Hypothesis: any SDP text and any RTP packet either
parse or are refused with the client's own error, never another exception.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.appkeys import RECORDING
from gateway.media.hub import HubReader
from gateway.media.packet import CLOCK_RATE, MediaPacket
from gateway.recording.index import CONTIGUOUS
from gateway.rtsp.client import RtspClientError, parse_sdp
from gateway.rtsp.depacketizer import MAX_ACCESS_UNIT, Depacketizer, OversizedAccessUnit
from tests.fixtures_app import RunningGateway, camera_toml
from tests.hostile_rtsp import FAULTS, HostileRtspServer, Mode, serve_in_thread

FRAME = CLOCK_RATE // 25
HEALTHY = ("healthy-ffmpeg", "healthy-native")
#: Two hostile cameras per client, each cycling through half of the faults: the module stays
#: within its time budget (FFmpeg takes its open and read timeouts to give up on most of them).
HOSTILE = {"hostile-ffmpeg-a": "ffmpeg", "hostile-ffmpeg-b": "ffmpeg", "hostile-native-a": "native", "hostile-native-b": "native"}
OPEN_TIMEOUT = 2.0
GATEWAY_TOML = f"""
[ingest]
open-timeout = {OPEN_TIMEOUT}
read-timeout = 1.5
backoff-initial = 0.2
backoff-max = 0.5
[recording]
segment-seconds = 1
"""

#: What ``last_error`` must say for each fault, per client. FFmpeg hides some faults behind
#: its own words ("Input/output error", a read timeout); the native client names each one.
DISCONNECTED = {"native": r"the camera closed the connection", "ffmpeg": r"the camera ended the stream"}
UNDECODABLE = r"keyframe does not decode|no keyframe for"
EXPECTED: dict[Mode, dict[str, str]] = {
    Mode.BAD_SDP: {
        "native": r"malformed SDP from the camera: payload type 'x96' is not a number.*clock rate '0'",
        "ffmpeg": r"the stream has no video track",
    },
    Mode.HUGE_CONTENT_LENGTH: {
        "native": r"announced an RTSP message body of 2000000000 bytes",
        "ffmpeg": r"RTSP answers are malformed|did not complete the RTSP handshake",
    },
    Mode.WRONG_CHANNEL: {
        "native": r"no RTP on interleaved channel 0 .* channels SETUP did not ask for \(\d+ on channel 6\)",
        "ffmpeg": r"Input/output error|no data from the camera within the read timeout",
    },
    Mode.TRUNCATED_RTP: {
        "native": r"no valid RTP packet from the camera within the read timeout \(\d+ malformed",
        "ffmpeg": r"no data from the camera within the read timeout|" + UNDECODABLE,
    },
    Mode.OVERSIZED_RTP: {
        "native": r"picture larger than 16 MiB without ending it",
        "ffmpeg": r"no data from the camera within the read timeout|picture of \d+ bytes",
    },
    Mode.GARBAGE_NAL: {"native": UNDECODABLE, "ffmpeg": UNDECODABLE},
    Mode.BITFLIP_H264: {"native": UNDECODABLE, "ffmpeg": UNDECODABLE},
    Mode.BITFLIP_H265: {"native": UNDECODABLE, "ffmpeg": UNDECODABLE},
    Mode.TIMESTAMP_JUMPS: DISCONNECTED,
    Mode.REDIRECT_LOOP: {
        "native": r"the camera redirects DESCRIBE \(302 Found\) to rtsp://127\.0\.0\.1:\d+/hostile-native-[ab]/hop/1",
        "ffmpeg": r"did not complete the RTSP handshake within the open timeout",
    },
    Mode.SLOWLORIS: {
        "native": r"no complete answer to OPTIONS from the camera within the open timeout",
        "ffmpeg": r"did not complete the RTSP handshake within the open timeout",
    },
    Mode.DISCONNECT: DISCONNECTED,
}
#: Faults that end a stream that was online first: the error must follow an online state,
#: or the abort of the previous mode's connection would pass for it.
AFTER_ONLINE = {Mode.TIMESTAMP_JUMPS, Mode.DISCONNECT}
#: Faults whose error stays until the mode changes (checked on the health view too).
PERSISTENT = set(FAULTS) - AFTER_ONLINE - {Mode.BITFLIP_H264, Mode.BITFLIP_H265}
MODE_DEADLINE = 12.0


def test_every_fault_has_an_expectation():
    assert set(EXPECTED) == set(FAULTS)


@pytest.fixture
def hostile() -> HostileRtspServer:
    with serve_in_thread() as server:
        yield server


def cameras_toml(hostile: HostileRtspServer) -> str:
    def client(toml: str, name: str) -> str:
        return toml.replace('area = "centre"\n', f'area = "centre"\ningest-client = "{name}"\n', 1)

    demo = {"width": 320, "height": 240, "keyframe_interval": 1.0, "preencoded_seconds": 2.0}
    return (
        client(camera_toml("healthy-ffmpeg", "demo", **demo), "ffmpeg")
        + client(camera_toml("healthy-native", "demo", **demo), "native")
        + "".join(client(camera_toml(cid, "generic_rtsp", url=with_secret(hostile.url(cid))), name) for cid, name in HOSTILE.items())
    )


#: The hostile cameras' URLs carry credentials (the camera ignores them): no error text may
#: show them (FFmpeg's own error text ends with the URL it was given, password included).
SECRET = "s3cret-Pa55"


def with_secret(url: str) -> str:
    return url.replace("rtsp://", f"rtsp://viewer:{SECRET}@", 1)


@dataclass
class Watch:
    """Every packet one hub hands a reader of its own, from now on."""

    reader: HubReader
    packets: list[MediaPacket] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @classmethod
    def start(cls, gw: RunningGateway, camera_id: str) -> Watch:
        watch = cls(gw.cameras.get(camera_id).hub.open_reader(f"test-watch {camera_id}"))

        async def run() -> None:
            async for packet in watch.reader:
                watch.packets.append(packet)

        watch.task = asyncio.create_task(run())
        return watch

    async def stop(self) -> None:
        self.reader.close()
        assert self.task is not None
        await asyncio.gather(self.task, return_exceptions=True)


async def camera_view(gw: RunningGateway, camera_id: str) -> dict:
    return await gw.get_json(f"/api/cameras/{camera_id}")


@dataclass
class Seen:
    mode: Mode
    error: str
    start: float  #: wall clock of the switch to this mode
    end: float  #: ... and of the error that named it


async def run_through_faults(gw: RunningGateway, hostile: HostileRtspServer, camera_id: str) -> list[Seen]:
    """Set each fault in turn; wait until the camera's view names it. Returns what it said."""
    client = HOSTILE[camera_id]
    seen: list[Seen] = []
    loop = asyncio.get_running_loop()
    for mode in FAULTS[camera_id.endswith("b") :: 2]:
        wanted = re.compile(EXPECTED[mode][client])
        before = (await camera_view(gw, camera_id))["reconnects"]
        switched = time.time()
        hostile.set_mode(camera_id, mode)
        deadline = loop.time() + MODE_DEADLINE
        was_online = False
        history: list[tuple[float, str, str | None]] = []
        while True:
            view = await camera_view(gw, camera_id)
            if not history or history[-1][1:] != (view["state"], view["last_error"]):
                history.append((time.time(), view["state"], view["last_error"]))
            was_online |= view["state"] == "online"
            error = view["last_error"] or ""
            assert SECRET not in error, error
            if view["reconnects"] > before and wanted.search(error) and (was_online or mode not in AFTER_ONLINE):
                break
            assert loop.time() < deadline, f"{camera_id}: {mode}: no error matching {wanted.pattern!r} in {history}"
            await asyncio.sleep(0.05)
        if mode in PERSISTENT:  # the health view says the same
            health = await gw.get_json(f"/api/health/cameras/{camera_id}")
            assert wanted.search(health["last_error"] or ""), (mode, health["last_error"])
        seen.append(Seen(mode, error, switched, time.time()))
    return seen


@pytest.mark.timeout(120)
async def test_a_hostile_camera_beside_healthy_ones(make_gateway, hostile: HostileRtspServer, caplog) -> None:
    gw = await make_gateway(cameras_toml(hostile), GATEWAY_TOML)
    await gw.wait_online(*HEALTHY, *HOSTILE)
    watches = {cid: Watch.start(gw, cid) for cid in (*HEALTHY, *HOSTILE)}
    demo_skipped = {cid: gw.cameras.get(cid).vendor.frames_skipped for cid in HEALTHY}
    started = time.time()

    results = await asyncio.gather(*(run_through_faults(gw, hostile, cid) for cid in HOSTILE))
    for cid, seen in zip(HOSTILE, results):
        print(f"{cid}:")
        for s in seen:
            print(f"  {s.mode:<20} {s.end - s.start:5.2f}s  {s.error}")

    # The camera behaves again: every hostile camera comes back, with a picture, and records.
    for cid in HOSTILE:
        hostile.set_mode(cid, Mode.GOOD)
    back = time.time()
    await gw.wait_online(*HOSTILE, timeout=15)
    async with gw.session.get(gw.url + "/api/health") as resp:
        assert resp.status == 200  # the gateway answered all along, and still does
    recording = gw.app[RECORDING]
    deadline = asyncio.get_running_loop().time() + 15
    while True:  # each hostile camera's recorder lived through the garbage and records again
        recorded = {cid: [s for s in await recording.catalogue.all_segments(cid) if s.start >= back] for cid in HOSTILE}
        if all(recorded.values()):
            break
        assert asyncio.get_running_loop().time() < deadline, recorded
        await asyncio.sleep(0.2)
    for cid in HOSTILE:
        view = await camera_view(gw, cid)
        assert view["state"] == "online" and view["last_error"] is None and view["width"] == 320, view

    ended = time.time()
    for watch in watches.values():
        await watch.stop()

    # The hostile cameras' timelines: strictly increasing, and the jumping clock re-based
    # (every step one frame: no 1-tick squeeze after a step back, no 5 s hole after a step forward).
    assert sorted(s.mode for seen in results for s in seen) == sorted(2 * FAULTS)
    for cid, seen in zip(HOSTILE, results):
        packets = watches[cid].packets
        assert all(b.pts > a.pts for a, b in zip(packets, packets[1:])), cid
        jumps = next((s for s in seen if s.mode is Mode.TIMESTAMP_JUMPS), None)
        if jumps is None:
            continue
        first_seen: dict[int, float] = {}
        for p in packets:
            first_seen.setdefault(p.info.epoch, p.wallclock)
        epochs = {e for e, at in first_seen.items() if jumps.start < at < jumps.end}
        jumping = [p for p in packets if p.info.epoch in epochs]
        steps = {b.pts - a.pts for a, b in zip(jumping, jumping[1:]) if b.info.epoch == a.info.epoch}
        assert len(jumping) >= 30 and steps == {FRAME}, (cid, len(jumping), sorted(steps)[:5], sorted(steps)[-5:])

    # The healthy cameras: one connection throughout, and every picture the camera made.
    for cid in HEALTHY:
        packets = watches[cid].packets
        assert packets and len({p.info.epoch for p in packets}) == 1, f"{cid} reconnected"
        steps = [b.pts - a.pts for a, b in zip(packets, packets[1:])]
        assert all(step % FRAME == 0 and step > 0 for step in steps), sorted(set(steps))
        missing = sum(step // FRAME - 1 for step in steps)
        skipped = gw.cameras.get(cid).vendor.frames_skipped - demo_skipped[cid]
        assert missing <= skipped, f"{cid}: {missing} pictures lost, the camera skipped only {skipped}"
        assert len(packets) >= 25 * (ended - started) * 0.9 - skipped, (cid, len(packets), ended - started)
        view = await camera_view(gw, cid)
        assert view["state"] == "online" and view["reconnects"] == 0, view

        segments = [s for s in await recording.catalogue.all_segments(cid) if s.end >= started]
        assert segments and segments[0].start <= started + 2 and segments[-1].end >= ended - 3, (cid, segments[:1], segments[-1:])
        holes = [(a.end, b.start) for a, b in zip(segments, segments[1:]) if b.start - a.end > CONTIGUOUS]
        assert not holes, f"{cid}: recording holes {holes}"
        assert not await recording.catalogue.gaps(cid, started, time.time()), cid

    # Faults are the camera's, not the gateway's: nothing logged as an error (no "unexpected
    # ingest failure", no recorder or muxer crash, no unretrieved task or future exception).
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


# --- the pure parsers, under Hypothesis ------------------------------------------------------

SDP_LINES = st.sampled_from(
    [
        "m=video 0 RTP/AVP 96", "m=video 0 RTP/AVP x96 97", "m=video", "m=", "m=audio 0 RTP/AVP 0",
        "a=rtpmap:96 H264/90000", "a=rtpmap:96 H265/0", "a=rtpmap:97 H264/abc", "a=rtpmap:x96 H264/90000",
        "a=rtpmap:999 H264/90000", "a=rtpmap:96 H264/99999999999999999999", "a=rtpmap:\u0663 H264/90000",
        "a=fmtp:96 sprop-parameter-sets=!!!,@@", "a=fmtp:96 sprop-vps=;sprop-sps=AAAA", "a=framerate:NaN",
        "a=framerate:inf", "a=framerate:-25", "a=framerate:1e400", "a=control:", "a=control:*",
        "a=control:rtsp://[::1", "a=", "a=:", "v=0", "\x00\xff",
    ]
)


@settings(max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(st.one_of(SDP_LINES, st.text(max_size=40)), max_size=12))
def test_any_sdp_is_parsed_or_refused_with_a_reason(lines: list[str]) -> None:
    try:
        track = parse_sdp("\r\n".join(lines), "rtsp://127.0.0.1/cam")
    except RtspClientError as exc:
        assert str(exc)
        return
    assert 0 <= track.payload_type <= 127 and track.clock_rate > 0
    assert track.framerate is None or 0 < track.framerate <= 1000


@settings(max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(packets=st.lists(st.binary(max_size=1500), max_size=40), codec=st.sampled_from(["h264", "hevc"]))
def test_any_rtp_packets_give_access_units_or_value_errors(packets: list[bytes], codec: str) -> None:
    depacketizer = Depacketizer(codec)
    for packet in packets:
        try:
            units = depacketizer.push(b"\x80" + packet[1:] if packet else packet)
        except ValueError:
            continue
        assert all(len(u.data) <= MAX_ACCESS_UNIT + 4 * 1500 for u in units)


def test_a_picture_that_never_ends_is_refused_at_the_limit() -> None:
    depacketizer = Depacketizer("h264", 96)
    header = bytes([0x80, 96])
    with pytest.raises(OversizedAccessUnit, match="larger than 16 MiB"):
        for seq in range(MAX_ACCESS_UNIT // 60_000 + 2):
            fu = bytes([0x7C, 0x85 if seq == 0 else 0x05])
            depacketizer.push(header + seq.to_bytes(2, "big") + bytes(8) + fu + bytes(60_000))
