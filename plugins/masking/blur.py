"""The ``blur`` mask filter: a strong box blur (three passes, about Gaussian; option ``radius``)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from msgspec import Meta

from gateway.plugin_api import MaskFilter, PluginOptions, hookimpl

DEFAULT_RADIUS = 12
PASSES = 3


def _box_1d(a: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Running mean of width 2r+1 along ``axis`` with edge replication (cumulative sums)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float32)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return (hi - lo) / (2 * radius + 1)


def blur(plane: np.ndarray, mask: np.ndarray, radius: int) -> None:
    out = plane.astype(np.float32)
    for _ in range(PASSES):
        out = _box_1d(_box_1d(out, radius, 0), radius, 1)
    plane[mask] = (out[mask] + 0.5).astype(np.uint8)


class BlurFilter(MaskFilter):
    class Options(PluginOptions):
        #: Blur radius in pixels at full resolution.
        radius: Annotated[int, Meta(ge=2, le=128)] = DEFAULT_RADIUS

    @staticmethod
    def id() -> str:
        return "blur"

    def apply(self, planes: list[np.ndarray], masks: list[np.ndarray], options: Options) -> None:
        radius = options.radius
        for i, (plane, mask) in enumerate(zip(planes, masks)):
            blur(plane, mask, radius if i == 0 else max(radius // 2, 1))


@hookimpl(trylast=True)
def gateway_register_mask_filters(register) -> None:  # noqa: ANN001 - the registry callback
    """Register the blur filter."""
    register(BlurFilter)
