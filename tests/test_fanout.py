"""The WebRTC fan-out: packetized once per camera, header rewrite and SRTP per viewer.

Real gateway, real GStreamer camera, real aiortc viewers in this process (their decoders
run PyAV). What is proved here, beyond what tests/test_webrtc.py covers on the same path:
every frame decodes at 10 viewers; a viewer losing 2 % of its packets recovers every
frame through NACK and RTX from the camera's packet history; a PLI brings a decodable
picture at once (the packetized GOP); a camera with a 10 s GOP gives a new viewer its
first picture from the cache, as one with a 1 s GOP does; a viewer that offers the
playout-delay extension is asked, in every packet, to show pictures at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Iterator

import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport

from gateway.appkeys import AUDIT
from gateway.errors import StreamClosed
from gateway.live import playout_delay
from gateway.live.rtp_fanout import CameraFanout, PacketHistory
from gateway.live.srtp_sender import ViewerSender
from gateway.live.webrtc import WEBRTC_SESSIONS, WebRtcSession
from gateway.media.hub import DEFAULT_READER_PACKETS, StreamHub
from gateway.media.packet import MediaPacket, StreamInfo
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_webrtc import GST_FPS, GST_SIZE, Viewer, connect, wait_for

#: The long-GOP mount's keyframe interval, in frames (tests/gst/camera_server.py).
LONG_GOP = 10 * GST_FPS


class DecodeErrors(logging.Handler):
    """Counts aiortc receivers' 'failed to decode' warnings while installed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decode" in record.getMessage():
            self.count += 1


@pytest.fixture
def decode_errors() -> Iterator[DecodeErrors]:
    handler = DecodeErrors()
    log = logging.getLogger("aiortc.rtcrtpreceiver")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


@pytest.fixture
async def gw(make_gateway, shared_gst_camera) -> RunningGateway:
    cams = camera_toml("gst", "generic_rtsp", url=shared_gst_camera.url("h264"))
    gw = await make_gateway(cams, "[live]\nmax-viewers-per-camera = 12\nmax-viewers = 14\n")
    await gw.wait_online("gst")
    return gw


@pytest.fixture
async def long_gw(make_gateway, shared_gst_camera) -> RunningGateway:
    """The 1 s GOP camera and one with a 10 s GOP (online at its next keyframe: up to 10 s)."""
    cams = camera_toml("gst", "generic_rtsp", url=shared_gst_camera.url("h264"))
    cams += camera_toml("long", "generic_rtsp", url=shared_gst_camera.url("h264-long-gop"))
    gw = await make_gateway(cams)
    await gw.wait_online("gst", "long", timeout=25.0)
    return gw


def session_of(gw: RunningGateway, viewer: Viewer) -> WebRtcSession:
    return gw.app[WEBRTC_SESSIONS].get(viewer.location.rsplit("/", 1)[1])


def sender_of(gw: RunningGateway, viewer: Viewer) -> ViewerSender:
    sender = session_of(gw, viewer).viewer
    assert sender is not None
    return sender


async def live_starts(gw: RunningGateway, camera: str) -> list[dict]:
    rows = await gw.app[AUDIT].query(action="live.start", user="tester")
    return [r for r in rows if r["camera"] == camera and r["detail"]["kind"] == "webrtc"]


def frozen_gaps(frames: list, limit: int = 3 * 3600) -> list[int]:
    """Steps between consecutive pictures longer than ``limit`` (90 kHz): frames lost."""
    return [b.pts - a.pts for a, b in zip(frames, frames[1:]) if b.pts - a.pts > limit]


# --- the hub: a long cached GOP is not lag ------------------------------------------------


def _packet(info: StreamInfo, pts: int, key: bool) -> MediaPacket:
    return MediaPacket(data=b"\x00\x00\x00\x01" + bytes(100), pts=pts, dts=pts, keyframe=key, wallclock=0.0, info=info)


