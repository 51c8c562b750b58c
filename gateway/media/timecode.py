"""The demo camera's machine-readable clock: a strip of 48 blocks across the top of the frame.

Specification (ARCHITECTURE.md, "The demo camera's time code"): 48 equal-width blocks
spanning the full width, 16 pixels high at the top, encoding the Unix epoch time in
milliseconds as a 48-bit unsigned integer, most significant bit at the left; a white block
(luma 235) is 1, a black block (luma 16) is 0. A decoder averages the luma of the middle
half of each block and thresholds at 128.

``read_timecode`` works at any frame size: after scaling, the strip is narrower and maybe
less than 16 pixels high, so it uses the rows at the top whose block averages are clearly
black or white, and only the middle half of each block horizontally.
"""

from __future__ import annotations

import numpy as np

BITS = 48
STRIP_HEIGHT = 16
WHITE = 235
BLACK = 16
THRESHOLD = 128
#: A block average this far from both black and white means the row is not part of the strip.
ROW_TOLERANCE = 56

_SHIFTS = np.arange(BITS - 1, -1, -1, dtype=np.uint64)


def block_edges(width: int) -> np.ndarray:
    """The 49 column boundaries of the 48 blocks of a strip ``width`` pixels wide."""
    return (np.arange(BITS + 1) * width) // BITS


def draw_timecode(y_plane: np.ndarray, epoch_ms: int) -> None:
    """Draw ``epoch_ms`` as the time-code strip into the top 16 rows of a luma plane, in place."""
    if not 0 <= epoch_ms < 1 << BITS:
        raise ValueError(f"time code {epoch_ms} does not fit in {BITS} bits")
    height, width = y_plane.shape[:2]
    if width < BITS or height < STRIP_HEIGHT:
        raise ValueError(f"frame {width}x{height} too small for the time code")
    bits = (np.uint64(epoch_ms) >> _SHIFTS) & np.uint64(1)
    levels = np.where(bits.astype(bool), WHITE, BLACK).astype(y_plane.dtype)
    block_of_column = (np.arange(width) * BITS) // width
    y_plane[:STRIP_HEIGHT, :] = levels[block_of_column]


def read_timecode(y_plane: np.ndarray) -> int | None:
    """Decode the time-code strip of a luma plane; None if there is no plausible strip."""
    height, width = y_plane.shape[:2]
    if width < BITS or height < 2:
        return None
    rows = np.asarray(y_plane[: min(STRIP_HEIGHT, height), :], dtype=np.float32)
    edges = block_edges(width).astype(np.float64)
    block = edges[1:] - edges[:-1]
    starts = np.round(edges[:-1] + block / 4).astype(np.intp)
    ends = np.maximum(np.round(edges[:-1] + 3 * block / 4).astype(np.intp), starts + 1)
    # Mean over [start, end) of every block, for every row, from cumulative sums.
    cumulative = np.zeros((rows.shape[0], width + 1), dtype=np.float64)
    np.cumsum(rows, axis=1, out=cumulative[:, 1:])
    means = (cumulative[:, ends] - cumulative[:, starts]) / (ends - starts)
    distance = np.minimum(np.abs(means - BLACK), np.abs(means - WHITE)).max(axis=1)
    plausible = distance < ROW_TOLERANCE
    # The strip is the run of plausible rows that starts at (or right below) the top edge.
    first = int(np.argmax(plausible[:2])) if plausible[:2].any() else -1
    if first < 0:
        return None
    run = first
    while run < len(plausible) and plausible[run]:
        run += 1
    if run - first > 2:  # the last row may blend into the picture below
        run -= 1
    bits = means[first:run].mean(axis=0) >= THRESHOLD
    if bits.all() or not bits.any():
        return None
    return int((bits.astype(np.uint64) << _SHIFTS).sum())
