"""A tiny embedded 5x7 bitmap font for printable ASCII, drawn into luma planes with numpy.

Used for the demo camera's name and human-readable clock. Each glyph is 7 rows of 5 pixels;
in the table below a glyph is 7 characters, one per row, each a base-32 digit whose 5 bits
are the row's pixels, most significant bit at the left. Glyphs are for characters 32..126 in
order; anything else is drawn as ``?``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
#: Horizontal advance per character, in font pixels (one column of spacing).
ADVANCE = GLYPH_WIDTH + 1
FIRST_CHAR = 32
LAST_CHAR = 126

_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
_GLYPHS = (
    "0000000 4444404 AAA0000 AAVAVAA 4FKE5U4 OP248J3 CIK8LID 4480000 2488842 8422248 04LEL40 "
    "044V440 0000C48 000V000 00000CC 01248G0 EHJLPHE 4C4444E EH1248V V2421HE 26AIV22 VGU11HE "
    "68GUHHE V124888 EHHEHHE EHHF12C 0CC0CC0 0CC0C48 248G842 00V0V00 8421248 EH12404 EH1DLLE "
    "EHHVHHH UHHUHHU EHGGGHE SIHHHIS VGGUGGV VGGUGGG EHGNHHF HHHVHHH E44444E 72222IC HIKOKIH "
    "GGGGGGV HRLLHHH HHPLJHH EHHHHHE UHHUGGG EHHHLID UHHUKIH FGGE11U V444444 HHHHHHE HHHHHA4 "
    "HHHLLLA HHA4AHH HHHA444 V1248GV E88888E 0G84210 E22222E 4AH0000 000000V 8420000 00E1FHF "
    "GGMPHHU 00EGGHE 11DJHHF 00EHVGE 698S888 0FHHF1E GGMPHHH 40C444E 20622IC GGIKOKI C44444E "
    "00QLLHH 00MPHHH 00EHHHE 00UHUGG 00DJF11 00MPGGG 00EGE1U 88S8896 00HHHJD 00HHHA4 00HHLLA "
    "00HA4AH 00HHF1E 00V248V 2448442 4444444 8442448 008L200 "
)


@cache
def glyph_table() -> np.ndarray:
    """Boolean array of shape (95, 7, 5): the pixels of characters 32..126 (read-only)."""
    codes = _GLYPHS.split()
    rows = np.array([[_DIGITS.index(d) for d in code] for code in codes], dtype=np.uint8)
    bits = (rows[:, :, None] >> np.arange(GLYPH_WIDTH - 1, -1, -1, dtype=np.uint8)) & 1
    table = bits.astype(bool)
    table.flags.writeable = False
    return table


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """Boolean pixel mask of ``text`` rendered at integer ``scale``, shape (7*scale, 6*len*scale)."""
    if scale < 1:
        raise ValueError(f"text scale must be at least 1, not {scale}")
    codes = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8).astype(np.intp)
    codes = np.where((codes >= FIRST_CHAR) & (codes <= LAST_CHAR), codes, ord("?")) - FIRST_CHAR
    glyphs = glyph_table()[codes]  # (n, 7, 5)
    padded = np.zeros((len(codes), GLYPH_HEIGHT, ADVANCE), dtype=bool)
    padded[:, :, :GLYPH_WIDTH] = glyphs
    mask = padded.transpose(1, 0, 2).reshape(GLYPH_HEIGHT, len(codes) * ADVANCE)
    if scale > 1:
        mask = np.kron(mask, np.ones((scale, scale), dtype=bool))
    return mask


def text_size(text: str, scale: int = 1) -> tuple[int, int]:
    """``(width, height)`` in pixels of ``text`` at ``scale``."""
    return len(text) * ADVANCE * scale, GLYPH_HEIGHT * scale


def draw_text(
    y_plane: np.ndarray,
    text: str,
    x: int,
    y: int,
    scale: int = 2,
    luma: int = 235,
    background: int | None = None,
) -> None:
    """Draw ``text`` with its top-left corner at ``(x, y)`` into a luma plane, in place.

    With ``background``, the text's box (plus one font pixel of margin) is filled first, so
    the text stays legible on any picture. Text running off the plane is clipped.
    """
    mask = text_mask(text, scale)
    if background is not None:
        margin = scale
        mask = np.pad(mask, margin)
        x -= margin
        y -= margin
    height, width = y_plane.shape[:2]
    top, left = max(y, 0), max(x, 0)
    bottom, right = min(y + mask.shape[0], height), min(x + mask.shape[1], width)
    if top >= bottom or left >= right:
        return
    mask = mask[top - y : bottom - y, left - x : right - x]
    region = y_plane[top:bottom, left:right]
    if background is not None:
        region[...] = background
    region[mask] = luma
