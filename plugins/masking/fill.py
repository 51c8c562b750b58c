"""The ``fill`` mask filter: the region becomes flat black (the default, and the safest)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from gateway.plugin_api import MaskFilter, PluginOptions, hookimpl

#: BT.601 limited-range black; ``color = "grey"`` gives mid grey.
_COLOURS = {"black": (16, 128, 128), "grey": (126, 128, 128), "white": (235, 128, 128)}


class FillFilter(MaskFilter):
    class Options(PluginOptions):
        color: Literal["black", "grey", "white"] = "black"

    @staticmethod
    def id() -> str:
        return "fill"

    def apply(self, planes: list[np.ndarray], masks: list[np.ndarray], options: Options) -> None:
        values = _COLOURS[options.color]
        for plane, mask, value in zip(planes, masks, values):
            plane[mask] = value


@hookimpl(trylast=True)
def gateway_register_mask_filters(register) -> None:  # noqa: ANN001 - the registry callback
    """Register the fill filter."""
    register(FillFilter)
