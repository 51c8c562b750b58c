"""The demo camera's time code: exact roundtrip, and survival through H.264 and scaling."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
import pytest

from gateway.media.bitmapfont import draw_text, text_mask, text_size
from gateway.media.timecode import BLACK, STRIP_HEIGHT, WHITE, block_edges, draw_timecode, read_timecode


def now_ms() -> int:
    return int(time.time() * 1000)


def picture(width: int, height: int, seed: int = 1) -> np.ndarray:
    """A busy luma plane (noise and a ramp), so the strip is not helped by a flat background."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(16, 235, width)[None, :].repeat(height, axis=0)
    return np.clip(ramp + rng.normal(0, 25, (height, width)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("width", [1280, 1920, 641, 352, 48])
def test_roundtrip_at_any_width(width: int) -> None:
    y = picture(width, 64)
    value = now_ms()
    draw_timecode(y, value)
    assert read_timecode(y) == value


def test_strip_layout_follows_the_specification() -> None:
    y = picture(1280, 720)
    value = 0b1011 << 44 | 1  # first four bits 1011, last bit 1
    draw_timecode(y, value)
    edges = block_edges(1280)
    assert len(edges) == 49 and edges[0] == 0 and edges[-1] == 1280
    assert set(np.unique(y[:STRIP_HEIGHT])) == {BLACK, WHITE}
    centres = (edges[:-1] + edges[1:]) // 2
    bits = (y[STRIP_HEIGHT // 2, centres] == WHITE).astype(int)
    assert bits[:4].tolist() == [1, 0, 1, 1] and bits[-1] == 1 and bits[4:-1].sum() == 0
    assert not np.isin(y[STRIP_HEIGHT], [BLACK, WHITE]).all()  # nothing drawn below the strip


def test_implausible_strips_read_as_none() -> None:
    assert read_timecode(np.full((720, 1280), BLACK, np.uint8)) is None
    assert read_timecode(np.full((720, 1280), WHITE, np.uint8)) is None
    assert read_timecode(picture(1280, 720)) is None
    assert read_timecode(np.zeros((720, 20), np.uint8)) is None


def test_values_outside_48_bits_are_refused() -> None:
    with pytest.raises(ValueError):
        draw_timecode(np.zeros((32, 480), np.uint8), 1 << 48)
    with pytest.raises(ValueError):
        draw_timecode(np.zeros((8, 480), np.uint8), 5)


def test_survives_libx264_at_a_modest_bitrate_and_scaling_to_360p() -> None:
    width, height = 1280, 720
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.framerate = Fraction(25)
    encoder.bit_rate = 300_000
    encoder.options = {"preset": "ultrafast", "tune": "zerolatency"}
    decoder = av.CodecContext.create("h264", "r")
    start = now_ms()
    values = [start + 40 * i + (i * 7919) % 40 for i in range(12)]
    decoded = []
    for i, value in enumerate(values):
        yuv = np.full((height * 3 // 2, width), 128, np.uint8)
        yuv[:height] = picture(width, height, seed=i)
        draw_timecode(yuv[:height], value)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        for packet in encoder.encode(frame):
            decoded += decoder.decode(packet)
    for packet in encoder.encode(None):
        decoded += decoder.decode(packet)
    decoded += decoder.decode(None)
    assert len(decoded) == len(values)
    for value, frame in zip(values, decoded):
        assert read_timecode(frame.to_ndarray(format="yuv420p")[:height]) == value
        small = frame.reformat(width=640, height=360)
        assert read_timecode(small.to_ndarray(format="yuv420p")[:360]) == value


def test_bitmap_font_draws_clipped_text_in_place() -> None:
    y = np.zeros((40, 100), np.uint8)
    draw_text(y, "10:", 2, 3, scale=2, luma=200)
    width, height = text_size("10:", 2)
    assert (width, height) == (36, 14)
    drawn = y[3 : 3 + height, 2 : 2 + width] == 200
    assert (drawn == text_mask("10:", 2)).all()
    assert y.sum() == drawn.sum() * 200  # nothing outside the text box
    draw_text(y, "clipped at the edge", 90, 35, scale=3, luma=100, background=16)  # must not raise
    assert (y[35:, 90:] != 0).any()
    assert text_mask("\u00e9").tolist() == text_mask("?").tolist()  # unknown characters show as "?"
