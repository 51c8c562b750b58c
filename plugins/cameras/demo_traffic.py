"""The demo camera's ``traffic`` pattern: a street with synthetic vehicles and number plates,
whose every passage is known in advance (ground truth for vehicle counting and plate reading).

The camera looks down a four-lane street. Left to right: ``lane-1`` and ``lane-2`` carry
traffic towards the camera (``inbound``, moving down the picture), ``lane-3`` and ``lane-4``
away from it (``outbound``, moving up). Cars carry single-line plates of Ukraine
(``AA 1234 BB``), Poland (``WA 12345``, ``WPI 1A23``) and Vietnam (``30A-123.45``); motorbikes
carry Vietnamese two-line plates (``29-B1`` over ``123.45``). Every plate faces the camera
at the bottom edge of its vehicle. Some vehicles (``wrong-way`` per loop) drive against
their lane's direction.

Everything follows from the options (``[camera.options.traffic]``): ``schedule(options)``
draws the vehicles of one loop from ``seed`` (which lane, direction, plate, kind, colour,
and when each enters the picture); the loop repeats every ``loop-seconds``, anchored to the
wall clock at ``origin`` (default the Unix epoch, so every camera with the same options
shows the same vehicle at the same moment, whenever it was started). ``passages(options,
start, end)`` lists each vehicle whose centre crosses a horizontal line in a time window,
and ``ground_truth`` counts them per lane and direction: what a counting line across the
street should count.

Rendering is cheap enough for real time at 1280x720: the street (I420) and one sprite per
vehicle of the loop (I420 planes and a mask; the plate drawn into it) are made once; a
picture is a copy of the street and a masked copy of each vehicle in view.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import cv2
import msgspec
import numpy as np
from msgspec import Meta

from gateway.plugin_api import fold, normalise, similar

#: Lanes left to right: centre (fraction of the width) and the direction they allow.
LANES = ("lane-1", "lane-2", "lane-3", "lane-4")
LANE_CENTRES = (0.2, 0.4, 0.6, 0.8)
LANE_DIRECTIONS = ("inbound", "inbound", "outbound", "outbound")
#: The road's edges (fractions of the width); pavements outside.
ROAD = (0.1, 0.9)
#: Where the suggested counting line crosses the street (fraction of the height). A line
#: drawn left to right at this height, with ``directions = ["outbound", "inbound"]`` and a
#: quarter of its length per lane, counts what ``ground_truth`` says.
LINE_Y = 0.62
#: Vehicle sizes: width as a fraction of the picture's width, length of its height.
CAR = (0.125, 0.36)
MOTORBIKE = (0.075, 0.24)
#: Free road kept between two vehicles of a lane (fraction of the height).
GAP = 0.12
#: Body colours (BGR) in three shades: dark (well under half the asphalt's luma: background
#: subtraction takes what is a little darker than the road for a shadow), light, and lighter
#: still but below a plate. A lane's vehicles take the shades in turn, so that no shade
#: covers a lane often enough for background subtraction to learn it as road.
SHADES = (
    ((15, 15, 15), (70, 15, 5), (5, 30, 0)),
    ((30, 140, 240), (230, 180, 120), (185, 185, 180)),
    ((215, 215, 210), (150, 230, 240), (235, 225, 200)),
)
ASPHALT = (84, 82, 80)

_UA_REGIONS = ("AA", "KA", "AE", "KE", "BC", "AX", "BH", "BI", "AI", "CA")
_UA_LETTERS = "ABCEHIKMOPTX"
_PL_DISTRICTS2 = ("WA", "WE", "KR", "GD", "PO", "WR", "LU", "SK", "EL", "DW")
_PL_DISTRICTS3 = ("WPI", "KRA", "GDA", "SBI", "ZSZ", "EBE", "DLU", "GKA")
_PL_LETTERS = "ACEFGHJKLMNPRSTUVWXY"  #: Polish plates avoid B, D, I, O and Z after the district
_PL_FORMATS2 = ("DDDDD", "DDDDL", "DDDLL", "DLDDD", "DLLDD")
_PL_FORMATS3 = ("DDDD", "DDDL", "DDLL", "DLDD", "DLLD")
_VN_PROVINCES = ("29", "30", "51", "43", "21", "88", "15", "36", "59", "92")
_VN_LETTERS = "ABCDEFGHKLMNPSTUVXYZ"


class TrafficOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    """``[camera.options.traffic]`` of a demo camera with ``pattern = "traffic"``."""

    #: Chooses the vehicles, lanes, plates and colours of the loop.
    seed: int = 1
    #: The traffic repeats after this many seconds.
    loop_seconds: Annotated[float, Meta(ge=4, le=3600)] = 60.0
    #: Vehicles per loop.
    vehicles: Annotated[int, Meta(ge=1, le=1000)] = 24
    #: The share of them that are motorbikes (with Vietnamese two-line plates).
    motorbikes: Annotated[float, Meta(ge=0, le=1)] = 0.25
    #: Vehicles per loop that drive against their lane's direction.
    wrong_way: Annotated[int, Meta(ge=0, le=100)] = 1
    #: Picture heights per second.
    speed: Annotated[float, Meta(ge=0.05, le=2)] = 0.4
    #: A Unix time at which a loop starts (the loops are anchored to the wall clock).
    origin: float = 0.0

    def __post_init__(self) -> None:
        if self.wrong_way > self.vehicles:
            raise ValueError(f"wrong-way {self.wrong_way} cannot exceed vehicles {self.vehicles}")
        schedule(self)  # raises when the vehicles do not fit into the loop


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One vehicle of the loop."""

    index: int
    kind: str  #: "car" or "motorbike"
    country: str  #: "UA", "PL" or "VN"
    lines: tuple[str, ...]  #: the plate as printed, top line first
    plate: str  #: the plate's canonical text (``gateway.plates.text.normalise``)
    lane: str
    direction: str  #: "inbound" (down the picture) or "outbound" (up)
    wrong_way: bool  #: against the lane's direction
    enters: float  #: seconds after the loop's start when its front reaches the picture's edge
    colour: tuple[int, int, int]  #: BGR

    @property
    def size(self) -> tuple[float, float]:
        return MOTORBIKE if self.kind == "motorbike" else CAR

    def centre_y(self, elapsed: float, speed: float) -> float:
        """The centre's y (fraction of the height), ``elapsed`` seconds after it entered."""
        length = self.size[1]
        travelled = elapsed * speed
        return -length / 2 + travelled if self.direction == "inbound" else 1 + length / 2 - travelled

    def transit(self, speed: float) -> float:
        """Seconds from entering the picture to having left it."""
        return (1 + self.size[1]) / speed

    def crosses(self, line_y: float, speed: float) -> float:
        """Seconds after entering when its centre crosses the height ``line_y``."""
        length = self.size[1]
        distance = line_y + length / 2 if self.direction == "inbound" else 1 + length / 2 - line_y
        return distance / speed


