"""Number-plate reading (analyzer ``plate-reader``): find plates, read them, report each once.

Per picture (in the analyzer's own worker thread):

1. **Find** candidate plates in the region of interest: bright rectangles holding dark
   glyphs (the picture thresholded, outer contours of plate shape), and text-dense blobs
   (black-hat filter, closed into blocks), optionally also OpenCV's bundled
   ``haarcascade_russian_plate_number.xml`` (``locator = "all"``). Overlapping candidates
   are merged; at most ``max-candidates`` are read, plate-like ones first.
2. **Split** a candidate into text lines by its row profile, so a two-line plate (a
   Vietnamese motorbike's ``29-B1`` over ``123.45``) is read as two lines.
3. **Read** each line with the PP-OCR recognition model that ships inside the ``rapidocr``
   wheel (ONNX Runtime, one thread; the model path is given explicitly, so nothing is
   ever downloaded), and normalise the lines (``gateway.plates.text``). Only reads that fit
   a known plate format (Ukrainian, Polish, Vietnamese) with enough confidence count,
   unless ``any-format`` is set.
4. **Report** a plate once while it stays in view: a read similar to one reported less than
   ``repeat-seconds`` ago (same key, or one character apart) is the same passage. A
   candidate where a plate was read (or failed to read) a moment ago, at about the same
   place, is not read again at once: a parked or slow car costs one OCR pass per
   ``reread-seconds``, not one per picture.

Each report is an ``Observation`` of kind ``plate`` with payload ``lines``, ``text``,
``plate``, ``country``, ``box`` (normalised x, y, w, h) and a JPEG crop of the plate; the
plate store keeps it (``gateway.plates.store``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from msgspec import Meta

from gateway.plugin_api import Analyzer, AnalyzerFrame, Observation, PluginOptions, hookimpl, normalise, similar

logger = logging.getLogger(__name__)

Fraction01 = Annotated[float, Meta(ge=0.0, le=1.0)]
#: The recognition model inside the rapidocr wheel (PP-OCRv6, small; its character list is
#: stored in the model itself).
REC_MODEL = "PP-OCRv6_rec_small.onnx"
#: Plates are wider than tall: single-line about 2–6, two-line (motorbike) about 1–2.
MIN_ASPECT, MAX_ASPECT = 0.9, 7.0


class PlateReaderOptions(PluginOptions):
    #: The part of the picture to search: [x0, y0, x1, y1], normalised (0..1).
    region: tuple[Fraction01, Fraction01, Fraction01, Fraction01] = (0.0, 0.0, 1.0, 1.0)
    #: The lowest OCR confidence (0..1) of a line for a read to count.
    min_confidence: Fraction01 = 0.8
    #: A plate read again within this many seconds is the same passage (reported once).
    repeat_seconds: Annotated[float, Meta(ge=0, le=3600)] = 10.0
    #: The narrowest plate looked at, in pixels of the picture.
    min_plate_width: Annotated[int, Meta(ge=16, le=2000)] = 48
    #: The most candidates read per picture (each costs an OCR pass).
    max_candidates: Annotated[int, Meta(ge=1, le=32)] = 4
    #: How plates are found: "contours" (bright rectangles and text blobs) or "all" (also
    #: OpenCV's Haar plate cascade).
    locator: Literal["contours", "all"] = "contours"
    #: Report reads that fit no known plate format too.
    any_format: bool = False
    #: A candidate at about the place of one read this long ago is not read again.
    reread_seconds: Annotated[float, Meta(ge=0, le=60)] = 1.0

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.region
        if x1 <= x0 or y1 <= y0:
            raise ValueError("region: [x0, y0, x1, y1] needs x0 < x1 and y0 < y1")


@dataclass(frozen=True, slots=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    score: float  #: how plate-like (higher first)

    def near(self, other: Box) -> bool:
        """About the same place (the same plate one picture later)."""
        cx, cy = self.x + self.w / 2, self.y + self.h / 2
        ox, oy = other.x + other.w / 2, other.y + other.h / 2
        return abs(cx - ox) <= max(self.w, other.w) / 2 and abs(cy - oy) <= max(self.h, other.h) / 2 \
            and 0.6 <= self.w / other.w <= 1.6

    def _overlap(self, other: Box) -> int:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        return ix * iy

    def iou(self, other: Box) -> float:
        inter = self._overlap(other)
        return inter / float(self.w * self.h + other.w * other.h - inter or 1)

    def within(self, other: Box) -> float:
        """How much of this box lies inside ``other`` (0..1)."""
        return self._overlap(other) / float(self.w * self.h or 1)


@dataclass(frozen=True, slots=True)
class Read:
    lines: tuple[str, ...]
    confidence: float
    box: Box


def rec_model_path() -> Path:
    """The recognition model shipped in the rapidocr wheel (raises if it is missing)."""
    import rapidocr

    path = Path(rapidocr.__file__).resolve().parent / "models" / REC_MODEL
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the rapidocr package ships no {REC_MODEL}; reinstall rapidocr")
    return path


class LineReader:
    """PP-OCR text-line recognition on ONNX Runtime: a picture of one line in, text and
    confidence out. Not thread-safe: one per analyzer (each runs in its own thread)."""

    def __init__(self, threads: int = 1) -> None:
        from rapidocr import RapidOCR

        path = rec_model_path()
        self._engine = RapidOCR(params={
            "Global.log_level": "error",
            "Global.use_det": False, "Global.use_cls": False, "Global.use_rec": True,
            "Rec.model_path": str(path),
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        })

    def read(self, line: np.ndarray) -> tuple[str, float]:
        result = self._engine(line, use_det=False, use_cls=False, use_rec=True)
        texts = getattr(result, "txts", None) or ("",)
        scores = getattr(result, "scores", None) or (0.0,)
        return str(texts[0] or ""), float(scores[0] or 0.0)


# -- finding plates ---------------------------------------------------------------------


def _plate_like(w: int, h: int, min_width: int) -> bool:
    return w >= min_width and h >= 12 and MIN_ASPECT <= w / h <= MAX_ASPECT


def bright_rectangles(gray: np.ndarray, min_width: int) -> list[Box]:
    """Light, rectangular regions with dark glyphs inside: a plate on a car or a wall."""
    _, light = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(light, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if not _plate_like(w, h, min_width) or w * h > gray.size * 0.5:
            continue
        fill = cv2.contourArea(contour) / float(w * h)
        if fill < 0.75:
            continue
        inside = gray[y : y + h, x : x + w]
        dark = float(np.mean(inside < (int(inside.max()) + int(inside.min())) // 2))
        if 0.06 <= dark <= 0.6:
            boxes.append(Box(x, y, w, h, 2.0 + fill))
    return boxes


def text_blobs(gray: np.ndarray, min_width: int) -> list[Box]:
    """Dense dark-on-light strokes closed into blocks (plates without a clean outline)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (13, 5))
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    _, strokes = cv2.threshold(blackhat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    closed = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (17, 7)))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        pad_x, pad_y = max(3, w // 12), max(3, h // 5)
        x, y = max(0, x - pad_x), max(0, y - pad_y)
        w, h = min(gray.shape[1] - x, w + 2 * pad_x), min(gray.shape[0] - y, h + 2 * pad_y)
        if _plate_like(w, h, min_width):
            boxes.append(Box(x, y, w, h, 1.0 + cv2.contourArea(contour) / float(w * h)))
    return boxes


class CascadeLocator:
    """OpenCV's bundled plate cascade (``cv2.data``); not thread-safe, one per analyzer."""

    def __init__(self) -> None:
        path = Path(cv2.data.haarcascades) / "haarcascade_russian_plate_number.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise FileNotFoundError(f"{path}: OpenCV's plate cascade is missing")

    def find(self, gray: np.ndarray, min_width: int) -> list[Box]:
        found = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(min_width, 12))
        return [Box(int(x), int(y), int(w), int(h), 1.5) for x, y, w, h in found]


