"""The mask stage and filter plugins, with real codecs: rasterising, filters, resolution
changes, live switching of a camera's masks, third-party filters, config errors."""

from __future__ import annotations

import asyncio
import textwrap
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from citygate_plugins.cameras.demo import DemoCamera, DemoOptions
from citygate_plugins.masking.blur import BlurFilter
from citygate_plugins.masking.fill import FillFilter
from citygate_plugins.masking.pixelate import PixelateFilter
from gateway import config as config_mod
from gateway import hookimpl
from gateway.cameras import Camera
from gateway.config import CameraConfig, IngestConfig, MaskingConfig
from gateway.errors import ConfigErrors
from gateway.events import EventBus
from gateway.interfaces import MaskFilter, MaskShape
from gateway.media.h26x import ParameterSetKeeper
from gateway.media.hub import StreamHub
from gateway.media.masking import MaskStage, build_regions, masked_copy, rasterise
from gateway.media.packet import TIME_BASE, MediaPacket, StreamInfo
from gateway.plugins import load_plugins

SQUARE = ((0.25, 0.25), (0.75, 0.25), (0.75, 0.75), (0.25, 0.75))
FILTERS = {"fill": FillFilter(), "pixelate": PixelateFilter(), "blur": BlurFilter()}


def textured_frame(width: int, height: int, seed: int = 1) -> av.VideoFrame:
    """Fine random texture: what pixelate and blur must destroy."""
    rng = np.random.default_rng(seed)
    yuv = np.empty((height * 3 // 2, width), dtype=np.uint8)
    yuv[:height] = rng.integers(30, 220, (height, width))
    yuv[height:] = rng.integers(90, 170, (height // 2, width))
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def striped_frame(width: int, height: int, shift: int) -> av.VideoFrame:
    """Wide diagonal stripes: compressible, so they survive the encoder (noise would not)."""
    yy, xx = np.mgrid[0:height, 0:width]
    yuv = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    yuv[:height] = np.where(((xx + yy + shift) // 24) % 2 == 0, 40, 200)
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")


def y_plane(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray()[: frame.height].astype(np.float32)


def test_rasterise_covers_the_polygon_at_any_resolution() -> None:
    for w, h in ((640, 360), (1280, 720), (321, 241)):
        mask = rasterise(SQUARE, w, h)
        assert abs(mask.sum() - w * h / 4) <= (w + h), (w, h, mask.sum())
        assert mask[h // 2, w // 2] and not mask[h // 8, w // 8] and not mask[h - 1, w - 1]
    triangle = rasterise(((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)), 100, 100)
    assert abs(triangle.sum() - 5000) < 100 and triangle[10, 10] and not triangle[90, 90]


@pytest.mark.parametrize("name", ["fill", "pixelate", "blur"])
def test_each_filter_changes_only_its_region_measurably(name: str) -> None:
    frame = textured_frame(320, 240)
    before = y_plane(frame)
    after = y_plane(masked_copy(frame, build_regions([MaskShape(points=SQUARE, filter=name)], FILTERS, 320, 240)))
    inside = rasterise(SQUARE, 320, 240)
    assert np.array_equal(after[~inside], before[~inside])  # nothing outside the mask changes
    assert np.array_equal(y_plane(frame), before)  # the decoded frame itself is never written
    detail_before = np.abs(np.diff(before[60:180, 80:240], axis=1)).mean()
    detail_after = np.abs(np.diff(after[60:180, 80:240], axis=1)).mean()
    changed = np.abs(after[inside] - before[inside]).mean()
    assert changed > 20, changed
    assert detail_after < detail_before / 3, (detail_before, detail_after)
    if name == "fill":
        assert after[inside].max() == after[inside].min() == 16


def encoded_packets(width: int, height: int, count: int, start_pts: int, info_epoch: int) -> list[MediaPacket]:
    """A real H.264 stream of ``count`` textured pictures, as a camera would deliver it."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = TIME_BASE
    enc.framerate = Fraction(25)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": "keyint=10:repeat-headers=1"}
    keeper = ParameterSetKeeper("h264", b"")
    out: list[tuple[bytes, int, bool]] = []
    for i in range(count):
        frame = striped_frame(width, height, shift=i)
        frame.pts = start_pts + i * 3600
        for p in enc.encode(frame):
            data, key = keeper.process(bytes(p))
            out.append((data, int(p.pts), key))
    info = StreamInfo(codec="h264", width=width, height=height, parameter_sets=keeper.parameter_sets, declared_fps=25.0, epoch=info_epoch)
    return [
        MediaPacket(data=d, pts=pts, dts=pts, keyframe=k, wallclock=time.time(), info=info, discontinuity=i == 0)
        for i, (d, pts, k) in enumerate(out)
    ]


async def test_a_resolution_change_keeps_the_masks_in_place() -> None:
    raw = StreamHub("raw")
    published: list[MediaPacket] = []
    stage = MaskStage("t", raw.open_reader("stage", lossless=True), published.append, [MaskShape(points=SQUARE)], FILTERS, MaskingConfig(keyframe_interval=0.4))
    async with stage:
        for packet in encoded_packets(640, 360, 20, 0, 1) + encoded_packets(320, 240, 20, 20 * 3600, 2):
            raw.publish(packet)
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 10
        while len(published) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert len(published) == 40
    pts = [p.pts for p in published]
    assert pts == sorted(set(pts))
    sizes = [(p.info.width, p.info.height) for p in published]
    assert sizes[:20] == [(640, 360)] * 20 and sizes[20:] == [(320, 240)] * 20
    assert published[0].discontinuity and published[20].discontinuity and published[20].keyframe
    assert published[0].data.startswith(b"\x00\x00\x00\x01\x67") or b"\x00\x00\x01\x67" in published[0].data[:8]
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in published for f in decoder.decode(av.Packet(p.data))] + decoder.decode(None)
    assert len(frames) == 40
    for frame in (frames[5], frames[19], frames[25], frames[39]):
        y = y_plane(frame)
        h, w = y.shape
        inside = y[h // 4 + 8 : 3 * h // 4 - 8, w // 4 + 8 : 3 * w // 4 - 8]
        assert abs(inside.mean() - 16) < 3 and inside.std() < 3, (w, h, inside.mean())
        assert y[: h // 4 - 8].std() > 20  # the texture around it is still there
    assert stage.stats.frames == 40 and stage.stats.encode > 0 and stage.stats.decode > 0


async def test_masks_switch_live_with_increasing_timestamps() -> None:
    """Passthrough → masked → changed → passthrough on a running camera: one reader sees it all."""
    options = DemoOptions(width=320, height=240, fps=25, pattern="bars", keyframe_interval=0.5)
    cfg = CameraConfig(id="demo", vendor="demo", area="a", options=options)
    events = EventBus()
    camera = Camera(cfg, DemoCamera, IngestConfig(), events, masking=MaskingConfig(keyframe_interval=0.5), filters=load_plugins().mask_filters())
    await camera.start()
    try:
        deadline = time.monotonic() + 10
        while camera.hub.info is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        reader = camera.open_reader("test", lossless=True)
        received: list[MediaPacket] = []

        async def read() -> None:
            async for packet in reader:
                received.append(packet)

        task = asyncio.create_task(read())
        await asyncio.sleep(0.5)
        switches = [
            [MaskShape(points=SQUARE)],
            [MaskShape(points=SQUARE, filter="pixelate"), MaskShape(points=((0.0, 0.0), (0.2, 0.0), (0.2, 0.2)))],
            [],
            [MaskShape(points=SQUARE, filter="blur")],
        ]
        for shapes in switches:
            await camera.set_masks(shapes)
            await asyncio.sleep(1.0)
        assert not reader.closed and reader.overflows == 0
        reader.close()
        await task
    finally:
        await camera.stop()
        await events.aclose()
    pts = [p.pts for p in received]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert len(received) >= 0.8 * 25 * 4.5
    gaps = [(b.wallclock - a.wallclock) for a, b in zip(received, received[1:])]
    assert max(gaps) < 0.6, max(gaps)  # a switch costs at most a keyframe interval
    infos = [p.info for p in received]
    epochs = [i for i, (a, b) in enumerate(zip(infos, infos[1:]), 1) if a is not b]
    # to masked; changed with a mask added (the stage restarts on a masked keyframe, so
    # nothing masked only the old way follows); back to passthrough; masked again
    assert len(epochs) == 4, epochs
    assert all(received[i].keyframe and received[i].discontinuity for i in epochs)


def test_a_third_party_filter_registers_through_the_hook() -> None:
    class Invert(MaskFilter):
        @staticmethod
        def id() -> str:
            return "invert"

        def apply(self, planes, masks, options) -> None:  # noqa: ANN001
            planes[0][masks[0]] = 255 - planes[0][masks[0]]

    plugin = SimpleNamespace(gateway_register_mask_filters=hookimpl(lambda register: register(Invert)))
    plugins = load_plugins()
    plugins.register(plugin, "acme_invert")
    try:
        registry = plugins.mask_filters()
        assert {"fill", "pixelate", "blur", "invert"} <= set(registry)
        frame = textured_frame(64, 64)
        out = masked_copy(frame, build_regions([MaskShape(points=SQUARE, filter="invert")], {"invert": registry["invert"]()}, 64, 64))
        inside = rasterise(SQUARE, 64, 64)
        assert np.array_equal(y_plane(out)[inside], 255 - y_plane(frame)[inside])
    finally:
        plugins.unregister("acme_invert")


def test_an_unknown_filter_at_run_time_still_masks() -> None:
    frame = textured_frame(64, 64)
    out = y_plane(masked_copy(frame, build_regions([MaskShape(points=SQUARE, filter="gone")], FILTERS, 64, 64)))
    assert (out[rasterise(SQUARE, 64, 64)] == 16).all()


@pytest.mark.parametrize(
    ("mask", "key", "reason"),
    [
        ("points = [[0.1, 0.1], [0.5, 0.1]]", "camera[0].masks[0]", "at least 3 points"),
        ("points = [[0.1, 0.1], [0.5, 0.1], [0.5, 1.5]]", "camera[0].masks[0]", "outside the picture"),
        ('points = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\nfilter = "sparkle"', "camera[0].masks[0].filter", "unknown mask filter 'sparkle'"),
        ("points = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\ncolour = 1", "camera[0].masks[0].colour", "unknown key"),
    ],
)
def test_config_mask_errors_name_file_and_key(tmp_path: Path, mask: str, key: str, reason: str) -> None:
    (tmp_path / "cameras.toml").write_text(
        textwrap.dedent('[[camera]]\nid = "c1"\nvendor = "demo"\narea = "north"\n[[camera.masks]]\n') + mask + "\n"
    )
    with pytest.raises(ConfigErrors) as info:
        config_mod.load(tmp_path, vendors={"demo": DemoCamera}, mask_filters=FILTERS, env={})
    [error] = info.value.errors
    assert error.file == str(tmp_path / "cameras.toml") and error.key == key and reason in error.reason, error


def test_masking_section_is_validated(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text('[masking]\npreset = "placebo"\n')
    with pytest.raises(ConfigErrors) as info:
        config_mod.load(tmp_path, vendors={}, env={})
    [error] = info.value.errors
    assert error.key == "masking" and "preset" in error.reason
    (tmp_path / "gateway.toml").write_text('[masking]\npreset = "superfast"\nbitrate = 800000\nkeyframe-interval = 1.0\n')
    cfg = config_mod.load(tmp_path, vendors={}, env={})
    assert (cfg.masking.preset, cfg.masking.bitrate, cfg.masking.keyframe_interval) == ("superfast", 800000, 1.0)


def test_a_failing_filter_still_masks_its_region() -> None:
    class Broken(MaskFilter):
        @staticmethod
        def id() -> str:
            return "broken"

        def apply(self, planes, masks, options) -> None:  # noqa: ANN001
            raise ValueError("bad option")

    frame = textured_frame(64, 64)
    out = y_plane(masked_copy(frame, build_regions([MaskShape(points=SQUARE, filter="broken")], {"broken": Broken()}, 64, 64)))
    assert (out[rasterise(SQUARE, 64, 64)] == 16).all()
