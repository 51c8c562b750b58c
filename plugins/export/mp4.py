"""The ``mp4`` export format: one camera's recording as a plain MP4, for internal use.

The recorded fragments joined under one init, exactly like the evidence package's video
files, but without a package or signature: a clip to look at, not to hand to a court.
Only for requests of one camera whose codec parameters did not change in the range.
Segments recorded before the camera's current privacy masks are re-masked first
(``ExportJob.fetch_masked``); when only some of the range needs it, the whole clip is
decoded and encoded once more, so it stays one playable file.

With ``watermark = true`` the clip is decoded, stamped with the request id, case and each
frame's time (``gateway.evidence.watermark``) and encoded again: a copy for internal
circulation that says where it came from if it leaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import msgspec

from gateway.plugin_api import (
    COPY_CRF,
    COPY_PRESET,
    BadRequest,
    CameraExtract,
    Encoder,
    ExportFormat,
    ExportJob,
    HashingWriter,
    WatermarkOptions,
    decoded_frames,
    hookimpl,
    join_segments,
    watermarked_copy,
)


def write_mp4(job: ExportJob, output_path: str) -> None:
    if len(job.cameras) != 1:
        raise BadRequest("the mp4 format takes exactly one camera; use the evidence format for several")
    extract = job.cameras[0]
    if not extract.segments:
        raise BadRequest(f"camera {extract.camera}: nothing recorded in the range")
    options = msgspec.convert(job.options or {}, WatermarkOptions, str_keys=True)
    if options.watermark:
        watermarked_copy(job, extract, options, output_path)
        return
    remasked = [job.remasks(s) is not None for s in extract.segments]
    if any(remasked) and not all(remasked):
        _reencode(job, extract, output_path)
        return

    @contextmanager
    def open_file(_path: str, _remasked: Any = None) -> Any:
        with open(output_path, "wb") as f:
            yield HashingWriter(f)

    def name(n: int) -> str:
        if n:
            raise BadRequest(f"camera {extract.camera}: the stream changed in the range; use the evidence format")
        return output_path

    join_segments(job, extract, open_file, name)


def _reencode(job: ExportJob, extract: CameraExtract, output_path: str) -> None:
    """Every picture, masked with the current masks where its segment needs it, in one MP4."""
    encoder: Encoder | None = None
    first: int | None = None
    for frame in decoded_frames(job, extract.segments):
        if encoder is None:
            encoder = Encoder(output_path, frame.width, frame.height, crf=COPY_CRF, preset=COPY_PRESET)
        ticks = int(frame.pts * frame.time_base * 90000) if frame.pts is not None else 0
        first = ticks if first is None else first
        encoder.encode(frame, ticks - first)
    if encoder is not None:
        encoder.close()


class Mp4Export(ExportFormat):
    Options = WatermarkOptions
    media_type = "video/mp4"
    suffix = ".mp4"
    title = "Plain MP4 (one camera, internal use)"
    max_cameras = 1

    @staticmethod
    def id() -> str:
        return "mp4"

    async def produce(self, job: ExportJob, output_path: str) -> None:
        await asyncio.to_thread(write_mp4, job, output_path)


@hookimpl(trylast=True)
def gateway_register_export_formats(register: Callable[[type[ExportFormat]], None]) -> None:
    """Register the plain MP4 clip."""
    register(Mp4Export)
