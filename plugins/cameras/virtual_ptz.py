"""The demo camera's virtual PTZ dome: a window over a generated 360° city panorama.

``Panorama`` is built once per camera: a scene 4 frames wide and 2 frames high, horizontally
seamless (pan wraps around like a dome's), with sky, hills, buildings of random widths and
heights with windows, a street, and compass letters (N at pan 0, E at pan +0.5), so a
human sees where the dome looks and a test can measure which way the picture moved.

``VirtualHead`` is the dome's position, moved by PTZ commands on the event loop and read by
the render thread. Positions use ONVIF's generic spaces: pan -1..1 (wrapping, -180..180°),
tilt -1..1 (positive up), zoom 0..1 (widest to 4x). Continuous velocities (-1..1) are
integrated over time: full speed pans 45°/s.

Rendering a view is one vectorised gather (nearest neighbour through precomputed row and
column indices), and only when the view changed; a still dome costs nothing extra.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from gateway.plugin_api import Optics, Pose, draw_text, wrap_degrees

#: Generic-space units per second at velocity 1.
PAN_SPEED = 0.25
TILT_SPEED = 0.5
ZOOM_SPEED = 0.5
HOME = (0.0, 0.0, 0.5)


def _wrap(pan: float) -> float:
    return (pan + 1.0) % 2.0 - 1.0


def _clip(value: float, low: float, high: float) -> float:
    return min(high, max(low, value))


class VirtualHead:
    """Pan, tilt and zoom of a virtual dome; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pan, self._tilt, self._zoom = HOME
        self._velocity = (0.0, 0.0, 0.0)
        #: A preset approached at a limited speed: (target, rate per second of each axis).
        self._glide: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
        self._at = clock()
        self._presets: dict[str, tuple[str, tuple[float, float, float]]] = {
            "1": ("Overview", (0.0, 0.0, 0.0)),
            "2": ("East, close", (0.5, 0.2, 0.9)),
        }
        self._next_token = 3

    def _advance(self, now: float) -> None:
        dt = max(0.0, now - self._at)
        self._at = now
        if self._glide is not None:
            (tp, tt, tz), (rp, rt, rz) = self._glide
            dp = _wrap(tp - self._pan)  # the shorter way round
            self._pan = _wrap(self._pan + max(-rp * dt, min(rp * dt, dp)))
            self._tilt += max(-rt * dt, min(rt * dt, tt - self._tilt))
            self._zoom += max(-rz * dt, min(rz * dt, tz - self._zoom))
            if abs(_wrap(tp - self._pan)) < 1e-9 and abs(tt - self._tilt) < 1e-9 and abs(tz - self._zoom) < 1e-9:
                self._glide = None
            return
        vp, vt, vz = self._velocity
        if vp or vt or vz:
            self._pan = _wrap(self._pan + vp * PAN_SPEED * dt)
            self._tilt = _clip(self._tilt + vt * TILT_SPEED * dt, -1.0, 1.0)
            self._zoom = _clip(self._zoom + vz * ZOOM_SPEED * dt, 0.0, 1.0)

    def _set(self, pan: float, tilt: float, zoom: float) -> None:
        self._advance(self._clock())
        self._velocity = (0.0, 0.0, 0.0)
        self._glide = None
        self._pan, self._tilt, self._zoom = _wrap(pan), _clip(tilt, -1.0, 1.0), _clip(zoom, 0.0, 1.0)

    def position(self, now: float | None = None) -> tuple[float, float, float]:
        with self._lock:
            self._advance(self._clock() if now is None else now)
            return self._pan, self._tilt, self._zoom

    @property
    def moving(self) -> bool:
        with self._lock:
            self._advance(self._clock())
            return any(self._velocity) or self._glide is not None

    def continuous_move(self, pan: float, tilt: float, zoom: float) -> None:
        with self._lock:
            self._advance(self._clock())
            self._glide = None
            self._velocity = (_clip(pan, -1, 1), _clip(tilt, -1, 1), _clip(zoom, -1, 1))

    def stop(self) -> None:
        with self._lock:
            self._advance(self._clock())
            self._velocity = (0.0, 0.0, 0.0)
            self._glide = None

    def absolute_move(self, pan: float, tilt: float, zoom: float) -> None:
        with self._lock:
            self._set(pan, tilt, zoom)

    def relative_move(self, pan: float, tilt: float, zoom: float) -> None:
        with self._lock:
            self._advance(self._clock())
            self._set(self._pan + pan, self._tilt + tilt, self._zoom + zoom)

    def home(self) -> None:
        with self._lock:
            self._set(*HOME)

    def presets(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(token, name) for token, (name, _) in self._presets.items()]

    def goto_preset(self, token: str, speed: float | None = None) -> bool:
        """Go to a preset: at once, or at ``speed`` (0..1 of full speed on every axis)."""
        with self._lock:
            preset = self._presets.get(token)
            if preset is None:
                return False
            if speed is None:
                self._set(*preset[1])
                return True
            self._advance(self._clock())
            self._velocity = (0.0, 0.0, 0.0)
            speed = _clip(speed, 0.01, 1.0)
            pan, tilt, zoom = preset[1]
            self._glide = ((_wrap(pan), _clip(tilt, -1, 1), _clip(zoom, 0, 1)), (PAN_SPEED * speed, TILT_SPEED * speed, ZOOM_SPEED * speed))
            return True

    def set_preset(self, name: str) -> str:
        """Store the current position under ``name`` (replacing a preset of that name)."""
        with self._lock:
            self._advance(self._clock())
            token = next((t for t, (n, _) in self._presets.items() if n == name), None)
            if token is None:
                token = str(self._next_token)
                self._next_token += 1
            self._presets[token] = (name, (self._pan, self._tilt, self._zoom))
            return token


