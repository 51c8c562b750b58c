"""Clips for export tests: fMP4 segments like the recorder stores them (wall-clock media
time, self-contained), built from pictures, and a job that reads them.

The face picture is scikit-image's ``data.astronaut()`` (Eileen Collins, NASA; public
domain), which ships inside the scikit-image wheel: no download at test time.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from fractions import Fraction

import av
import cv2
import numpy as np

from gateway.evidence.package import CameraExtract, ExportJob
from gateway.evidence.signing import Signer
from gateway.live.fmp4 import Fragmenter
from gateway.media.h26x import ParameterSetKeeper
from gateway.media.packet import CLOCK_RATE, MediaPacket, StreamInfo
from gateway.recording.index import Segment

FPS = 25
TIME_BASE = Fraction(1, 90000)
W, H = 640, 360


def street(width: int = W, height: int = H, shift: int = 0) -> np.ndarray:
    """A scene without people: sky, buildings, a road (BGR)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (200, 170, 120)
    img[height * 2 // 3 :] = (70, 70, 70)
    for i, x in enumerate(range(-shift % 90 - 90, width, 90)):
        top = height // 4 + (i * 37) % (height // 4)
        cv2.rectangle(img, (x, top), (x + 70, height * 2 // 3), (60 + i * 20 % 120, 90, 140), -1)
        for wy in range(top + 10, height * 2 // 3 - 15, 25):
            cv2.rectangle(img, (x + 10, wy), (x + 25, wy + 12), (220, 230, 240), -1)
    cv2.line(img, (0, height * 5 // 6), (width, height * 5 // 6), (230, 230, 230), 3)
    return img


def with_face(frame: np.ndarray, x: int, y: int, size: int = 200) -> np.ndarray:
    """Paste the astronaut's head and shoulders into ``frame`` at (x, y)."""
    from skimage import data

    astronaut = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[20:260, 140:320]  # the face, with margin
    patch = cv2.resize(astronaut, (size * 180 // 240, size))
    out = frame.copy()
    out[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
    return out


def encode_segment(frames: list[np.ndarray], start: float) -> bytes:
    """H.264 cut by the recorder's own fragmenter: a self-contained fMP4 whose media time
    is the wall clock (``tfdt`` = epoch x 90 kHz), exactly like a stored segment."""
    height, width = frames[0].shape[:2]
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate, ctx.gop_size = Fraction(1, FPS), Fraction(FPS, 1), FPS
    ctx.options = {"preset": "veryfast", "tune": "zerolatency", "crf": "16",
                   "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:repeat-headers=1"}
    units: list[bytes] = []
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        units += [bytes(p) for p in ctx.encode(frame)]
    units += [bytes(p) for p in ctx.encode(None)]
    keeper = ParameterSetKeeper("h264")
    fragmenter = Fragmenter(10**12, CLOCK_RATE, wallclock_timeline=True)
    info: StreamInfo | None = None
    parts = []
    for i, unit in enumerate(units):
        data, key = keeper.process(unit)
        if info is None:
            info = StreamInfo(codec="h264", width=width, height=height, parameter_sets=keeper.parameter_sets)
        packet = MediaPacket(data=data, pts=i * 3600, dts=i * 3600, keyframe=key, wallclock=start + i / FPS, info=info)
        parts += fragmenter.push(packet)
    parts += fragmenter.flush()
    return parts[0].init.data + b"".join(p.data for p in parts)


def segment_row(camera: str, seg_id: int, data: bytes, start: float, frames: int, width: int = W, height: int = H) -> Segment:
    return Segment(
        id=seg_id, camera=camera, start=start, end=start + frames / FPS, duration=frames / FPS, bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), storage_key=f"{camera}/{seg_id}.mp4", backend="memory", codec="h264",
        width=width, height=height, created_at=time.time(),
    )


def make_job(
    clips: dict[str, list[list[np.ndarray]]], signer: Signer, start: float, options: dict | None = None,
    *, request_id: int = 1, case_number: str = "T-1", produced_at: float | None = None,
) -> ExportJob:
    """A job over in-memory segments: ``{camera: [frames of segment 1, frames of segment 2, ...]}``."""
    store: dict[int, bytes] = {}
    extracts = []
    seg_id = 0
    for camera, segments in clips.items():
        t = start
        rows = []
        for frames in segments:
            seg_id += 1
            data = encode_segment(frames, t)
            store[seg_id] = data
            rows.append(segment_row(camera, seg_id, data, t, len(frames), frames[0].shape[1], frames[0].shape[0]))
            t += len(frames) / FPS
        extracts.append(CameraExtract(camera, camera, start, t, tuple(rows)))

    async def read(seg: Segment) -> bytes:
        return store[seg.id]

    return ExportJob(
        request={"id": request_id, "case_number": case_number}, cameras=tuple(extracts), produced_by="tester",
        produced_at=time.time() if produced_at is None else produced_at,
        signer=signer, read_segment=read, loop=asyncio.get_running_loop(), options=options or {},
        mask_filters=installed_mask_filters(),
    )


def installed_mask_filters() -> dict:
    """One instance of every mask filter plugin installed (watermark included)."""
    from gateway.media.masking import instantiate_filters
    from gateway.plugins import load_plugins

    return instantiate_filters(load_plugins().mask_filters())
