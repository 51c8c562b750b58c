"""The ``pixelate`` mask filter: the region becomes coarse blocks (option ``block``, pixels)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from msgspec import Meta

from gateway.plugin_api import MaskFilter, PluginOptions, hookimpl

DEFAULT_BLOCK = 16
MIN_BLOCK = 4


def pixelate(plane: np.ndarray, mask: np.ndarray, block: int) -> None:
    """Replace the masked pixels of ``plane`` by the mean of their ``block`` x ``block`` cell."""
    h, w = plane.shape
    hb, wb = -(-h // block), -(-w // block)
    padded = np.empty((hb * block, wb * block), dtype=np.float32)
    padded[:h, :w] = plane
    # edge cells: repeat the last row/column so partial cells average real pixels only
    padded[h:, :w] = plane[-1:, :]
    padded[:, w:] = padded[:, w - 1 : w]
    means = padded.reshape(hb, block, wb, block).mean(axis=(1, 3))
    coarse = np.repeat(np.repeat(means, block, axis=0), block, axis=1)[:h, :w]
    plane[mask] = (coarse[mask] + 0.5).astype(np.uint8)


class PixelateFilter(MaskFilter):
    class Options(PluginOptions):
        #: Cell size in pixels at full resolution (chroma planes use half).
        block: Annotated[int, Meta(ge=MIN_BLOCK, le=256)] = DEFAULT_BLOCK

    @staticmethod
    def id() -> str:
        return "pixelate"

    def apply(self, planes: list[np.ndarray], masks: list[np.ndarray], options: Options) -> None:
        block = options.block
        for i, (plane, mask) in enumerate(zip(planes, masks)):
            pixelate(plane, mask, block if i == 0 else max(block // 2, 2))


@hookimpl(trylast=True)
def gateway_register_mask_filters(register) -> None:  # noqa: ANN001 - the registry callback
    """Register the pixelate filter."""
    register(PixelateFilter)
