"""H.265 over WebRTC: aiortc taught H.265 by ``gateway.live.hevc_rtc``, real gateway, real viewers.

The viewers are aiortc peers in this process, which has ``install()`` applied (importing
``gateway.live.webrtc`` does it). No browser test: Debian's Chromium has no HEVC decoder.
"""

from __future__ import annotations

import importlib
import inspect
import json

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av
import pytest
from aiortc import RTCRtpSender, sdp
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from gateway.live import hevc_rtc
from gateway.live.webrtc import WEBRTC_SESSIONS
from gateway.media.h26x import START_CODE
from tests.fixtures_app import RunningGateway, camera_toml
from tests.test_webrtc import GST_FPS, GST_SIZE, client_offer_pc, connect, post_offer

H265 = RTCRtpCodecParameters(mimeType="video/H265", clockRate=90000, payloadType=103)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99)


def answer_codecs(answer: str) -> list[str]:
    video = [m for m in sdp.SessionDescription.parse(answer).media if m.kind == "video"]
    return [c.name.upper() for c in video[0].rtp.codecs]


def hevc_nal(kind: int, size: int) -> bytes:
    body = bytes((i * 7 + 1) % 251 + 1 for i in range(size))  # no zero bytes, so no start codes
    return bytes([kind << 1, 1]) + body


# --- aiortc's internals --------------------------------------------------------------------


def test_aiortc_still_has_the_shape_the_patch_relies_on() -> None:
    """Fails loudly when an aiortc upgrade moves what ``install()`` patches."""
    hevc_rtc.check_aiortc_shape()
    # The sender and receiver look the functions up by these names at call time.
    assert "get_encoder(codec)" in inspect.getsource(aiortc.rtcrtpsender.RTCRtpSender)
    receiver_source = inspect.getsource(aiortc.rtcrtpreceiver)
    assert "get_decoder(codec)" in receiver_source
    assert "depayload(codec, packet.payload)" in receiver_source
    assert list(inspect.signature(H264Encoder.pack).parameters) == ["self", "packet"]


def test_install_wraps_every_importer_and_is_idempotent() -> None:
    video = aiortc.codecs.CODECS["video"]
    before = len(video)
    hevc_rtc.install()
    hevc_rtc.install()
    assert len(video) == before
    assert sum(hevc_rtc.is_hevc(c) for c in video) == 1
    for name, modules in hevc_rtc.PATCHED.items():
        for module in modules:
            assert hasattr(getattr(importlib.import_module(module), name), "__wrapped__"), (module, name)
    payload_types = [c.payloadType for c in video]
    assert len(payload_types) == len(set(payload_types))
    mimes = [c.mimeType for c in RTCRtpSender.getCapabilities("video").codecs]
    assert "video/H265" in mimes and mimes.index("video/H265") > mimes.index("video/H264")
    assert isinstance(aiortc.rtcrtpsender.get_encoder(H265), hevc_rtc.HevcEncoder)
    assert isinstance(aiortc.rtcrtpsender.get_encoder(H264), H264Encoder)
    assert isinstance(aiortc.rtcrtpreceiver.get_decoder(H265), hevc_rtc.HevcDecoder)


def test_payloader_fragments_and_depayloader_restores_an_access_unit() -> None:
    nals = [hevc_nal(32, 20), hevc_nal(33, 40), hevc_nal(34, 6), hevc_nal(19, 5000)]  # VPS SPS PPS IDR
    aud = bytes([35 << 1, 1, 0x50])
    packet = av.Packet(START_CODE + aud + b"".join(START_CODE + n for n in nals))
    packet.pts = 3000
    packet.time_base = VIDEO_TIME_BASE

    payloads, timestamp = hevc_rtc.HevcEncoder().pack(packet)

    assert timestamp == 3000
    assert all(len(p) <= hevc_rtc.PACKET_MAX for p in payloads)
    assert [(p[0] >> 1) & 0x3F for p in payloads[:3]] == [32, 33, 34]  # single NAL unit packets
    fus = payloads[3:]
    assert len(fus) == 4 and all((p[0] >> 1) & 0x3F == 49 for p in fus)
    assert fus[0][2] & 0x80 and fus[-1][2] & 0x40 and not any(p[2] & 0xC0 for p in fus[1:-1])
    restored = b"".join(aiortc.rtcrtpreceiver.depayload(H265, p) for p in payloads)
    assert restored == b"".join(START_CODE + n for n in nals)  # the AUD is dropped, as RTP wants
    with pytest.raises(ValueError):
        hevc_rtc.hevc_depayload(b"\x02")


# --- through the gateway -------------------------------------------------------------------


@pytest.fixture
async def hevc_gateway(make_gateway, shared_gst_camera) -> RunningGateway:
    cams = camera_toml("gst265", "generic_rtsp", url=shared_gst_camera.url("h265")) + camera_toml(
        "gst", "generic_rtsp", url=shared_gst_camera.url("h264")
    )
    gw = await make_gateway(cams)
    await gw.wait_online("gst265", "gst")
    return gw


@pytest.mark.gstreamer
async def test_a_viewer_offering_h265_gets_the_h265_camera_decoded(hevc_gateway: RunningGateway) -> None:
    viewer = await connect(hevc_gateway, "gst265")  # aiortc's default offer: VP8, H264, H265
    try:
        assert answer_codecs(viewer.answer) == ["H265", "RTX"]
        first = await viewer.first_frame(timeout=10.0)
        assert (first.width, first.height) == GST_SIZE
        count = await viewer.count_frames(2.0)
        assert count >= 20, f"{count} frames in 2 s from a {GST_FPS} fps camera"
        assert {(f.width, f.height) for f in viewer.frames} == {GST_SIZE}
    finally:
        await viewer.pc.close()


@pytest.mark.gstreamer
async def test_an_h264_only_offer_to_the_h265_camera_is_refused(hevc_gateway: RunningGateway) -> None:
    pc = client_offer_pc(["h264"])
    await pc.setLocalDescription(await pc.createOffer())
    status, _, body = await post_offer(hevc_gateway, "gst265", pc.localDescription.sdp)
    await pc.close()
    assert status == 409
    reason = json.loads(body)["error"]
    assert "H.265" in reason and "no H265" in reason and "LL-HLS" in reason
    assert len(hevc_gateway.app[WEBRTC_SESSIONS]) == 0


@pytest.mark.gstreamer
async def test_an_h264_camera_gets_h264_even_when_h265_is_offered_first(hevc_gateway: RunningGateway) -> None:
    viewer = await connect(hevc_gateway, "gst", ["h265", "h264"])
    try:
        assert set(answer_codecs(viewer.answer)) == {"H264"}
        first = await viewer.first_frame(timeout=10.0)
        assert (first.width, first.height) == GST_SIZE
    finally:
        await viewer.pc.close()