def test_a_reader_preloaded_with_a_long_gop_keeps_it_when_the_next_packet_comes() -> None:
    info = StreamInfo("h264", 640, 360, b"")
    hub = StreamHub("long")
    for i in range(LONG_GOP - 10):  # 240 frames since the keyframe: more than a reader's queue
        hub.publish(_packet(info, i * 3600, i == 0))
    reader = hub.open_reader("viewer")
    assert reader.pending() == LONG_GOP - 10 > DEFAULT_READER_PACKETS
    hub.publish(_packet(info, LONG_GOP * 3600, False))
    first = reader.get_nowait()
    assert first is not None and first.keyframe and first.pts == 0, "the cached GOP was thrown away"
    assert reader.overflows == 0 and reader.pending() == LONG_GOP - 10
    # Once the cached GOP is read, the ordinary lag limit applies again.
    while reader.get_nowait() is not None:
        pass
    for i in range(DEFAULT_READER_PACKETS + 1):
        hub.publish(_packet(info, (LONG_GOP + 1 + i) * 3600, False))
    assert reader.overflows == 1


def test_the_packet_history_forgets_old_packets_by_sequence_number() -> None:
    history = PacketHistory(8)
    hub = StreamHub("cam")
    reader = hub.open_reader("fanout")
    fanout = CameraFanout(("cam", "main"), reader, "h264")
    fanout.history = history
    info = StreamInfo("h264", 640, 360, b"")
    body = bytes(i % 250 + 1 for i in range(3000))  # no zero bytes, so no start codes
    big = MediaPacket(data=b"\x00\x00\x00\x01\x65" + body, pts=0, dts=0, keyframe=True, wallclock=0.0, info=info)
    frame = fanout.packetize(big)
    assert len(frame.payloads) == 3 and frame.payloads[0][1] & 0x80 and frame.payloads[-1][1] & 0x40  # FU-A start, end
    assert history.get(2) == (frame.payloads[2], frame)
    for i in range(3):
        fanout.packetize(MediaPacket(data=b"\x00\x00\x00\x01\x41" + body, pts=i + 1, dts=i + 1, keyframe=False,
                                     wallclock=0.0, info=info))
    assert history.get(2) is None and history.get(11) is not None
    assert fanout.cached_gop()[0] is frame and len(fanout.cached_gop()) == 4
    fanout.forget_gop()
    assert fanout.cached_gop() == []
    fanout.close("test over")
    with pytest.raises(StreamClosed):
        fanout.join(object())  # type: ignore[arg-type]


# --- real viewers --------------------------------------------------------------------------


@pytest.mark.gstreamer
async def test_ten_viewers_decode_every_frame_from_one_packetizer(gw: RunningGateway, decode_errors) -> None:
    viewers = await asyncio.gather(*(connect(gw, "gst") for _ in range(10)))
    try:
        await asyncio.gather(*(v.first_frame() for v in viewers))
        counts = await asyncio.gather(*(v.count_frames(10.0) for v in viewers))
        print("ten viewers, frames in 10 s:", counts, "decode errors:", decode_errors.count)
        assert decode_errors.count == 0
        assert all(c >= 0.8 * GST_FPS * 10.0 for c in counts), counts
        assert all((v.frames[-1].width, v.frames[-1].height) == GST_SIZE for v in viewers)
        # one packetizer for the camera, ten viewers on it, nobody's packets re-packetized
        fanouts = gw.app[WEBRTC_SESSIONS].fanouts
        assert len(fanouts) == 1 and fanouts.get("gst", "main").viewers == 10
        senders = [sender_of(gw, v) for v in viewers]
        assert all(s.frames_sent >= 0.8 * GST_FPS * 10.0 for s in senders)
        assert all(s.last_report > 0 for s in senders), "receiver reports reach the sender"
        assert len(await live_starts(gw, "gst")) == 10
    finally:
        await asyncio.gather(*(v.pc.close() for v in viewers))
    await wait_for(lambda: len(gw.app[WEBRTC_SESSIONS].fanouts) == 0, 10, "fanout closed with its last viewer")


