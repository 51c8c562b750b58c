"""Vehicle counting (analyzer ``vehicle-count``): vehicles crossing counting lines, per lane
and direction, and ``wrong-direction`` events on one-way lanes.

Per picture (in the analyzer's own worker thread, on the luma plane scaled down to
``analysis-width``):

1. **Moving blobs**: OpenCV's MOG2 background subtraction (shadows dropped), opened and
   closed so a vehicle is one blob; blobs smaller than ``min-area`` or larger than
   ``max-area`` (fractions of the picture), or whose centre lies outside the ``region``
   polygon, are ignored.
2. **Tracks**: each blob continues the nearest track (centroid distance under
   ``max-step`` of the picture's width per analysed picture); a track that finds no blob
   for ``max-missed`` pictures ends.
3. **Crossings**: when a track's last step crosses a counting line, the vehicle is counted
   once for that line, in the direction of the crossing and in the lane (a stretch of the
   line) where it crossed. A crossing against a lane's ``one-way`` direction is also
   reported as a ``wrong-direction`` observation (the count records it too).

Directions: a line runs from its first point to its second. ``directions = [a, b]`` names
the two ways across: ``a`` is crossing from the line's right-hand side to its left-hand side
as you look along it, in the picture. For a line drawn from top to bottom, ``a`` is moving
left to right across the picture; for a line drawn from left to right, ``a`` is moving up.

Configuration (``cameras.toml``)::

    [[camera.analytics]]
    analyzer = "vehicle-count"
    fps = 10
    [[camera.analytics.lines]]
    name = "main-street"
    points = [[0.5, 0.05], [0.5, 0.95]]
    directions = ["eastbound", "westbound"]
    [[camera.analytics.lines.lanes]]
    name = "north"
    span = [0.0, 0.5]           # the first half of the line, from its first point
    [[camera.analytics.lines.lanes]]
    name = "south"
    span = [0.5, 1.0]
    one-way = "westbound"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import cv2
import numpy as np
from msgspec import Meta

from gateway.plugin_api import Analyzer, AnalyzerFrame, Observation, PluginOptions, hookimpl

Fraction01 = Annotated[float, Meta(ge=0.0, le=1.0)]
Point = tuple[Fraction01, Fraction01]
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]


class Lane(PluginOptions):
    name: Name
    #: The stretch of the line this lane covers, as fractions of the line from its first point.
    span: tuple[Fraction01, Fraction01] = (0.0, 1.0)
    #: The one direction allowed here (one of the line's ``directions``); a crossing the
    #: other way is a ``wrong-direction`` event.
    one_way: str | None = None

    def __post_init__(self) -> None:
        if self.span[0] >= self.span[1]:
            raise ValueError(f"lane {self.name!r}: span {list(self.span)} must go from a smaller to a larger fraction")


class CountingLine(PluginOptions):
    name: Name
    #: The line's two ends, normalised (0..1, origin top left).
    points: tuple[Point, Point]
    #: Names of the two ways across (see the module's documentation for which is which).
    directions: tuple[Name, Name] = ("forward", "backward")
    lanes: tuple[Lane, ...] = ()

    def __post_init__(self) -> None:
        (x0, y0), (x1, y1) = self.points
        if math.hypot(x1 - x0, y1 - y0) < 0.01:
            raise ValueError(f"line {self.name!r}: its two points must be apart")
        if self.directions[0] == self.directions[1]:
            raise ValueError(f"line {self.name!r}: the two directions need different names")
        names = [lane.name for lane in self.lanes]
        if len(set(names)) != len(names):
            raise ValueError(f"line {self.name!r}: lane names must differ")
        for lane in self.lanes:
            if lane.one_way is not None and lane.one_way not in self.directions:
                raise ValueError(
                    f"line {self.name!r}, lane {lane.name!r}: one-way {lane.one_way!r} must be one of {list(self.directions)}"
                )


class VehicleCountOptions(PluginOptions):
    lines: Annotated[tuple[CountingLine, ...], Meta(min_length=1, max_length=16)]
    #: Where vehicles are looked for: a polygon, normalised; empty: the whole picture.
    region: tuple[Point, ...] = ()
    #: Pictures are analysed at this width (the height keeps the aspect ratio).
    analysis_width: Annotated[int, Meta(ge=80, le=1920)] = 320
    #: The smallest and largest vehicle, as fractions of the picture's area.
    min_area: Annotated[float, Meta(gt=0, lt=1)] = 0.002
    max_area: Annotated[float, Meta(gt=0, le=1)] = 0.25
    #: The farthest a vehicle moves between two analysed pictures (fraction of the width).
    max_step: Annotated[float, Meta(gt=0, le=1)] = 0.2
    #: Analysed pictures a track may go without its blob before it ends.
    max_missed: Annotated[int, Meta(ge=0, le=50)] = 3
    #: Pictures of background learning (MOG2 history).
    history: Annotated[int, Meta(ge=10, le=5000)] = 300

    def __post_init__(self) -> None:
        names = [line.name for line in self.lines]
        if len(set(names)) != len(names):
            raise ValueError("lines: every line needs its own name")
        if self.region and len(self.region) < 3:
            raise ValueError("region: a polygon needs at least three points")
        if self.min_area >= self.max_area:
            raise ValueError("min-area must be smaller than max-area")


@dataclass(slots=True)
class _Track:
    id: int
    x: float
    y: float
    missed: int = 0
    #: Lines this track was counted on (a vehicle is counted once per line).
    counted: set[str] = field(default_factory=set)


def _cross(ax: float, ay: float, bx: float, by: float) -> float:
    return ax * by - ay * bx


def crossing(p: tuple[float, float], q: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float] | None:
    """Where the step p→q crosses the segment a→b: (fraction along a→b, sign), or None.

    The sign is that of cross(b - a, q - p): negative is the line's first direction."""
    rx, ry = q[0] - p[0], q[1] - p[1]
    sx, sy = b[0] - a[0], b[1] - a[1]
    denom = _cross(rx, ry, sx, sy)
    if denom == 0:
        return None
    qpx, qpy = a[0] - p[0], a[1] - p[1]
    t = _cross(qpx, qpy, sx, sy) / denom  # along p→q
    u = _cross(qpx, qpy, rx, ry) / denom  # along a→b
    if not (0.0 < t <= 1.0 and 0.0 <= u <= 1.0):
        return None
    return u, _cross(sx, sy, rx, ry)


