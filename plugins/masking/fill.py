"""The ``fill`` mask filter: the region becomes flat black (the default, and the safest)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gateway import hookimpl
from gateway.interfaces import MaskFilter

#: BT.601 limited-range black; ``color = "grey"`` gives mid grey.
_COLOURS = {"black": (16, 128, 128), "grey": (126, 128, 128), "white": (235, 128, 128)}


class FillFilter(MaskFilter):
    @staticmethod
    def id() -> str:
        return "fill"

    def apply(self, planes: list[np.ndarray], masks: list[np.ndarray], options: dict[str, Any]) -> None:
        values = _COLOURS.get(str(options.get("color", "black")), _COLOURS["black"])
        for plane, mask, value in zip(planes, masks, values):
            plane[mask] = value


@hookimpl(trylast=True)
def gateway_register_mask_filters(register) -> None:  # noqa: ANN001 - the registry callback
    """Register the fill filter."""
    register(FillFilter)