@dataclass(frozen=True, slots=True)
class Passage:
    """A vehicle crossing a line: ``at`` is the wall-clock time its centre is on it."""

    vehicle: Vehicle
    at: float


# -- plates ----------------------------------------------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _layout(rng: random.Random, layout: str, letters: str) -> str:
    """Letters and digits as ``layout`` says; no leading zero (read as an O beside the district)."""
    return "".join(rng.choice("123456789" if i == 0 else "0123456789") if c == "D" else rng.choice(letters)
                   for i, c in enumerate(layout))


def ukrainian_plate(rng: random.Random) -> tuple[str, ...]:
    series = rng.choice(_UA_LETTERS) + rng.choice(_UA_LETTERS)
    return (f"{rng.choice(_UA_REGIONS)} {_digits(rng, 4)} {series}",)


def polish_plate(rng: random.Random) -> tuple[str, ...]:
    if rng.random() < 0.6:
        district, rest = rng.choice(_PL_DISTRICTS2), _layout(rng, rng.choice(_PL_FORMATS2), _PL_LETTERS)
    else:
        district, rest = rng.choice(_PL_DISTRICTS3), _layout(rng, rng.choice(_PL_FORMATS3), _PL_LETTERS)
    return (f"{district} {rest}",)


def vietnamese_plate(rng: random.Random, motorbike: bool = False) -> tuple[str, ...]:
    province, number = rng.choice(_VN_PROVINCES), _digits(rng, 5)
    if motorbike:  # two lines: "29-B1" over "123.45"
        return (f"{province}-{rng.choice(_VN_LETTERS)}{rng.choice('123456789')}", f"{number[:3]}.{number[3:]}")
    series = rng.choice(_VN_LETTERS) + (rng.choice(_VN_LETTERS) if rng.random() < 0.2 else "")
    return (f"{province}{series}-{number[:3]}.{number[3:]}",)


