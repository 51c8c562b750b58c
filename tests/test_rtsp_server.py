"""RTP packetizers and the RTSP server, exercised with real H.264 and real clients (PyAV/FFmpeg)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from gateway.media.h26x import ParameterSetKeeper, iter_nals, nal_type
from gateway.media.hub import StreamHub
from gateway.media.packet import MediaPacket, StreamInfo
from gateway.rtsp.rtp import (
    RtpPacketizer,
    depacketize,
    fragment_access_unit,
    h264_fmtp,
    hevc_fmtp,
    parse_rtp,
    video_media_sdp,
)
from gateway.rtsp.server import RtspServer

AV_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}


# --- helpers -------------------------------------------------------------------------------


def encode(codec: str = "h264", frames: int = 50, width: int = 320, height: int = 240, keyint: int = 25) -> list[bytes]:
    """Encode a short moving picture with libx264 or libx265; return Annex B access units."""
    encoder = "libx265" if codec == "hevc" else "libx264"
    context = av.CodecContext.create(encoder, "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 25)
    context.framerate = Fraction(25)
    params = f"repeat-headers=1:keyint={keyint}:min-keyint={keyint}:scenecut=0"
    if codec == "hevc":
        params += ":bframes=0:log-level=error"
    context.options = {"preset": "ultrafast", "tune": "zerolatency", f"{encoder[3:]}-params": params}
    units = []
    for i in range(frames):
        yuv = np.full((height * 3 // 2, width), 128, np.uint8)
        yuv[:height, (i * 4) % width : (i * 4) % width + 16] = 235
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        units += [bytes(p) for p in context.encode(frame)]
    units += [bytes(p) for p in context.encode(None)]
    return units


@pytest.fixture(scope="module")
def h264_units() -> list[bytes]:
    return encode("h264")


@pytest.fixture(scope="module")
def hevc_units() -> list[bytes]:
    return encode("hevc")


class Feeder:
    """Publishes access units into a hub in real time, looping, like a camera source."""

    def __init__(self, hub: StreamHub, units: list[bytes], fps: float = 25.0, codec: str = "h264") -> None:
        self.hub = hub
        self.codec = codec
        self.units = units
        self.fps = fps
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        keeper = ParameterSetKeeper(self.codec)
        info: StreamInfo | None = None
        index = 0
        while True:
            data, keyframe = keeper.process(self.units[index % len(self.units)])
            if info is None:
                info = StreamInfo(self.codec, 320, 240, keeper.parameter_sets)
            pts = index * 3600
            self.hub.publish(MediaPacket(data, pts, pts, keyframe, time.time(), info))
            self.published += 1
            index += 1
            await asyncio.sleep(1 / self.fps)

    async def __aenter__(self) -> Feeder:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def read_with_pyav(url: str, count: int) -> list[av.Packet]:
    """Blocking: open ``url`` over RTSP/TCP with PyAV and return ``count`` video packets."""
    container = av.open(url, options=AV_OPTIONS)
    try:
        packets = []
        for packet in container.demux(video=0):
            if packet.size:
                packets.append(packet)
            if len(packets) >= count:
                break
        return packets
    finally:
        container.close()


class RawRtspClient:
    """A minimal RTSP client that speaks the protocol by hand, for status codes and raw RTP."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.cseq = 0
        self.session: str | None = None

    @classmethod
    async def connect(cls, port: int, *, rcvbuf: int | None = None) -> RawRtspClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, method: str, url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        self.cseq += 1
        lines = [f"{method} {url} RTSP/1.0", f"CSeq: {self.cseq}"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        while True:
            first = await self.reader.readexactly(1)
            if first != b"$":
                break
            header = await self.reader.readexactly(3)
            await self.reader.readexactly(int.from_bytes(header[1:], "big"))
        head = (first + await self.reader.readuntil(b"\r\n\r\n")).decode()
        status_line, *header_lines = head.strip().split("\r\n")
        response_headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(response_headers.get("content-length", 0)))
        if "session" in response_headers:
            self.session = response_headers["session"].split(";")[0]
        return int(status_line.split()[1]), response_headers, body

    async def play(self, url: str) -> None:
        status, _, _ = await self.request("DESCRIBE", url)
        assert status == 200
        status, _, _ = await self.request("SETUP", url + "/trackID=0", Transport="RTP/AVP/TCP;unicast;interleaved=0-1")
        assert status == 200
        status, _, _ = await self.request("PLAY", url)
        assert status == 200

    async def read_interleaved(self, timeout: float, duration: float = 10.0) -> list[tuple[int, bytes]]:
        """Read ``$`` frames until nothing arrives for ``timeout`` seconds, or for ``duration``."""
        frames: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            try:
                first = await asyncio.wait_for(self.reader.readexactly(1), timeout)
            except (TimeoutError, asyncio.IncompleteReadError):
                return frames
            assert first == b"$"
            header = await self.reader.readexactly(3)
            frames.append((header[0], await self.reader.readexactly(int.from_bytes(header[1:], "big"))))
        return frames

    def close(self) -> None:
        self.writer.close()


