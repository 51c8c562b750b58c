"""The mask stage: decode once, apply the privacy-mask filters, encode once, per camera.

A camera with at least one mask runs one ``MaskStage``: it reads the camera's *unmasked*
packets (a hub private to the ``Camera``), decodes them with PyAV, lets the filter plugins
change the masked regions of the YUV planes (vectorised numpy, never per-pixel Python),
encodes the result once with libx264 (``tune=zerolatency``: no lookahead, no B-frames, a
packet out for every picture in) and hands the packets to a ``publish`` callback, which
puts them on the camera's public hub. Every reader (WebRTC, LL-HLS, the recorder,
snapshots, exports, re-streams) reads that hub, so the unmasked picture of a masked camera
never reaches any of them.

Decoding, filtering and encoding run in one dedicated worker thread per camera; the event
loop only moves packet references. When the thread cannot keep up, whole GOPs are skipped
(the next input is a keyframe), never single packets, so the picture never smears.

Shapes are normalised (0..1), so a camera that changes resolution keeps its masks in
place: the rasterised pixel masks are cached per resolution and rebuilt on a change.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import msgspec
import numpy as np

from gateway.config import MaskingConfig
from gateway.errors import StreamClosed
from gateway.interfaces import MaskFilter, MaskShape
from gateway.media.decoding import STOP, FrameDecoder, drain, forward, serve
from gateway.media.h26x import ParameterSetKeeper
from gateway.media.hub import HubReader
from gateway.media.mask_projection import WHOLE_PICTURE, MaskProjector
from gateway.media.packet import TIME_BASE, MediaPacket, StreamInfo

logger = logging.getLogger(__name__)

#: Pictures waiting for the worker (room for a cached GOP to catch up with at a switch).
INBOX_PACKETS = 256
#: A live picture older than this when the worker reaches it: skip to the next keyframe.
MAX_LAG = 2.0
#: Pixels around a shape's bounding box that a filter also sees (blur needs a neighbourhood).
FILTER_MARGIN = 8


# --------------------------------------------------------------------------------------
# rasterising


def rasterise(points: Sequence[tuple[float, float]], width: int, height: int) -> np.ndarray:
    """A boolean ``(height, width)`` mask of the pixels whose centres lie inside the polygon.

    Even-odd rule, vectorised over the polygon's bounding box: one numpy pass per edge.
    """
    mask = np.zeros((height, width), dtype=bool)
    piece = _raster_piece(points, width, height, 0)
    if piece is not None:
        y0, x0, inside = piece
        mask[y0 : y0 + inside.shape[0], x0 : x0 + inside.shape[1]] = inside
    return mask


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels (a square neighbourhood), within its bounding box."""
    rows = np.flatnonzero(mask.any(axis=1))
    if radius <= 0 or rows.size == 0:
        return mask
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    y0, y1 = max(rows[0] - radius, 0), min(rows[-1] + 1 + radius, h)
    x0, x1 = max(cols[0] - radius, 0), min(cols[-1] + 1 + radius, w)
    box = mask[y0:y1, x0:x1]
    grown = box.copy()
    for d in range(1, radius + 1):  # separable: rows, then columns
        grown[:, d:] |= box[:, :-d]
        grown[:, :-d] |= box[:, d:]
    box = grown.copy()
    for d in range(1, radius + 1):
        grown[d:, :] |= box[:-d, :]
        grown[:-d, :] |= box[d:, :]
    out = mask.copy()
    out[y0:y1, x0:x1] = grown
    return out


