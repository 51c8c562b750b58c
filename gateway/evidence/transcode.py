"""Decoding stored segments and encoding new MP4s, for export formats that change pictures.

The media release (anonymised) and watermarked copies decode the recorded segments,
change the pictures and encode them again with libx264. Both run in the export's worker
thread. The MP4 muxer seeks back to write ``moov`` first (``faststart``), so it writes to
a scratch file beside the package, which ``encode_into_package`` then copies in.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from gateway.evidence.package import ExportJob, PackageWriter
from gateway.recording.index import Segment

TIME_BASE = Fraction(1, 90000)
CHUNK = 1 << 20


def wallclock(frame: av.VideoFrame) -> float | None:
    """The wall-clock time of a decoded recorded frame: stored media time is the epoch."""
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


def decoded_frames(job: ExportJob, segments: Sequence[Segment]) -> Iterator[av.VideoFrame]:
    """Every picture of ``segments`` in order, each segment checked against its SHA-256 and
    masked with the camera's current privacy masks if it was recorded under others."""
    for seg in segments:
        with av.open(io.BytesIO(job.fetch_masked(seg)[0]), format="mp4") as container:
            yield from container.decode(video=0)


class Encoder:
    """libx264 into an MP4 file; every frame keeps its own time (relative to the first)."""

    def __init__(self, out: Any, width: int, height: int, *, crf: int, preset: str) -> None:
        self.container = av.open(out, mode="w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=25, options={"crf": str(crf), "preset": preset})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.time_base = TIME_BASE
        self.stream.codec_context.time_base = TIME_BASE
        self.width, self.height = width, height
        self.last_pts = -1

    def encode(self, frame: av.VideoFrame, pts: int) -> None:
        pts = max(pts, self.last_pts + 1)  # strictly increasing, whatever the source did
        self.last_pts = pts
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, "yuv420p"):
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts, frame.time_base = pts, TIME_BASE
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()


def encode_into_package(
    pkg: PackageWriter, output_path: str, path: str, camera: str, write: Callable[[str], dict[str, Any]], **meta: Any
) -> dict[str, Any]:
    """Let ``write(scratch_path)`` encode an MP4, then store it in the package as ``path``
    (``meta`` goes into the manifest's file entry). Returns what ``write`` returned."""
    scratch = Path(f"{output_path}.{camera}.{path.replace('/', '_')}")
    try:
        stats = write(str(scratch))
        with pkg.open(path, camera=camera, **meta) as out, scratch.open("rb") as f:
            shutil.copyfileobj(f, out, CHUNK)
    finally:
        scratch.unlink(missing_ok=True)
    return stats
