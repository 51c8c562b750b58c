"""A hostile (or hijacked) ONVIF device cannot lead the plugin astray: service addresses on
another host never receive a request (nor the digest of the camera password), redirects are
not followed, stream URIs must be rtsp/rtsps on the camera's host (or a listed stream host),
and oversized answers are refused. The device is the simulator on loopback; 127.0.0.2 plays
"another host" and records whatever reaches it."""

from __future__ import annotations

import asyncio
import logging
import types

import pytest

from citygate_plugins.cameras.onvif import MAX_RESPONSE_BYTES, OnvifCamera, OnvifOptions, OnvifUntrusted
from tests.fixtures_app import camera_toml
from tests.onvif_simulator import OnvifSimulator

USER, PASSWORD = "citygate", "dome-s3cret"


def camera(port: int, **options) -> OnvifCamera:
    return OnvifCamera(
        types.SimpleNamespace(id="dome"),
        OnvifOptions(host="127.0.0.1", port=port, username=USER, password=PASSWORD, **options),
    )


async def test_service_addresses_on_another_host_get_nothing(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="citygate_plugins.cameras.onvif")
    async with OnvifSimulator(USER, PASSWORD, host="127.0.0.2") as elsewhere:
        async with OnvifSimulator(USER, PASSWORD, services_at=f"http://127.0.0.2:{elsewhere.port}") as device:
            async with camera(device.port) as cam:
                with pytest.raises(OnvifUntrusted, match=(
                    r"service address 'http://127\.0\.0\.2:\d+/onvif/media_service', which is not on the configured "
                    r"host 127\.0\.0\.1; refusing to send it the camera's credentials"
                )):
                    await cam.stream_url()
                assert cam.ptz_capabilities().any is False
    assert elsewhere.requests == []  # not one request, so no password digest either
    assert device.operations() == ["GetSystemDateAndTime", "GetCapabilities", "GetSystemDateAndTime", "GetCapabilities"]
    assert "refusing to send the Media service to 'http://127.0.0.2:" in caplog.text


async def test_redirects_are_not_followed() -> None:
    async with OnvifSimulator(USER, PASSWORD, host="127.0.0.2") as elsewhere:
        async with OnvifSimulator(USER, PASSWORD, redirect_to=elsewhere.xaddr("device")) as device:
            async with camera(device.port) as cam:
                with pytest.raises(OnvifUntrusted, match=r"GetCapabilities: the device redirected to 'http://127\.0\.0\.2:\d+/"):
                    await cam.stream_url()
    assert elsewhere.requests == []


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("file:///etc/passwd", "only rtsp:// and rtsps:// streams are opened"),
        ("http://127.0.0.1:8000/video.mjpg", "only rtsp:// and rtsps:// streams are opened"),
        ("rtmp://127.0.0.1/live/1", "only rtsp:// and rtsps:// streams are opened"),
        ("rtsp://127.0.0.2:554/Streaming/Channels/101", "its host is not 127.0.0.1"),
        ("rtsp://evil.example.net/live", "its host is not 127.0.0.1"),
        ("rtsp://admin:x@collector.example.net/live", "its host is not 127.0.0.1"),
    ],
)
async def test_stream_uris_must_be_rtsp_on_the_camera_host(uri: str, reason: str, caplog) -> None:
    async with OnvifSimulator(USER, PASSWORD, stream_uri=uri) as device:
        async with camera(device.port) as cam:
            with pytest.raises(OnvifUntrusted, match="refused: " + reason) as refused:
                await cam.stream_url()
    assert PASSWORD not in refused.value.message and PASSWORD not in caplog.text
    assert "admin:x" not in refused.value.message


async def test_rtsps_and_listed_stream_hosts_are_accepted() -> None:
    async with OnvifSimulator(USER, PASSWORD, stream_uri="rtsps://127.0.0.1:322/live") as device:
        async with camera(device.port) as cam:
            assert await cam.stream_url() == f"rtsps://{USER}:{PASSWORD}@127.0.0.1:322/live"
    async with OnvifSimulator(USER, PASSWORD, stream_uri="rtsp://recorder.example.net:554/ch1") as device:
        async with camera(device.port, stream_hosts=("recorder.example.net",)) as cam:
            assert await cam.stream_url() == f"rtsp://{USER}:{PASSWORD}@recorder.example.net:554/ch1"


async def test_oversized_answers_are_refused() -> None:
    async with OnvifSimulator(USER, PASSWORD, pad_bytes=MAX_RESPONSE_BYTES + 1) as device:
        async with camera(device.port) as cam:
            with pytest.raises(OnvifUntrusted, match=rf"GetSystemDateAndTime: answer of \d+ bytes, more than {MAX_RESPONSE_BYTES}"):
                await cam.stream_url()
    async with OnvifSimulator(USER, PASSWORD, pad_bytes=200_000) as device:  # large, but within the cap
        async with camera(device.port) as cam:
            assert (await cam.stream_url()).startswith("rtsp://")


async def test_a_camera_whose_device_points_elsewhere_is_offline_saying_why(make_gateway) -> None:
    async with OnvifSimulator(USER, PASSWORD, host="127.0.0.2") as elsewhere:
        async with OnvifSimulator(USER, PASSWORD, services_at=f"http://127.0.0.2:{elsewhere.port}") as device:
            gw = await make_gateway(camera_toml("dome", "onvif", host="127.0.0.1", port=device.port, username=USER, password=PASSWORD))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while not (cam := await gw.get_json("/api/cameras/dome"))["last_error"]:
                assert loop.time() < deadline, cam
                await asyncio.sleep(0.1)
            assert cam["state"] != "online"
            assert "not on the configured host 127.0.0.1; refusing to send it the camera's credentials" in cam["last_error"]
            await gw.server.close()
    assert elsewhere.requests == []
