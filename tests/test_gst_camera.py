"""The test cameras themselves: every GStreamer mount delivers what the other tests assume.

Read with PyAV over RTSP/TCP, as the gateway's ingest does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.error
import numpy as np
import pytest

from gateway.media.h26x import (
    H264_IDR,
    H264_PPS,
    H264_SPS,
    HEVC_PPS,
    HEVC_SPS,
    HEVC_VPS,
    is_keyframe_nal,
    iter_nals,
    nal_type,
    parameter_sets_from_extradata,
)
from tests.fixtures_cameras import SYSTEM_PYTHON, GstCamera, GstCameraError
from tests.stalled_rtsp import StalledRtspServer

WIDTH, HEIGHT = 640, 360
H264_PARAMETER_SETS = {H264_SPS, H264_PPS}
HEVC_PARAMETER_SETS = {HEVC_VPS, HEVC_SPS, HEVC_PPS}
CODECS = {"h264": "h264", "h265": "hevc", "h264-sdp-only": "h264", "h264-sliced": "h264", "pattern": "h264"}


def open_rtsp(url: str, timeout: float | tuple[float, float] = 10) -> av.container.InputContainer:
    return av.open(url, options={"rtsp_transport": "tcp"}, timeout=timeout)


@dataclass
class Received:
    """What a client saw of a mount: packets' NAL types, keyframe timing, decoded frames."""

    codec: str
    extradata: bytes
    packets: list[tuple[int | None, bool, list[int]]] = field(default_factory=list)  # (pts, key, NAL types)
    first_keyframe_after: float | None = None  # seconds after open returned
    frame_sizes: set[tuple[int, int]] = field(default_factory=set)
    frames: list[np.ndarray] = field(default_factory=list)  # luma planes

    def nal_types(self, *, keyframes: bool | None = None) -> Counter[int]:
        counts: Counter[int] = Counter()
        for _, key, kinds in self.packets:
            if keyframes is None or key == keyframes:
                counts.update(kinds)
        return counts


def receive(url: str, seconds: float = 2.5, keep_frames: int = 0) -> Received:
    """Read ``url`` for ``seconds`` after open, decoding every packet."""
    with open_rtsp(url) as container:
        opened = time.monotonic()
        stream = container.streams.video[0]
        got = Received(codec=stream.codec_context.name, extradata=bytes(stream.codec_context.extradata or b""))
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            kinds = [nal_type(got.codec, nal) for nal in iter_nals(bytes(packet))]
            got.packets.append((packet.pts, packet.is_keyframe, kinds))
            if got.first_keyframe_after is None and any(is_keyframe_nal(got.codec, k) for k in kinds):
                got.first_keyframe_after = time.monotonic() - opened
            for frame in packet.decode():
                got.frame_sizes.add((frame.width, frame.height))
                if len(got.frames) < keep_frames:
                    got.frames.append(frame.to_ndarray(format="gray"))
            if time.monotonic() - opened >= seconds:
                break
    return got


@pytest.mark.gstreamer
@pytest.mark.parametrize("mount", list(CODECS))
def test_mount_delivers_decodable_video(shared_gst_camera: GstCamera, mount: str) -> None:
    got = receive(shared_gst_camera.url(mount))

    assert got.codec == CODECS[mount]
    assert len(got.packets) >= 25, f"only {len(got.packets)} packets in 2.5 s"
    assert got.first_keyframe_after is not None and got.first_keyframe_after < 2.0
    assert got.frame_sizes == {(WIDTH, HEIGHT)}


@pytest.mark.gstreamer
@pytest.mark.parametrize(
    ("mount", "wanted"),
    [("h264", H264_PARAMETER_SETS), ("h264-sliced", H264_PARAMETER_SETS), ("h265", HEVC_PARAMETER_SETS)],
)
def test_parameter_sets_in_band_before_keyframes(shared_gst_camera: GstCamera, mount: str, wanted: set[int]) -> None:
    got = receive(shared_gst_camera.url(mount), seconds=2.2)

    keyframes = [kinds for _, _, kinds in got.packets if any(is_keyframe_nal(got.codec, k) for k in kinds)]
    assert len(keyframes) >= 2
    for kinds in keyframes:
        assert wanted <= set(kinds), f"keyframe NAL types {kinds}"


