"""The native RTSP ingest ([ingest] client = "native"): real cameras (GStreamer's RTSP server,
the demo camera, the gateway's own authenticated re-stream), every picture completed on the
RTP marker bit, and one frame less latency than the FFmpeg ingest."""

from __future__ import annotations

import asyncio
import re
import statistics
import threading
import time

import av
import pytest

from gateway.appkeys import AUDIT, IDENTITY
from gateway.config import IngestConfig
from gateway.live.rtsp_out import RTSP_OUT
from gateway.media import h26x
from gateway.media.hub import StreamHub
from gateway.media.packet import MediaPacket
from gateway.media.source import RtspSource, SourceState
from gateway.media.timecode import read_timecode
from gateway.rtsp.client import RtspClient
from gateway.rtsp.depacketizer import Depacketizer, TimestampUnwrapper
from gateway.rtsp.rtp import RtpPacketizer
from tests.fixtures_app import TEST_PASSWORD, RunningGateway, camera_toml
from tests.fixtures_cameras import free_port

NATIVE = IngestConfig(open_timeout=5, read_timeout=2, backoff_initial=0.2, backoff_max=1.0, client="native")
FFMPEG = IngestConfig(open_timeout=5, read_timeout=2, backoff_initial=0.2, backoff_max=1.0, client="ffmpeg")


def source_for(url: str, ingest: IngestConfig, name: str = "cam") -> tuple[RtspSource, StreamHub]:
    hub = StreamHub(name)

    async def get_url() -> str:
        return url

    return RtspSource(name, hub, get_url, ingest), hub


