"""Vehicle counting (analyzer ``vehicle-count``): vehicles crossing counting lines, per lane
and direction, and ``wrong-direction`` events on one-way lanes.

Per picture (in the analyzer's own worker thread, on the luma plane scaled down to
``analysis-width``):

1. **Moving blobs**: OpenCV's MOG2 background subtraction (shadows dropped), opened and
   closed; fragments of one lane whose boxes lie within ``merge-gap`` of each other are
   merged into one vehicle (a car that background subtraction split where its windscreen or
   roof looks like the road); blobs of different lanes never are. Vehicles smaller than
   ``min-area`` or larger than ``max-area`` (fractions of the picture), or whose centre lies
   outside the ``region`` polygon, are ignored.
2. **Tracks**: each track predicts where its vehicle is now (constant velocity from the
   pictures it was seen in, by the pictures' timestamps, so pictures skipped under load
   only lengthen the step). A track claims the blobs of its lane inside its predicted box
   (one vehicle, split), then blobs continue the tracks nearest their prediction, within
   ``max-step`` of the width (growing with the time since the track was seen; a new track,
   whose velocity is unknown, within ``max-step`` per picture). A track without its blob
   is predicted forward and ends after ``max-missed`` analysed pictures; two tracks on one
   vehicle become one.
3. **Crossings**: a vehicle counts when its path between two pictures it was seen in crosses
   a counting line (or, for a track seen ``CONFIRMED`` times and then lost, its predicted
   path until it ended), once per line and track, at the interpolated moment, in the
   direction of the crossing and in the lane (a stretch of the line) where it crossed. A
   crossing against a lane's ``one-way`` direction is also reported as a
   ``wrong-direction`` observation (the count records it too).

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

from gateway.plugin_api import CLOCK_RATE, Analyzer, AnalyzerFrame, Observation, PluginOptions, hookimpl

# One thread per analyzer and camera gives the parallelism; OpenCV's own pool on top only
# spins and hands small pictures between threads (measured: about 1 % of a core per camera)
cv2.setNumThreads(1)

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
    #: Analysed pictures a track may go without its blob before it ends (predicted forward
    #: meanwhile). Pictures the analyzer never got (skipped under load) do not count.
    max_missed: Annotated[int, Meta(ge=0, le=50)] = 3
    #: Blobs of one lane this close (fraction of the width; of the height times the
    #: aspect ratio) are one vehicle split by background subtraction. Keep it under the
    #: free road between two vehicles of a lane.
    merge_gap: Annotated[float, Meta(ge=0, le=0.5)] = 0.03
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
class _Blob:
    """A moving blob (or several merged): its box, normalised; its lane on each laned line."""

    x0: float
    y0: float
    x1: float
    y1: float
    lanes: tuple[int | None, ...] = ()

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def union(self, other: _Blob) -> _Blob:
        return _Blob(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1), self.lanes)


@dataclass(slots=True)
class _Track:
    id: int
    #: The centre where the vehicle was last seen, when (pts seconds, wall clock), its box size.
    x: float
    y: float
    t: float
    wall: float
    w: float
    h: float
    lanes: tuple[int | None, ...] = ()
    #: Velocity (picture fractions per second); known once the vehicle was seen twice.
    vx: float = 0.0
    vy: float = 0.0
    hits: int = 1
    #: Analysed pictures in a row without its blob, and the last of them (pts seconds).
    missed: int = 0
    coasted_to: float = 0.0
    #: Lines this track was counted on (a vehicle is counted once per line).
    counted: set[str] = field(default_factory=set)

    def at(self, t: float) -> tuple[float, float]:
        """Where it is predicted at ``t`` (constant velocity from where it was last seen)."""
        if self.hits < 2:
            return self.x, self.y
        return self.x + self.vx * (t - self.t), self.y + self.vy * (t - self.t)


def _cross(ax: float, ay: float, bx: float, by: float) -> float:
    return ax * by - ay * bx


def crossing(p: tuple[float, float], q: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float, float] | None:
    """Where the step p→q crosses the segment a→b: (fraction along a→b, sign, fraction along
    p→q), or None.

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
    return u, _cross(sx, sy, rx, ry), t


#: Fragments smaller than this share of ``min-area`` are noise, not parts of a vehicle.
FRAGMENT = 0.125
#: Measured pictures before a track that is lost may still count on its predicted path.
CONFIRMED = 3
#: A gap between two analysed pictures longer than this (s; a reconnect) ends every track.
MAX_GAP = 3.0