def drop_packets(viewer: Viewer, rate: float, seed: int = 17) -> list[int]:
    """Make ``viewer``'s peer lose ``rate`` of the RTP packets it receives (RTX included),
    before SRTP: as a lossy network would. Returns the list of sequence numbers dropped."""
    dtls: RTCDtlsTransport = viewer.pc.getTransceivers()[0].receiver.transport
    chance = random.Random(seed)
    dropped: list[int] = []
    original = dtls._handle_rtp_data

    async def lossy(data: bytes, arrival_time_ms: int) -> None:
        if chance.random() < rate:
            dropped.append(int.from_bytes(data[2:4], "big"))
            return
        await original(data, arrival_time_ms)

    dtls._handle_rtp_data = lossy  # type: ignore[method-assign]
    return dropped


def clear_headers(viewer: Viewer) -> list[bytes]:
    """The first 20 bytes of every RTP packet ``viewer``'s peer receives: SRTP leaves the
    header and its extension block in the clear."""
    dtls: RTCDtlsTransport = viewer.pc.getTransceivers()[0].receiver.transport
    seen: list[bytes] = []
    original = dtls._handle_rtp_data

    async def tap(data: bytes, arrival_time_ms: int) -> None:
        seen.append(bytes(data[:20]))
        await original(data, arrival_time_ms)

    dtls._handle_rtp_data = tap  # type: ignore[method-assign]
    return seen


def test_the_playout_delay_block_encodes_tens_of_milliseconds() -> None:
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpSendParameters

    offered = RTCRtpSendParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=9, uri=playout_delay.URI)])
    # 12 bits each: min 100 ms = 10 (0x00A), max 1 s = 100 (0x064)
    assert playout_delay.extension_block(offered, 100, 1000) == b"\xbe\xde\x00\x01\x92\x00\xa0\x64"
    assert playout_delay.extension_block(RTCRtpSendParameters()) == b""


@pytest.mark.gstreamer
async def test_a_browser_offering_playout_delay_is_asked_in_every_packet_to_show_pictures_at_once(
    gw: RunningGateway, decode_errors
) -> None:
    def without_it(sdp: str) -> str:
        return "".join(line for line in sdp.splitlines(keepends=True) if playout_delay.URI not in line)

    offering = await connect(gw, "gst")
    plain = await connect(gw, "gst", munge=without_it)
    try:
        found = re.search(rf"a=extmap:(\d+) {re.escape(playout_delay.URI)}", offering.answer)
        assert found, "the answer lists the extension the viewer offered"
        assert playout_delay.URI not in plain.answer
        headers = {id(v): clear_headers(v) for v in (offering, plain)}
        await asyncio.gather(offering.first_frame(), plain.first_frame())
        await asyncio.gather(offering.count_frames(2.0), plain.count_frames(2.0))
        with_block, without = headers[id(offering)], headers[id(plain)]
        assert len(with_block) >= 2 * GST_FPS and len(without) >= 2 * GST_FPS
        element = bytes([(int(found.group(1)) << 4) | 2, 0, 0, 0])  # min 0, max 0
        assert all(h[0] & 0x10 and h[12:20] == b"\xbe\xde\x00\x01" + element for h in with_block)
        assert not any(h[0] & 0x10 for h in without)
        assert decode_errors.count == 0
    finally:
        await asyncio.gather(offering.pc.close(), plain.pc.close())