class VehicleCounter(Analyzer):
    """Counts vehicles crossing lines: MOG2 background subtraction and centroid tracking."""

    Options = VehicleCountOptions
    default_fps = 10.0
    max_seconds = 5.0
    title = "Vehicle counting"

    @staticmethod
    def id() -> str:
        return "vehicle-count"

    def __init__(self, camera: str, options: VehicleCountOptions) -> None:
        super().__init__(camera, options)
        self.options: VehicleCountOptions
        self._size: tuple[int, int] | None = None
        self._frame_size = (0, 0)
        self._subtractor = cv2.createBackgroundSubtractorMOG2(history=options.history, varThreshold=25, detectShadows=True)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._region_mask: np.ndarray | None = None
        self._tracks: list[_Track] = []
        self._next_id = 1

    # -- geometry at the analysis size ------------------------------------------------------
    def _setup(self, width: int, height: int) -> None:
        w = min(self.options.analysis_width, width)
        h = max(2, round(height * w / width))
        self._size = (w, h)
        self._region_mask = None
        if self.options.region:
            mask = np.zeros((h, w), dtype=np.uint8)
            pts = np.array([[x * w, y * h] for x, y in self.options.region], dtype=np.int32)
            cv2.fillPoly(mask, [pts], 255)
            self._region_mask = mask
        self._tracks = []

    def blobs(self, gray: np.ndarray) -> list[tuple[float, float]]:
        """Centres (normalised) of the moving blobs in one picture."""
        w, h = self._size  # type: ignore[misc]
        small = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA) if gray.shape[1] != w else gray
        fg = self._subtractor.apply(small)
        _, fg = cv2.threshold(fg, 200, 255, cv2.THRESH_BINARY)  # shadows (127) are not vehicles
        if self._region_mask is not None:
            fg = cv2.bitwise_and(fg, self._region_mask)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        fg = cv2.dilate(fg, self._kernel, iterations=2)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._kernel, iterations=2)
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        area = float(w * h)
        found = []
        for contour in contours:
            a = cv2.contourArea(contour)
            if not self.options.min_area * area <= a <= self.options.max_area * area:
                continue
            m = cv2.moments(contour)
            if m["m00"] <= 0:
                continue
            found.append((m["m10"] / m["m00"] / w, m["m01"] / m["m00"] / h))
        return found

    def analyze(self, frame: AnalyzerFrame) -> Sequence[Observation]:
        if self._frame_size != (frame.width, frame.height):  # first picture, or a new resolution
            self._frame_size = (frame.width, frame.height)
            self._setup(frame.width, frame.height)
        centres = self.blobs(frame.gray)
        return self._track(centres, frame.wallclock, frame.width / frame.height)

    # -- tracking and counting --------------------------------------------------------------
    def _track(self, centres: list[tuple[float, float]], at: float, aspect: float) -> list[Observation]:
        limit = self.options.max_step
        # greedy nearest-neighbour matching, closest pairs first (distances in width units)
        pairs = sorted(
            (math.hypot(t.x - cx, (t.y - cy) / aspect), ti, ci)
            for ti, t in enumerate(self._tracks)
            for ci, (cx, cy) in enumerate(centres)
        )
        used_t: set[int] = set()
        used_c: set[int] = set()
        observations: list[Observation] = []
        for dist, ti, ci in pairs:
            if dist > limit:
                break
            if ti in used_t or ci in used_c:
                continue
            used_t.add(ti)
            used_c.add(ci)
            track = self._tracks[ti]
            new = centres[ci]
            observations += self._crossings(track, (track.x, track.y), new, at)
            track.x, track.y = new
            track.missed = 0
        survivors = []
        for ti, track in enumerate(self._tracks):
            if ti not in used_t:
                track.missed += 1
                if track.missed > self.options.max_missed:
                    continue
            survivors.append(track)
        for ci, (cx, cy) in enumerate(centres):
            if ci not in used_c:
                survivors.append(_Track(self._next_id, cx, cy))
                self._next_id += 1
        self._tracks = survivors
        return observations

    def _crossings(self, track: _Track, p: tuple[float, float], q: tuple[float, float], at: float) -> list[Observation]:
        found: list[Observation] = []
        for line in self.options.lines:
            if line.name in track.counted:
                continue
            hit = crossing(p, q, line.points[0], line.points[1])
            if hit is None:
                continue
            along, sign = hit
            direction = line.directions[0] if sign < 0 else line.directions[1]
            lane = next((ln for ln in line.lanes if ln.span[0] <= along <= ln.span[1]), None)
            track.counted.add(line.name)
            payload = {"line": line.name, "lane": lane.name if lane else "", "direction": direction, "track": track.id}
            found.append(Observation(kind="count", at=at, payload=payload))
            if lane is not None and lane.one_way is not None and direction != lane.one_way:
                found.append(
                    Observation(kind="wrong-direction", at=at, payload={**payload, "allowed": lane.one_way})
                )
        return found


@hookimpl(trylast=True)
def gateway_register_analyzers(register) -> None:  # noqa: ANN001 - pluggy passes the callable
    register(VehicleCounter)