def plate_image(lines: Sequence[str], width: int = 150) -> np.ndarray:
    """A plate (BGR): white, a dark border, dark characters; two lines make a square-ish
    motorbike plate."""
    two = len(lines) == 2
    height = int(width * (0.72 if two else 0.22))
    img = np.full((height, width, 3), 245, np.uint8)
    cv2.rectangle(img, (1, 1), (width - 2, height - 2), (20, 20, 20), max(1, width // 100))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, text in enumerate(lines):
        (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
        scale = min(width * 0.86 / tw, height * (0.36 if two else 0.62) / th)
        thick = max(1, int(scale * 2.2))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
        y = int(height * (0.45 if i == 0 else 0.88)) if two else (height + th) // 2
        cv2.putText(img, text, ((width - tw) // 2, y), font, scale, (15, 15, 15), thick, cv2.LINE_AA)
    return img


# -- the loop's schedule ---------------------------------------------------------------------


def _circular_gap(a: float, b: float, loop: float) -> float:
    d = abs(a - b) % loop
    return min(d, loop - d)


def _overlaps(a0: float, a1: float, b0: float, b1: float, loop: float) -> bool:
    """Do the circular intervals [a0, a1) and [b0, b1) (mod ``loop``) overlap?"""
    for shift in (-loop, 0.0, loop):
        if a0 < b1 + shift and b0 + shift < a1:
            return True
    return False


def schedule(options: TrafficOptions) -> tuple[Vehicle, ...]:
    """The vehicles of one loop, drawn from ``options.seed``; raises ``ValueError`` when they
    do not fit (too many vehicles for the loop's length at this speed)."""
    rng = random.Random(options.seed)
    loop, speed, n = options.loop_seconds, options.speed, options.vehicles
    wrong = set(rng.sample(range(n), options.wrong_way))
    headway = (CAR[1] + GAP) / speed  # seconds between two vehicles entering one lane
    slot = loop / n
    vehicles: list[Vehicle] = []
    keys: list[str] = []
    for index in range(n):
        motorbike = rng.random() < options.motorbikes
        country = "VN" if motorbike else ("UA", "PL", "VN")[index % 3]
        for _ in range(100):
            lines = (vietnamese_plate(rng, motorbike) if country == "VN" else
                     ukrainian_plate(rng) if country == "UA" else polish_plate(rng))
            plate = normalise(lines)
            if plate.country == country and not any(similar(plate.key, k) for k in keys):
                break
        else:  # pragma: no cover - 100 draws never all collide
            raise ValueError("could not draw distinct plates")
        keys.append(fold(plate.text))
        lanes = list(range(len(LANES)))
        rng.shuffle(lanes)
        lanes.sort(key=lambda i: sum(v.lane == LANES[i] for v in vehicles))  # the emptiest lanes first
        desired = index * slot + rng.uniform(0, slot / 2)
        placed = None
        for step in range(max(1, int(loop / 0.05))):  # later if need be, round the loop
            enters = (desired + step * 0.05) % loop
            for lane in lanes:
                normal = LANE_DIRECTIONS[lane]
                direction = ("outbound" if normal == "inbound" else "inbound") if index in wrong else normal
                in_lane = sum(v.lane == LANES[lane] for v in vehicles)
                colour = SHADES[(lane + in_lane) % len(SHADES)][index % 3]
                candidate = Vehicle(index, "motorbike" if motorbike else "car", country, lines, plate.text, LANES[lane],
                                    direction, index in wrong, round(enters, 3), colour)
                if _fits(candidate, vehicles, speed, headway, loop):
                    placed = candidate
                    break
            if placed is not None:
                break
        if placed is None:
            raise ValueError(
                f"{n} vehicles do not fit into a {loop:g} s loop at speed {speed:g}: "
                "fewer vehicles, a longer loop or a higher speed"
            )
        vehicles.append(placed)
    return tuple(vehicles)


def _fits(new: Vehicle, placed: list[Vehicle], speed: float, headway: float, loop: float) -> bool:
    for other in placed:
        if other.lane != new.lane:
            continue
        if other.direction != new.direction or new.wrong_way or other.wrong_way:
            # head-on: never in view at the same time (with a second to spare)
            if _overlaps(new.enters - 1, new.enters + new.transit(speed) + 1,
                         other.enters, other.enters + other.transit(speed), loop):
                return False
        elif _circular_gap(new.enters, other.enters, loop) < headway:
            return False
    return True


def passages(options: TrafficOptions, start: float, end: float, line_y: float = LINE_Y,
             vehicles: Sequence[Vehicle] | None = None) -> list[Passage]:
    """Every vehicle whose centre crosses the height ``line_y`` (fraction of the picture)
    between the wall-clock times ``start`` (included) and ``end`` (excluded), in time order."""
    loop = options.loop_seconds
    found = []
    for vehicle in vehicles if vehicles is not None else schedule(options):
        offset = options.origin + vehicle.enters + vehicle.crosses(line_y, options.speed)
        k = math.ceil((start - offset) / loop)
        at = offset + k * loop
        while at < end:
            if at >= start:
                found.append(Passage(vehicle, at))
            at += loop
    return sorted(found, key=lambda p: p.at)


def ground_truth(options: TrafficOptions, start: float, end: float, line_y: float = LINE_Y) -> Counter[tuple[str, str]]:
    """(lane, direction) -> vehicles crossing ``line_y`` between ``start`` and ``end``."""
    return Counter((p.vehicle.lane, p.vehicle.direction) for p in passages(options, start, end, line_y))


# -- drawing ---------------------------------------------------------------------------------


def _even(value: float) -> int:
    return int(round(value / 2)) * 2


def _to_i420(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = bgr.shape[:2]
    flat = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420).reshape(-1)
    y = flat[: w * h].reshape(h, w)
    u = flat[w * h : w * h + w * h // 4].reshape(h // 2, w // 2)
    v = flat[w * h + w * h // 4 :].reshape(h // 2, w // 2)
    return y.copy(), u.copy(), v.copy()


def street_bgr(width: int, height: int, seed: int = 19) -> np.ndarray:
    """The empty street (BGR): asphalt, lane markings, pavements and a few trees."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    img[:] = np.clip(np.array(ASPHALT, np.int16) + noise, 0, 255).astype(np.uint8)
    left, right = int(ROAD[0] * width), int(ROAD[1] * width)
    img[:, :left] = (150, 155, 158)
    img[:, right:] = (150, 155, 158)
    kerb = max(2, width // 200)
    img[:, left - kerb : left] = (200, 200, 200)
    img[:, right : right + kerb] = (200, 200, 200)
    for y in range(0, height, max(8, height // 12)):  # paving stones
        img[y, :left - kerb] = (125, 130, 133)
        img[y, right + kerb:] = (125, 130, 133)
    line = max(2, width // 320)
    dash, space = max(8, height // 12), max(8, height // 14)
    for i in range(1, len(LANES)):
        x = int((LANE_CENTRES[i - 1] + LANE_CENTRES[i]) / 2 * width)
        if LANE_DIRECTIONS[i - 1] != LANE_DIRECTIONS[i]:  # the double line between the directions
            img[:, x - 2 * line : x - line] = (40, 200, 230)
            img[:, x + line : x + 2 * line] = (40, 200, 230)
        else:
            for y in range(0, height, dash + space):
                img[y : y + dash, x - line // 2 : x - line // 2 + line] = (225, 225, 225)
    for i, x in enumerate((left // 2, right + (width - right) // 2)):  # trees on the pavements
        for y in range(height // 5 + i * height // 6, height, height // 3):
            cv2.circle(img, (x, y), max(6, min(left // 2 - 2, height // 14)), (40, 100, 50), -1, cv2.LINE_AA)
    return img


def vehicle_bgr(vehicle: Vehicle, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The vehicle's sprite for a picture of ``width`` x ``height`` (BGR, even size) and its
    mask; the plate at the bottom edge, facing the camera."""
    fw, fl = vehicle.size
    w, h = max(8, _even(fw * width)), max(8, _even(fl * height))
    img = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    body = tuple(int(c) for c in vehicle.colour)
    radius = max(2, w // 6)
    cv2.rectangle(mask, (0, radius), (w - 1, h - 1 - radius), 255, -1)
    cv2.rectangle(mask, (radius, 0), (w - 1 - radius, h - 1), 255, -1)
    for cx, cy in ((radius, radius), (w - 1 - radius, radius), (radius, h - 1 - radius), (w - 1 - radius, h - 1 - radius)):
        cv2.circle(mask, (cx, cy), radius, 255, -1)
    img[:] = body
    dark = (20, 15, 15)
    front_down = vehicle.direction == "inbound"  # its front faces the camera
    if vehicle.kind == "car":
        glass_h = h // 6
        # windscreen (towards the front) and rear window
        screen_y = h - h // 3 - glass_h if front_down else h // 6
        rear_y = h // 6 if front_down else h - h // 3 - glass_h
        cv2.rectangle(img, (w // 8, screen_y), (w - w // 8, screen_y + glass_h), dark, -1)
        cv2.rectangle(img, (w // 5, rear_y + glass_h // 4), (w - w // 5, rear_y + glass_h), dark, -1)
    else:  # a motorbike: a rider's helmet over a narrow body
        cv2.circle(img, (w // 2, h // 2), w // 3, (15, 15, 15), -1, cv2.LINE_AA)
        cv2.circle(img, (w // 2, h // 2), w // 3 - 2, (60, 60, 200) if vehicle.index % 2 else (200, 200, 60), 2)
    lamp = max(3, w // 10)
    colour = (200, 240, 250) if front_down else (30, 30, 220)
    cv2.rectangle(img, (2, h - lamp - 2), (2 + 2 * lamp, h - 3), colour, -1)
    cv2.rectangle(img, (w - 3 - 2 * lamp, h - lamp - 2), (w - 3, h - 3), colour, -1)
    plate_w = int(w * (0.82 if vehicle.kind == "car" else 0.94))
    plate = plate_image(vehicle.lines, plate_w)
    ph = plate.shape[0]
    top = h - ph - max(3, h // 40)
    left = (w - plate_w) // 2
    img[top : top + ph, left : left + plate_w] = plate
    return img, mask > 0


@dataclass(slots=True)
class _Sprite:
    vehicle: Vehicle
    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    mask: np.ndarray
    cmask: np.ndarray
    x0: int  #: left edge in the picture (even)


class TrafficScene:
    """Draws the street of ``options`` at any wall-clock time into I420 planes."""

    def __init__(self, options: TrafficOptions, width: int, height: int) -> None:
        self.options = options
        self.width, self.height = width, height
        self.vehicles = schedule(options)
        self.background = street_bgr(width, height)
        self._sprites = []
        for vehicle in self.vehicles:
            bgr, mask = vehicle_bgr(vehicle, width, height)
            y, u, v = _to_i420(bgr)
            x0 = _even(LANE_CENTRES[LANES.index(vehicle.lane)] * width - bgr.shape[1] / 2)
            self._sprites.append(_Sprite(vehicle, y, u, v, mask, np.ascontiguousarray(mask[::2, ::2]), x0))

    def background_i420(self) -> np.ndarray:
        """The empty street as a flat I420 buffer."""
        y, u, v = _to_i420(self.background)
        return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)])

    def in_view(self, at: float) -> list[tuple[Vehicle, float]]:
        """(vehicle, centre y as a fraction of the height) of the vehicles in the picture at ``at``."""
        return [(s.vehicle, y) for s, y in self._positions(at)]

    def _positions(self, at: float) -> list[tuple[_Sprite, float]]:
        opts = self.options
        loop = opts.loop_seconds
        phase = (at - opts.origin) % loop
        found = []
        for sprite in self._sprites:
            vehicle = sprite.vehicle
            elapsed = (phase - vehicle.enters) % loop
            if elapsed < vehicle.transit(opts.speed):
                found.append((sprite, vehicle.centre_y(elapsed, opts.speed)))
        return found

    def draw(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, at: float, top: int = 0) -> None:
        """Draw the vehicles in view at wall-clock time ``at`` over the street already in the
        planes, below row ``top`` (the panel of the clock)."""
        height = self.height
        for sprite, cy in self._positions(at):
            h, w = sprite.y.shape
            y0 = _even(cy * height - h / 2)
            a, b = max(y0, top), min(y0 + h, height)
            if a >= b:
                continue
            x0 = sprite.x0
            sa, sb = a - y0, b - y0
            np.copyto(y[a:b, x0 : x0 + w], sprite.y[sa:sb], where=sprite.mask[sa:sb])
            ca, cb, ch = a // 2, b // 2, sa // 2
            rows = cb - ca
            cw = w // 2
            where = sprite.cmask[ch : ch + rows]
            np.copyto(u[ca:cb, x0 // 2 : x0 // 2 + cw], sprite.u[ch : ch + rows], where=where)
            np.copyto(v[ca:cb, x0 // 2 : x0 // 2 + cw], sprite.v[ch : ch + rows], where=where)