def view_window(width: int, height: int, pan: float, tilt: float, zoom: float) -> tuple[int, int, float]:
    """The top-left corner (panorama pixels, even) and scale of the view of a picture
    ``width`` x ``height`` at a position; the panorama is 4 pictures wide, 2 high."""
    pw, ph = 4 * width, 2 * height
    s = round(Panorama.scale(zoom), 3)
    ww, wh = width * s, height * s
    cx = (pan + 1.0) / 2.0 * pw
    cy = ph / 2.0 - tilt * (ph - wh) / 2.0
    x0 = int(round((cx - ww / 2) / 2)) * 2 % pw
    y0 = int(round((cy - wh / 2) / 2)) * 2
    return x0, y0, s


class PanoramaOptics(Optics):
    """The dome's exact optics: a picture is a window on the panorama, whose x is azimuth
    (the full width a turn) and y elevation at the same degrees per pixel."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__(fov_wide=180.0 - 1e-6, fov_narrow=45.0, projection="equirectangular")
        self.width, self.height = width, height

    def hfov(self, zoom: float) -> float:
        return 90.0 * round(Panorama.scale(zoom), 3)

    def pose(self, pan: float, tilt: float, zoom: float, aspect: float) -> Pose:
        w, h = self.width, self.height
        x0, y0, s = view_window(w, h, pan, tilt, zoom)
        degrees = 90.0 / w  # per panorama pixel: the panorama is 4 w pixels for 360 degrees
        return Pose(
            pan=wrap_degrees((x0 + w * s / 2) * degrees - 180.0),
            tilt=(h - y0 - h * s / 2) * degrees,
            hfov=w * s * degrees,
            vfov=h * s * degrees,
            projection="equirectangular",
        )


#: The garden of the panorama: an area of the city that a privacy mask is meant to hide
#: (its colour appears nowhere else in the scene, so a test can look for it). Azimuth
#: range in degrees, and its depth below the horizon as fractions of the panorama height.
GARDEN_AZIMUTH = (16.0, 27.0)
GARDEN_DEPTH = (0.015, 0.09)
#: Its chroma (a saturated green): U and V of the 4:2:0 planes.
GARDEN_UV = (85, 75)


def garden_pixels(u: np.ndarray, v: np.ndarray) -> int:
    """How many chroma samples of a decoded picture show the garden's green."""
    return int(np.count_nonzero((u < 100) & (v < 95)))


