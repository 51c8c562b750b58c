"""Where a PTZ camera looks, and how a privacy mask anchored to the scene lands in its picture.

A mask on a PTZ dome is drawn on the picture at one position of the camera. The corners are
turned into *directions* (azimuth and elevation, degrees) with the optics of the camera at
that position, and every later picture gets the mask projected from those directions at the
position the camera had when the picture was taken. So the mask stays on the garden while
the dome pans, tilts and zooms.

Two projections:

``rectilinear``  a real camera's lens (pinhole, gnomonic): great circles are straight lines in
                 the picture, so a polygon whose edges are great-circle arcs projects exactly
                 onto a polygon; corners behind the camera are clipped in 3-D first.
``equirectangular``  a picture that is a window on a panorama whose x is azimuth and y is
                 elevation, linearly (the demo dome renders that way).

``Optics`` turns the vendor's generic position (ONVIF spaces: pan and tilt -1..1, zoom 0..1)
into a ``Pose``: where the centre of the picture points and its field of view. The vendor
provides its own where it knows it (the demo dome knows exactly), otherwise the camera's
``[camera.ptz-optics]`` config does (ranges in degrees and the horizontal field of view at
widest and narrowest zoom).

No imports from the application: pure geometry, safe to call from the mask worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]

PROJECTIONS = ("rectilinear", "equirectangular")
#: Camera-space depth below which a direction counts as behind the picture plane.
_NEAR = 1e-3


@dataclass(frozen=True, slots=True)
class Pose:
    """Where the centre of the picture points (degrees) and how much it sees."""

    pan: float  #: azimuth of the picture centre, degrees, positive to the right
    tilt: float  #: elevation of the picture centre, degrees, positive up
    hfov: float  #: horizontal field of view, degrees
    vfov: float  #: vertical field of view, degrees
    projection: str = "rectilinear"


def wrap_degrees(angle: float) -> float:
    """``angle`` in [-180, 180)."""
    return (angle + 180.0) % 360.0 - 180.0


class Optics:
    """Generic PTZ position → ``Pose``, linearly over configured ranges.

    Pan -1..1 maps onto ``pan_range`` degrees and tilt -1..1 onto ``tilt_range``; the
    horizontal field of view shrinks from ``fov_wide`` (zoom 0) to ``fov_narrow`` (zoom 1)
    with the focal length growing linearly in the zoom position, which is how most
    motorised zoom lenses report it.
    """

    def __init__(
        self,
        *,
        pan_range: tuple[float, float] = (-180.0, 180.0),
        tilt_range: tuple[float, float] = (-90.0, 90.0),
        fov_wide: float = 60.0,
        fov_narrow: float = 3.0,
        projection: str = "rectilinear",
    ) -> None:
        if projection not in PROJECTIONS:
            raise ValueError(f"projection {projection!r} must be one of {', '.join(PROJECTIONS)}")
        if not 0 < fov_narrow <= fov_wide < 180:
            raise ValueError(f"field of view {fov_wide:g}..{fov_narrow:g} must satisfy 0 < narrowest <= widest < 180")
        self.pan_range = pan_range
        self.tilt_range = tilt_range
        self.fov_wide = fov_wide
        self.fov_narrow = fov_narrow
        self.projection = projection

    def hfov(self, zoom: float) -> float:
        zoom = min(1.0, max(0.0, zoom))
        wide = math.tan(math.radians(self.fov_wide) / 2)
        narrow = math.tan(math.radians(self.fov_narrow) / 2)
        focal = 1 / wide + zoom * (1 / narrow - 1 / wide)
        return math.degrees(2 * math.atan(1 / focal))

    def pose(self, pan: float, tilt: float, zoom: float, aspect: float) -> Pose:
        """``aspect`` is height / width of the picture."""
        p0, p1 = self.pan_range
        t0, t1 = self.tilt_range
        hfov = self.hfov(zoom)
        if self.projection == "rectilinear":
            vfov = math.degrees(2 * math.atan(math.tan(math.radians(hfov) / 2) * aspect))
        else:
            vfov = hfov * aspect
        return Pose(
            pan=wrap_degrees(p0 + (pan + 1) / 2 * (p1 - p0)),
            tilt=t0 + (tilt + 1) / 2 * (t1 - t0),
            hfov=hfov,
            vfov=vfov,
            projection=self.projection,
        )


# --------------------------------------------------------------------------------------
# rectilinear


def _vector(az: float, el: float) -> tuple[float, float, float]:
    a, e = math.radians(az), math.radians(el)
    return (math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a))


def _to_camera(v: tuple[float, float, float], pose: Pose) -> tuple[float, float, float]:
    x, y, z = v
    p, t = math.radians(pose.pan), math.radians(pose.tilt)
    x, z = x * math.cos(p) - z * math.sin(p), x * math.sin(p) + z * math.cos(p)
    y, z = y * math.cos(t) - z * math.sin(t), y * math.sin(t) + z * math.cos(t)
    return x, y, z


def _from_camera(v: tuple[float, float, float], pose: Pose) -> tuple[float, float, float]:
    x, y, z = v
    p, t = math.radians(pose.pan), math.radians(pose.tilt)
    y, z = y * math.cos(t) + z * math.sin(t), -y * math.sin(t) + z * math.cos(t)
    x, z = x * math.cos(p) + z * math.sin(p), -x * math.sin(p) + z * math.cos(p)
    return x, y, z


def _focal(pose: Pose) -> tuple[float, float]:
    return 0.5 / math.tan(math.radians(pose.hfov) / 2), 0.5 / math.tan(math.radians(pose.vfov) / 2)


def _clip_front(points: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Sutherland-Hodgman against the plane z = _NEAR: keep what lies in front of the camera."""
    out: list[tuple[float, float, float]] = []
    n = len(points)
    for i in range(n):
        a, b = points[i], points[(i + 1) % n]
        a_in, b_in = a[2] >= _NEAR, b[2] >= _NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            f = (_NEAR - a[2]) / (b[2] - a[2])
            out.append((a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), _NEAR))
    return out


