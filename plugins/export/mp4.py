"""The ``mp4`` export format: one camera's recording as a plain MP4, for internal use.

The recorded fragments joined under one init, exactly like the evidence package's video
files, but without a package or signature: a clip to look at, not to hand to a court.
Only for requests of one camera whose codec parameters did not change in the range.

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

from gateway import hookimpl
from gateway.errors import BadRequest
from gateway.evidence.package import ExportJob, HashingWriter, join_segments
from gateway.evidence.watermark import WatermarkOptions, watermarked_copy
from gateway.interfaces import ExportFormat


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

    @contextmanager
    def open_file(_path: str) -> Any:
        with open(output_path, "wb") as f:
            yield HashingWriter(f)

    def name(n: int) -> str:
        if n:
            raise BadRequest(f"camera {extract.camera}: the stream changed in the range; use the evidence format")
        return output_path

    join_segments(job, extract, open_file, name)


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
