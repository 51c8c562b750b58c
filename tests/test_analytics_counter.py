"""The vehicle counter on synthetic pictures: exact counts when pictures are skipped, when
background subtraction splits a car, and when two cars drive side by side.

No camera and no gateway: numpy pictures of a four-lane street (grey road with a little
sensor noise, the lanes of the demo traffic camera) in which rectangles drive up and down
at known times, handed to ``VehicleCounter.analyze`` as the runner would (90 kHz
timestamps at 10 pictures per second), with pictures left out the way a loaded machine
leaves them out. The ground truth is where each rectangle's centre crosses the line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest

from citygate_plugins.analytics.vehicle_count import VehicleCounter, VehicleCountOptions
from gateway.interfaces import AnalyzerFrame
from gateway.media.packet import CLOCK_RATE

W, H, FPS = 320, 180, 10
ROAD, LINE_Y = 90, 0.62
LANES = {"lane-1": 0.2, "lane-2": 0.4, "lane-3": 0.6, "lane-4": 0.8}
OPTIONS = msgspec.convert({
    "region": [[0.1, 0.0], [0.9, 0.0], [0.9, 1.0], [0.1, 1.0]],
    "max-step": 0.12,
    "lines": [{
        "name": "street", "points": [[0.1, LINE_Y], [0.9, LINE_Y]], "directions": ["outbound", "inbound"],
        "lanes": [
            {"name": "lane-1", "span": [0.0, 0.25], "one-way": "inbound"},
            {"name": "lane-2", "span": [0.25, 0.5], "one-way": "inbound"},
            {"name": "lane-3", "span": [0.5, 0.75], "one-way": "outbound"},
            {"name": "lane-4", "span": [0.75, 1.0], "one-way": "outbound"},
        ],
    }],
}, VehicleCountOptions)
LEARN = 2.0  #: seconds of empty road before the first vehicle


@dataclass(frozen=True)
class Car:
    lane: str
    direction: str  #: inbound: down the picture
    enters: float  #: seconds after the start when its front reaches the picture's edge
    width: float = 0.14  #: of the picture's width
    length: float = 0.3  #: of its height
    speed: float = 0.5  #: heights per second
    luma: int = 200
    #: A band across the middle the colour of the road (fraction of its length): background
    #: subtraction sees two blobs, front and back.
    split: float = 0.0

    def centre_y(self, t: float) -> float:
        travelled = (t - self.enters) * self.speed
        return -self.length / 2 + travelled if self.direction == "inbound" else 1 + self.length / 2 - travelled

    def crosses(self) -> float:
        distance = LINE_Y + self.length / 2 if self.direction == "inbound" else 1 + self.length / 2 - LINE_Y
        return self.enters + distance / self.speed


def picture(cars: list[Car], t: float, rng: np.random.Generator) -> np.ndarray:
    gray = np.full((H, W), ROAD, np.int16) + rng.integers(-3, 4, (H, W), dtype=np.int16)
    for car in cars:
        cy = car.centre_y(t)
        if not -car.length < cy < 1 + car.length:
            continue
        x0, x1 = round((LANES[car.lane] - car.width / 2) * W), round((LANES[car.lane] + car.width / 2) * W)
        y0, y1 = round((cy - car.length / 2) * H), round((cy + car.length / 2) * H)
        gray[max(y0, 0): max(y1, 0), x0:x1] = car.luma
        if car.split:
            band = car.split * car.length * H / 2
            gray[max(round((cy * H) - band), 0): max(round((cy * H) + band), 0), x0:x1] = ROAD
    return np.clip(gray, 0, 255).astype(np.uint8)


def run(cars: list[Car], keep=lambda i: True, options: VehicleCountOptions = OPTIONS) -> tuple[Counter, list[dict], list[float]]:
    """Feed the pictures ``keep`` lets through; counts per (lane, direction), wrong-way
    payloads, and when each count says its vehicle crossed (seconds after the learning)."""
    counter = VehicleCounter("synthetic", options)
    rng = np.random.default_rng(7)
    end = max(car.enters + (1 + car.length) / car.speed for car in cars) + 1.0
    found = []
    for i in range(round((LEARN + end) * FPS)):
        t = i / FPS
        if i >= LEARN * FPS and not keep(i):
            continue
        gray = picture(cars, t - LEARN, rng)
        frame = AnalyzerFrame("synthetic", i * CLOCK_RATE // FPS, 1000.0 + t, W, H, lambda kind, g=gray: g)
        found += counter.analyze(frame)
    counts = Counter((o.payload["lane"], o.payload["direction"]) for o in found if o.kind == "count")
    wrong = [o.payload for o in found if o.kind == "wrong-direction"]
    times = [o.at - 1000.0 - LEARN for o in found if o.kind == "count"]
    return counts, wrong, times


def truth(cars: list[Car]) -> Counter:
    return Counter((car.lane, car.direction) for car in cars)


#: Every lane both ways over ten seconds: cars close behind each other in a lane (a gap of
#: a tenth of the height), two side by side in adjacent lanes, one wrong-way driver.
STREET = [
    Car("lane-1", "inbound", 0.0), Car("lane-2", "inbound", 0.0, luma=40),
    Car("lane-1", "inbound", 0.8, luma=40), Car("lane-3", "outbound", 0.3),
    Car("lane-4", "outbound", 0.5, luma=40), Car("lane-4", "outbound", 1.3),
    Car("lane-2", "inbound", 3.0, width=0.17), Car("lane-3", "outbound", 3.0, width=0.17, luma=40),
    Car("lane-1", "outbound", 5.0, luma=40), Car("lane-3", "outbound", 5.5, speed=0.8),
    Car("lane-2", "inbound", 6.0, width=0.08, length=0.2, speed=0.7),
]

SKIPPED = {
    "every picture": lambda i: True,
    "every 2nd skipped": lambda i: i % 2 == 0,
    "every 3rd skipped": lambda i: i % 3 != 2,
    "bursts of 5 missing": lambda i: i % 9 < 4,
    "bursts and irregular": lambda i: (i * 7919) % 11 not in (0, 3, 4) and not 40 <= i % 50 < 45,
}


@pytest.mark.parametrize("skipped", list(SKIPPED))
def test_counts_equal_the_ground_truth_when_pictures_are_skipped(skipped: str) -> None:
    counts, wrong, times = run(STREET, SKIPPED[skipped])
    assert counts == truth(STREET)
    assert wrong == [{"line": "street", "lane": "lane-1", "direction": "outbound", "allowed": "inbound",
                      "track": wrong[0]["track"] if wrong else None}]
    # each count is dated where the path crossed the line, between the pictures it was seen in
    # (within a few hundredths of a second; background subtraction trims a dark car's back a little)
    crossings = sorted(car.crosses() for car in STREET)
    assert all(abs(a - b) < 0.2 for a, b in zip(sorted(times), crossings, strict=True)), (sorted(times), crossings)


#: Cars with a band the colour of the road across their middle (a fifth of their length):
#: background subtraction sees each as two blobs a few pixels apart.
SPLIT = [
    Car("lane-2", "inbound", 0.0, split=0.2), Car("lane-3", "outbound", 0.5, split=0.2, luma=40),
    Car("lane-4", "outbound", 2.5, split=0.2, length=0.36),
]


@pytest.mark.parametrize("skipped", ["every picture", "every 2nd skipped", "bursts of 5 missing"])
def test_a_car_split_in_two_by_background_subtraction_counts_once(skipped: str) -> None:
    counts, _, _ = run(SPLIT, SKIPPED[skipped])
    assert counts == truth(SPLIT)
    # the split is real: without merging the blobs of a lane, each car counts twice
    unmerged, _, _ = run(SPLIT, SKIPPED[skipped], msgspec.structs.replace(OPTIONS, merge_gap=0.0))
    assert unmerged == Counter({key: 2 * n for key, n in truth(SPLIT).items()})


def test_two_cars_side_by_side_in_adjacent_lanes_count_as_two() -> None:
    # a twentieth of the width between them, entering and leaving together
    cars = [Car("lane-2", "inbound", 0.0, width=0.15), Car("lane-3", "inbound", 0.0, width=0.15, luma=40),
            Car("lane-3", "outbound", 2.5, width=0.15), Car("lane-4", "outbound", 2.5, width=0.15, luma=40)]
    for skipped in ("every picture", "bursts of 5 missing"):
        counts, wrong, _ = run(cars, SKIPPED[skipped])
        assert counts == truth(cars), skipped
        assert [(w["lane"], w["direction"]) for w in wrong] == [("lane-3", "inbound")]
