"""The ``media-release`` export format: recordings for publication, people unidentifiable.

Every frame is decoded, searched for faces and people, the found regions are pixelated
(or blurred) and the frame is encoded again (libx264). All of it runs in the export's
worker thread, and every detector runs offline from files installed with a wheel:

- faces: MediaPipe's BlazeFace detector (``face-detector = "auto"`` or ``"mediapipe"``).
  The ``mediapipe`` wheels up to 0.10.21 carry the models themselves
  (``mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite`` and
  ``face_detection_short_range.tflite``); the legacy face-detection graph loads them from
  the installed package, nothing is downloaded. Its manifest entry names the model file and
  its SHA-256. Later mediapipe releases ship no models, so 0.10.21 is pinned (installed
  with ``--no-deps`` by the scripts: its metadata asks for numpy < 2 and the GUI OpenCV,
  neither of which it needs for this);
- faces, as fallback or second opinion: OpenCV's Haar cascades for frontal and profile
  faces (``opencv-python-headless``). ``"auto"`` uses them alone when mediapipe cannot be
  imported, and beside BlazeFace otherwise (``haar-too``);
- people: OpenCV's HOG + linear SVM people detector.

Detections flicker: a face found in one frame may be missed in the next. Every region is
therefore kept for ``hold-frames`` frames before and after each detection (the frames
are buffered, so the look-ahead is real), and grown by ``margin`` on every side.

How well it does, honestly (``bench/faces.py`` measures it on real faces turned
synthetically): Haar cascades find clear, roughly frontal faces of at least ``min-face``
pixels (at the detection scale) in daylight and miss most faces turned 45 degrees or more
(2 of 12 at 60); BlazeFace finds most faces turned 45-60 degrees (10 of 12 at 60 with
tiles) and few beyond 75, and misses small faces in wide shots unless tiled (the full-range
model sees the whole frame at 192 pixels across, hence ``face-tiles``: the frame again in
overlapping tiles). Both miss faces under hats or in the dark and fire on some textures
(false positives only cost a needless blur). The HOG
people detector finds upright, whole people of at least about 64x128 pixels (at the
detection scale) and misses sitting, partly hidden or very small people. This is a tool for
an operator who then reviews every released frame, not a guarantee: the package says so in
its manifest, and the register records who released it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
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
    PluginError,
    WatermarkOptions,
    Watermarker,
    camera_description,
    decoded_frames,
    encode_into_package,
    hookimpl,
    wallclock,
)

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels
REVIEW_NOTE = (
    "Automatic anonymisation with the face and people detectors named here. "
    "Detectors miss faces turned away, small, dark or partly hidden; review every frame before publication."
)
#: model name -> (file in the mediapipe wheel, the face-detection solution's model_selection)
BLAZEFACE_MODELS = {
    "full-range": ("face_detection_full_range_sparse.tflite", 1),
    "short-range": ("face_detection_short_range.tflite", 0),
}


class MediaReleaseSettings(WatermarkOptions):
    """Detector and masking settings (and the optional watermark); recorded in the manifest."""

    #: "auto": BlazeFace (mediapipe) when it can be imported, else the Haar cascades;
    #: "mediapipe": BlazeFace or fail; "haar": the Haar cascades only.
    face_detector: Annotated[Literal["auto", "mediapipe", "haar"], Meta(title="Face detector")] = "auto"
    #: BlazeFace model: "full-range" (faces up to ~5 m) or "short-range" (~2 m, close-ups).
    face_model: Literal["full-range", "short-range"] = "full-range"
    #: BlazeFace score threshold. Lower finds more faces (and more false ones).
    face_score: Annotated[float, Meta(ge=0.05, le=0.95, title="Face detector threshold (lower finds more)")] = 0.4
    #: BlazeFace also on an n x n grid of overlapping tiles, for small faces in wide shots
    #: (1 = the whole frame only; 2 finds about half again as many faces, bench/faces.py).
    face_tiles: Annotated[int, Meta(ge=1, le=4)] = 2
    #: With BlazeFace, run the Haar cascades too (the union of both is masked).
    haar_too: bool = True
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


class BlazeFace:
    """MediaPipe's BlazeFace face detector, run from the model files of the installed
    ``mediapipe`` wheel. Raises ``ImportError`` when mediapipe cannot be imported and
    ``PluginError`` when the wheel lacks the model (releases after 0.10.21 ship none).
    Not thread-safe: one per job, used and closed in the thread that made it."""

    def __init__(self, model: str, score: float, tiles: int = 1) -> None:
        mediapipe = importlib.import_module("mediapipe")
        face_detection = importlib.import_module("mediapipe.python.solutions.face_detection")
        filename, selection = BLAZEFACE_MODELS[model]
        self.version = getattr(mediapipe, "__version__", "?")
        self.model, self.tiles = model, tiles
        self.model_path = Path(mediapipe.__file__).parent / "modules" / "face_detection" / filename
        if not self.model_path.is_file():
            raise PluginError(
                f"media-release: mediapipe {self.version} has no {filename} (only releases up to 0.10.21 ship the face models)"
            )
        self.model_sha256 = hashlib.sha256(self.model_path.read_bytes()).hexdigest()
        self._start = lambda: face_detection.FaceDetection(min_detection_confidence=score, model_selection=selection)
        self.graph: Any = None  # started on first use: the legacy solution's graph loads the .tflite from the package's files

    def describe(self) -> str:
        tiles = f", also on {self.tiles}x{self.tiles} tiles" if self.tiles > 1 else ""
        return (
            f"MediaPipe BlazeFace {self.model} (mediapipe {self.version}, "
            f"{self.model_path.parent.name}/{self.model_path.name} sha256 {self.model_sha256}{tiles})"
        )

    def _detect(self, rgb: np.ndarray, x0: int, y0: int) -> list[Box]:
        if self.graph is None:
            self.graph = self._start()
            logger.debug("media release: BlazeFace %s from %s", self.model, self.model_path)
        result = self.graph.process(rgb)
        height, width = rgb.shape[:2]
        boxes: list[Box] = []
        for detection in result.detections or ():
            rel = detection.location_data.relative_bounding_box
            x, y = max(0, int(rel.xmin * width)), max(0, int(rel.ymin * height))
            w, h = min(width - x, int(rel.width * width)), min(height - y, int(rel.height * height))
            if w > 1 and h > 1:
                boxes.append((x0 + x, y0 + y, w, h))
        return boxes

    def __call__(self, bgr: np.ndarray) -> list[Box]:
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        boxes = self._detect(rgb, 0, 0)
        if self.tiles > 1:  # overlapping tiles: a small face is bigger in the model's input
            height, width = rgb.shape[:2]
            tw, th = int(width / self.tiles * 1.25), int(height / self.tiles * 1.25)
            for row in range(self.tiles):
                for col in range(self.tiles):
                    x0 = min(width - tw, int(col * width / self.tiles))
                    y0 = min(height - th, int(row * height / self.tiles))
                    boxes += self._detect(np.ascontiguousarray(rgb[y0 : y0 + th, x0 : x0 + tw]), x0, y0)
        return boxes

    def close(self) -> None:
        if self.graph is not None:
            self.graph.close()
            self.graph = None


class Detector:
    """Faces (BlazeFace and/or Haar cascades) and people (HOG) in one BGR frame.

    ``faces(gray)`` is the Haar cascade search alone (the fallback, and a second opinion
    tests use); ``find_faces(bgr)`` is the configured face search. Not thread-safe: one per
    job, made, used and closed in the job's worker thread."""

    def __init__(self, settings: MediaReleaseSettings) -> None:
        self.settings = settings
        self.blazeface: BlazeFace | None = None
        self.fallback_reason: str | None = None
        if settings.face_detector != "haar":
            try:
                self.blazeface = BlazeFace(settings.face_model, settings.face_score, settings.face_tiles)
            except ImportError as exc:
                if settings.face_detector == "mediapipe":
                    raise PluginError(f"media-release: face-detector = \"mediapipe\" but mediapipe cannot be imported: {exc}") from exc
                self.fallback_reason = f"mediapipe cannot be imported ({exc}); Haar cascades only"
                logger.warning("media release: %s", self.fallback_reason)
        self.use_haar = self.blazeface is None or settings.haar_too
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
        faces = [self.blazeface.describe()] if self.blazeface is not None else []
        if self.use_haar:
            faces += [f"Haar cascade {name}" for name, _ in self.cascades]
        library = f"opencv-python-headless {cv2.__version__}"
        if self.blazeface is not None:
            library += f"; mediapipe {self.blazeface.version}"
        described = {
            "library": library,
            "faces": faces,
            "people": "HOG + linear SVM (HOGDescriptor_getDefaultPeopleDetector)" if self.hog is not None else None,
            "settings": msgspec.to_builtins(self.settings),
        }
        if self.fallback_reason:
            described["fallback"] = self.fallback_reason
        return described

    def close(self) -> None:
        if self.blazeface is not None:
            self.blazeface.close()
            self.blazeface = None

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def faces(self, gray: np.ndarray, *, min_neighbors: int | None = None) -> list[Box]:
        """The Haar cascades' faces in a grey frame."""
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

    def find_faces(self, bgr: np.ndarray, gray: np.ndarray | None = None) -> list[Box]:
        """The configured face search: BlazeFace, the Haar cascades, or both."""
        found = self.blazeface(bgr) if self.blazeface is not None else []
        if self.use_haar:
            found += self.faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if gray is None else gray)
        return found

    def __call__(self, bgr: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        return self.find_faces(bgr, gray) + self.people(gray)


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
    with Detector(settings) as detector:
        return _write_media_release(job, output_path, settings, detector)


def _write_media_release(job: ExportJob, output_path: str, settings: MediaReleaseSettings, detector: Detector) -> dict[str, Any]:
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
