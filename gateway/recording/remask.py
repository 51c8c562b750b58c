"""Masks drawn after a recording protect it too: re-masking recorded segments on demand.

Every stored segment records the mask set in force when it started (the database mask
version and ``mask_digest``: SHA-256 over the camera's complete mask set, config and
database masks; "" for an unmasked camera). Playback and every export ask for the camera's
current ``MaskPlan``:

- a segment whose recorded digest equals the current one is served byte for byte;
- otherwise, when the camera has masks now, the segment is decoded, every picture gets
  the current masks (``MaskPlan.shapes_at`` per frame, at the frame's wall-clock time),
  and it is encoded again with the mask stage's encoder settings — in a worker thread,
  for that request only; the stored recording is never changed;
- a camera without masks now serves its recordings as they were stored.

Re-masked segments are cached on local disk (``<data-dir>/remask/``) keyed by segment id
and digest, written atomically, one digest per segment, and deleted with the segment when
the catalogue removes it (retention). Why cache: an HLS player reads a segment as two or
more byte ranges (the init section, then the fragments) and seeks by range; each range
must come from one stable byte sequence, and re-encoding a 60 s segment per range request
would cost seconds of CPU each time. The cache holds only masked pictures (masked at
least as much as the current masks require: a new digest is a cache miss).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import msgspec

from gateway.config import MaskingConfig
from gateway.interfaces import MaskFilter, MaskShape
from gateway.live.fmp4 import Fragmenter, Part
from gateway.media.masking import _Encoder, build_regions, masked_copy
from gateway.media.packet import CLOCK_RATE, TIME_BASE, MediaPacket, StreamInfo
from gateway.recording.index import Segment

logger = logging.getLogger(__name__)

#: The whole picture, masked when a plan cannot say where its masks are (fail closed).
WHOLE_PICTURE = (MaskShape(points=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), filter="fill"),)
#: Fragment (moof+mdat) length inside a re-masked segment, as the recorder writes them.
FRAGMENT_TICKS = CLOCK_RATE
#: Re-masking jobs running at once per node (each one worker thread, one core).
REMASK_WORKERS = 2
#: A digest no mask set has: recorded when the mask set in force is not known.
UNKNOWN_DIGEST = "unknown"


def mask_digest(shapes: Sequence[MaskShape]) -> str:
    """SHA-256 over the canonical JSON of a camera's complete mask set; "" for no masks."""
    if not shapes:
        return ""
    return hashlib.sha256(msgspec.json.encode(tuple(shapes), order="deterministic")).hexdigest()


@dataclass(frozen=True)
class MaskPlan:
    """The masks in force on one camera now, to apply to its recorded pictures."""

    camera: str
    #: The database mask version (0: none saved).
    version: int
    #: ``mask_digest`` of the complete mask set ("" when the camera has no masks).
    digest: str
    shapes: tuple[MaskShape, ...] = ()

    @property
    def masked(self) -> bool:
        return self.digest != ""

    def shapes_at(self, wallclock: float, width: int, height: int) -> tuple[MaskShape, ...] | None:
        """Picture-space shapes (normalised) for a recorded frame captured at ``wallclock``;
        None: mask the whole picture (the plan cannot place its masks: fail closed)."""
        return self.shapes

    async def prepare(self, start: float, end: float) -> MaskPlan:
        """This plan, ready for the pictures recorded between ``start`` and ``end`` (a plan
        with masks anchored to a PTZ camera's scene loads that time's positions here, so
        ``shapes_at`` never waits for the database in the worker)."""
        return self

    def serves_as_recorded(self, segment: Segment) -> bool:
        """True when the stored bytes may be served unchanged under this plan."""
        return segment.mask_digest == self.digest or not self.masked

    def describe(self) -> dict[str, object]:
        """For audit details and manifests."""
        return {"version": self.version, "digest": self.digest, "masks": len(self.shapes)}


@dataclass(frozen=True, slots=True)
class Remasked:
    data: bytes
    init_bytes: int
    frames: int = 0