async def wait_state(source: RtspSource, state: SourceState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while source.status.state != state:
        if time.monotonic() > deadline:
            raise AssertionError(f"{source.name}: still {source.status} after {timeout}s, wanted {state}")
        await asyncio.sleep(0.05)


async def pull(url: str, ingest: IngestConfig, count: int, *, online_within: float = 10) -> list[MediaPacket]:
    source, hub = source_for(url, ingest)
    async with source:
        await wait_state(source, SourceState.ONLINE, online_within)
        reader = hub.open_reader("test")
        return [await asyncio.wait_for(reader.recv(), 5) for _ in range(count)]


def decode_all(packets: list[MediaPacket]) -> list[av.VideoFrame]:
    """Decode every packet with a fresh decoder; any decoder error fails the test."""
    decoder = av.CodecContext.create(packets[0].info.codec, "r")
    frames: list[av.VideoFrame] = []
    for p in packets:
        frames += decoder.decode(av.Packet(p.data))
    return frames


def kinds(codec: str, data: bytes) -> list[int]:
    return [h26x.nal_type(codec, n) for n in h26x.iter_nals(data)]


# --- the depacketizer, on packets of our own packetizer ---------------------------------------


def _au(codec: str, *nals: bytes) -> bytes:
    return b"".join(h26x.START_CODE + n for n in nals)


def test_access_unit_completes_on_the_marker_bit_and_on_a_timestamp_change_without_it():
    pk = RtpPacketizer("h264", payload_type=96, max_payload=100, timestamp_offset=2**32 - 3000)
    idr = _au("h264", bytes([0x67, 1, 2, 3]), bytes([0x68, 4]), bytes([0x65]) + bytes(range(250)), bytes([0x65]) + b"\x11" * 40)
    p_frame = _au("h264", bytes([0x41]) + b"\x22" * 30)
    first = pk.packetize(idr, 0)  # FU-A fragments and single NALs, marker on the last
    second = pk.packetize(p_frame, 3600)  # crosses the 2**32 timestamp wrap
    depacketizer = Depacketizer("h264", 96)
    out = []
    for i, packet in enumerate(first):
        units = depacketizer.push(packet)
        assert (len(units) == 1) == (i == len(first) - 1)  # released by the last packet, not later
        out += units
    out += depacketizer.push(second[0])
    assert [u.data for u in out] == [idr, p_frame]  # both slices of the keyframe: one access unit
    assert out[1].timestamp - out[0].timestamp == 3600 and all(u.marked and not u.damaged for u in out)

    # a camera that never sets the marker: the next picture's timestamp completes the previous one
    unmarked = Depacketizer("h264", 96)
    strip = lambda p: p[:1] + bytes([p[1] & 0x7F]) + p[2:]  # noqa: E731
    got = []
    for packet in pk.packetize(p_frame, 7200) + pk.packetize(p_frame, 10800):
        got += unmarked.push(strip(packet))
    assert len(got) == 1 and got[0].data == p_frame and not got[0].marked
    assert unmarked.flush().data == p_frame

    # a lost fragment marks the access unit damaged and drops only the broken NAL unit
    lossy = Depacketizer("h264", 96)
    packets = pk.packetize(idr, 14400)
    units = [u for p in packets[:2] + packets[3:] for u in lossy.push(p)]
    assert len(units) == 1 and units[0].damaged and lossy.lost == 1


def test_timestamp_unwrapper_continues_across_the_32_bit_wrap():
    unwrap = TimestampUnwrapper()
    values = [unwrap(t) for t in (2**32 - 3600, 2**32 - 1, 3599, 7199)]
    assert values == [2**32 - 3600, 2**32 - 1, 2**32 + 3599, 2**32 + 7199]


def test_h265_aggregation_and_fragmentation_units():
    vps, sps, pps = bytes([0x40, 1, 9]), bytes([0x42, 1, 8]), bytes([0x44, 1, 7])
    idr = bytes([0x26, 1]) + bytes(range(200)) * 3
    au = _au("hevc", vps, sps, pps, idr)
    pk = RtpPacketizer("hevc", max_payload=120)
    packets = pk.packetize(au, 0)
    # parameter sets as one aggregation packet (AP), as GStreamer's rtph265pay may send them
    ap = bytes([48 << 1, 1]) + b"".join(len(n).to_bytes(2, "big") + n for n in (vps, sps, pps))
    head = packets[2][:12]  # the AP replaces the first three packets, in the sequence of the third
    depacketizer = Depacketizer("hevc")
    units = []
    for packet in [head[:1] + bytes([head[1] & 0x7F]) + head[2:] + ap] + packets[3:]:
        units += depacketizer.push(packet)
    assert len(units) == 1 and units[0].data == au and not units[0].damaged


# --- real cameras -----------------------------------------------------------------------------


@pytest.mark.gstreamer
@pytest.mark.parametrize(
    ("mount", "codec", "transport"),
    [
        ("h264", "h264", "tcp"),
        ("h264", "h264", "udp"),
        ("h265", "hevc", "tcp"),
        ("h265", "hevc", "udp"),
        ("h264-sdp-only", "h264", "tcp"),
        ("h264-sliced", "h264", "udp"),
    ],
)
async def test_native_client_pulls_every_gstreamer_mount_decodably(shared_gst_camera, mount, codec, transport):
    ingest = IngestConfig(open_timeout=5, read_timeout=2, client="native", transport=transport)
    packets = await pull(shared_gst_camera.url(mount), ingest, 50)
    first = packets[0]
    assert first.keyframe and first.info.codec == codec and first.info.declared_fps == 25.0
    wanted = {h26x.HEVC_VPS, h26x.HEVC_SPS, h26x.HEVC_PPS} if codec == "hevc" else {h26x.H264_SPS, h26x.H264_PPS}
    for p in packets:
        if p.keyframe:  # in-band or only in the SDP at the camera: in front of every keyframe here
            assert wanted <= set(kinds(codec, p.data)), (mount, kinds(codec, p.data))
    pts = [p.pts for p in packets]
    assert all(b > a for a, b in zip(pts, pts[1:])), pts
    assert all(b - a == 3600 for a, b in zip(pts, pts[1:])), "one access unit per picture, 25 fps"
    frames = decode_all(packets)
    assert len(frames) >= len(packets) - 2 and frames[0].width == first.info.width == 640
    if mount == "h264-sliced":  # four slices per picture, all in one access unit
        assert kinds(codec, packets[1].data).count(1) == 4, kinds(codec, packets[1].data)


@pytest.mark.gstreamer
async def test_native_client_on_a_long_gop_camera_starts_at_a_keyframe(shared_gst_camera):
    packets = await pull(shared_gst_camera.url("h264-long-gop"), NATIVE, 25, online_within=15)
    assert packets[0].keyframe and sum(p.keyframe for p in packets) == 1
    assert len(decode_all(packets)) >= 24


@pytest.mark.gstreamer
async def test_a_camera_table_selects_the_native_client(make_gateway, shared_gst_camera):
    """Per camera ``ingest-client`` overrides ``[ingest] client`` (whatever its default is)."""
    cams = (
        camera_toml("native", "generic_rtsp", url=shared_gst_camera.url("h264")).replace(
            'area = "centre"\n', 'area = "centre"\ningest-client = "native"\n'
        )
        + camera_toml("classic", "generic_rtsp", url=shared_gst_camera.url("h264"))
    )
    gw = await make_gateway(cams, '[ingest]\nclient = "ffmpeg"\nbackoff-initial = 0.2\nbackoff-max = 2.0\nread-timeout = 3.0\n')
    await gw.wait_online("native", "classic")
    assert gw.cameras.get("native")._source.ingest.client == "native"
    assert gw.cameras.get("classic")._source.ingest.client == "ffmpeg"
    reader = gw.cameras.get("native").hub.open_reader("test")
    packets = [await asyncio.wait_for(reader.recv(), 5) for _ in range(10)]
    assert len(decode_all(packets)) >= 9


# --- the demo camera: latency, and the gateway's own re-stream with Digest ----------------------

DEMO = camera_toml("demo", "demo", width=640, height=360, keyframe_interval=1.0)


@pytest.fixture
async def demo_gateway(make_gateway) -> RunningGateway:
    toml = f"[rtsp-out]\nenabled = true\nport = {free_port()}\nallow-md5 = true\n"
    gw = await make_gateway(DEMO, toml)
    await gw.wait_online("demo")
    return gw


def latencies(packets: list[MediaPacket]) -> list[float]:
    """Arrival at the hub minus the capture time code in the picture, in ms."""
    decoder = av.CodecContext.create(packets[0].info.codec, "r")
    out = []
    for p in packets:
        for frame in decoder.decode(av.Packet(p.data)):
            code = read_timecode(frame.to_ndarray(format="gray"))
            assert code is not None
            out.append(p.wallclock * 1000 - code)
    return out


async def test_native_client_is_a_frame_closer_to_the_camera_than_ffmpeg(demo_gateway: RunningGateway):
    url = await demo_gateway.cameras.get("demo").vendor.stream_url()
    # Both clients at once on the same camera: the same load and the same pictures.
    native, ffmpeg = await asyncio.gather(pull(url, NATIVE, 50), pull(url, FFMPEG, 50))
    native_ms = statistics.median(await asyncio.to_thread(latencies, native))
    ffmpeg_ms = statistics.median(await asyncio.to_thread(latencies, ffmpeg))
    print(f"capture -> hub, median: native {native_ms:.1f} ms, ffmpeg {ffmpeg_ms:.1f} ms")
    assert native_ms < ffmpeg_ms, (native_ms, ffmpeg_ms)


async def rtsp_secret(gw: RunningGateway, username: str) -> str:
    await gw.app[IDENTITY].create_user(
        username, password=TEST_PASSWORD, role="central-system", areas=("centre",)
    )
    admin = await gw.sign_in("root", role="admin", all_areas=True)
    async with admin.post(f"{gw.url}/api/users/{username}/rtsp-secret") as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["secret"]


async def audit_entries(gw: RunningGateway, *, want: int = 1, timeout: float = 10.0, **kw) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await gw.app[AUDIT].query(**kw)
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_native_client_authenticates_with_digest_at_the_gateways_restream(demo_gateway: RunningGateway, transport):
    gw = demo_gateway
    secret = await rtsp_secret(gw, "central")
    port = gw.app[RTSP_OUT].port
    ingest = IngestConfig(open_timeout=5, read_timeout=2, backoff_initial=5, backoff_max=5, client="native", transport=transport)

    # a wrong secret: refused (401), the source says why, and the gateway audited the refusal
    source, _ = source_for(f"rtsp://central:{'x' * 32}@127.0.0.1:{port}/cameras/demo", ingest)
    async with source:
        await wait_state(source, SourceState.OFFLINE, 10)
        error = source.status.last_error
    assert error == "the camera refused our credentials (401)"
    refused = await audit_entries(gw, action="live.view", outcome="refused", user="central")
    assert refused and refused[0]["detail"]["status"] == 401
    assert refused[0]["detail"]["reason"] == "wrong username or secret"

    packets = await pull(f"rtsp://central:{secret}@127.0.0.1:{port}/cameras/demo", ingest, 30)
    assert packets[0].keyframe and len(decode_all(packets)) >= 29
    starts = await audit_entries(gw, action="live.start", user="central")
    assert starts and starts[0]["detail"]["auth"] == "digest" and starts[0]["detail"]["user_agent"] == "Citygate"
    assert starts[0]["detail"]["transport"] == transport and starts[0]["camera"] == "demo"


# --- keepalive and receiver reports, seen on the wire ----------------------------------------


async def test_native_client_sends_keepalives_and_receiver_reports(demo_gateway: RunningGateway):
    """A recording proxy between client and camera shortens the announced session timeout to
    5 s, so the keepalive (due at half of it) shows within a few seconds."""
    target = await demo_gateway.cameras.get("demo").vendor.stream_url()
    host_port = target.split("//", 1)[1].split("/", 1)[0]
    cam_host, cam_port = host_port.rsplit(":", 1)
    upstream_bytes = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(cam_host, int(cam_port))

        async def client_to_camera() -> None:
            while data := await reader.read(65536):
                upstream_bytes.extend(data)
                up_w.write(data)

        async def camera_to_client() -> None:
            while data := await up_r.read(65536):
                writer.write(data.replace(b";timeout=60", b";timeout=5"))

        try:
            await asyncio.gather(client_to_camera(), camera_to_client())
        finally:
            up_w.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = target.replace(host_port, f"127.0.0.1:{port}")
    source, hub = source_for(url, NATIVE)
    try:
        async with source:
            await wait_state(source, SourceState.ONLINE, 10)
            deadline = time.monotonic() + 10
            while b"GET_PARAMETER" not in upstream_bytes and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert source.status.state == SourceState.ONLINE
    finally:
        server.close()
    wire = bytes(upstream_bytes)
    assert b"GET_PARAMETER " in wire
    # interleaved RTCP on channel 1: a receiver report (PT 201) naming the camera's SSRC
    at = wire.find(b"$\x01")
    assert at >= 0 and wire[at + 5] == 201 and wire[at + 4] & 0x1F == 1


@pytest.mark.gstreamer
async def test_native_client_reconnects_after_the_camera_comes_back(gst_camera):
    source, hub = source_for(gst_camera.url("h264"), NATIVE, "flaky")
    async with source:
        await wait_state(source, SourceState.ONLINE, 10)
        reader = hub.open_reader("watch")
        before = [await asyncio.wait_for(reader.recv(), 5) for _ in range(5)]
        await asyncio.to_thread(gst_camera.kill)
        await wait_state(source, SourceState.OFFLINE, NATIVE.read_timeout + 5)
        error = source.status.last_error
        await asyncio.to_thread(gst_camera.restart)
        await wait_state(source, SourceState.ONLINE, 10)
        after = []
        while len(after) < 10:  # the old connection's last pictures may still be queued
            packet = await asyncio.wait_for(reader.recv(), 5)
            if packet.info.epoch > before[0].info.epoch or after:
                after.append(packet)
    assert error in ("the camera closed the connection", "no data from the camera within the read timeout", "connection refused")
    assert after[0].keyframe and after[0].discontinuity and after[0].info.epoch > before[0].info.epoch
    pts = [p.pts for p in before + after]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert len(decode_all(after)) >= 9


# --- UDP: packets swapped and duplicated on the way ------------------------------------------


class _Shuffler(asyncio.DatagramProtocol):
    """Relays a camera's UDP datagrams to the client, holding every 5th back behind the next
    one (swapped pairs, across picture boundaries too) and sending every 7th twice."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.target: tuple[str, int] | None = None
        self.held: bytes | None = None
        self.count = self.swapped = self.duplicated = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.target is None or self.transport is None:
            return
        self.count += 1
        send = self.transport.sendto
        if self.held is not None:
            send(data, self.target)
            send(self.held, self.target)
            self.held = None
            self.swapped += 1
        elif self.count % 5 == 0:
            self.held = data
        else:
            send(data, self.target)
            if self.count % 7 == 0:
                send(data, self.target)
                self.duplicated += 1


@pytest.mark.gstreamer
async def test_native_client_over_udp_puts_swapped_and_duplicated_packets_back_in_order(shared_gst_camera):
    """A relay between the GStreamer camera and the client (the SETUP's client ports rewritten
    by an RTSP proxy) swaps and duplicates RTP packets: every access unit still decodes."""
    loop = asyncio.get_running_loop()
    rtp_relay = _Shuffler()
    rtcp_relay = _Shuffler()
    rtp_transport, _ = await loop.create_datagram_endpoint(lambda: rtp_relay, local_addr=("127.0.0.1", 0))
    rtcp_transport, _ = await loop.create_datagram_endpoint(lambda: rtcp_relay, local_addr=("127.0.0.1", 0))
    relay_ports = f"client_port={rtp_transport.get_extra_info('sockname')[1]}-{rtcp_transport.get_extra_info('sockname')[1]}"
    cam_host, cam_port = shared_gst_camera.host, shared_gst_camera.port

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(cam_host, cam_port)

        async def client_to_camera() -> None:
            while data := await reader.read(65536):
                match = re.search(rb"client_port=(\d+)-(\d+)", data)
                if match:
                    rtp_relay.target = ("127.0.0.1", int(match[1]))
                    rtcp_relay.target = ("127.0.0.1", int(match[2]))
                    data = data.replace(match[0], relay_ports.encode())
                up_w.write(data)

        async def camera_to_client() -> None:
            while data := await up_r.read(65536):
                writer.write(data)

        try:
            await asyncio.gather(client_to_camera(), camera_to_client())
        finally:
            up_w.close()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"rtsp://127.0.0.1:{server.sockets[0].getsockname()[1]}/h264"
    stop = threading.Event()

    def receive() -> tuple[RtspClient, bytes, list]:
        with RtspClient(url, transport="udp", stop=stop) as client:
            track = client.open()
            units = []
            for unit in client.access_units():
                if units or h26x.H264_IDR in kinds("h264", unit.data):
                    units.append(unit)
                if len(units) == 60:
                    return client, track.parameter_sets, units
        raise AssertionError("the stream ended")

    try:
        client, parameter_sets, units = await asyncio.wait_for(asyncio.to_thread(receive), 30)
    finally:
        stop.set()
        server.close()
        rtp_transport.close()
        rtcp_transport.close()
    assert rtp_relay.swapped >= 10 and rtp_relay.duplicated >= 5, (rtp_relay.swapped, rtp_relay.duplicated)
    reorder = client.reorder
    assert reorder.reordered >= 10 and reorder.lost == 0 and reorder.duplicates + reorder.late >= 5
    assert client.depacketizer is not None and client.depacketizer.lost == 0 and client.depacketizer.late == 0
    assert not any(u.damaged for u in units) and all(u.marked for u in units)
    stamps = [u.timestamp for u in units]
    assert all(b - a == 3600 for a, b in zip(stamps, stamps[1:])), "one access unit per picture, in order"
    decoder = av.CodecContext.create("h264", "r")
    frames = decoder.decode(av.Packet(parameter_sets + units[0].data))  # any decoder error fails the test
    for unit in units[1:]:
        frames += decoder.decode(av.Packet(unit.data))
    assert len(frames) >= len(units) - 2 and frames[0].width == 640
