"""Evidence export speed (passthrough, multiples of real time) and media release speed (fps).

evidence   --minutes of 1280x720 25 fps H.264 (~2 Mbit/s, a 1 s GOP) as 2 s segments made
           by the recorder's own fragmenter (real wall-clock ``tfdt``), each a file on disk;
           the ``evidence`` format joins them into a signed package, reading every segment
           from disk (``asyncio.to_thread``) and checking its SHA-256, as the gateway does.
           Reported: recorded seconds per second of export (target >= 60x), MB/s, and the
           time ``verify_package`` takes to check the result.
watermark  the first --watermark-seconds of the same recording, exported as a watermarked
           copy only (decode, stamp request id/case/frame time through the ``watermark``
           mask filter, libx264 crf 18 veryfast). Frames per second and multiples of real time.
media      --media-seconds of 1280x720 with a face (scikit-image's astronaut, pasted into a
           street scene) in half of the frames; ``media-release`` with default settings:
           decode, detect (Haar faces + HOG people), pixelate, libx264 encode. Frames per second.

    python bench/export.py [--minutes 10] [--watermark-seconds 60] [--media-seconds 8] [--skip-media]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from citygate_plugins.export.evidence import write_evidence  # noqa: E402
from gateway.evidence.package import CameraExtract, ExportJob  # noqa: E402
from gateway.evidence.signing import Signer, verify_package  # noqa: E402
from gateway.live.fmp4 import Fragmenter  # noqa: E402
from gateway.media.h26x import ParameterSetKeeper  # noqa: E402
from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo  # noqa: E402
from gateway.recording.index import Segment  # noqa: E402

FPS, W, H, SEGMENT_SECONDS = 25, 1280, 720, 2


def encode_gop_packets(frames: int) -> list[bytes]:
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base, ctx.framerate, ctx.gop_size, ctx.bit_rate = Fraction(1, FPS), Fraction(FPS, 1), FPS, 2_000_000
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:repeat-headers=1"}
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    units: list[bytes] = []
    for i in range(frames):
        img = np.roll(base, i * 4, axis=1)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        units += [bytes(p) for p in ctx.encode(frame)]
    units += [bytes(p) for p in ctx.encode(None)]
    return units


def make_segments(directory: Path, minutes: float, start: float) -> list[Segment]:
    units = encode_gop_packets(SEGMENT_SECONDS * FPS)
    keeper = ParameterSetKeeper("h264")
    processed = [keeper.process(u) for u in units]
    info = StreamInfo(codec="h264", width=W, height=H, parameter_sets=keeper.parameter_sets)
    segments = []
    for n in range(int(minutes * 60 / SEGMENT_SECONDS)):
        t0 = start + n * SEGMENT_SECONDS
        fragmenter = Fragmenter(10**12, CLOCK_RATE, wallclock_timeline=True)
        parts = []
        for i, (data, key) in enumerate(processed):
            parts += fragmenter.push(MediaPacket(data=data, pts=i * 3600, dts=i * 3600, keyframe=key, wallclock=t0 + i / FPS, info=info))
        parts += fragmenter.flush()
        blob = parts[0].init.data + b"".join(p.data for p in parts)
        path = directory / f"seg-{n}.mp4"
        path.write_bytes(blob)
        segments.append(Segment(
            id=n + 1, camera="cam", start=t0, end=t0 + SEGMENT_SECONDS, duration=SEGMENT_SECONDS, bytes=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(), storage_key=str(path), backend="local", codec="h264", width=W, height=H,
            created_at=time.time(),
        ))
    return segments


async def bench_evidence(minutes: float, watermark_seconds: float) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    with tempfile.TemporaryDirectory(prefix="citygate-bench-export-") as tmp:
        tmp_path = Path(tmp)
        start = time.time() - 86400
        print(f"evidence: preparing {minutes:g} min of {W}x{H} {FPS} fps H.264 as {SEGMENT_SECONDS} s segments ...", flush=True)
        segments = await asyncio.to_thread(make_segments, tmp_path, minutes, start)
        total = sum(s.bytes for s in segments)
        os.sync()

        async def read(seg: Segment) -> bytes:
            return await asyncio.to_thread(Path(seg.storage_key).read_bytes)

        job = ExportJob(
            request={"id": 1}, cameras=(CameraExtract("cam", "cam", start, segments[-1].end, tuple(segments)),),
            produced_by="bench", produced_at=time.time(), signer=signer, read_segment=read, loop=asyncio.get_running_loop(),
        )
        out = tmp_path / "package.zip"
        t = time.perf_counter()
        await asyncio.to_thread(write_evidence, job, str(out))
        elapsed = time.perf_counter() - t
        recorded = sum(s.duration for s in segments)
        t = time.perf_counter()
        report = await asyncio.to_thread(verify_package, out, signer.public_key)
        verify_s = time.perf_counter() - t
        assert report.ok, report.problems
        print(f"evidence: {recorded:.0f} s recorded ({total / 1e6:.0f} MB, {len(segments)} segments) exported in {elapsed:.2f} s "
              f"= {recorded / elapsed:.0f}x real time ({total / 1e6 / elapsed:.0f} MB/s); target >= 60x: "
              f"{'met' if recorded / elapsed >= 60 else 'NOT met'}")
        print(f"evidence: verify_package checked {report.files_checked} files in {verify_s:.2f} s")

        from gateway.media.masking import instantiate_filters
        from gateway.plugins import load_plugins

        marked = segments[: max(1, int(watermark_seconds / SEGMENT_SECONDS))]
        job = ExportJob(
            request={"id": 1, "case_number": "BENCH-1"}, cameras=(CameraExtract("cam", "cam", start, marked[-1].end, tuple(marked)),),
            produced_by="bench", produced_at=time.time(), signer=signer, read_segment=read, loop=asyncio.get_running_loop(),
            options={"watermark": True, "keep-unaltered": False}, mask_filters=instantiate_filters(load_plugins().mask_filters()),
        )
        t = time.perf_counter()
        await asyncio.to_thread(write_evidence, job, str(tmp_path / "watermarked.zip"))
        elapsed = time.perf_counter() - t
        seconds = sum(s.duration for s in marked)
        print(f"watermark: {seconds:.0f} s of {W}x{H} ({seconds * FPS:.0f} frames) stamped and re-encoded in {elapsed:.1f} s = "
              f"{seconds * FPS / elapsed:.0f} frames/s = {seconds / elapsed:.1f}x real time")


async def bench_media(seconds: float) -> None:
    from citygate_plugins.export.media_release import MediaRelease
    from tests.evidence_fixtures import make_job, street, with_face

    frames = int(seconds * FPS)
    half = frames // 2
    faces = [with_face(street(W, H, shift=i), 300 + 3 * i, 120, size=360) for i in range(half)]
    empty = [street(W, H, shift=i) for i in range(frames - half)]
    signer = Signer(Ed25519PrivateKey.generate())
    segs = [faces[i : i + 50] for i in range(0, half, 50)] + [empty[i : i + 50] for i in range(0, len(empty), 50)]
    job = make_job({"cam": segs}, signer, time.time() - 600)
    with tempfile.TemporaryDirectory(prefix="citygate-bench-media-") as tmp:
        t = time.perf_counter()
        await MediaRelease().produce(job, str(Path(tmp) / "release.zip"))
        elapsed = time.perf_counter() - t
    print(f"media-release: {frames} frames of {W}x{H} (a face in {half}) in {elapsed:.1f} s = {frames / elapsed:.1f} frames/s "
          f"({frames / elapsed / FPS:.2f}x real time at {FPS} fps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--watermark-seconds", type=float, default=60)
    parser.add_argument("--media-seconds", type=float, default=8)
    parser.add_argument("--skip-media", action="store_true")
    args = parser.parse_args()
    print(f"cpu cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    asyncio.run(bench_evidence(args.minutes, args.watermark_seconds))
    if not args.skip_media:
        asyncio.run(bench_media(args.media_seconds))


if __name__ == "__main__":
    main()
