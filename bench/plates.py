"""Number-plate reading: reads per second, CPU per read, and accuracy on synthetic plates.

    .venv/bin/python bench/plates.py [--size 1280x720] [--passes 3] [--fps 5]

Pictures: ``tests.plate_fixtures.street`` with each plate of ``PLATES`` (Ukrainian, Polish,
Vietnamese, two-line motorbike plates among them), passed through H.264 (libx264, CRF 23)
so the reader sees compressed pictures as from a camera. Figures, in this process, one
thread (the analyzer's own: ONNX Runtime with one intra-op thread):

* ``read``: one OCR pass over every candidate of a picture holding a plate: reads per
  second, thread CPU per read, and how many plates came out exactly (canonical text);
* ``empty``: a picture without a plate (finding candidates only): CPU per picture;
* ``camera``: the analyzer as a camera feeds it (``--fps`` pictures per second, each plate in
  view for two seconds, a second of empty road between; pictures handed over as decoded YUV
  and converted as the runner does): CPU as % of one core. Decoding the camera's stream is
  the runner's, shared by all analyzers of the camera, and not counted here.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from citygate_plugins.analytics.plate_reader import PlateReader, PlateReaderOptions  # noqa: E402
from gateway.analytics.runner import frame_converter  # noqa: E402 - the runner's own YUV conversion
from gateway.interfaces import AnalyzerFrame  # noqa: E402
from gateway.plates.text import normalise  # noqa: E402
from tests.plate_fixtures import PLATES, street  # noqa: E402


def h264_roundtrip(pictures: list[np.ndarray], crf: int = 23) -> list[np.ndarray]:
    """The pictures as a camera's H.264 would deliver them (BGR)."""
    height, width = pictures[0].shape[:2]
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25, 1)
    enc.options = {"preset": "veryfast", "crf": str(crf), "tune": "zerolatency"}
    dec = av.CodecContext.create("h264", "r")
    out: list[np.ndarray] = []
    for i, pic in enumerate([*pictures, None]):
        frame = None
        if pic is not None:
            frame = av.VideoFrame.from_ndarray(pic, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
        for packet in enc.encode(frame):
            out += [f.to_ndarray(format="bgr24") for f in dec.decode(packet)]
    out += [f.to_ndarray(format="bgr24") for f in dec.decode(None)]
    return out


def frame_of(picture: np.ndarray, at: float) -> AnalyzerFrame:
    import cv2

    def convert(kind: str) -> np.ndarray:
        return picture if kind == "bgr" else cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)

    return AnalyzerFrame("bench", int(at * 90000), at, picture.shape[1], picture.shape[0], convert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720", help="picture size, WxH (default 1280x720)")
    parser.add_argument("--passes", type=int, default=3, help="times each plate picture is read (default 3)")
    parser.add_argument("--fps", type=float, default=5.0, help="analyzer rate for the camera figure (default 5)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    plate_width = max(90, width * 150 // 640)  # a plate as wide as in the tests' 640x360 scene, scaled
    pictures = h264_roundtrip([street(lines, width, height, plate_width) for lines, _ in PLATES] + [street(None, width, height)])
    plates, empty = pictures[: len(PLATES)], pictures[-1]

    t0 = time.perf_counter()
    reader = PlateReader("bench", PlateReaderOptions(repeat_seconds=0))
    print(f"model load: {time.perf_counter() - t0:.2f} s (recognition model from the rapidocr wheel)")
    reader.read_picture(plates[0], frame_of(plates[0], 0).gray)  # warm-up

    exact, reads, cpu, wall = 0, 0, 0.0, 0.0
    wrong: list[str] = []
    for picture, (lines, truth) in zip(plates, PLATES, strict=True):
        gray = frame_of(picture, 0).gray
        for i in range(args.passes):
            c0, w0 = time.thread_time(), time.perf_counter()
            found = reader.read_picture(picture, gray)
            cpu += time.thread_time() - c0
            wall += time.perf_counter() - w0
            reads += 1
            texts = [normalise(r.lines).text for r in found]
            if truth in texts:
                exact += 1
            elif i == 0:
                wrong.append(f"{' / '.join(lines)} read as {texts or 'nothing'}")
    print(f"read   {width}x{height}: {reads / wall:.1f} reads/s, {cpu / reads * 1000:.0f} ms CPU per read, "
          f"{reader.ocr_passes / (reads + 1):.2f} OCR passes per picture; "
          f"exact {exact}/{reads} ({100 * exact / reads:.0f} %)")
    for line in wrong:
        print(f"       missed: {line}")

    gray = frame_of(empty, 0).gray
    c0 = time.thread_time()
    for _ in range(20):
        reader.read_picture(empty, gray)
    print(f"empty  {width}x{height}: {(time.thread_time() - c0) / 20 * 1000:.1f} ms CPU per picture (finding candidates)")

    # a camera: each plate two seconds in view, one second of empty road, at --fps
    analyzer = PlateReader("bench", PlateReaderOptions())
    frames: list[np.ndarray] = []
    for picture in plates:
        frames += [picture] * int(2 * args.fps) + [empty] * int(args.fps)
    start = 1_000_000.0
    reported: list[str] = []
    # pictures as the runner hands them over: decoded YUV, converted on first use (timed)
    yuv = {id(p): av.VideoFrame.from_ndarray(p, format="bgr24").reformat(format="yuv420p") for p in [*plates, empty]}
    c0 = time.thread_time()
    for i, picture in enumerate(frames):
        decoded = yuv[id(picture)]
        frame = AnalyzerFrame("bench", i, start + i / args.fps, width, height, frame_converter(decoded))
        reported += [o.payload["plate"] for o in analyzer.analyze(frame)]
    cpu = time.thread_time() - c0
    seconds = len(frames) / args.fps
    truth = [t for _, t in PLATES]
    print(f"camera {width}x{height} at {args.fps:g} fps: {100 * cpu / seconds:.1f} % of a core over {seconds:.0f} s "
          f"({len(truth)} plates passing), {cpu / max(len(reported), 1) * 1000:.0f} ms CPU per reported read; "
          f"reported {len(reported)}, exact {sum(t in reported for t in truth)}/{len(truth)}")


if __name__ == "__main__":
    main()
