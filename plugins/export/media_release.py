"""The ``media-release`` export format: recordings for publication, people unidentifiable.

Every frame is decoded, searched for faces and people, the found regions are pixelated
(or blurred) and the frame is encoded again (libx264). The detectors ship inside the
``opencv-python-headless`` wheel and run offline: OpenCV's Haar cascades for frontal and
profile faces and its HOG + linear SVM people detector. Nothing is downloaded.

Detections flicker: a face found in one frame may be missed in the next. Every region is
therefore kept for ``hold-frames`` frames before and after each detection (the frames
are buffered, so the look-ahead is real), and grown by ``margin`` on every side.

How well it does, honestly: Haar cascades find clear, roughly frontal faces of at least
``min-face`` pixels (at the detection scale) in daylight; they miss faces turned more
than ~45 degrees, small faces in wide shots, faces under hats or in the dark, and they
fire on some textures (false positives only cost a needless blur). The HOG people
detector finds upright, whole people of at least about 64x128 pixels (at the detection
scale) and misses sitting, partly hidden or very small people. This is a tool for an
operator who then reviews every released frame, not a guarantee: the package says so in
its manifest, and the register records who released it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any, Literal

import av
import cv2
import msgspec
import numpy as np
from msgspec import Meta

from gateway.plugin_api import (
    TIME_BASE,
    Encoder,
    ExportFormat,
    ExportJob,
    PackageWriter,
    WatermarkOptions,
    Watermarker,
    camera_description,
    decoded_frames,
    encode_into_package,
    hookimpl,
    wallclock,
)

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels
REVIEW_NOTE = (
    "Automatic anonymisation with OpenCV Haar face cascades and the HOG people detector. "
    "Detectors miss faces turned away, small, dark or partly hidden; review every frame before publication."
)


class MediaReleaseSettings(WatermarkOptions):
    """Detector and masking settings (and the optional watermark); recorded in the manifest."""

    #: Haar cascades from ``cv2.data.haarcascades``; empty = none.
    face_cascades: tuple[Annotated[str, Meta(pattern=r"^haarcascade_[a-z0-9_]+\.xml$")], ...] = (
        "haarcascade_frontalface_default.xml", "haarcascade_profileface.xml",
    )
    scale_factor: Annotated[float, Meta(gt=1.0, le=2.0)] = 1.15
    #: Higher = fewer false positives and more missed faces. OpenCV's default is 3.
    min_neighbors: Annotated[int, Meta(ge=1, le=20, title="Face detector strictness (lower finds more)")] = 3
    #: Smallest face, in pixels at the detection scale.
    min_face: Annotated[int, Meta(ge=12, le=400)] = 24
    #: Frames wider than this are scaled down for detection (masks apply at full size).
    detect_width: Annotated[int, Meta(ge=160, le=4096)] = 640
    #: Also find whole people with HOG and mask them from head to foot.
    people: Annotated[bool, Meta(title="Also mask whole people")] = True
    people_detect_width: Annotated[int, Meta(ge=160, le=4096)] = 640
    people_hit_threshold: float = 0.3
    #: Run the detectors on every n-th frame (the hold covers the frames between).
    detect_every: Annotated[int, Meta(ge=1, le=25)] = 2
    #: Keep each region this many frames before and after the frame it was found in.
    hold_frames: Annotated[int, Meta(ge=0, le=100)] = 12
    #: Grow each region by this fraction of its size on every side.
    margin: Annotated[float, Meta(ge=0, le=2)] = 0.35
    method: Annotated[Literal["pixelate", "blur"], Meta(title="Anonymisation")] = "pixelate"
    #: Pixelation: blocks across a region (fewer = coarser).
    blocks: Annotated[int, Meta(ge=2, le=64, title="Pixelation blocks across a face")] = 6
    crf: Annotated[int, Meta(ge=0, le=51)] = 20
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"] = "veryfast"


class Detector:
    """Faces (Haar cascades) and people (HOG) in one BGR frame. Not thread-safe: one per job."""

    def __init__(self, settings: MediaReleaseSettings) -> None:
        self.settings = settings
        self.cascades = []
        for name in settings.face_cascades:
            cascade = cv2.CascadeClassifier(cv2.data.haarcascades + name)
            if cascade.empty():
                raise ValueError(f"OpenCV has no cascade {name!r} in {cv2.data.haarcascades}")
            self.cascades.append((name, cascade))
        self.hog: cv2.HOGDescriptor | None = None
        if settings.people:
            self.hog = cv2.HOGDescriptor()
            self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def describe(self) -> dict[str, Any]:
        return {
            "library": f"opencv-python-headless {cv2.__version__}",
            "faces": [f"Haar cascade {name}" for name, _ in self.cascades],
            "people": "HOG + linear SVM (HOGDescriptor_getDefaultPeopleDetector)" if self.hog is not None else None,
            "settings": msgspec.to_builtins(self.settings),
        }

    def faces(self, gray: np.ndarray, *, min_neighbors: int | None = None) -> list[Box]:
        s = self.settings
        scale = min(1.0, s.detect_width / gray.shape[1])
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1.0 else gray
        small = cv2.equalizeHist(small)
        found: list[Box] = []
        neighbors = s.min_neighbors if min_neighbors is None else min_neighbors
        for name, cascade in self.cascades:
            images = [(small, False)]
            if "profile" in name:  # the profile cascade finds faces looking one way only
                images.append((cv2.flip(small, 1), True))
            for image, flipped in images:
                for x, y, w, h in cascade.detectMultiScale(
                    image, scaleFactor=s.scale_factor, minNeighbors=neighbors, minSize=(s.min_face, s.min_face)
                ):
                    if flipped:
                        x = image.shape[1] - x - w
                    found.append(_rescale((x, y, w, h), scale))
        return found

    def people(self, gray: np.ndarray) -> list[Box]:
        if self.hog is None:
            return []
        s = self.settings
        scale = min(1.0, s.people_detect_width / gray.shape[1])
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1.0 else gray
        if small.shape[0] < 128 or small.shape[1] < 64:
            return []
        rects, _weights = self.hog.detectMultiScale(small, hitThreshold=s.people_hit_threshold, winStride=(8, 8), padding=(8, 8), scale=1.05)
        return [_rescale(tuple(r), scale) for r in rects]

    def __call__(self, bgr: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        return self.faces(gray) + self.people(gray)


def _rescale(box: Any, scale: float) -> Box:
    x, y, w, h = (int(round(v / scale)) for v in box)
    return x, y, w, h


def grow(box: Box, margin: float, width: int, height: int) -> Box:
    x, y, w, h = box
    dx, dy = int(w * margin), int(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, x1 - x0, y1 - y0


def mask_regions(bgr: np.ndarray, boxes: list[Box], settings: MediaReleaseSettings) -> None:
    """Make every region unidentifiable, in place."""
    height, width = bgr.shape[:2]
    for box in boxes:
        x, y, w, h = grow(box, settings.margin, width, height)
        if w < 2 or h < 2:
            continue
        region = bgr[y : y + h, x : x + w]
        if settings.method == "pixelate":
            bw, bh = max(1, settings.blocks), max(1, round(settings.blocks * h / w))
            small = cv2.resize(region, (bw, bh), interpolation=cv2.INTER_AREA)
            region[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        else:
            k = max(3, (min(w, h) // 2) | 1)
            region[:] = cv2.GaussianBlur(region, (k, k), 0)


def anonymise(
    job: ExportJob, segments: list[Any], out: Any, settings: MediaReleaseSettings, detector: Detector,
    marker: Watermarker | None = None,
) -> dict[str, Any]:
    """Decode → detect → mask (→ watermark) → encode one camera into ``out``. Blocking."""
    stats = {"frames": 0, "frames_masked": 0, "detections": 0}
    hold = settings.hold_frames
    pending: deque[tuple[np.ndarray, int, float | None]] = deque()  # frames waiting for look-ahead detections
    found: deque[list[Box]] = deque(maxlen=2 * hold + 1)  # detections of frames [i - hold, i + hold]
    encoder: Encoder | None = None
    first_pts: int | None = None

    def emit() -> None:
        bgr, pts, when = pending.popleft()
        # ``found`` holds the detections of the emitted frame and up to ``hold`` either side
        boxes = [b for boxes in found for b in boxes]
        if boxes:
            stats["frames_masked"] += 1
            mask_regions(bgr, boxes, settings)
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p")
        if marker is not None:
            frame = marker.apply(frame, when)
        assert encoder is not None
        encoder.encode(frame, pts)

    for index, frame in enumerate(decoded_frames(job, segments)):
        bgr = frame.to_ndarray(format="bgr24")
        if encoder is None:
            encoder = Encoder(out, frame.width, frame.height, crf=settings.crf, preset=settings.preset)
        ticks = int(frame.pts * frame.time_base / TIME_BASE) if frame.pts is not None else index * 3600
        if first_pts is None:
            first_pts = ticks
        boxes = detector(bgr) if index % settings.detect_every == 0 else []
        stats["frames"] += 1
        stats["detections"] += len(boxes)
        pending.append((bgr, ticks - first_pts, wallclock(frame)))
        found.append(boxes)
        if len(pending) > hold:
            emit()
    while pending:
        found.append([])  # no more look-ahead: the window slides past the end
        emit()
    if encoder is not None:
        encoder.close()
    return stats


def write_media_release(job: ExportJob, output_path: str, settings: MediaReleaseSettings) -> dict[str, Any]:
    detector = Detector(settings)
    pkg = PackageWriter(output_path)
    try:
        cameras = []
        for extract in job.cameras:
            segs = extract.segments
            entry = camera_description(extract)
            if segs:
                path = f"cameras/{extract.camera}.mp4"
                marker = (
                    Watermarker(job.request, job.produced_at, extract.camera, settings, job.mask_filters) if settings.watermark else None
                )
                entry["anonymisation"] = encode_into_package(
                    pkg, output_path, path, extract.camera,
                    lambda scratch, segs=segs, marker=marker: anonymise(job, segs, scratch, settings, detector, marker),
                )
                entry["files"] = [{"path": path, "source_segments": [s.id for s in segs]}]
            cameras.append(entry)
        processing: dict[str, Any] = {
            "anonymisation": detector.describe(), "encoder": f"libx264 crf {settings.crf} preset {settings.preset}", "note": REVIEW_NOTE,
        }
        if settings.watermark:
            processing["watermark"] = settings.describe_watermark()
        manifest = {**job.base_manifest(MediaRelease.id()), "cameras": cameras, "processing": processing}
        pkg.finish(manifest, job.signer)
    except BaseException:
        pkg.abort()
        raise
    return manifest


class MediaRelease(ExportFormat):
    Options = MediaReleaseSettings
    media_type = "application/zip"
    suffix = ".zip"
    title = "Media release (faces and people pixelated, re-encoded)"

    @staticmethod
    def id() -> str:
        return "media-release"

    async def produce(self, job: ExportJob, output_path: str) -> None:
        settings = msgspec.convert(job.options or {}, MediaReleaseSettings, str_keys=True)
        await asyncio.to_thread(write_media_release, job, output_path, settings)


@hookimpl(trylast=True)
def gateway_register_export_formats(register: Callable[[type[ExportFormat]], None]) -> None:
    """Register the anonymised media release."""
    register(MediaRelease)