def chroma_mask(luma: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 4:2:0 chroma mask: a chroma sample is masked when any of its luma pixels is."""
    h2, w2 = (luma.shape[0] + 1) // 2, (luma.shape[1] + 1) // 2
    padded = np.zeros((h2 * 2, w2 * 2), dtype=bool)
    padded[: luma.shape[0], : luma.shape[1]] = luma
    return padded.reshape(h2, 2, w2, 2).any(axis=(1, 3))[:height, :width]


@dataclass(frozen=True, slots=True)
class _Region:
    """One filter application: a filter over the union of its shapes, cropped to a box."""

    filter: MaskFilter
    options: Any  #: the filter's ``Options`` instance
    boxes: tuple[tuple[slice, slice], ...]  #: per plane (Y, U, V)
    masks: tuple[np.ndarray, ...]  #: per plane, cropped to its box


def _box(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, h)),
        slice(max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, w)),
    )


class FillFallback(MaskFilter):
    """Used when a shape names a filter no plugin provides: a mask is never skipped."""

    @staticmethod
    def id() -> str:
        return "fill"

    def apply(self, planes: list[np.ndarray], masks: list[np.ndarray], options: Any) -> None:
        for plane, mask, value in zip(planes, masks, (16, 128, 128)):
            plane[mask] = value


def filter_options(flt: MaskFilter, raw: Mapping[str, Any]) -> Any:
    """A mask's ``options`` as its filter's ``Options`` instance; None when they are not
    valid for it (a filter without ``Options`` gets the plain dict)."""
    options_type = getattr(type(flt), "Options", None)
    if options_type is None:
        return dict(raw)
    try:
        return msgspec.convert(dict(raw), type=options_type, str_keys=True)
    except msgspec.ValidationError:
        return None


def _raster_piece(points: Sequence[tuple[float, float]], width: int, height: int, grow: int) -> tuple[int, int, np.ndarray] | None:
    """A polygon rasterised within its own bounding box (grown by ``grow`` pixels all round):
    (top, left, mask), or None when it misses the picture. Work proportional to the box,
    not to the picture: a mask that moves with a PTZ camera is rasterised every picture."""
    pts = np.asarray(points, dtype=np.float64) * (width, height)
    x0 = max(int(np.floor(pts[:, 0].min())) - grow, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + grow, width)
    y0 = max(int(np.floor(pts[:, 1].min())) - grow, 0)
    y1 = min(int(np.ceil(pts[:, 1].max())) + grow, height)
    if x0 >= x1 or y0 >= y1:
        return None
    xs = np.arange(x0, x1) + 0.5
    ys = (np.arange(y0, y1) + 0.5)[:, None]
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0)):
        if ay == by:
            continue
        crosses = (ay > ys) != (by > ys)
        x_at = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < x_at)
    if grow > 0:
        inside = dilate(inside, grow)
    return y0, x0, inside


def build_regions(
    shapes: Sequence[MaskShape], filters: Mapping[str, MaskFilter], width: int, height: int
) -> list[_Region]:
    """Rasterise ``shapes`` for one picture size, grouped by (filter, options)."""
    groups: dict[tuple[str, str], tuple[MaskFilter, Any, list[tuple[int, int, np.ndarray]]]] = {}
    for shape in shapes:
        flt = filters.get(shape.filter)
        options = filter_options(flt, shape.options) if flt is not None else None
        if flt is None:
            logger.error("mask filter %r is not installed; filling the region black instead", shape.filter)
        elif options is None:
            logger.error("mask filter %r does not take the options %r; filling the region black instead", shape.filter, shape.options)
        if options is None:
            flt, name, options, raw = FillFallback(), "fill", {}, {}
        else:
            name, raw = shape.filter, shape.options
        key = (name, repr(sorted(raw.items())))
        piece = _raster_piece(shape.points, width, height, shape.grow)
        if key not in groups:
            groups[key] = (flt, options, [])
        if piece is not None:
            groups[key][2].append(piece)
    regions: list[_Region] = []
    cw, ch = (width + 1) // 2, (height + 1) // 2
    for flt, options, pieces in groups.values():
        if not pieces:
            continue
        # the union of the group's pieces, in a box aligned to chroma samples
        top = min(p[0] for p in pieces) & ~1
        left = min(p[1] for p in pieces) & ~1
        bottom = min(max(p[0] + p[2].shape[0] for p in pieces) + 1 & ~1, height + (height & 1))
        right = min(max(p[1] + p[2].shape[1] for p in pieces) + 1 & ~1, width + (width & 1))
        union = np.zeros((bottom - top, right - left), dtype=bool)
        for y0, x0, piece in pieces:
            union[y0 - top : y0 - top + piece.shape[0], x0 - left : x0 - left + piece.shape[1]] |= piece
        union = union[: height - top, : width - left]
        chroma = chroma_mask(union, min(cw - left // 2, (union.shape[1] + 1) // 2), min(ch - top // 2, (union.shape[0] + 1) // 2))
        luma_full = _Placed(union, top, left, height, width)
        chroma_full = _Placed(chroma, top // 2, left // 2, ch, cw)
        ybox, cbox = luma_full.box(FILTER_MARGIN), chroma_full.box(FILTER_MARGIN // 2)
        if ybox is None or cbox is None:
            continue  # a sliver thinner than a pixel at this size
        regions.append(_Region(flt, options, (ybox, cbox, cbox), (luma_full.crop(ybox), chroma_full.crop(cbox), chroma_full.crop(cbox))))
    return regions


@dataclass(frozen=True, slots=True)
class _Placed:
    """A boolean mask ``local`` placed at (top, left) in a plane of ``height`` x ``width``."""

    local: np.ndarray
    top: int
    left: int
    height: int
    width: int

    def box(self, margin: int) -> tuple[slice, slice] | None:
        found = _box(self.local, 0)
        if found is None:
            return None
        rows, cols = found
        return (
            slice(max(self.top + rows.start - margin, 0), min(self.top + rows.stop + margin, self.height)),
            slice(max(self.left + cols.start - margin, 0), min(self.left + cols.stop + margin, self.width)),
        )

    def crop(self, box: tuple[slice, slice]) -> np.ndarray:
        """The mask over ``box`` (plane coordinates), False outside ``local``."""
        rows, cols = box
        out = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
        y0, x0 = max(rows.start, self.top), max(cols.start, self.left)
        y1 = min(rows.stop, self.top + self.local.shape[0])
        x1 = min(cols.stop, self.left + self.local.shape[1])
        if y0 < y1 and x0 < x1:
            out[y0 - rows.start : y1 - rows.start, x0 - cols.start : x1 - cols.start] = self.local[
                y0 - self.top : y1 - self.top, x0 - self.left : x1 - self.left
            ]
        return out


# --------------------------------------------------------------------------------------
# one picture


def _plane_view(plane: Any, width: int, height: int) -> np.ndarray:
    """A writable (height, width) view of one plane of a frame we allocated."""
    return np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)[:height, :width]


def masked_copy(frame: av.VideoFrame, regions: Sequence[_Region]) -> av.VideoFrame:
    """A new yuv420p frame: ``frame``'s picture with every region filtered.

    The decoded frame itself is never written to: the decoder still uses it as a reference.
    """
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    w, h = frame.width, frame.height
    out = av.VideoFrame(w, h, "yuv420p")
    sizes = ((w, h), ((w + 1) // 2, (h + 1) // 2), ((w + 1) // 2, (h + 1) // 2))
    planes = []
    for src, dst, (pw, ph) in zip(frame.planes, out.planes, sizes):
        view = _plane_view(dst, pw, ph)
        view[...] = np.frombuffer(src, dtype=np.uint8).reshape(src.height, src.line_size)[:ph, :pw]
        planes.append(view)
    for region in regions:
        views = [p[b] for p, b in zip(planes, region.boxes)]
        try:
            region.filter.apply(views, list(region.masks), region.options)
        except Exception:  # a broken filter must not leave its region visible: fill it
            logger.exception("mask filter %s failed; filling its region black", region.filter.id())
            FillFallback().apply(views, list(region.masks), {})
    return out


# --------------------------------------------------------------------------------------
# the stage


@dataclass(slots=True)
class StageStats:
    """Cumulative CPU seconds of the worker thread, per step, and picture counts."""

    decode: float = 0.0
    filter: float = 0.0
    encode: float = 0.0
    frames: int = 0
    skipped: int = 0  #: input packets skipped because the worker fell behind

    def per_frame_ms(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {k: round(getattr(self, k) * 1000 / n, 3) for k in ("decode", "filter", "encode")}


class _Encoder:
    """libx264 for one picture size; SPS/PPS before every keyframe."""

    def __init__(self, width: int, height: int, fps: float, settings: MaskingConfig) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(fps).limit_denominator(1001)
        ctx.bit_rate = settings.bitrate
        gop = max(1, round(settings.keyframe_interval * fps))
        ctx.gop_size = gop
        ctx.thread_count = settings.encoder_threads
        ctx.options = {
            "preset": settings.preset,
            "tune": "zerolatency",
            "profile": "baseline",  # what WebRTC peers accept; ultrafast needs no more
            "x264-params": f"repeat-headers=1:keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
        }
        ctx.open()
        self.ctx = ctx
        self.keeper = ParameterSetKeeper("h264", b"")

    def encode(self, frame: av.VideoFrame | None) -> list[tuple[bytes, int, bool]]:
        out = []
        for packet in self.ctx.encode(frame):
            data, key = self.keeper.process(bytes(packet))
            out.append((data, int(packet.pts), key or packet.is_keyframe))
        return out


#: Called in the mask stage's worker with (pts, wallclock, masked picture) for every picture.
PictureTap = Callable[[int, float, "av.VideoFrame"], None]


class MaskStage:
    """Reads unmasked packets, publishes masked ones. An async context manager.

    ``after_pts``: pictures at or before this timestamp are decoded (they may be references)
    but not published: the public hub already carried them.
    """

    def __init__(
        self,
        name: str,
        reader: HubReader,
        publish: Callable[[MediaPacket], None],
        shapes: Sequence[MaskShape],
        filters: Mapping[str, MaskFilter],
        settings: MaskingConfig,
        *,
        after_pts: int | None = None,
        projector: MaskProjector | None = None,
        on_position: Callable[[bool], None] | None = None,
        on_picture: PictureTap | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        #: Given every masked picture (worker thread), so analytics need not decode it again.
        self._on_picture = on_picture
        self.stats = StageStats()
        self._reader = reader
        self._publish = publish
        self._filters = dict(filters)
        self._shapes: tuple[MaskShape, ...] = tuple(shapes)
        self._after_pts = after_pts
        self._inbox: queue.Queue[Any] = queue.Queue(INBOX_PACKETS)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False
        # worker-thread state
        self._frames = FrameDecoder()
        self._out_info: StreamInfo | None = None
        self._encoder: _Encoder | None = None
        self._regions_key: tuple[int, int, tuple[MaskShape, ...]] | None = None
        self._regions: list[_Region] = []
        self._first = True
        self._dropping = False
        #: Projects masks anchored to a PTZ camera's scene; None for picture-space masks only.
        self._projector = projector
        self._on_position = on_position
        #: Whether the camera's position was known for the newest picture (None: no scene masks).
        self.position_known: bool | None = None

    # -- control (event loop) -----------------------------------------------------------
    def set_shapes(self, shapes: Sequence[MaskShape]) -> None:
        """Change the masks; takes effect from the next picture (one atomic swap)."""
        self._shapes = tuple(shapes)

    @property
    def shapes(self) -> tuple[MaskShape, ...]:
        return self._shapes

    async def __aenter__(self) -> MaskStage:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=f"mask-{self.name}", daemon=True)
        self._thread.start()
        self._pump_task = asyncio.create_task(self._pump(), name=f"mask-pump:{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and let the worker finish; nothing is published afterwards."""
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        if self._pump_task is not None:
            self._pump_task.cancel()
            try:
                await self._pump_task
            except asyncio.CancelledError:
                pass
        drain(self._inbox)
        self._inbox.put(STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    async def _pump(self) -> None:
        """Move packet references from the hub reader to the worker; skip GOPs if it lags."""
        try:
            await forward(self._reader, self._inbox, skipped=self._skipped, behind=self._behind)
        except StreamClosed:
            pass

    def _skipped(self) -> None:
        self.stats.skipped += 1

    def _behind(self) -> None:
        logger.warning("camera %s: masking falls behind; skipping to the next keyframe", self.name)

    # -- worker thread ------------------------------------------------------------------
    def _work(self) -> None:
        serve(self._inbox, self._process, self._frames.reset, logger, f"camera {self.name}: masking")

    def _process(self, packet: MediaPacket) -> None:
        stats = self.stats
        if self._dropping and not packet.keyframe:
            stats.skipped += 1
            return
        self._dropping = False
        catching_up = self._after_pts is not None and packet.pts <= self._after_pts
        if not catching_up and time.time() - packet.wallclock > MAX_LAG:
            # The worker fell behind the camera: drop this GOP rather than serve old pictures.
            self._dropping = True
            stats.skipped += 1
            logger.warning("camera %s: masking is %.1fs behind; skipping to the next keyframe", self.name, time.time() - packet.wallclock)
            return
        epoch = self._frames.started
        t0 = time.thread_time()
        frames = self._frames.decode(packet)
        stats.decode += time.thread_time() - t0
        if frames is None:
            return
        if self._frames.started != epoch:
            self._encoder = None  # a new epoch out: a fresh encoder starts with a keyframe
            self._first = True
        for frame, pts, wallclock in frames:
            if self._after_pts is not None and pts <= self._after_pts:
                continue
            self._encode(frame, pts, wallclock, packet.info)

    def _encode(self, frame: av.VideoFrame, pts: int, wallclock: float, info: StreamInfo) -> None:
        stats = self.stats
        t0 = time.thread_time()
        w, h = frame.width, frame.height
        shapes = self._picture_shapes(self._shapes, wallclock, w, h)
        key = (w, h, shapes)
        if key != self._regions_key:
            self._regions = build_regions(shapes, self._filters, w, h)
            self._regions_key = key
        picture = masked_copy(frame, self._regions)
        t1 = time.thread_time()
        stats.filter += t1 - t0
        if self._on_picture is not None:
            try:
                self._on_picture(pts, wallclock, picture)
            except Exception:  # whoever listens must never stop the masking
                logger.exception("camera %s: a masked-picture listener failed", self.name)
        if self._encoder is None or self._encoder.ctx.width != w or self._encoder.ctx.height != h:
            fps = info.declared_fps or 25.0
            self._encoder = _Encoder(w, h, fps, self.settings)
            self._out_info = None
        picture.pts = pts
        picture.time_base = TIME_BASE
        encoded = self._encoder.encode(picture)
        stats.encode += time.thread_time() - t1
        stats.frames += 1
        for data, out_pts, keyframe in encoded:
            if self._out_info is None:
                if not keyframe:
                    continue
                self._out_info = StreamInfo(
                    codec="h264",
                    width=w,
                    height=h,
                    parameter_sets=self._encoder.keeper.parameter_sets,
                    profile="Constrained Baseline",
                    pix_fmt="yuv420p",
                    declared_fps=info.declared_fps,
                    epoch=info.epoch,
                )
            out = MediaPacket(
                data=data,
                pts=out_pts,
                dts=out_pts,
                keyframe=keyframe,
                wallclock=wallclock,
                info=self._out_info,
                discontinuity=self._first,
            )
            self._first = False
            self._hand_over(out)

    def _picture_shapes(self, shapes: tuple[MaskShape, ...], wallclock: float, w: int, h: int) -> tuple[MaskShape, ...]:
        """The masks of this picture in picture space; the whole picture while the position
        of a PTZ camera with scene masks is unknown (fail closed)."""
        if self._projector is None or not any(s.drawn_at is not None for s in shapes):
            known = None
            projected: tuple[MaskShape, ...] | None = shapes
        else:
            projected = self._projector.picture_shapes(shapes, wallclock, w, h)
            known = projected is not None
        if known != self.position_known:
            self.position_known = known
            if known is False:
                logger.warning("camera %s: PTZ position unknown; masking the whole picture", self.name)
            elif known:
                logger.info("camera %s: PTZ position known again; scene masks follow the camera", self.name)
            if self._on_position is not None and known is not None and self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._on_position, known)
                except RuntimeError:
                    pass
        return projected if projected is not None else (WHOLE_PICTURE,)

    def _hand_over(self, packet: MediaPacket) -> None:
        if self._closed or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, packet)
        except RuntimeError:  # the loop is gone: the gateway is exiting
            self._closed = True

    def _deliver(self, packet: MediaPacket) -> None:
        if not self._closed:
            self._publish(packet)


def instantiate_filters(classes: Mapping[str, type[MaskFilter]]) -> dict[str, MaskFilter]:
    """One instance of each registered filter class (filters keep no per-picture state)."""
    return {name: cls() for name, cls in classes.items()}