@pytest.mark.gstreamer
async def test_a_viewer_behind_two_percent_loss_recovers_every_frame_through_nack_and_rtx(
    gw: RunningGateway, decode_errors
) -> None:
    viewer = await connect(gw, "gst")
    try:
        assert "rtx/90000" in viewer.answer and "a=ssrc-group:FID" in viewer.answer
        dropped = drop_packets(viewer, 0.02)
        await viewer.first_frame()
        await viewer.count_frames(8.0)
        sender = sender_of(gw, viewer)
        print(f"dropped {len(dropped)} packets of {sender.packets_sent}; NACKs {sender.nacks}, "
              f"retransmitted {sender.retransmitted}, frames {len(viewer.frames)}, decode errors {decode_errors.count}")
        assert len(dropped) >= 10, "the loss was not injected"
        assert sender.nacks > 0 and sender.retransmitted >= 0.8 * len(dropped)
        assert sender.rtx_payload_type is not None  # retransmitted as RTX, on its own SSRC
        assert decode_errors.count == 0
        live = viewer.frames[GST_FPS:]  # past the cached-GOP burst
        assert frozen_gaps(live) == [], "frames were lost for good"
        assert len(viewer.frames) >= 0.8 * GST_FPS * 8.0
        assert sender.plis == 0, "the viewer had to ask for a new picture"
    finally:
        await viewer.pc.close()


@pytest.mark.gstreamer
async def test_a_pli_gets_a_decodable_picture_within_one_gop_burst(gw: RunningGateway, decode_errors) -> None:
    viewer = await connect(gw, "gst")
    try:
        await viewer.first_frame()
        await viewer.count_frames(1.5)  # past the first burst, into live frames
        sender = sender_of(gw, viewer)
        assert sender.bursts == 1 and sender.state == "live"
        receiver = viewer.pc.getTransceivers()[0].receiver
        before = len(viewer.frames)
        await receiver._send_rtcp_pli(sender.ssrc)  # what a browser sends when its picture breaks
        await wait_for(lambda: sender.bursts == 2, 5, "a second GOP burst")
        await viewer.count_frames(1.0)
        after = viewer.frames[before:]
        # The burst: the cached keyframe again, then the rest of the GOP 1 ms apart (the
        # camera's own keyframes come 40 ms after the picture before them).
        bursts = [i for i, f in enumerate(after) if f.key_frame and i + 1 < len(after) and after[i + 1].pts - f.pts == 90]
        assert bursts, ("no GOP burst after the PLI", [(f.key_frame, b.pts - f.pts) for f, b in zip(after, after[1:])])
        assert (after[bursts[0]].width, after[bursts[0]].height) == GST_SIZE
        assert decode_errors.count == 0
        assert sender.plis == 1
    finally:
        await viewer.pc.close()


@pytest.mark.gstreamer
async def test_a_ten_second_gop_gives_the_first_picture_as_fast_as_a_one_second_gop(
    long_gw: RunningGateway, decode_errors
) -> None:
    gw = long_gw
    long_hub = gw.cameras.get("long").hub
    # Far into the GOP: the cached GOP is longer than a reader's queue.
    await wait_for(lambda: len(long_hub.cached_gop()) > DEFAULT_READER_PACKETS + 10, 15, "a long cached GOP")
    cached = len(long_hub.cached_gop())
    firsts = {}
    for camera in ("long", "gst"):
        viewer = await connect(gw, camera)
        try:
            frame = await viewer.first_frame(timeout=8.0)
            firsts[camera] = time.monotonic() - viewer.posted_at
            assert frame.key_frame and (frame.width, frame.height) == GST_SIZE
            if camera == "long":  # the whole cached GOP comes, 1 ms apart, then live frames
                frames = [frame]
                while len(frames) < cached + 2 and frames[-1].pts - frames[0].pts < 90 * cached:
                    frames.append(await viewer.first_frame(timeout=8.0))
                steps = [b.pts - a.pts for a, b in zip(frames, frames[1:])]
                assert len(frames) >= cached and set(steps[: cached - 1]) == {90}, (cached, len(frames), [(i, s) for i, s in enumerate(steps) if s != 90])
        finally:
            await viewer.pc.close()
    print(f"first picture: 10 s GOP {firsts['long'] * 1000:.0f} ms ({cached} frames cached), "
          f"1 s GOP {firsts['gst'] * 1000:.0f} ms")
    # Without the cache it would wait for the camera's next keyframe: seconds, not a frame.
    assert firsts["long"] < 2.0 and firsts["gst"] < 2.0
    assert decode_errors.count == 0
    assert [r["detail"]["kind"] for r in await live_starts(gw, "long")] == ["webrtc"]
