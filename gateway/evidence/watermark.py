"""A visible watermark on exported video: the request, and each frame's own time.

Drawn through the masking-filter mechanism: the band is a ``MaskShape`` whose filter is
``watermark`` (``citygate_plugins.masking.watermark``), rasterised and applied by the same
code that applies privacy masks (``gateway.media.masking``), so a third-party filter
registered under that id replaces the look without touching the export formats. Each
frame gets two lines, e.g.::

    REQUEST 42  CASE 2026-K-7  EXPORTED 2026-11-21 10:05Z
    demo-1  2026-11-21 09:58:31.240Z

The frame time is the recorded wall clock (stored media time is the epoch), so a frame
cut out of a watermarked copy still says which request released it and when it was filmed.
A watermarked copy is re-encoded, so it is no longer the recorded bytes: the evidence
package keeps the unaltered files beside it unless the request asks otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import av
import msgspec
from msgspec import Meta

from gateway.evidence.package import CameraExtract, ExportJob
from gateway.evidence.transcode import Encoder, decoded_frames, wallclock
from gateway.interfaces import MaskFilter, MaskShape
from gateway.media.bitmapfont import GLYPH_HEIGHT
from gateway.media.masking import build_regions, masked_copy

FILTER = "watermark"
LINES = 2
#: Font pixels of the band's height: two lines, the gap between them, padding above and below
#: (the ``watermark`` filter's layout).
BAND_FONT_ROWS = LINES * (GLYPH_HEIGHT + 2) - 2 + 2
#: Watermarked copies: close to the recorded quality.
COPY_CRF, COPY_PRESET = 18, "veryfast"
#: Font scale per 360 picture rows: 720p gets 2, 1080p 3; small pictures at least 1.
ROWS_PER_SCALE = 360


class WatermarkOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """The watermark part of an export format's options."""

    #: Stamp the request id, case and each frame's time into the video (re-encodes).
    watermark: Annotated[bool, Meta(title="Watermark (request id and frame time)")] = False
    watermark_position: Annotated[Literal["top", "bottom"], Meta(title="Watermark position")] = "bottom"
    #: How far the band darkens the picture under the text (1 = opaque black).
    watermark_shade: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.6

    def describe_watermark(self) -> dict[str, Any]:
        return {
            "filter": FILTER,
            "position": self.watermark_position,
            "shade": self.watermark_shade,
            "lines": ["REQUEST <id>  CASE <case>  EXPORTED <time>", "<camera>  <frame time, UTC>"],
        }


def band_scale(height: int) -> int:
    return max(1, height // ROWS_PER_SCALE)


def band_shape(width: int, height: int, position: str, shade: float) -> MaskShape:
    """The band as a normalised rectangle across the whole width."""
    rows = min(height, BAND_FONT_ROWS * band_scale(height))
    top, bottom = (0.0, rows / height) if position == "top" else (1.0 - rows / height, 1.0)
    return MaskShape(points=((0.0, top), (1.0, top), (1.0, bottom), (0.0, bottom)), filter=FILTER, options={"shade": shade})


def utc(ts: float, *, ms: bool = True) -> str:
    when = datetime.fromtimestamp(ts, UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}Z" if ms else when.strftime("%Y-%m-%d %H:%MZ")


class Watermarker:
    """Stamps frames of one camera. Keeps rasterised regions per picture size. One thread."""

    def __init__(
        self, request: Mapping[str, Any], produced_at: float, camera: str, options: WatermarkOptions,
        filters: Mapping[str, MaskFilter],
    ) -> None:
        if FILTER not in filters:
            raise ValueError(f"the {FILTER!r} mask filter is not installed (plugin citygate_plugins.masking.watermark)")
        self.filters = {FILTER: filters[FILTER]}
        self.options = options
        self.camera = camera
        self.header = f"REQUEST {request['id']}  CASE {request['case_number']}  EXPORTED {utc(produced_at, ms=False)}"
        self._regions: dict[tuple[int, int], list[Any]] = {}

    def lines(self, frame_time: float | None) -> list[str]:
        when = utc(frame_time) if frame_time is not None else "time unknown"
        return [self.header, f"{self.camera}  {when}"]

    def apply(self, frame: av.VideoFrame, frame_time: float | None) -> av.VideoFrame:
        """A new yuv420p frame with the watermark drawn."""
        size = (frame.width, frame.height)
        regions = self._regions.get(size)
        if regions is None:
            shape = band_shape(frame.width, frame.height, self.options.watermark_position, self.options.watermark_shade)
            regions = self._regions[size] = build_regions([shape], self.filters, *size)
        text = "\n".join(self.lines(frame_time))
        return masked_copy(frame, [dataclasses.replace(r, options=msgspec.structs.replace(r.options, text=text)) for r in regions])


def watermarked_copy(job: ExportJob, extract: CameraExtract, options: WatermarkOptions, out: str) -> dict[str, Any]:
    """Decode the camera's segments, stamp every frame, encode an MP4 into ``out``. Blocking."""
    marker = Watermarker(job.request, job.produced_at, extract.camera, options, job.mask_filters)
    encoder: Encoder | None = None
    first: int | None = None
    frames = 0
    for frame in decoded_frames(job, extract.segments):
        if encoder is None:
            encoder = Encoder(out, frame.width, frame.height, crf=COPY_CRF, preset=COPY_PRESET)
        ticks = int(frame.pts * frame.time_base * 90000) if frame.pts is not None else frames * 3600
        first = ticks if first is None else first
        encoder.encode(marker.apply(frame, wallclock(frame)), ticks - first)
        frames += 1
    if encoder is not None:
        encoder.close()
    return {"frames": frames}