def fmp4_init_length(data: bytes) -> int:
    """Bytes before the first ``moof``: the segment's ``ftyp``+``moov``."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if kind == b"moof":
            return offset
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
        if size < 8:
            break
        offset += size
    raise ValueError("not a fragmented MP4 segment: no moof box")


# --------------------------------------------------------------------------------------
# one segment (blocking: a worker thread)


def remask_segment(
    data: bytes,
    plan: MaskPlan,
    filters: Mapping[str, MaskFilter],
    settings: MaskingConfig,
    *,
    start: float,
) -> Remasked:
    """Decode a stored segment, apply ``plan`` to every picture, encode it again.

    The result is a self-contained fMP4 segment like the recorder's (init section, then
    one-second fragments) on the same wall-clock media timeline as the original.
    ``start`` is the segment's catalogued start (wall clock of its first picture).
    """
    fragmenter = Fragmenter(1 << 60, FRAGMENT_TICKS, wallclock_timeline=True)
    parts: list[Part] = []
    encoder: _Encoder | None = None
    info: StreamInfo | None = None
    regions_key: tuple[int, int, tuple[MaskShape, ...] | None] | None = None
    regions: list = []
    first: int | None = None
    frames = 0

    def publish(encoded: Iterable[tuple[bytes, int, bool]], w: int, h: int, fps: float) -> None:
        nonlocal info
        for payload, rel, keyframe in encoded:
            if info is None:
                if not keyframe:
                    continue
                assert encoder is not None
                info = StreamInfo(
                    codec="h264", width=w, height=h, parameter_sets=encoder.keeper.parameter_sets,
                    profile="Constrained Baseline", pix_fmt="yuv420p", declared_fps=fps,
                )
            assert first is not None
            packet = MediaPacket(
                data=payload, pts=rel, dts=rel, keyframe=keyframe, wallclock=(first + rel) / CLOCK_RATE, info=info,
            )
            parts.extend(fragmenter.push(packet))

    with av.open(io.BytesIO(data), format="mp4") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # no latency to keep here: decode on every core there is
        tb = stream.time_base or Fraction(1, CLOCK_RATE)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        w = h = 0
        for frame in container.decode(stream):
            pts = round((frame.pts or 0) * tb * CLOCK_RATE)
            if first is None:
                first = pts
            rel = pts - first
            w, h = frame.width, frame.height
            shapes = plan.shapes_at(start + rel / CLOCK_RATE, w, h)
            key = (w, h, shapes)
            if key != regions_key:
                regions = build_regions(WHOLE_PICTURE if shapes is None else shapes, filters, w, h)
                regions_key = key
            picture = masked_copy(frame, regions)
            if encoder is None or encoder.ctx.width != w or encoder.ctx.height != h:
                if encoder is not None:
                    publish(encoder.encode(None), encoder.ctx.width, encoder.ctx.height, fps)
                encoder, info = _Encoder(w, h, fps, settings), None
            picture.pts = rel
            picture.time_base = TIME_BASE
            publish(encoder.encode(picture), w, h, fps)
            frames += 1
        if encoder is not None:
            publish(encoder.encode(None), w, h, fps)
    parts.extend(fragmenter.flush())
    if not parts:
        raise ValueError("the segment holds no picture to re-mask")
    init = parts[0].init.data
    return Remasked(init + b"".join(p.data for p in parts), len(init), frames)


# --------------------------------------------------------------------------------------
# the service


class Remasker:
    """Re-masked segments on demand, cached on local disk; one job per segment at once."""

    def __init__(
        self,
        read: Callable[[Segment], Awaitable[bytes]],
        filters: Mapping[str, MaskFilter],
        settings: MaskingConfig,
        cache_dir: Path | None,
    ) -> None:
        self._read = read
        self._filters = dict(filters)
        self._settings = settings
        self.cache_dir = cache_dir
        self._jobs: dict[tuple[int, str], asyncio.Future[Remasked]] = {}
        self._workers = asyncio.Semaphore(REMASK_WORKERS)
        #: Segments re-masked (not served from the cache) by this node.
        self.produced = 0

    def _path(self, segment_id: int, digest: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / str(segment_id // 1000) / f"{segment_id}-{digest[:32]}.mp4"

    async def masked(self, segment: Segment, plan: MaskPlan) -> Remasked:
        """``segment`` with ``plan``'s masks: from the cache, or made now in a worker."""
        key = (segment.id, plan.digest)
        job = self._jobs.get(key)
        if job is None:
            job = asyncio.ensure_future(self._make(segment, plan))
            self._jobs[key] = job
            job.add_done_callback(lambda _f: self._jobs.pop(key, None))
        return await asyncio.shield(job)

    async def _make(self, segment: Segment, plan: MaskPlan) -> Remasked:
        path = self._path(segment.id, plan.digest)
        if path is not None:
            cached = await asyncio.to_thread(_read_cached, path)
            if cached is not None:
                return cached
        original = await self._read(segment)
        plan = await plan.prepare(segment.start, segment.end)
        async with self._workers:
            result = await asyncio.to_thread(
                remask_segment, original, plan, self._filters, self._settings, start=segment.start
            )
        self.produced += 1
        logger.info(
            "camera %s: segment %d re-masked under mask version %d (%d frames)",
            segment.camera, segment.id, plan.version, result.frames,
        )
        if path is not None:
            try:
                await asyncio.to_thread(_write_cached, path, result.data)
            except OSError as exc:  # a full disk must not stop playback
                logger.warning("camera %s: could not cache re-masked segment %d: %s", segment.camera, segment.id, exc)
        return result

    async def forget(self, segment_ids: Sequence[int]) -> None:
        """Delete the cached copies of these segments (the catalogue removed them)."""
        if self.cache_dir is not None and segment_ids:
            await asyncio.to_thread(_delete_cached, self.cache_dir, list(segment_ids))


def _read_cached(path: Path) -> Remasked | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return Remasked(data, fmp4_init_length(data))
    except ValueError:
        logger.warning("re-mask cache: %s is damaged; making it again", path)
        return None


def _write_cached(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    segment_id = path.name.split("-", 1)[0]
    for other in path.parent.glob(f"{segment_id}-*.mp4"):  # one digest per segment
        with contextlib.suppress(FileNotFoundError):
            other.unlink()
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _delete_cached(cache_dir: Path, segment_ids: list[int]) -> None:
    for segment_id in segment_ids:
        folder = cache_dir / str(segment_id // 1000)
        if not folder.is_dir():
            continue
        for path in folder.glob(f"{segment_id}-*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
