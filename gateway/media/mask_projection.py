"""Scene-anchored privacy masks → the picture-space shapes of one picture.

The mask stage calls ``MaskProjector.picture_shapes`` for every picture of a camera that has
masks anchored to the scene (``MaskShape.drawn_at``). Picture-space masks pass through.
Scene masks are projected from the positions the tracker says the camera may have had when
the picture was taken — one position while it stands still (the exact projection), the
swept area of a path while it moves. When the position is unknown or stale, or the path
sweeps more than ``MAX_SWEEP`` fields of view, the answer is ``None``: the stage then masks
the whole picture. It never guesses a position it has not read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.interfaces import MaskShape
from gateway.ptz_tracking import PoseSample, PoseTracker
from gateway.scene import Optics, Pose, step_fraction, swept, to_scene

logger = logging.getLogger(__name__)

#: A path longer than this many fields of view within one picture's window: mask it all.
MAX_SWEEP = 2.0
#: Pixels added around a projected scene mask (rounding of the projection and the picture).
SCENE_GROW = 3
#: Projected corners are kept within this many picture widths of the picture.
_FAR = 50.0

WHOLE_PICTURE = MaskShape(points=((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)), filter="fill")


def is_scene(shape: MaskShape) -> bool:
    return shape.drawn_at is not None


class MaskProjector:
    """Projects scene masks for pictures of one camera; safe to use from the worker thread."""

    def __init__(self, tracker: PoseTracker | None, optics: Optics | None) -> None:
        self.tracker = tracker
        self.optics = optics
        self._directions: dict[tuple[object, ...], tuple[tuple[float, float], ...]] = {}

    def directions(self, shape: MaskShape, aspect: float) -> tuple[tuple[float, float], ...]:
        """The scene directions (azimuth, elevation in degrees) of a scene mask's corners."""
        assert shape.drawn_at is not None and self.optics is not None
        key = (shape.points, shape.drawn_at, round(aspect, 4))
        found = self._directions.get(key)
        if found is None:
            pose = self.optics.pose(*shape.drawn_at, aspect)
            found = to_scene(shape.points, pose)
            if len(self._directions) > 256:
                self._directions.clear()
            self._directions[key] = found
        return found

    def poses(self, samples: Sequence[PoseSample], aspect: float) -> list[Pose]:
        assert self.optics is not None
        poses: list[Pose] = []
        previous: PoseSample | None = None
        for sample in samples:
            if previous is not None and previous.same_place(sample, 0.0):
                continue  # the same position twice adds nothing (and keeps a still mask exact)
            poses.append(self.optics.pose(sample.pan, sample.tilt, sample.zoom, aspect))
            previous = sample
        return poses

    def project(self, shapes: Sequence[MaskShape], poses: Sequence[Pose], aspect: float) -> tuple[MaskShape, ...] | None:
        """Every shape at the path ``poses`` in picture space; None: mask the whole picture."""
        if sum(step_fraction(a, b) for a, b in zip(poses, poses[1:])) > MAX_SWEEP:
            return None
        out: list[MaskShape] = []
        for shape in shapes:
            if not is_scene(shape):
                out.append(shape)
                continue
            for polygon in swept(self.directions(shape, aspect), poses, merge=True):
                points = tuple((min(_FAR, max(-_FAR, x)), min(_FAR, max(-_FAR, y))) for x, y in polygon)
                out.append(MaskShape(points=points, filter=shape.filter, options=shape.options, grow=max(shape.grow, SCENE_GROW)))
        return tuple(out)

    def picture_shapes(
        self, shapes: Sequence[MaskShape], arrived: float, width: int, height: int, *, wait: bool = True
    ) -> tuple[MaskShape, ...] | None:
        """The picture-space shapes for a picture that reached the gateway at ``arrived``."""
        if not any(is_scene(s) for s in shapes):
            return tuple(shapes)
        if self.tracker is None or self.optics is None:
            return None
        samples = self.tracker.samples_for(arrived, wait=wait)
        if not samples:
            return None
        aspect = height / width
        return self.project(shapes, self.poses(samples, aspect), aspect)

    def current_pose(self, aspect: float) -> Pose | None:
        """Where the camera points now, if known (for the mask editor)."""
        if self.tracker is None or self.optics is None:
            return None
        newest = self.tracker.newest()
        if newest is None:
            return None
        return self.optics.pose(newest.pan, newest.tilt, newest.zoom, aspect)
