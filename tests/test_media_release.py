"""Media release: faces made unidentifiable in every frame, frames without people untouched;
a face turned 60 degrees (which the Haar cascades miss) found by BlazeFace from the
mediapipe wheel, with no download; the Haar cascades alone when mediapipe is missing.

The clips are built in the test: scikit-image's public-domain astronaut portrait pasted
into a synthetic street (moving), then the street alone; Grace Hopper's portrait (from
matplotlib's sample data) turned 60 degrees (``tests/face_fixtures.py``); cut into segments
by the recorder's own fragmenter."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import av
import cv2
import msgspec
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citygate_plugins.export.media_release import Detector, MediaRelease, MediaReleaseSettings
from gateway.errors import PluginError
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
    assert detector_info["faces"][0].startswith("MediaPipe BlazeFace full-range") and "fallback" not in detector_info
    assert "haarcascade_frontalface_default.xml" in " ".join(detector_info["faces"])
    assert detector_info["settings"]["min-neighbors"] == settings.min_neighbors and "opencv" in detector_info["library"]
    (tmp_path / "cam.mp4").write_bytes(video)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "json",
                            str(tmp_path / "cam.mp4")], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and not probe.stderr.strip(), probe.stderr
    assert int(json.loads(probe.stdout)["streams"][0]["nb_read_frames"]) == FACE_FRAMES + EMPTY_FRAMES

    output = decode(video)
    assert len(output) == len(source) == FACE_FRAMES + EMPTY_FRAMES
    detector = Detector(MediaReleaseSettings(face_detector="haar"))  # the Haar cascades, as an independent check
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


# --- a face turned 60 degrees: BlazeFace (mediapipe wheel) finds it, Haar alone does not ---

TURNED = 10  # frames of a person standing still, head turned 60 degrees
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto", "urllib.Request")


def turned_clip() -> tuple[list[np.ndarray], tuple[int, int, int, int]]:
    from tests.face_fixtures import real_heads, turned_face_in

    hopper = real_heads()[1]
    frame, box = turned_face_in(street(W, H, shift=7), hopper, 60, 170, 40, 150)
    return [frame] * TURNED, box


def near(found, box) -> list:
    """Detections whose centre lies on the face's box (grown by half on every side)."""
    x, y, w, h = box
    return [f for f in found if x - w / 2 <= f[0] + f[2] / 2 <= x + 1.5 * w and y - h / 2 <= f[1] + f[3] / 2 <= y + 1.5 * h]


def box_psnr(a: np.ndarray, b: np.ndarray, box) -> float:
    x, y, w, h = box
    return psnr(a[y : y + h, x : x + w], b[y : y + h, x : x + w])


def installed_model(filename: str) -> tuple[Path, str]:
    """The model's path in the installed mediapipe wheel and the SHA-256 its RECORD gives."""
    dist = importlib.metadata.distribution("mediapipe")
    entry = next(f for f in dist.files or () if f.name == filename and f.parent.name == "face_detection")
    assert entry.hash is not None and entry.hash.mode == "sha256"
    digest = entry.hash.value
    return Path(str(entry.locate())), base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex()


async def release(job, tmp_path: Path, name: str, settings: MediaReleaseSettings) -> tuple[list[np.ndarray], dict]:
    job.options.clear()
    job.options.update(msgspec.to_builtins(settings))
    path = tmp_path / name
    await MediaRelease().produce(job, str(path))
    with zipfile.ZipFile(path) as zf:
        return decode(zf.read("cameras/cam.mp4")), json.loads(zf.read("manifest.json"))


async def test_face_turned_60_degrees_is_masked_where_haar_alone_misses_it(tmp_path):
    clip, box = turned_clip()
    signer = Signer(Ed25519PrivateKey.generate())
    job = make_job({"cam": [clip]}, signer, time.time() - 60, options={})
    source = decode(await job.read_segment(job.cameras[0].segments[0]))
    haar = Detector(MediaReleaseSettings(face_detector="haar", people=False))
    found_by_haar = [i for i, f in enumerate(source) if near(haar.faces(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)), box)]
    assert not found_by_haar, "the Haar cascades must miss this face"

    # Haar alone: the face is released as it was
    out, manifest = await release(job, tmp_path, "haar.zip", MediaReleaseSettings(face_detector="haar", people=False))
    assert manifest["processing"]["anonymisation"]["faces"] == [f"Haar cascade {n}" for n in MediaReleaseSettings().face_cascades]
    assert min(box_psnr(o, s, box) for o, s in zip(out, source)) > 30  # re-encoded, nothing masked

    # the default (BlazeFace from the mediapipe wheel, Haar beside it): the face is pixelated in every frame
    out, manifest = await release(job, tmp_path, "default.zip", MediaReleaseSettings(people=False))
    assert len(out) == TURNED and manifest["cameras"][0]["anonymisation"]["frames_masked"] == TURNED
    model_path, model_sha256 = installed_model("face_detection_full_range_sparse.tflite")
    blazeface = manifest["processing"]["anonymisation"]["faces"][0]
    assert blazeface.startswith("MediaPipe BlazeFace full-range (mediapipe 0.10.21") and model_sha256 in blazeface, blazeface
    assert hashlib.sha256(model_path.read_bytes()).hexdigest() == model_sha256  # the wheel's file, unchanged
    strict = Detector(MediaReleaseSettings(face_detector="mediapipe", face_score=0.2, haar_too=False, people=False))
    try:
        for o, s in zip(out, source):
            assert box_psnr(o, s, box) < 22  # the face's pixels were changed
            assert near(strict.find_faces(s), box), "BlazeFace finds the face in the source"
            assert not near(strict.find_faces(o), box)  # and not in the release, even at a low threshold
            assert not near(haar.faces(cv2.cvtColor(o, cv2.COLOR_BGR2GRAY), min_neighbors=1), box)
    finally:
        strict.close()


def test_blazeface_downloads_nothing(tmp_path):
    """The detector runs with the network unreachable (its own network namespace, where
    ``unshare`` can make one) and an audit hook that fails any socket or URL opening."""
    script = tmp_path / "offline.py"
    script.write_text(f"""
import json, sys
attempts = []
def hook(event, args):
    if event in {NETWORK_EVENTS!r}:
        attempts.append(f"{{event}} {{args!r}}"[:200])
        raise RuntimeError("network access attempted: " + event)
sys.addaudithook(hook)
from citygate_plugins.export.media_release import Detector, MediaReleaseSettings
from tests.test_media_release import turned_clip
clip, box = turned_clip()
with Detector(MediaReleaseSettings(face_detector="mediapipe", people=False)) as detector:
    found = detector.find_faces(clip[0])
    faces = detector.describe()["faces"]
print(json.dumps({{"found": found, "box": box, "faces": faces, "attempts": attempts}}))
""")
    command = [sys.executable, str(script)]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-n", *command]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert near(result["found"], result["box"]) and "BlazeFace" in result["faces"][0]


async def test_haar_fallback_when_mediapipe_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    frontal = with_face(street(W, H), 150, 40, size=170)
    with Detector(MediaReleaseSettings(people=False)) as detector:
        described = detector.describe()
        assert detector.blazeface is None and "mediapipe cannot be imported" in described["fallback"]
        assert described["faces"] == [f"Haar cascade {n}" for n in MediaReleaseSettings().face_cascades]
        assert detector.find_faces(frontal), "the Haar cascades still find a frontal face"
    with pytest.raises(PluginError, match='face-detector = "mediapipe" but mediapipe cannot be imported'):
        Detector(MediaReleaseSettings(face_detector="mediapipe"))
