"""Reads text drawn with Citygate's 5x7 bitmap font back out of a decoded picture.

An independent check of the watermark: the test does not compare against pixels the code
under test rendered, it recognises each character cell by its nearest glyph, so the text
that comes back is what a person looking at the frame would read.
"""

from __future__ import annotations

import numpy as np

from gateway.media.bitmapfont import ADVANCE, FIRST_CHAR, GLYPH_HEIGHT, GLYPH_WIDTH, glyph_table


def font_pixels(luma: np.ndarray, x: int, y: int, scale: int, columns: int, threshold: int = 128) -> np.ndarray:
    """Booleans (7, columns): font pixel on/off, sampled as the mean of each scale x scale block."""
    block = luma[y : y + GLYPH_HEIGHT * scale, x : x + columns * scale].astype(np.float32)
    rows, cols = block.shape[0] // scale, block.shape[1] // scale
    block = block[: rows * scale, : cols * scale].reshape(rows, scale, cols, scale).mean(axis=(1, 3))
    return block > threshold


def read_line(luma: np.ndarray, x: int, y: int, scale: int, max_chars: int | None = None) -> str:
    """The characters of one line whose first cell's top-left corner is at (x, y)."""
    width = luma.shape[1] - x
    count = width // (ADVANCE * scale)
    if max_chars is not None:
        count = min(count, max_chars)
    pixels = font_pixels(luma, x, y, scale, count * ADVANCE)
    table = glyph_table()
    out = []
    for i in range(count):
        cell = pixels[:, i * ADVANCE : i * ADVANCE + GLYPH_WIDTH]
        distances = (table != cell[None]).sum(axis=(1, 2))
        out.append(chr(FIRST_CHAR + int(distances.argmin())))
    return "".join(out).rstrip()
