"""The visible watermark on exports: request id, case and each frame's own time, drawn
through the mask filter plugin ``watermark``, read back from the decoded output by OCR."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import zipfile
from datetime import UTC, datetime

import av
import cv2
import msgspec
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citygate_plugins.export.evidence import write_evidence
from citygate_plugins.export.media_release import Detector, MediaRelease, MediaReleaseSettings
from citygate_plugins.export.mp4 import write_mp4
from citygate_plugins.masking.watermark import WatermarkFilter
from gateway.evidence.package import join_segments
from gateway.evidence.signing import Signer, verify_package
from gateway.evidence.watermark import BAND_FONT_ROWS, band_scale
from tests.bitmap_ocr import read_line
from tests.evidence_fixtures import FPS, make_job, street, with_face

W, H = 1280, 720
START = datetime(2026, 11, 21, 9, 58, 30, tzinfo=UTC).timestamp()
PRODUCED = datetime(2026, 11, 21, 10, 5, 0, tzinfo=UTC).timestamp()


def frames(n: int, offset: int = 0) -> list[np.ndarray]:
    return [street(W, H, shift=offset + i) for i in range(n)]


def decode(data: bytes) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(data)) as container:
        return list(container.decode(video=0))


def band_lines(frame: av.VideoFrame, position: str = "bottom") -> list[str]:
    """The two watermark lines as OCR reads them."""
    luma = frame.to_ndarray(format="gray")
    scale = band_scale(frame.height)
    top = 0 if position == "top" else frame.height - BAND_FONT_ROWS * scale
    return [read_line(luma, scale, top + (1 + i * 9) * scale, scale) for i in range(2)]


def stamp(ts: float) -> str:
    when = datetime.fromtimestamp(ts, UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def ffprobe_frames(path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=codec_name,nb_read_frames", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    stream = json.loads(out.stdout)["streams"][0]
    assert stream["codec_name"] == "h264"
    return int(stream["nb_read_frames"])


def test_filter_shades_the_band_and_draws_text_only_inside_it() -> None:
    y = np.full((40, 200), 180, np.uint8)
    u = np.full((20, 100), 90, np.uint8)
    v = np.full((20, 100), 170, np.uint8)
    mask = np.zeros((40, 200), bool)
    mask[20:40, 10:190] = True
    cmask = mask[::2, ::2]
    WatermarkFilter().apply([y, u, v], [mask, cmask, cmask.copy()], WatermarkFilter.Options(text="REQ 7", shade=0.5))
    assert (y[~mask] == 180).all() and (u[~cmask] == 90).all(), "pixels outside the mask changed"
    band = y[mask]
    assert set(np.unique(band)) == {98, 235}, "band pixels are either shaded picture or white text"
    # the largest scale that fits: 20 rows hold one line of 9 font rows twice over
    assert read_line(y, 10 + 2, 20 + 2, 2) == "REQ 7"
    assert (u[cmask] == 109).all() and (v[cmask] == 149).all(), "chroma pulled halfway to neutral"


async def test_evidence_keeps_the_unaltered_file_and_adds_a_stamped_copy(tmp_path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    job = make_job(
        {"cam-7": [frames(25), frames(25, 25)]}, signer, START, options={"watermark": True},
        request_id=42, case_number="2026-K-7", produced_at=PRODUCED,
    )
    path = tmp_path / "package.zip"
    manifest = await asyncio.to_thread(write_evidence, job, str(path))

    report = await asyncio.to_thread(verify_package, path, signer.public_key)
    assert report.ok, report.problems
    with zipfile.ZipFile(path) as zf:
        assert {"cameras/cam-7.mp4", "watermarked/cam-7.mp4"} <= set(zf.namelist())
        unaltered, stamped = zf.read("cameras/cam-7.mp4"), zf.read("watermarked/cam-7.mp4")
        (tmp_path / "w.mp4").write_bytes(stamped)
    # the unaltered file is still the recorded bytes, joined
    joined = io.BytesIO()
    await asyncio.to_thread(join_segments, job, job.cameras[0], lambda _p, _remasked: _Sink(joined), lambda n: f"f{n}")
    assert unaltered == joined.getvalue()
    assert await asyncio.to_thread(ffprobe_frames, tmp_path / "w.mp4") == 50

    decoded = decode(stamped)
    assert len(decoded) == 50
    for i in (0, 1, 24, 25, 49):  # every frame says which request released it and when it was filmed
        header, line = band_lines(decoded[i])
        assert header == "REQUEST 42  CASE 2026-K-7  EXPORTED 2026-11-21 10:05Z", header
        assert line == f"cam-7  {stamp(START + i / FPS)}", line
    # the picture above the band is the recording (re-encoded, not altered)
    original = decode(unaltered)
    above = slice(0, H - BAND_FONT_ROWS * band_scale(H) - 8)
    diff = np.abs(decoded[10].to_ndarray(format="gray")[above].astype(int) - original[10].to_ndarray(format="gray")[above].astype(int))
    assert diff.mean() < 2.0

    cam = manifest["cameras"][0]
    assert [f["content"] for f in cam["files"]] == ["recorded fragments, unaltered", "watermarked copy: decoded, stamped and re-encoded"]
    assert manifest["options"]["watermark"] is True and manifest["processing"]["watermark"]["filter"] == "watermark"
    assert [s["id"] for s in cam["files"][1]["source_segments"]] == [s.id for s in job.cameras[0].segments]


async def test_watermark_only_leaves_the_unaltered_file_out(tmp_path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    job = make_job({"cam": [frames(25)]}, signer, START, options={"watermark": True, "keep-unaltered": False, "watermark-position": "top"})
    path = tmp_path / "package.zip"
    manifest = await asyncio.to_thread(write_evidence, job, str(path))
    with zipfile.ZipFile(path) as zf:
        videos = [n for n in zf.namelist() if n.endswith(".mp4")]
        stamped = zf.read("watermarked/cam.mp4")
    assert videos == ["watermarked/cam.mp4"]
    assert manifest["processing"]["unaltered"] == "not included"
    assert band_lines(decode(stamped)[3], "top")[1] == f"cam  {stamp(START + 3 / FPS)}"
    assert (await asyncio.to_thread(verify_package, path, signer.public_key)).ok


def test_no_video_at_all_is_refused() -> None:
    from citygate_plugins.export.evidence import EvidenceOptions

    with pytest.raises(msgspec.ValidationError, match="keep-unaltered = false needs watermark = true"):
        msgspec.convert({"keep-unaltered": False}, EvidenceOptions)


async def test_mp4_clip_with_watermark(tmp_path) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    job = make_job({"cam": [frames(20)]}, signer, START, options={"watermark": True}, request_id=9, case_number="X/1")
    out = tmp_path / "clip.mp4"
    await asyncio.to_thread(write_mp4, job, str(out))
    assert await asyncio.to_thread(ffprobe_frames, out) == 20
    header, line = band_lines(decode(out.read_bytes())[19])
    assert header.startswith("REQUEST 9  CASE X/1  EXPORTED ") and line == f"cam  {stamp(START + 19 / FPS)}"


async def test_media_release_with_watermark_still_hides_faces(tmp_path) -> None:
    # the geometry of test_media_release (small picture: the band's font at scale 1)
    clip = [with_face(street(480, 270, shift=i), 120 + 2 * i, 40, size=170) for i in range(20)]
    signer = Signer(Ed25519PrivateKey.generate())
    settings = MediaReleaseSettings(watermark=True)
    job = make_job({"cam": [clip]}, signer, START, options=msgspec.to_builtins(settings), request_id=5)
    path = tmp_path / "release.zip"
    await MediaRelease().produce(job, str(path))
    with zipfile.ZipFile(path) as zf:
        out = decode(zf.read("cameras/cam.mp4"))
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["processing"]["watermark"]["filter"] == "watermark"
    assert band_lines(out[7])[1] == f"cam  {stamp(START + 7 / FPS)}"
    # the face is gone: the detector at its lowest threshold finds nothing where it was
    detector = Detector(MediaReleaseSettings(people=False))
    for source, frame in zip(clip, out):
        truth = detector.faces(cv2.cvtColor(source, cv2.COLOR_BGR2GRAY))
        assert truth, "the clip must show a face the detector finds"
        found = detector.faces(cv2.cvtColor(frame.to_ndarray(format="bgr24"), cv2.COLOR_BGR2GRAY), min_neighbors=1)
        centres = [(x + w / 2, y + h / 2) for x, y, w, h in found]
        assert not [c for c in centres for tx, ty, tw, th in truth if tx <= c[0] <= tx + tw and ty <= c[1] <= ty + th]


class _Sink:
    """A context manager writing into a BytesIO (for ``join_segments``)."""

    def __init__(self, buffer: io.BytesIO) -> None:
        self.buffer = buffer

    def __enter__(self) -> io.BytesIO:
        return self.buffer

    def __exit__(self, *exc: object) -> None:
        return None


def test_time_unknown_frames_say_so() -> None:
    from gateway.evidence.watermark import Watermarker, WatermarkOptions

    marker = Watermarker({"id": 1, "case_number": "C"}, time.time(), "cam", WatermarkOptions(watermark=True), {"watermark": WatermarkFilter()})
    assert marker.lines(None)[1] == "cam  time unknown"
    with pytest.raises(ValueError, match="'watermark' mask filter is not installed"):
        Watermarker({"id": 1, "case_number": "C"}, time.time(), "cam", WatermarkOptions(watermark=True), {})