# --------------------------------------------------------------------------------------
# both projections


def to_scene(points: Sequence[Point], pose: Pose) -> tuple[Point, ...]:
    """Picture points (normalised 0..1, origin top left) seen at ``pose`` → directions."""
    out = []
    if pose.projection == "equirectangular":
        for x, y in points:
            out.append((wrap_degrees(pose.pan + (x - 0.5) * pose.hfov), pose.tilt - (y - 0.5) * pose.vfov))
        return tuple(out)
    fx, fy = _focal(pose)
    for x, y in points:
        cx, cy, cz = _from_camera(((x - 0.5) / fx, -(y - 0.5) / fy, 1.0), pose)
        out.append((math.degrees(math.atan2(cx, cz)), math.degrees(math.atan2(cy, math.hypot(cx, cz)))))
    return tuple(out)


def to_picture(directions: Sequence[Point], pose: Pose) -> tuple[Point, ...]:
    """Directions → the polygon they make in the picture at ``pose`` (normalised, possibly
    reaching far outside 0..1); empty when the whole polygon is behind the camera."""
    if pose.projection == "equirectangular":
        out = []
        previous: float | None = None
        for az, el in directions:
            dx = wrap_degrees(az - pose.pan)
            if previous is not None:  # unwrap along the polygon: no edge jumps across the seam
                dx = previous + wrap_degrees(dx - previous)
            previous = dx
            out.append((0.5 + dx / pose.hfov, 0.5 - (el - pose.tilt) / pose.vfov))
        # a polygon unwrapped past one side of the seam: move it to the copy nearest the centre
        centre = sum(x for x, _ in out) / len(out)
        shift = round((centre - 0.5) * pose.hfov / 360.0) * 360.0 / pose.hfov
        return tuple((x - shift, y) for x, y in out)
    camera = _clip_front([_to_camera(_vector(az, el), pose) for az, el in directions])
    if len(camera) < 3:
        return ()
    fx, fy = _focal(pose)
    return tuple((0.5 + fx * x / z, 0.5 - fy * y / z) for x, y, z in camera)


def convex_hull(points: Sequence[Point]) -> tuple[Point, ...]:
    """Andrew's monotone chain; counter-clockwise, no repeated point."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return tuple(pts)

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[Point] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[Point] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return tuple(lower[:-1] + upper[:-1])


def interpolate(a: Pose, b: Pose, f: float) -> Pose:
    """The pose a fraction ``f`` of the way from ``a`` to ``b`` (shortest way round in pan)."""
    return Pose(
        pan=wrap_degrees(a.pan + f * wrap_degrees(b.pan - a.pan)),
        tilt=a.tilt + f * (b.tilt - a.tilt),
        hfov=a.hfov + f * (b.hfov - a.hfov),
        vfov=a.vfov + f * (b.vfov - a.vfov),
        projection=a.projection,
    )


def step_fraction(a: Pose, b: Pose) -> float:
    """How far ``a`` → ``b`` moves, in fields of view (the larger of pan, tilt, zoom)."""
    fov = min(a.hfov, b.hfov)
    return max(
        abs(wrap_degrees(b.pan - a.pan)) / fov,
        abs(b.tilt - a.tilt) / min(a.vfov, b.vfov),
        abs(math.log(b.hfov / a.hfov)),
    )


#: A sweep is cut into steps of at most this fraction of the field of view, so the hull of
#: two consecutive projections covers every position in between.
MAX_STEP = 0.1


def swept(directions: Sequence[Point], poses: Sequence[Pose], *, merge: bool = False) -> list[tuple[Point, ...]]:
    """Picture polygons covering ``directions`` at every pose on the path through ``poses``.

    One pose: the exact projection. A path: for each short step of it, the convex hull of
    the projections at both ends (a superset of the area covered in between); with
    ``merge``, one convex hull of them all (a larger superset, one polygon to rasterise per
    picture: what the live stage uses, whose window spans a fraction of a second). Fails
    closed by construction: it only ever adds area.
    """
    if len(poses) == 1:
        polygon = to_picture(directions, poses[0])
        return [polygon] if len(polygon) >= 3 else []
    out: list[tuple[Point, ...]] = []
    for a, b in zip(poses, poses[1:]):
        steps = max(1, math.ceil(step_fraction(a, b) / MAX_STEP))
        previous = to_picture(directions, a)
        for i in range(1, steps + 1):
            current = to_picture(directions, interpolate(a, b, i / steps) if i < steps else b)
            hull = convex_hull(previous + current)
            if len(hull) >= 3:
                out.append(hull)
            previous = current
    if merge and len(out) > 1:
        hull = convex_hull(tuple(p for polygon in out for p in polygon))
        return [hull] if len(hull) >= 3 else []
    return out