class Panorama:
    """A generated I420 scene 4x as wide and 2x as high as the camera's picture."""

    def __init__(self, width: int, height: int, seed: int = 2024) -> None:
        self.width, self.height = width, height
        self.pw, self.ph = 4 * width, 2 * height
        self.y, self.u, self.v = _city(self.pw, self.ph, np.random.default_rng(seed))
        self._cols = np.arange(width) + 0.5
        self._rows = np.arange(height) + 0.5
        self._ccols = np.arange(width // 2) + 0.5
        self._crows = np.arange(height // 2) + 0.5

    @staticmethod
    def scale(zoom: float) -> float:
        """Panorama pixels per picture pixel: 2 at zoom 0 (whole height), 0.5 at zoom 1."""
        return 2.0 * 4.0 ** (-zoom)

    @staticmethod
    def magnification(zoom: float) -> float:
        return 4.0**zoom

    def view_key(self, pan: float, tilt: float, zoom: float) -> tuple[int, int, float]:
        """The window's top-left corner (panorama pixels, even) and scale, quantised."""
        return view_window(self.width, self.height, pan, tilt, zoom)

    def render(self, key: tuple[int, int, float], y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        """Fill the picture planes with the view ``key`` (from ``view_key``)."""
        x0, y0, s = key
        cols = (x0 + (self._cols * s).astype(np.intp)) % self.pw
        rows = np.clip(y0 + (self._rows * s).astype(np.intp), 0, self.ph - 1)
        y[:] = self.y[np.ix_(rows, cols)]
        ccols = (x0 // 2 + (self._ccols * s).astype(np.intp)) % (self.pw // 2)
        crows = np.clip(y0 // 2 + (self._crows * s).astype(np.intp), 0, self.ph // 2 - 1)
        index = np.ix_(crows, ccols)
        u[:] = self.u[index]
        v[:] = self.v[index]


def _city(pw: int, ph: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sky, hills, a skyline with lit windows, a street; seamless left to right."""
    y = np.empty((ph, pw), np.uint8)
    u = np.empty((ph // 2, pw // 2), np.uint8)
    v = np.empty((ph // 2, pw // 2), np.uint8)
    horizon = int(ph * 0.56) & ~1
    # sky: light at the top, hazier towards the horizon; bluish
    y[:horizon] = np.linspace(190, 150, horizon).astype(np.uint8)[:, None]
    u[: horizon // 2], v[: horizon // 2] = 150, 112
    # ground: dark asphalt, a kerb, and a dashed centre line
    y[horizon:] = 70
    u[horizon // 2 :], v[horizon // 2 :] = 126, 130
    kerb = horizon + max(2, ph // 60) & ~1
    y[horizon:kerb] = 150
    line = (horizon + ph) // 2 + ph // 10
    dash = max(8, pw // 128)
    xs = np.arange(pw)
    y[line : line + max(2, ph // 120), ((xs // dash) % 2) == 0] = 220
    # distant hills: a periodic ridge line
    phase = 2 * np.pi * xs / pw
    ridge = horizon - ph * (0.16 + 0.05 * np.sin(3 * phase) + 0.03 * np.sin(7 * phase + 1.0))
    below_ridge = np.arange(horizon)[:, None] >= ridge[None, :]
    y[:horizon][below_ridge] = 118
    cmask = below_ridge[::2, ::2]
    u[: horizon // 2][cmask], v[: horizon // 2][cmask] = 118, 122
    # buildings, left to right, with gaps; widths and heights vary so no two views match
    x = 0
    unit = max(2, ph // 120)
    while x < pw:
        width = int(rng.integers(pw // 90, pw // 28)) & ~1
        gap = int(rng.integers(0, pw // 120)) & ~1
        right = min(pw, x + width)
        top = (horizon - int(rng.uniform(0.10, 0.40) * ph)) & ~1
        shade = int(rng.integers(45, 175))
        y[top:horizon, x:right] = shade
        u[top // 2 : horizon // 2, x // 2 : right // 2] = 128 + int(rng.integers(-22, 23))
        v[top // 2 : horizon // 2, x // 2 : right // 2] = 128 + int(rng.integers(-22, 23))
        # windows: a grid of small rectangles, lit or dark
        lit = 225 if rng.random() < 0.5 else max(16, shade - 35)
        wy, wx = np.mgrid[top:horizon, x:right]
        pitch_y, pitch_x = 4 * unit, int(rng.integers(3, 6)) * unit
        windows = ((wy - top) % pitch_y >= unit) & ((wy - top) % pitch_y < 3 * unit)
        windows &= ((wx - x) % pitch_x >= unit) & ((wx - x) % pitch_x < pitch_x - unit)
        windows &= (wy < horizon - 2 * unit) & (wx > x + unit) & (wx < right - unit)
        y[top:horizon, x:right][windows] = lit
        x = right + gap
    # a garden on the ground east of north: the private area of the privacy-mask demo
    gx0 = int((GARDEN_AZIMUTH[0] + 180) / 360 * pw) & ~1
    gx1 = int((GARDEN_AZIMUTH[1] + 180) / 360 * pw) & ~1
    gy0 = (horizon + int(GARDEN_DEPTH[0] * ph)) & ~1
    gy1 = (horizon + int(GARDEN_DEPTH[1] * ph)) & ~1
    gy, gx = np.mgrid[gy0:gy1, gx0:gx1]
    y[gy0:gy1, gx0:gx1] = np.where(((gx // max(2, pw // 400)) + (gy // max(2, ph // 100))) % 2 == 0, 96, 122)
    u[gy0 // 2 : gy1 // 2, gx0 // 2 : gx1 // 2] = GARDEN_UV[0]
    v[gy0 // 2 : gy1 // 2, gx0 // 2 : gx1 // 2] = GARDEN_UV[1]
    # compass letters high in the sky: N at pan 0 (the middle), E at +90°, S at ±180°, W at -90°
    size = max(2, ph // 60)
    for index, letter in enumerate(("S", "SW", "W", "NW", "N", "NE", "E", "SE")):
        cx = index * pw // 8
        draw_text(y, letter, cx - len(letter) * 3 * size, ph // 10, size, 40)
        if cx == 0:  # S sits on the seam: draw it on both ends
            draw_text(y, letter, pw - len(letter) * 3 * size, ph // 10, size, 40)
    return y, u, v