@pytest.mark.gstreamer
def test_sdp_only_mount_keeps_parameter_sets_out_of_band(shared_gst_camera: GstCamera) -> None:
    got = receive(shared_gst_camera.url("h264-sdp-only"), seconds=2.2)

    in_sdp = {nal_type("h264", nal) for nal in iter_nals(parameter_sets_from_extradata("h264", got.extradata))}
    assert in_sdp == H264_PARAMETER_SETS
    in_band = got.nal_types()
    assert in_band[H264_IDR] >= 2, "expected at least two keyframes in 2.2 s"
    assert not H264_PARAMETER_SETS & set(in_band), f"SPS/PPS in-band: {dict(in_band)}"


@pytest.mark.gstreamer
def test_sliced_mount_splits_pictures_into_slices(shared_gst_camera: GstCamera) -> None:
    got = receive(shared_gst_camera.url("h264-sliced"), seconds=2.2)

    slices_per_pts: dict[int | None, int] = defaultdict(int)
    packets_per_pts: Counter[int | None] = Counter()
    for pts, _, kinds in got.packets:
        packets_per_pts[pts] += 1
        slices_per_pts[pts] += sum(1 for k in kinds if k in (1, H264_IDR))
    keyframe_pts = {pts for pts, _, kinds in got.packets if H264_IDR in kinds}
    split = sorted(pts for pts in keyframe_pts if pts is not None and packets_per_pts[pts] > 1)
    print(
        f"h264-sliced: {len(got.packets)} packets; keyframes at {sorted(p for p in keyframe_pts if p is not None)}; "
        f"keyframes emitted as several packets with one timestamp: {split or 'none'} "
        f"({[packets_per_pts[p] for p in split]} packets)"
    )

    assert max(slices_per_pts.values()) >= 2, "pictures should consist of several slices"
    assert got.frame_sizes == {(WIDTH, HEIGHT)}


@pytest.mark.gstreamer
def test_pattern_mount_is_static(shared_gst_camera: GstCamera) -> None:
    got = receive(shared_gst_camera.url("pattern"), seconds=1.5, keep_frames=30)

    assert len(got.frames) >= 20
    first, last = got.frames[0].astype(np.int16), got.frames[-1].astype(np.int16)
    assert float(np.abs(first - last).mean()) < 2.0
    assert float(first.std()) > 30, "the SMPTE bars should not be a flat picture"


@pytest.mark.gstreamer
def test_moving_mount_changes_between_frames(shared_gst_camera: GstCamera) -> None:
    got = receive(shared_gst_camera.url("h264"), seconds=1.5, keep_frames=30)

    first, last = got.frames[0].astype(np.int16), got.frames[-1].astype(np.int16)
    assert float(np.abs(first - last).mean()) > 2.0


@pytest.mark.gstreamer
def test_clients_share_one_camera(shared_gst_camera: GstCamera) -> None:
    url = shared_gst_camera.url("h264")
    with open_rtsp(url) as a, open_rtsp(url) as b:
        for container in (a, b):
            packets = 0
            for packet in container.demux(video=0):
                packets += packet.size > 0
                if packets >= 10:
                    break
            assert packets == 10


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.gstreamer
def test_kill_and_restart_on_same_port(gst_camera: GstCamera) -> None:
    url = gst_camera.url("h264")
    with open_rtsp(url) as container:
        next(p for p in container.demux(video=0) if p.size)
        gst_camera.kill()
        assert not gst_camera.running
        assert refused(gst_camera.port)
        killed = time.monotonic()
        try:  # the connection is gone: the reader sees end of stream or an error, soon
            for _ in container.demux(video=0):
                pass
        except av.error.FFmpegError:
            pass
        assert time.monotonic() - killed < 5.0

    gst_camera.restart()
    assert gst_camera.url("h264") == url
    got = receive(url, seconds=1.0)
    assert got.frame_sizes == {(WIDTH, HEIGHT)}