def merge(boxes: list[Box], limit: int) -> list[Box]:
    """Best first; a box overlapping a better one, or lying mostly inside or around it (the
    text of a plate found as a blob too), is dropped."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(box.iou(k) < 0.4 and box.within(k) < 0.6 and k.within(box) < 0.6 for k in kept):
            kept.append(box)
        if len(kept) == limit:
            break
    return kept


def split_lines(gray: np.ndarray) -> list[tuple[int, int]]:
    """The rows ``(top, bottom)`` of the text lines of a plate picture, top first."""
    h = gray.shape[0]
    _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    profile = ink.mean(axis=1)
    rows = (profile > 0.06) & (profile < 0.85)  # not empty, not a border line
    runs: list[list[int]] = []
    for y, on in enumerate(rows):
        if on and runs and y - runs[-1][1] <= max(1, h // 30):
            runs[-1][1] = y
        elif on:
            runs.append([y, y])
    tall = [r for r in runs if r[1] - r[0] + 1 >= max(6, h // 5)]
    if not tall:
        return [(0, h)]
    pad = max(2, h // 20)
    return [(max(0, top - pad), min(h, bottom + 1 + pad)) for top, bottom in tall[:2]]


# -- the analyzer ---------------------------------------------------------------------


class PlateReader(Analyzer):
    """Reads number plates; reports each plate once per passage, with a crop."""

    Options = PlateReaderOptions
    default_fps = 5.0
    max_seconds = 10.0
    title = "Number-plate reading"

    @staticmethod
    def id() -> str:
        return "plate-reader"

    def __init__(self, camera: str, options: PlateReaderOptions | None = None, *,
                 reader: Callable[[], LineReader] = LineReader) -> None:
        super().__init__(camera, options or PlateReaderOptions())
        self.options: PlateReaderOptions
        self._reader = reader()
        self._cascade = CascadeLocator() if self.options.locator == "all" else None
        #: (folded key, last seen) of plates reported recently.
        self._recent: list[tuple[str, float]] = []
        #: (box, when it was last read) of candidates read a moment ago.
        self._read_at: list[tuple[Box, float]] = []
        #: OCR passes made (for benchmarks).
        self.ocr_passes = 0

    def candidates(self, gray: np.ndarray) -> list[Box]:
        opts = self.options
        boxes = bright_rectangles(gray, opts.min_plate_width) + text_blobs(gray, opts.min_plate_width)
        if self._cascade is not None:
            boxes += self._cascade.find(gray, opts.min_plate_width)
        return merge(boxes, opts.max_candidates)

    def read_plate(self, image: np.ndarray, gray: np.ndarray, box: Box) -> Read | None:
        plate_gray = gray[box.y : box.y + box.h, box.x : box.x + box.w]
        lines, scores = [], []
        for top, bottom in split_lines(plate_gray):
            line = image[box.y + top : box.y + bottom, box.x : box.x + box.w]
            if line.shape[0] < 8:
                continue
            text, score = self._reader.read(line)
            if text.strip():
                lines.append(text.strip())
                scores.append(score)
        if not lines:
            return None
        return Read(tuple(lines), min(scores), box)

    def read_picture(self, image: np.ndarray, gray: np.ndarray, now: float | None = None) -> list[Read]:
        """The plausible plates of a picture. With ``now``, candidates near one read less than
        ``reread-seconds`` before are skipped (without: every candidate is read)."""
        opts = self.options
        found = []
        for box in self.candidates(gray):
            if now is not None:
                self._read_at = [(b, t) for b, t in self._read_at if now - t < opts.reread_seconds]
                if any(box.near(b) for b, _ in self._read_at):
                    continue
                self._read_at.append((box, now))
            self.ocr_passes += 1
            read = self.read_plate(image, gray, box)
            if read is None or read.confidence < opts.min_confidence:
                continue
            plate = normalise(read.lines)
            if len(plate.text) < 4 or (plate.country is None and not opts.any_format):
                continue
            found.append(read)
        return found

    def analyze(self, frame: AnalyzerFrame) -> Sequence[Observation]:
        opts = self.options
        x0, y0 = int(opts.region[0] * frame.width), int(opts.region[1] * frame.height)
        x1, y1 = int(opts.region[2] * frame.width), int(opts.region[3] * frame.height)
        image = frame.image[y0:y1, x0:x1]
        gray = frame.gray[y0:y1, x0:x1]
        now = frame.wallclock
        self._recent = [(k, t) for k, t in self._recent if now - t <= opts.repeat_seconds]
        out: list[Observation] = []
        for read in self.read_picture(image, gray, now):
            plate = normalise(read.lines)
            seen = next((i for i, (k, _) in enumerate(self._recent) if similar(k, plate.key)), None)
            if seen is not None:
                self._recent[seen] = (self._recent[seen][0], now)
                continue
            self._recent.append((plate.key, now))
            box = read.box
            crop = image[box.y : box.y + box.h, box.x : box.x + box.w]
            ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
            out.append(Observation(
                kind="plate", at=now, confidence=round(read.confidence, 4), crop=jpeg.tobytes() if ok else None,
                payload={
                    "lines": list(read.lines), "text": " / ".join(read.lines), "plate": plate.text, "country": plate.country,
                    "box": [round((x0 + box.x) / frame.width, 4), round((y0 + box.y) / frame.height, 4),
                            round(box.w / frame.width, 4), round(box.h / frame.height, 4)],
                },
            ))
        return out


@hookimpl(trylast=True)
def gateway_register_analyzers(register: Callable[[type[Analyzer]], Any]) -> None:
    """Register the built-in number-plate reader."""
    register(PlateReader)
