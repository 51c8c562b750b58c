"""Real faces from installed packages, turned by a given yaw angle, pasted into a street:
the labelled pictures of the media-release tests and of ``bench/faces.py``.

No registry package we can install ships photographs of real faces *at known yaw angles*
(nor a labelled head-pose set). What the wheels do ship, all public domain or free to use:

- scikit-image ``data.astronaut()``: Eileen Collins (NASA), frontal;
- scikit-image ``data.camera()``: the "cameraman", a real face looking down and sideways
  behind his camera (used as it is: a genuinely non-frontal face);
- matplotlib ``sample_data/grace_hopper.jpg``: Grace Hopper (US Navy), frontal;
- scikit-image ``data.lfw_subset()``: 100 faces and 100 non-faces of Labeled Faces in the
  Wild, 25x25 grey (upscaled here: they are blurry).

The frontal faces are *turned synthetically*: the head is taken as a vertical cylinder
textured with the photo (which is exactly the photo when seen from the front), rotated by
the yaw angle and projected again. The far side of the face is compressed and then hidden,
the near side (ear, hair) stretched. It is not a real head turn (the nose does not stick
out, the far cheek does not occlude the eye), so figures on it are an approximation: a
real head turned 60 degrees shows less of the far eye than this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Head:
    """A BGR picture of a head (as wide as the head: the cylinder) and where its face is in
    it (x, y, w, h)."""

    name: str
    image: np.ndarray
    face: Box


def _head(name: str, bgr: np.ndarray, face: Box, across: float = 1.25, down: float = 1.6, lift: float = 0.12) -> Head:
    """The head around ``face``: ``across`` x its width, ``down`` x its height (centred a
    little above the face, for the hair), padded by edge pixels."""
    x, y, w, h = face
    cw, ch = int(w * across), int(h * down)
    cx, cy = x + w // 2, int(y + h / 2 - lift * h)
    pad = max(cw, ch)
    padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    x0, y0 = cx - cw // 2 + pad, cy - ch // 2 + pad
    crop = padded[y0 : y0 + ch, x0 : x0 + cw].copy()
    return Head(name, crop, (x + pad - x0, y + pad - y0, w, h))


def real_heads() -> list[Head]:
    """The frontal real faces the installed wheels ship (faces located by hand)."""
    from skimage import data

    import matplotlib.cbook

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    hopper = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return [
        _head("astronaut", astronaut, (177, 82, 95, 100)),
        _head("grace-hopper", hopper, (171, 146, 194, 200)),
    ]


def cameraman() -> Head:
    """A real face seen from the side and above, half hidden by a camera (not turned by us)."""
    from skimage import data

    return _head("cameraman", cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR), (190, 118, 80, 88), across=1.5, down=1.7)


def lfw(faces: bool = True) -> list[np.ndarray]:
    """The 25x25 grey pictures of scikit-image's LFW subset as BGR: faces or non-faces."""
    from skimage import data

    images = data.lfw_subset()  # 100 faces, then 100 non-faces, floats 0..1
    chosen = images[:100] if faces else images[100:]
    return [cv2.cvtColor((im * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR) for im in chosen]


def turn(head: Head, yaw: float) -> tuple[np.ndarray, np.ndarray, Box]:
    """``head`` turned by ``yaw`` degrees (positive: the face turns to the picture's right).

    The head picture is the front half of a cylinder; columns that look at its back half
    repeat the head's edge (hair, ear). Returns the picture, its alpha (an ellipse: the
    head's outline) and the face's box."""
    height, width = head.image.shape[:2]
    r = width / 2
    theta = math.radians(yaw)
    xs = (np.arange(width, dtype=np.float64) + 0.5 - r) / r  # -1..1 across the output
    phi = np.arcsin(np.clip(xs, -1, 1)) - theta  # where on the cylinder each column looks
    u = np.sin(np.clip(phi, -math.pi / 2, math.pi / 2))  # hidden columns repeat the edge
    map_x = np.tile(((u * r) + r - 0.5).astype(np.float32), (height, 1))
    map_y = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    out = cv2.remap(head.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = np.zeros((height, width), np.uint8)
    cv2.ellipse(alpha, (width // 2, height // 2), (int(r * 0.97), int(height / 2 * 0.97)), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), width / 60)
    fx, fy, fw, fh = head.face

    def forward(px: float) -> float:  # a texture column -> the output column it lands on
        a = math.asin(max(-1.0, min(1.0, (px - r) / r))) + theta
        return r + r * math.sin(max(-math.pi / 2, min(math.pi / 2, a)))

    left, right = forward(fx), forward(fx + fw)
    return out, alpha, (int(left), fy, max(1, int(right - left)), fh)


def paste(frame: np.ndarray, picture: np.ndarray, alpha: np.ndarray, x: int, y: int) -> np.ndarray:
    """``picture`` blended into a copy of ``frame`` at (x, y) through ``alpha`` (clipped)."""
    out = frame.copy()
    h, w = picture.shape[:2]
    H, W = frame.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 <= x0 or y1 <= y0:
        return out
    p = picture[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
    a = (alpha[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32) / 255)[..., None]
    out[y0:y1, x0:x1] = (p * a + out[y0:y1, x0:x1].astype(np.float32) * (1 - a)).astype(np.uint8)
    return out


def turned_face_in(frame: np.ndarray, head: Head, yaw: float, x: int, y: int, size: int) -> tuple[np.ndarray, Box]:
    """``frame`` with ``head`` turned by ``yaw`` degrees, ``size`` pixels tall, at (x, y);
    and the face's box in the frame."""
    picture, alpha, (fx, fy, fw, fh) = turn(head, yaw)
    scale = size / picture.shape[0]
    dsize = (max(1, round(picture.shape[1] * scale)), size)
    picture = cv2.resize(picture, dsize, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(alpha, dsize, interpolation=cv2.INTER_LINEAR)
    box = (x + int(fx * scale), y + int(fy * scale), max(1, int(fw * scale)), max(1, int(fh * scale)))
    return paste(frame, picture, alpha, x, y), box


def save_contact_sheet(path: Path, pictures: list[np.ndarray], boxes: list[list[Box]], columns: int = 6) -> None:
    """A look at the set (debugging aid): pictures with their truth boxes."""
    tiles = []
    for picture, bs in zip(pictures, boxes):
        tile = picture.copy()
        for x, y, w, h in bs:
            cv2.rectangle(tile, (x, y), (x + w, y + h), (0, 255, 0), 2)
        tiles.append(cv2.resize(tile, (320, 180)))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(path), np.vstack(rows))
