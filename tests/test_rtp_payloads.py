"""gateway.live.rtp_payloads: the C packetizer gives exactly the payloads of the Python one
(gateway.rtsp.rtp.fragment_access_unit) for H.264 and H.265 access units of every shape:
3- and 4-byte start codes, delimiters, NAL units larger than a packet, trailing zeros,
data with no start code at all, zero bytes inside NAL units."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.live import srtp_out
from gateway.live.rtp_payloads import Packetizer, join_payloads, payload_ends
from gateway.rtsp.rtp import fragment_access_unit

pytestmark = pytest.mark.skipif(srtp_out.NATIVE_UNAVAILABLE is not None, reason="C sender not built (test_srtp_out fails)")


def nal_header(codec: str, kind: int) -> bytes:
    return bytes([kind & 0x1F | 0x60]) if codec == "h264" else bytes([(kind & 0x3F) << 1, 1])


@st.composite
def access_units(draw: st.DrawFn) -> tuple[str, bytes]:
    codec = draw(st.sampled_from(["h264", "hevc"]))
    aud = 9 if codec == "h264" else 35
    parts = [draw(st.sampled_from([b"", b"\x00", b"\x07\x00"]))]  # before the first start code
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from([aud, 1, 5, 7, 8] if codec == "h264" else [aud, 1, 19, 32, 33, 34]))
        body = draw(st.one_of(st.binary(max_size=40), st.binary(min_size=1100, max_size=3000)))
        parts.append(draw(st.sampled_from([b"\x00\x00\x01", b"\x00\x00\x00\x01"])) + nal_header(codec, kind) + body)
    parts.append(draw(st.sampled_from([b"", b"\x00", b"\x00\x00", b"\x00\x00\x00"])))
    return codec, b"".join(parts)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(unit=access_units(), max_payload=st.sampled_from([1200, 300, 17]))
def test_c_and_python_packetizers_agree(unit, max_payload) -> None:
    codec, data = unit
    expected = join_payloads(fragment_access_unit(codec, data, max_payload))
    count, blob = Packetizer(codec, max_payload).packetize(data)
    assert (count, blob) == expected  # the payloads, the padding and every payload's end
    assert list(payload_ends(blob, count)) == list(itertools.accumulate(map(len, fragment_access_unit(codec, data, max_payload))))


@pytest.mark.parametrize("data", [b"", b"\x41abc", b"\x09\xf0", b"\x00\x00\x01", b"\x00\x00\x01\x09\x10\x00\x00"])
def test_odd_access_units_agree(data) -> None:
    expected = join_payloads(fragment_access_unit("h264", data, 1200))
    assert Packetizer("h264", 1200).packetize(data) == expected


def test_one_packetizer_serves_growing_frames() -> None:
    packetizer = Packetizer("h264", 1200)
    for size in (10, 100_000, 50, 400_000):  # its buffers grow; later frames are not corrupted
        data = b"\x00\x00\x00\x01\x65" + bytes(range(256)) * (size // 256) + b"\x42"
        assert packetizer.packetize(data) == join_payloads(fragment_access_unit("h264", data, 1200))
