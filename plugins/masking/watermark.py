"""The ``watermark`` mask filter: a shaded band with lines of text, drawn inside the mask.

Evidence exports use it to stamp the request id and each frame's time into watermarked
copies (``gateway.evidence.watermark``); an administrator can also use it in a camera's
masks to label a region. Options: ``text`` (lines separated by ``\\n``; printable ASCII,
anything else is drawn as ``?``), ``shade`` (0..1, how far the band is darkened toward
black: the picture under it stays visible unless 1) and ``scale`` (font pixels per pixel;
default: the largest that fits the band's height and width).

The text is drawn white (luma 235) with the bitmap font of ``gateway.media.bitmapfont``,
clipped to the mask, so it never spills outside the region the shape defines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import numpy as np
from msgspec import Meta

from gateway.plugin_api import ADVANCE, GLYPH_HEIGHT, MaskFilter, PluginOptions, hookimpl, text_mask

#: Font pixels between lines and around the text.
LINE_GAP = 2
PADDING = 1
DEFAULT_SHADE = 0.6
BLACK, NEUTRAL, WHITE = 16, 128, 235


def fitting_scale(lines: list[str], width: int, height: int) -> int:
    """The largest integer font scale at which ``lines`` fit a ``width`` x ``height`` box."""
    rows = len(lines) * (GLYPH_HEIGHT + LINE_GAP) - LINE_GAP + 2 * PADDING
    cols = max((len(line) for line in lines), default=0) * ADVANCE + 2 * PADDING
    return max(1, min(height // max(rows, 1), width // max(cols, 1)))


def text_layout(lines: list[str], scale: int) -> list[tuple[int, int, str]]:
    """``(x, y, line)`` of each line inside the band's box, at ``scale``."""
    return [(PADDING * scale, (PADDING + i * (GLYPH_HEIGHT + LINE_GAP)) * scale, line) for i, line in enumerate(lines)]


class WatermarkFilter(MaskFilter):
    class Options(PluginOptions):
        #: How far the band darkens the picture under it (0: not at all, 1: black).
        shade: Annotated[float, Meta(ge=0, le=1)] = DEFAULT_SHADE
        #: The lines to stamp, separated by newlines (the exporter sets it per frame).
        text: str = ""
        #: Font scale; 0: the largest that fits the band.
        scale: Annotated[int, Meta(ge=0, le=64)] = 0

    @staticmethod
    def id() -> str:
        return "watermark"

    def apply(self, planes: list[np.ndarray], masks: list[np.ndarray], options: Options) -> None:
        shade = options.shade
        for i, (plane, mask) in enumerate(zip(planes, masks)):
            target = BLACK if i == 0 else NEUTRAL
            if shade:
                plane[mask] = (plane[mask] * (1.0 - shade) + target * shade + 0.5).astype(np.uint8)
        text = options.text
        if not text:
            return
        luma, mask = planes[0], masks[0]
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return
        top, left = int(rows[0]), int(cols[0])
        box_h, box_w = int(rows[-1]) + 1 - top, int(cols[-1]) + 1 - left
        lines = text.split("\n")
        scale = options.scale or fitting_scale(lines, box_w, box_h)
        canvas = np.zeros(mask.shape, dtype=bool)
        for x, y, line in text_layout(lines, scale):
            glyphs = text_mask(line, scale)
            y0, x0 = top + y, left + x
            h = max(0, min(glyphs.shape[0], canvas.shape[0] - y0))
            w = max(0, min(glyphs.shape[1], canvas.shape[1] - x0))
            canvas[y0 : y0 + h, x0 : x0 + w] |= glyphs[:h, :w]
        luma[canvas & mask] = WHITE


@hookimpl(trylast=True)
def gateway_register_mask_filters(register: Callable[[type[MaskFilter]], None]) -> None:
    """Register the watermark filter."""
    register(WatermarkFilter)
