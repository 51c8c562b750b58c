"""Face detectors of the media release on a labelled set: recall per yaw angle, precision.

    .venv/bin/python bench/faces.py [--sizes 72,120,180] [--seed 1] [--sheet /tmp/faces.png]

The set (``tests/face_fixtures.py`` says where each picture comes from): the real frontal
faces the installed wheels ship (scikit-image's astronaut, matplotlib's Grace Hopper)
turned synthetically by 0..90 degrees of yaw both ways, at several sizes, pasted into a
640x360 street; the cameraman (a real face seen from the side and above, as it is); the
100 faces of scikit-image's LFW subset (25x25, upscaled x3); and pictures without faces
(streets, scikit-image's scenes, the 100 LFW non-faces) for false positives.

A face counts as found when the detections, grown by the release's ``margin`` as the
release grows them, cover at least 80 % of its labelled box: that is a face the release
makes unidentifiable. A detection counts as false when less than 20 % of it lies on any
labelled face. Precision = true detections / all detections (a face found both in the whole
frame and in a tile counts twice). Times per frame are CPU-bound and vary with the load.

Measured on 2 shared cores (load 4-9), seed 1, 181 faces: faces turned 60 degrees found by
Haar 2/12, BlazeFace full-range 8/12, BlazeFace with 2x2 tiles 10/12; all faces: Haar
133 (73.5 %, precision 99.4 %), BlazeFace 88 (48.6 %: it misses the small LFW faces),
BlazeFace with tiles and Haar, the default, 157 (86.7 %, precision 98.4 %).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from citygate_plugins.export.media_release import Detector, MediaReleaseSettings, grow  # noqa: E402
from tests.evidence_fixtures import street  # noqa: E402
from tests.face_fixtures import cameraman, lfw, paste, real_heads, save_contact_sheet, turned_face_in  # noqa: E402

W, H = 640, 360
YAWS = (0, 15, 30, 45, 60, 75, 90)
COVERED = 0.8
Box = tuple[int, int, int, int]


def build(sizes: list[int], seed: int) -> list[tuple[str, np.ndarray, list[Box]]]:
    """(group, BGR picture, labelled face boxes) for every picture of the set."""
    rnd = random.Random(seed)
    items: list[tuple[str, np.ndarray, list[Box]]] = []
    for head in real_heads():
        for yaw in YAWS:
            for sign in ((1,) if yaw == 0 else (1, -1)):
                for size in sizes:
                    x, y = rnd.randrange(0, W - size), rnd.randrange(0, H - size)
                    frame, box = turned_face_in(street(W, H, shift=rnd.randrange(90)), head, sign * yaw, x, y, size)
                    items.append((f"yaw {yaw:2d}", frame, [box]))
    man = cameraman()
    for size in sizes:
        x, y = rnd.randrange(0, W - size), rnd.randrange(0, H - size)
        frame, box = turned_face_in(street(W, H, shift=rnd.randrange(90)), man, 0, x, y, size)
        items.append(("cameraman (real, turned)", frame, [box]))
    for face in lfw(faces=True):
        size = 75
        x, y = rnd.randrange(0, W - size), rnd.randrange(0, H - size)
        big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        frame = paste(street(W, H, shift=rnd.randrange(90)), big, np.full((size, size), 255, np.uint8), x, y)
        items.append(("lfw faces (25 px, x3)", frame, [(x + 8, y + 8, size - 16, size - 16)]))
    for shift in range(0, 90, 9):
        items.append(("no face: street", street(W, H, shift=shift), []))
    from skimage import data
    from skimage.util import img_as_ubyte

    scenes = [getattr(data, name)() for name in ("coffee", "chelsea", "rocket", "horse", "brick", "grass", "gravel", "hubble_deep_field", "page")]
    for picture in [*scenes, data.stereo_motorcycle()[0]]:
        picture = img_as_ubyte(picture)
        picture = cv2.cvtColor(picture[..., :3], cv2.COLOR_RGB2BGR) if picture.ndim == 3 else cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
        items.append(("no face: scenes", cv2.resize(picture, (W, H)), []))
    for i, other in enumerate(lfw(faces=False)):
        if i % 4:
            continue
        size = 75
        x, y = rnd.randrange(0, W - size), rnd.randrange(0, H - size)
        big = cv2.resize(other, (size, size), interpolation=cv2.INTER_CUBIC)
        items.append(("no face: lfw non-faces", paste(street(W, H, shift=i), big, np.full((size, size), 255, np.uint8), x, y), []))
    return items


def coverage(truth: Box, found: list[Box], margin: float) -> float:
    """The share of ``truth`` that the grown detections cover."""
    mask = np.zeros((H, W), np.uint8)
    for box in found:
        x, y, w, h = grow(box, margin, W, H)
        mask[y : y + h, x : x + w] = 1
    x, y, w, h = truth
    region = mask[max(0, y) : y + h, max(0, x) : x + w]
    return float(region.mean()) if region.size else 0.0


def on_a_face(box: Box, truths: list[Box]) -> bool:
    x, y, w, h = box
    for tx, ty, tw, th in truths:
        ix = max(0, min(x + w, tx + tw) - max(x, tx))
        iy = max(0, min(y + h, ty + th) - max(y, ty))
        if ix * iy >= 0.2 * w * h:
            return True
    return False


def run(name: str, settings: MediaReleaseSettings, items: list[tuple[str, np.ndarray, list[Box]]]) -> dict:
    found_per_group: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    true_dets = false_dets = 0
    with Detector(settings) as detector:
        detector.find_faces(items[0][1])  # warm-up (graph start)
        started = time.perf_counter()
        for group, frame, truths in items:
            found = detector.find_faces(frame)
            for truth in truths:
                counts = found_per_group[group]
                counts[1] += 1
                counts[0] += coverage(truth, found, settings.margin) >= COVERED
            for box in found:
                if on_a_face(box, truths):
                    true_dets += 1
                else:
                    false_dets += 1
        elapsed = time.perf_counter() - started
        described = detector.describe()["faces"]
    return {
        "name": name, "groups": dict(found_per_group), "true": true_dets, "false": false_dets,
        "ms": 1000 * elapsed / len(items), "faces": described,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="72,120,180", help="head heights in pixels in the 640x360 frame")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sheet", help="write a contact sheet of the set (PNG) here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    items = build(sizes, args.seed)
    if args.sheet:
        save_contact_sheet(Path(args.sheet), [i[1] for i in items], [i[2] for i in items])
    faces = sum(len(i[2]) for i in items)
    print(f"cpu cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    print(f"set: {len(items)} pictures of {W}x{H}, {faces} labelled faces, {sum(not i[2] for i in items)} pictures without a face; "
          f"head heights {sizes} px (the face is ~60 % of it)")
    contenders = [
        ("haar", MediaReleaseSettings(face_detector="haar", people=False)),
        ("blazeface full-range", MediaReleaseSettings(face_detector="mediapipe", face_tiles=1, haar_too=False, people=False)),
        ("blazeface short-range", MediaReleaseSettings(face_detector="mediapipe", face_model="short-range", face_tiles=1, haar_too=False, people=False)),
        ("blazeface full 2x2 tiles", MediaReleaseSettings(face_detector="mediapipe", face_tiles=2, haar_too=False, people=False)),
        ("blazeface full + haar", MediaReleaseSettings(face_tiles=1, people=False)),
        ("blazeface tiles + haar (default)", MediaReleaseSettings(people=False)),
    ]
    results = [run(name, settings, items) for name, settings in contenders]
    groups = list(dict.fromkeys(g for g, _, t in items if t))
    width = max(len(g) for g in groups) + 2
    print()
    print("recall: faces the release would mask (>= 80 % of the face box covered)")
    print(" " * width + "".join(f"{r['name']:>33}" for r in results))
    for group in groups:
        cells = []
        for r in results:
            hit, total = r["groups"].get(group, [0, 0])
            cells.append(f"{hit:3d}/{total:<3d} {100 * hit / total:5.1f} %" if total else "-")
        print(f"{group:<{width}}" + "".join(f"{c:>33}" for c in cells))
    print(f"{'all faces':<{width}}" + "".join(
        f"{sum(h for h, _ in r['groups'].values()):3d}/{faces:<3d} {100 * sum(h for h, _ in r['groups'].values()) / faces:5.1f} %".rjust(33)
        for r in results))
    print()
    for r in results:
        total = r["true"] + r["false"]
        precision = r["true"] / total if total else 1.0
        turned = [r["groups"][g] for g in groups if g.startswith("yaw") and int(g.split()[1]) >= 60]
        turned_recall = sum(h for h, _ in turned) / max(1, sum(t for _, t in turned))
        print(f"{r['name']:<33} precision {precision:6.1%} ({r['true']} true, {r['false']} false detections); "
              f"recall at yaw >= 60: {turned_recall:6.1%}; {r['ms']:.1f} ms per {W}x{H} frame")
    print()
    print("detectors as the manifest names them:")
    for r in results:
        print(f"  {r['name']}: {'; '.join(r['faces'])}")


if __name__ == "__main__":
    main()