class VehicleCounter(Analyzer):
    """Counts vehicles crossing lines: MOG2 background subtraction, blobs merged within a
    lane, tracks predicted at constant velocity, counted where their path crosses a line."""

    Options = VehicleCountOptions
    default_fps = 10.0
    default_stream = "sub"  # blobs need no detail: a sub stream costs a quarter of the decoding
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
        self._aspect = 16 / 9
        self._last_t: float | None = None
        #: The shortest time between two analysed pictures seen: one "picture" of the rate.
        self._period: float | None = None
        self._laned = [line for line in options.lines if line.lanes]
        self._edges = (0.0, 0.0, 1.0, 1.0)

    # -- geometry at the analysis size ------------------------------------------------------
    def _setup(self, width: int, height: int) -> None:
        w = min(self.options.analysis_width, width)
        h = max(2, round(height * w / width))
        self._size = (w, h)
        self._aspect = width / height
        self._region_mask = None
        #: Where vehicles enter and leave: the region's bounding box (or the picture's).
        self._edges = (0.0, 0.0, 1.0, 1.0)
        if self.options.region:
            xs, ys = [x for x, _ in self.options.region], [y for _, y in self.options.region]
            self._edges = (min(xs), min(ys), max(xs), max(ys))
            mask = np.zeros((h, w), dtype=np.uint8)
            pts = np.array([[x * w, y * h] for x, y in self.options.region], dtype=np.int32)
            cv2.fillPoly(mask, [pts], 255)
            self._region_mask = mask
        self._tracks = []

    def _lanes(self, x: float, y: float) -> tuple[int | None, ...]:
        """The lane of each laned line that the point (x, y) projects onto (None: beside it)."""
        found: list[int | None] = []
        for line in self._laned:
            (ax, ay), (bx, by) = line.points
            dx, dy = bx - ax, (by - ay) / self._aspect
            u = (dx * (x - ax) + dy * (y - ay) / self._aspect) / (dx * dx + dy * dy)
            found.append(next((i for i, ln in enumerate(line.lanes) if ln.span[0] <= u <= ln.span[1]), None))
        return tuple(found)

    def detect(self, gray: np.ndarray) -> list[_Blob]:
        """The moving vehicles in one picture: MOG2's blobs, fragments of one vehicle merged."""
        w, h = self._size  # type: ignore[misc]
        small = cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA) if gray.shape[1] != w else gray
        fg = self._subtractor.apply(small)
        _, fg = cv2.threshold(fg, 200, 255, cv2.THRESH_BINARY)  # shadows (127) are not vehicles
        if self._region_mask is not None:
            fg = cv2.bitwise_and(fg, self._region_mask)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        fg = cv2.dilate(fg, self._kernel, iterations=2)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, self._kernel, iterations=2)
        count, _, boxes, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        area = float(w * h)
        fragments = []
        for x, y, bw, bh, pixels in boxes[1:count].tolist():
            if pixels < FRAGMENT * self.options.min_area * area:
                continue
            blob = _Blob(x / w, y / h, (x + bw) / w, (y + bh) / h)
            blob.lanes = self._lanes(*blob.centre)
            fragments.append((blob, pixels))
        merged = self._merge(fragments)
        lo, hi = self.options.min_area * area, self.options.max_area * area
        return [blob for blob, pixels in merged if lo <= pixels <= hi]

    def _merge(self, fragments: list[tuple[_Blob, int]]) -> list[tuple[_Blob, int]]:
        """Blobs of one lane whose boxes lie within ``merge-gap`` of each other are one
        vehicle that background subtraction split (a windscreen or roof the colour of the
        road). Blobs in different lanes are never merged."""
        gap_x = self.options.merge_gap
        gap_y = self.options.merge_gap * self._aspect
        merged = True
        while merged and len(fragments) > 1:
            merged = False
            for i in range(len(fragments)):
                a, pa = fragments[i]
                for j in range(i + 1, len(fragments)):
                    b, pb = fragments[j]
                    if a.lanes != b.lanes:
                        continue
                    if max(a.x0, b.x0) - min(a.x1, b.x1) <= gap_x and max(a.y0, b.y0) - min(a.y1, b.y1) <= gap_y:
                        fragments[i] = (a.union(b), pa + pb)
                        del fragments[j]
                        merged = True
                        break
                if merged:
                    break
        return fragments

    def blobs(self, gray: np.ndarray) -> list[tuple[float, float]]:
        """Centres (normalised) of the moving vehicles in one picture."""
        return [blob.centre for blob in self.detect(gray)]

    def analyze(self, frame: AnalyzerFrame) -> Sequence[Observation]:
        if self._frame_size != (frame.width, frame.height):  # first picture, or a new resolution
            self._frame_size = (frame.width, frame.height)
            self._setup(frame.width, frame.height)
        found = self.detect(frame.gray)
        return self.track(found, frame.pts / CLOCK_RATE, frame.wallclock)

    # -- tracking and counting --------------------------------------------------------------
    def _distance(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        """In picture widths."""
        return math.hypot(a[0] - b[0], (a[1] - b[1]) / self._aspect)

    def _clipped(self, blob: _Blob) -> tuple[bool, bool, bool, bool]:
        """Whether the blob touches the left, top, right, bottom edge (entering or leaving)."""
        x0, y0, x1, y1 = self._edges
        e = 0.01
        return blob.x0 <= x0 + e, blob.y0 <= y0 + e, blob.x1 >= x1 - e, blob.y1 >= y1 - e

    def _centre(self, track: _Track, blob: _Blob) -> tuple[float, float]:
        """Where the track's vehicle is, seen as ``blob``: a vehicle half out of the picture
        shows only part of itself, so its centre is taken from the edge still in view and
        the size the track knows (else a leaving vehicle would seem to stop at the edge)."""
        cx, cy = blob.centre
        if track.hits < 2:
            return cx, cy
        left, top, right, bottom = self._clipped(blob)
        if bottom and not top:
            cy = max(cy, blob.y0 + track.h / 2)
        elif top and not bottom:
            cy = min(cy, blob.y1 - track.h / 2)
        if right and not left:
            cx = max(cx, blob.x0 + track.w / 2)
        elif left and not right:
            cx = min(cx, blob.x1 - track.w / 2)
        return cx, cy

    def track(self, blobs: list[_Blob], t: float, wall: float) -> list[Observation]:
        """Continue the tracks with this picture's blobs (``t``: its pts in seconds)."""
        observations: list[Observation] = []
        last = self._last_t
        if last is not None and not 0 < t - last <= MAX_GAP:  # a reconnect, a new stream
            self._tracks = []
        elif last is not None:
            self._period = min(self._period or t - last, t - last)
        self._last_t = t
        period = self._period or 1.0
        # A track whose vehicle is predicted (all but a tenth of it) out of the picture (the
        # region) drove out: it ends before the blob of a vehicle entering at that edge
        # could continue it.
        x0, y0, x1, y1 = self._edges
        kept = []
        for track in self._tracks:
            px, py = track.at(t)
            w, h = track.w * 0.4, track.h * 0.4
            if track.hits >= 2 and (px + w <= x0 or px - w >= x1 or py + h <= y0 or py - h >= y1):
                observations += self._lost(track, t)
            else:
                kept.append(track)
        self._tracks = kept
        predicted = [track.at(t) for track in self._tracks]

        # A track claims the blobs of its lane inside its predicted box: one vehicle that
        # background subtraction split where the merge gap did not reach.
        order = sorted(range(len(self._tracks)), key=lambda i: -self._tracks[i].hits)
        claimed: dict[int, int] = {}
        for ti in order:
            track, (px, py) = self._tracks[ti], predicted[ti]
            inside = [
                bi for bi, blob in enumerate(blobs)
                if bi not in claimed and blob.lanes == track.lanes
                and abs(blob.centre[0] - px) <= track.w * 0.6 and abs(blob.centre[1] - py) <= track.h * 0.6
            ]
            if len(inside) > 1:
                for bi in inside:
                    claimed[bi] = ti
        if claimed:
            groups: dict[int, _Blob] = {}
            for bi, ti in claimed.items():
                groups[ti] = groups[ti].union(blobs[bi]) if ti in groups else blobs[bi]
            blobs = [b for bi, b in enumerate(blobs) if bi not in claimed] + list(groups.values())

        # Nearest predicted position first, within the gate: a track with a velocity may
        # stray ``max-step`` from its prediction (more after missed pictures); a new track,
        # whose velocity is unknown, ``max-step`` per picture since it was seen.
        limit = self.options.max_step
        pairs = []
        for ti, track in enumerate(self._tracks):
            steps = max(1.0, (t - track.t) / period)
            px, py = predicted[ti]
            speed = math.hypot(track.vx, track.vy / self._aspect)
            for bi, blob in enumerate(blobs):
                cx, cy = self._centre(track, blob)
                dx, dy = cx - px, (cy - py) / self._aspect
                dist = math.hypot(dx, dy)
                if track.hits >= 2 and speed > 0:
                    # along the way it drives, the prediction may be off by the speed it
                    # gained or lost; across it (into another lane) by half a step
                    ux, uy = track.vx / speed, track.vy / self._aspect / speed
                    if abs(dx * ux + dy * uy) > limit * math.sqrt(steps) or abs(dx * uy - dy * ux) > limit / 2:
                        continue
                elif dist > limit * steps:
                    continue
                pairs.append((dist + (0 if blob.lanes == track.lanes else limit), ti, bi))
        pairs.sort()
        used_t: set[int] = set()
        used_b: set[int] = set()
        for _dist, ti, bi in pairs:
            if ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            observations += self._seen(self._tracks[ti], blobs[bi], t, wall)

        survivors: list[_Track] = []
        for ti, track in enumerate(self._tracks):
            if ti not in used_t:
                track.missed += 1
                px, py = predicted[ti]
                gone = not (x0 <= px <= x1 and y0 <= py <= y1)  # it is driving out of the picture
                if gone or track.missed > self.options.max_missed or t - track.t > MAX_GAP:
                    observations += self._lost(track, t if gone and t - track.t <= MAX_GAP else track.coasted_to)
                    continue
                track.coasted_to = t
            survivors.append(track)
        for bi, blob in enumerate(blobs):
            if bi in used_b:
                continue
            (cx, cy) = blob.centre
            if any(tr.lanes == blob.lanes and tr.t == t and abs(cx - tr.x) <= tr.w * 0.6 and abs(cy - tr.y) <= tr.h * 0.6
                   for tr in survivors):
                continue  # a fragment of a vehicle tracked in this picture already
            survivors.append(_Track(self._next_id, cx, cy, t, wall, blob.x1 - blob.x0, blob.y1 - blob.y0, blob.lanes))
            self._next_id += 1
        self._tracks = self._dedupe(survivors)
        return observations

    def _seen(self, track: _Track, blob: _Blob, t: float, wall: float) -> list[Observation]:
        """The track's vehicle is at ``blob`` at ``t``: count the lines its path crossed."""
        cx, cy = self._centre(track, blob)
        found = self._crossings(track, (track.x, track.y), (cx, cy), track.wall, wall)
        dt = t - track.t
        if dt > 0:
            vx, vy = (cx - track.x) / dt, (cy - track.y) / dt
            if track.hits >= 2:
                vx, vy = (track.vx + vx) / 2, (track.vy + vy) / 2
            track.vx, track.vy = vx, vy
        track.x, track.y, track.t, track.wall = cx, cy, t, wall
        left, top, right, bottom = self._clipped(blob)
        if not (left or right):  # the size of a vehicle wholly in view
            track.w = max(track.w * 0.8, blob.x1 - blob.x0)
        else:
            track.w = max(track.w, blob.x1 - blob.x0)
        if not (top or bottom):
            track.h = max(track.h * 0.8, blob.y1 - blob.y0)
        else:
            track.h = max(track.h, blob.y1 - blob.y0)
        track.lanes = blob.lanes
        track.hits += 1
        track.missed = 0
        return found

    def _lost(self, track: _Track, until: float) -> list[Observation]:
        """A confirmed track that lost its blob counts where its predicted path crossed a
        line: up to the last picture it survived, or out of the picture if it drove out
        between two analysed pictures."""
        if track.hits < CONFIRMED or until <= track.t:
            return []
        end = track.at(until)
        wall = track.wall + (until - track.t)
        return self._crossings(track, (track.x, track.y), end, track.wall, wall)

    def _dedupe(self, tracks: list[_Track]) -> list[_Track]:
        """Two tracks on one vehicle (a split seen as two from the start) become one, which
        keeps the lines either was counted on: never counted twice."""
        kept: list[_Track] = []
        for track in sorted(tracks, key=lambda tr: (-tr.hits, tr.id)):
            twin = next((k for k in kept if k.lanes == track.lanes and k.t == track.t
                         and abs(k.x - track.x) <= max(k.w, track.w) * 0.5
                         and abs(k.y - track.y) <= max(k.h, track.h) * 0.5), None)
            if twin is None:
                kept.append(track)
            else:
                twin.counted |= track.counted
        return kept

    def _crossings(self, track: _Track, p: tuple[float, float], q: tuple[float, float], wall_p: float, wall_q: float) -> list[Observation]:
        found: list[Observation] = []
        for line in self.options.lines:
            if line.name in track.counted:
                continue
            hit = crossing(p, q, line.points[0], line.points[1])
            if hit is None:
                continue
            along, sign, fraction = hit
            at = wall_p + fraction * (wall_q - wall_p)  # when the path crossed, between pictures
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