# --- RTP packetization ---------------------------------------------------------------------


def h264_nal(kind: int, size: int) -> bytes:
    return bytes([0x60 | kind]) + os.urandom(size - 1)


def hevc_nal(kind: int, size: int) -> bytes:
    return bytes([kind << 1, 0x01]) + os.urandom(size - 2)


@pytest.mark.parametrize(
    ("codec", "nals"),
    [
        ("h264", [h264_nal(7, 20), h264_nal(8, 5), h264_nal(5, 5000), h264_nal(5, 1400), h264_nal(5, 1401)]),
        ("hevc", [hevc_nal(32, 24), hevc_nal(33, 40), hevc_nal(34, 8), hevc_nal(19, 7000), hevc_nal(1, 1400)]),
    ],
)
def test_fragment_and_reassemble_roundtrip(codec: str, nals: list[bytes]) -> None:
    access_unit = b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)
    packetizer = RtpPacketizer(codec, max_payload=1400)
    packets = packetizer.packetize(access_unit, pts=90_000)

    assert all(len(p) <= 12 + 1400 for p in packets)
    parsed = [parse_rtp(p) for p in packets]
    assert depacketize(codec, [payload for *_, payload in parsed]) == access_unit
    assert [marker for _, marker, *_ in parsed] == [False] * (len(packets) - 1) + [True]
    assert {timestamp for _, _, _, timestamp, _, _ in parsed} == {packetizer.rtp_timestamp(90_000)}
    assert {ssrc for *_, ssrc, _ in parsed} == {packetizer.ssrc}
    assert len(packets) > len(nals)  # the big NAL units were fragmented


def test_sequence_numbers_wrap_and_timestamps_follow_pts() -> None:
    packetizer = RtpPacketizer("h264", sequence=65534, timestamp_offset=2**32 - 100, ssrc=7)
    first = packetizer.packetize(b"\x00\x00\x01" + h264_nal(5, 3000), pts=0)
    second = packetizer.packetize(b"\x00\x00\x01" + h264_nal(1, 100), pts=3600)
    sequences = [parse_rtp(p)[2] for p in first + second]
    assert sequences == [65534, 65535, 0, 1]
    assert parse_rtp(first[0])[3] == 2**32 - 100
    assert parse_rtp(second[0])[3] == 3500  # wrapped modulo 2**32
    assert packetizer.sequence == 2


def test_access_unit_delimiters_are_not_sent() -> None:
    access_unit = b"\x00\x00\x00\x01\x09\xf0" + b"\x00\x00\x00\x01" + h264_nal(1, 50)
    assert fragment_access_unit("h264", access_unit) == [access_unit[10:]]


def test_h264_fmtp_from_real_parameter_sets(h264_units: list[bytes]) -> None:
    keeper = ParameterSetKeeper("h264")
    keeper.process(h264_units[0])
    sps, pps = list(iter_nals(keeper.parameter_sets))
    params = dict(p.split("=", 1) for p in h264_fmtp(keeper.parameter_sets).split(";"))
    assert params["packetization-mode"] == "1"
    assert params["profile-level-id"] == sps[1:4].hex().upper()
    assert [base64.b64decode(s) for s in params["sprop-parameter-sets"].split(",")] == [sps, pps]
    lines = video_media_sdp("h264", keeper.parameter_sets)
    assert "a=rtpmap:96 H264/90000" in lines


def test_hevc_fmtp() -> None:
    vps, sps, pps = hevc_nal(32, 20), hevc_nal(33, 30), hevc_nal(34, 6)
    sets = b"".join(b"\x00\x00\x00\x01" + n for n in (vps, sps, pps))
    params = dict(p.split("=", 1) for p in hevc_fmtp(sets).split(";"))
    assert {k: base64.b64decode(v) for k, v in params.items()} == {"sprop-vps": vps, "sprop-sps": sps, "sprop-pps": pps}
    assert "a=rtpmap:96 H265/90000" in video_media_sdp("hevc", sets)