@pytest.mark.gstreamer
def test_stop_is_clean_with_a_client_connected(gst_camera: GstCamera) -> None:
    with open_rtsp(gst_camera.url("h265")) as container:
        next(p for p in container.demux(video=0) if p.size)
        proc = gst_camera.proc
        assert proc is not None
        started = time.monotonic()
        gst_camera.stop()
        assert time.monotonic() - started < 3.0  # SIGTERM sufficed, no SIGKILL
        assert proc.returncode == 0
    assert refused(gst_camera.port)


@pytest.mark.gstreamer
def test_unknown_mount_fails_with_its_name() -> None:
    camera = GstCamera(mounts=["h264", "no-such-mount"])
    with pytest.raises(GstCameraError, match="no-such-mount"):
        camera.start()
    assert not camera.running


@pytest.mark.gstreamer
def test_missing_element_is_named(tmp_path: Path) -> None:
    """Without gstreamer1.0-plugins-bad's x265 plugin, /h265 fails naming x265enc."""
    plugin_dir = Path(
        subprocess.run(
            [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; "
             "Gst.init(None); print(Gst.Registry.get().find_plugin('coreelements').get_filename())"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()
    ).parent
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for lib in plugin_dir.glob("libgst*.so"):
        if lib.name != "libgstx265.so":
            (plugins / lib.name).symlink_to(lib)
    env = dict(os.environ, GST_PLUGIN_SYSTEM_PATH_1_0=str(plugins), GST_REGISTRY_1_0=str(tmp_path / "registry.bin"))
    env.pop("GST_PLUGIN_PATH_1_0", None)
    env.pop("GST_PLUGIN_PATH", None)

    camera = GstCamera(mounts=["h264", "h265"], env=env, start_timeout=60)
    with pytest.raises(GstCameraError, match=r"/h265 needs missing GStreamer element\(s\): x265enc"):
        camera.start()
    assert not camera.running


def test_stalled_camera_does_not_hang_the_reader(stalled_server: StalledRtspServer) -> None:
    started = time.monotonic()
    with pytest.raises(av.error.FFmpegError):
        container = open_rtsp(stalled_server.url, timeout=(2, 2))
        opened = time.monotonic()
        try:
            for packet in container.demux(video=0):
                if packet.size:
                    break
        finally:
            assert time.monotonic() - opened < 3.5, "the read did not time out"
            container.close()
    assert time.monotonic() - started < 7.0
    # The camera answered the whole handshake: the timeout came from the silence.
    assert stalled_server.requests[:4] == ["OPTIONS", "DESCRIBE", "SETUP", "PLAY"]


def test_stalled_camera_fixture_gives_a_loopback_rtsp_url(stalled_camera: str) -> None:
    assert stalled_camera.startswith("rtsp://127.0.0.1:")
    port = int(stalled_camera.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"OPTIONS " + stalled_camera.encode() + b" RTSP/1.0\r\nCSeq: 7\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"RTSP/1.0 200 OK\r\n")
    assert b"CSeq: 7\r\n" in reply


@pytest.mark.gstreamer
def test_a_healing_camera_comes_back_after_a_crash_but_not_after_stop(gstreamer_available) -> None:
    import os
    import signal
    import time

    from tests.fixtures_cameras import GstCamera

    cam = GstCamera(heal=True, mounts=("h264",)).start()
    try:
        crashed = cam.proc.pid
        os.kill(crashed, signal.SIGABRT)  # what gst-rtsp-server's assertion does
        deadline = time.monotonic() + 20
        while not (cam.running and cam.proc.pid != crashed):
            assert time.monotonic() < deadline, "the camera did not come back"
            time.sleep(0.1)
    finally:
        cam.stop()
    time.sleep(0.6)
    assert not cam.running
