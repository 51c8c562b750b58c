"""Media release: faces made unidentifiable in every frame, frames without people untouched.

The clip is built in the test: scikit-image's public-domain astronaut portrait pasted
into a synthetic street (moving), then the street alone, cut into segments by the
recorder's own fragmenter."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import zipfile

import av
import cv2
import msgspec
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citygate_plugins.export.media_release import Detector, MediaRelease, MediaReleaseSettings
from gateway.evidence.signing import Signer, verify_package
from tests.evidence_fixtures import make_job, street, with_face

W, H = 480, 270
FACE_FRAMES = EMPTY_FRAMES = 40


def decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def inside(box, point) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


async def test_faces_are_gone_and_empty_frames_unchanged(tmp_path):
    faces = [with_face(street(W, H, shift=i), 120 + 2 * i, 40, size=170) for i in range(FACE_FRAMES)]
    empty = [street(W, H, shift=FACE_FRAMES + i) for i in range(EMPTY_FRAMES)]
    signer = Signer(Ed25519PrivateKey.generate())
    settings = MediaReleaseSettings()
    job = make_job({"cam": [faces, empty]}, signer, time.time() - 60, options=msgspec.to_builtins(settings))
    source = []
    for seg in job.cameras[0].segments:
        source += decode(await job.read_segment(seg))
    path = tmp_path / "release.zip"
    started = time.monotonic()
    await MediaRelease().produce(job, str(path))
    elapsed = time.monotonic() - started

    report = await asyncio.to_thread(verify_package, path, signer.public_key)
    assert report.ok, report.problems
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        video = zf.read("cameras/cam.mp4")
    detector_info = manifest["processing"]["anonymisation"]
    assert "haarcascade_frontalface_default.xml" in " ".join(detector_info["faces"])
    assert detector_info["settings"]["min-neighbors"] == settings.min_neighbors and "opencv" in detector_info["library"]
    (tmp_path / "cam.mp4").write_bytes(video)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "json",
                            str(tmp_path / "cam.mp4")], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr
    assert int(json.loads(probe.stdout)["streams"][0]["nb_read_frames"]) == FACE_FRAMES + EMPTY_FRAMES

    output = decode(video)
    assert len(output) == len(source) == FACE_FRAMES + EMPTY_FRAMES
    detector = Detector(settings)
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in source]
    truth = [detector.faces(g) for g in gray[:FACE_FRAMES]]
    assert sum(bool(t) for t in truth) >= FACE_FRAMES * 0.9, "the clip must show a face the detector finds"
    # the same detector, at the lowest threshold, finds no face where the faces were
    for i in range(FACE_FRAMES):
        found = detector.faces(cv2.cvtColor(output[i], cv2.COLOR_BGR2GRAY), min_neighbors=1)
        leaks = [f for f in found for t in truth[i] if inside(t, (f[0] + f[2] / 2, f[1] + f[3] / 2))]
        assert not leaks, (i, leaks, truth[i])
        assert psnr(output[i], source[i]) < 35  # it was changed
    # frames without people (beyond the hold after the last face) are the source, re-encoded at high quality
    for i in range(FACE_FRAMES + settings.hold_frames + 1, FACE_FRAMES + EMPTY_FRAMES):
        assert psnr(output[i], source[i]) > 35, i
    stats = manifest["cameras"][0]["anonymisation"]
    assert stats["frames"] == FACE_FRAMES + EMPTY_FRAMES
    assert FACE_FRAMES <= stats["frames_masked"] <= FACE_FRAMES + settings.hold_frames
    print(f"media release: {len(output) / elapsed:.1f} frames/s at {W}x{H}")
