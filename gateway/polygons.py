"""Privacy-mask polygons: the one validation rule shared by the config, the API and the stage.

A mask is a simple polygon in normalised picture coordinates: ``(x, y)`` with ``0 <= x, y <= 1``,
origin top left, so it stays in place whatever resolution the camera sends.
"""

from __future__ import annotations

from collections.abc import Sequence

MIN_POINTS = 3
MAX_POINTS = 64
#: Filters every gateway has (the built-in plugins); a third party can add more.
BUILTIN_FILTERS = ("fill", "pixelate", "blur")


def polygon_problem(points: Sequence[Sequence[float]]) -> str | None:
    """Why ``points`` is not a usable mask polygon, or None if it is."""
    if not isinstance(points, Sequence) or isinstance(points, (str, bytes)):
        return "points must be a list of [x, y] pairs"
    if len(points) < MIN_POINTS:
        return f"a polygon needs at least {MIN_POINTS} points, not {len(points)}"
    if len(points) > MAX_POINTS:
        return f"a polygon has at most {MAX_POINTS} points, not {len(points)}"
    for i, point in enumerate(points):
        if not isinstance(point, Sequence) or isinstance(point, (str, bytes)) or len(point) != 2:
            return f"point {i} must be an [x, y] pair"
        for value in point:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                return f"point {i} must hold two numbers"
        x, y = point
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            return f"point {i} ({x}, {y}) lies outside the picture: coordinates are normalised to 0..1"
    area2 = sum(points[i][0] * points[i - 1][1] - points[i - 1][0] * points[i][1] for i in range(len(points)))
    if abs(area2) < 1e-9:
        return "the polygon has no area"
    return None