# --- the server ----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["h264", "hevc"])
async def test_pyav_client_plays_a_mount(codec: str, request: pytest.FixtureRequest) -> None:
    units = request.getfixturevalue(f"{codec}_units")
    hub = StreamHub("cam")
    async with RtspServer() as server, Feeder(hub, units, codec=codec):
        server.add_mount("/cam", hub)
        packets = await asyncio.to_thread(read_with_pyav, server.url("/cam"), 30)
        assert len(packets) == 30
        assert packets[0].is_keyframe  # started from the cached keyframe
        frames = [f for p in packets for f in p.decode()]
        assert frames and (frames[0].width, frames[0].height) == (320, 240)
        pts = [p.pts for p in packets if p.pts is not None]
        assert pts == sorted(pts)


async def test_ffmpeg_without_transport_option_falls_back_to_tcp(h264_units: list[bytes]) -> None:
    hub = StreamHub("cam")
    async with RtspServer() as server, Feeder(hub, h264_units):
        server.add_mount("/cam", hub)
        process = await asyncio.create_subprocess_exec(
            "ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0",
            server.url("/cam"),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert out.decode().strip() == "h264,320,240"


async def test_two_concurrent_clients_both_receive(h264_units: list[bytes]) -> None:
    hub = StreamHub("cam")
    async with RtspServer() as server, Feeder(hub, h264_units):
        server.add_mount("/cam", hub)
        url = server.url("/cam")
        first, second = await asyncio.gather(
            asyncio.to_thread(read_with_pyav, url, 20), asyncio.to_thread(read_with_pyav, url, 20)
        )
        assert len(first) == len(second) == 20
        assert first[0].is_keyframe and second[0].is_keyframe


async def test_unknown_mount_is_404_and_udp_is_461(h264_units: list[bytes]) -> None:
    hub = StreamHub("cam")
    async with RtspServer() as server, Feeder(hub, h264_units):
        server.add_mount("/cam", hub)
        client = await RawRtspClient.connect(server.port)
        try:
            status, headers, _ = await client.request("OPTIONS", server.url("/cam"))
            assert status == 200 and "DESCRIBE" in headers["public"]
            assert (await client.request("DESCRIBE", server.url("/nope")))[0] == 404
            assert (await client.request("DESCRIBE", server.url("/cam/extra")))[0] == 404
            status, _, _ = await client.request(
                "SETUP", server.url("/cam") + "/trackID=0", Transport="RTP/AVP;unicast;client_port=5000-5001"
            )
            assert status == 461
            assert (await client.request("PLAY", server.url("/cam"), Session="nosuch"))[0] == 454
            assert (await client.request("RECORD", server.url("/cam")))[0] == 501
        finally:
            client.close()


async def test_describe_waits_for_a_stream_then_gives_up() -> None:
    hub = StreamHub("cam")
    async with RtspServer(describe_timeout=0.3) as server:
        server.add_mount("/cam", hub)
        client = await RawRtspClient.connect(server.port)
        try:
            started = time.monotonic()
            status, _, _ = await client.request("DESCRIBE", server.url("/cam"))
            assert status == 503
            assert time.monotonic() - started >= 0.25
        finally:
            client.close()


async def test_raw_client_gets_rtp_info_and_decodable_access_units(h264_units: list[bytes]) -> None:
    hub = StreamHub("cam")
    async with RtspServer() as server, Feeder(hub, h264_units):
        server.add_mount("/cam", hub)
        url = server.url("/cam")
        client = await RawRtspClient.connect(server.port)
        try:
            status, headers, sdp = await client.request("DESCRIBE", url)
            assert status == 200 and headers["content-type"] == "application/sdp"
            assert b"m=video 0 RTP/AVP 96" in sdp and b"sprop-parameter-sets=" in sdp
            status, headers, _ = await client.request(
                "SETUP", url + "/trackID=0", Transport="RTP/AVP/TCP;unicast;interleaved=0-1"
            )
            assert status == 200 and "interleaved=0-1" in headers["transport"]
            assert "timeout=" in headers["session"]
            status, headers, _ = await client.request("PLAY", url)
            assert status == 200
            rtp_info = dict(p.split("=", 1) for p in headers["rtp-info"].split(";"))
            frames = await client.read_interleaved(timeout=0.5, duration=1.0)
        finally:
            client.close()
    rtp = [parse_rtp(data) for channel, data in frames if channel == 0]
    assert any(channel == 1 for channel, _ in frames)  # an RTCP sender report
    assert rtp[0][2] == int(rtp_info["seq"]) and rtp[0][3] == int(rtp_info["rtptime"])
    # Complete access units on the marker bit and decode them.
    decoder = av.CodecContext.create("h264", "r")
    decoded = 0
    unit: list[bytes] = []
    for _, marker, _, _, _, payload in rtp:
        unit.append(payload)
        if marker:
            decoded += len(decoder.decode(av.Packet(depacketize("h264", unit))))
            unit = []
    assert decoded >= 5


async def test_client_disconnect_closes_its_hub_reader(h264_units: list[bytes]) -> None:
    hub = StreamHub("cam")
    async with RtspServer() as server, Feeder(hub, h264_units):
        server.add_mount("/cam", hub)
        client = await RawRtspClient.connect(server.port)
        await client.play(server.url("/cam"))
        assert hub.readers == 1
        client.close()
        for _ in range(50):
            if hub.readers == 0:
                break
            await asyncio.sleep(0.05)
        assert hub.readers == 0


async def test_teardown_and_remove_mount(h264_units: list[bytes]) -> None:
    hub = StreamHub("cam")
    async with RtspServer() as server, Feeder(hub, h264_units):
        server.add_mount("/cam", hub)
        client = await RawRtspClient.connect(server.port)
        try:
            await client.play(server.url("/cam"))
            assert (await client.request("TEARDOWN", server.url("/cam")))[0] == 200
            assert hub.readers == 0
        finally:
            client.close()
        other = await RawRtspClient.connect(server.port)
        await other.play(server.url("/cam"))
        server.remove_mount("/cam")
        assert hub.readers == 0
        await other.read_interleaved(timeout=1.0)  # returns once the server has closed the connection
        assert other.reader.at_eof()


async def test_slow_client_skips_to_next_keyframe_without_unbounded_buffering() -> None:
    """A client that stops reading loses whole GOPs and resumes at a keyframe."""
    hub = StreamHub("cam")
    info = StreamInfo("h264", 320, 240, b"\x00\x00\x00\x01\x67\x42\x00\x1e\x00\x00\x00\x01\x68\xce")
    frame_size = 60_000
    async with RtspServer(max_write_buffer=200_000) as server:
        server.add_mount("/cam", hub)
        hub.publish(MediaPacket(b"\x00\x00\x00\x01" + h264_nal(5, frame_size), 0, 0, True, time.time(), info))
        client = await RawRtspClient.connect(server.port, rcvbuf=4096)
        try:
            await client.play(server.url("/cam"))


            async def publish(indexes: range, pause: float) -> None:
                for index in indexes:
                    kind = 5 if index % 10 == 0 else 1
                    data = b"\x00\x00\x00\x01" + h264_nal(kind, frame_size)
                    hub.publish(MediaPacket(data, index * 3600, index * 3600, kind == 5, time.time(), info))
                    await asyncio.sleep(pause)
                    (session,) = server.sessions()
                    assert session.buffered_bytes < 200_000 + 2 * frame_size

            # Publish ~25 MB while the client reads nothing: far more than the socket buffers.
            await publish(range(1, 400), 0.001)
            assert server.sessions()[0].dropped_packets > 0
            # Then the client catches up while the stream goes on.
            reading = asyncio.create_task(client.read_interleaved(timeout=0.5))
            await publish(range(400, 440), 0.02)
            frames = await reading
        finally:
            client.close()
    # Reassemble access units; after every gap in timestamps the next unit is a keyframe.
    units: list[tuple[int, int]] = []  # (timestamp, first NAL type)
    payloads: list[bytes] = []
    for channel, data in frames:
        if channel != 0:
            continue
        _, marker, _, timestamp, _, payload = parse_rtp(data)
        payloads.append(payload)
        if marker:
            first_nal = next(iter_nals(depacketize("h264", payloads)))
            units.append((timestamp, nal_type("h264", first_nal)))
            payloads = []
    assert 1 < len(units) < 439
    gaps = 0
    for (previous, _), (timestamp, kind) in zip(units, units[1:]):
        if (timestamp - previous) % 2**32 != 3600:
            gaps += 1
            assert kind == 5
    assert gaps >= 1
