"""A GStreamer RTSP test camera: several H.264/H.265 mounts on one loopback port.

Runs under the SYSTEM Python (``/usr/bin/python3``), which has python3-gi and
GstRtspServer; the project's virtualenv cannot load GObject introspection.

    /usr/bin/python3 tests/gst/camera_server.py --port 8554 [--mounts h264,h265]

Prints ``READY <port>`` on stdout once the server listens, and exits with status 0 on
SIGTERM or SIGINT. A mount whose GStreamer elements are missing makes the server exit
with status 2 and a message naming the element and the Debian package that has it.

Mounts (all live, 25 fps, one keyframe per second, shared by every client, UDP or TCP):

    /h264           x264 constrained baseline, one slice per frame, SPS/PPS in-band
                    before each IDR (twice: x264 repeats them and rtph264pay inserts them)
    /h265           x265 main, VPS/SPS/PPS in-band before each IRAP
    /h264-sdp-only  x264 constrained baseline, SPS/PPS only in the SDP
                    (sprop-parameter-sets), never in-band
    /h264-sliced    x264 with sliced threads: every frame is four slices; rtph264pay puts
                    SPS/PPS before each IDR slice, so FFmpeg splits each keyframe into
                    several packets with one timestamp
    /h264-sub       the same at half the width and height (a camera's sub stream)
    /h264-long-gop  as /h264 with one keyframe every 10 s (a "smart codec" camera)
    /pattern        x264 constrained baseline of static SMPTE 75 % bars (for mask tests)
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

FPS = 25
KEY_INT = FPS  # one keyframe per second

# Which Debian package provides an element, for the "missing element" message.
PACKAGES = {
    "videotestsrc": "gstreamer1.0-plugins-base",
    "videoconvert": "gstreamer1.0-plugins-base",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "x265enc": "gstreamer1.0-plugins-bad",
    "h264parse": "gstreamer1.0-plugins-bad",
    "h265parse": "gstreamer1.0-plugins-bad",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "rtph265pay": "gstreamer1.0-plugins-good",
}


def source(width: int, height: int, moving: bool = True) -> str:
    # A moving SMPTE pattern: realistic frame sizes, and every frame differs.
    # The static picture is SMPTE 75 % bars: plain "smpte" has a noise block that changes
    # every frame.
    motion = "pattern=smpte horizontal-speed=4" if moving else "pattern=smpte75"
    return (
        f"videotestsrc is-live=true {motion} "
        f"! video/x-raw,format=I420,width={width},height={height},framerate={FPS}/1"
    )


def x264(extra: str = "", key_int: int = KEY_INT) -> str:
    return (
        "x264enc tune=zerolatency speed-preset=ultrafast bitrate=1500 "
        f"key-int-max={key_int} {extra}".rstrip()
    )


# Constrained baseline: the profile WebRTC peers (aiortc, browsers) accept.
H264_CAPS = "video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au"


def mount_launches(width: int, height: int) -> dict[str, tuple[str, list[str]]]:
    """Return ``{mount: (launch line, elements it needs)}``."""
    src = source(width, height)
    return {
        "h264": (
            f"( {src} ! {x264('threads=1 sliced-threads=false')} ! {H264_CAPS} "
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            ["videotestsrc", "x264enc", "h264parse", "rtph264pay"],
        ),
        "h265": (
            f"( {src} ! x265enc tune=zerolatency speed-preset=ultrafast bitrate=1500 "
            f"key-int-max={KEY_INT} ! video/x-h265,profile=main,stream-format=byte-stream,alignment=au "
            "! h265parse config-interval=-1 ! rtph265pay name=pay0 pt=96 config-interval=-1 )",
            ["videotestsrc", "x265enc", "h265parse", "rtph265pay"],
        ),
        # x264enc with byte-stream=false writes AVC (length-prefixed) samples with the
        # parameter sets in codec_data; x264's repeat-headers=0 keeps them out of the
        # samples (x264 repeats them before each IDR otherwise, even in AVC mode).
        # rtph264pay puts codec_data into the SDP's sprop-parameter-sets and, with
        # config-interval=0, never in-band. No h264parse: it would not strip them either.
        "h264-sdp-only": (
            f"( {src} ! {x264('threads=1 sliced-threads=false byte-stream=false option-string=repeat-headers=0')} "
            "! video/x-h264,profile=constrained-baseline,stream-format=avc,alignment=au "
            "! rtph264pay name=pay0 pt=96 config-interval=0 )",
            ["videotestsrc", "x264enc", "rtph264pay"],
        ),
        "h264-sliced": (
            f"( {src} ! {x264('threads=4 sliced-threads=true')} ! {H264_CAPS} "
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            ["videotestsrc", "x264enc", "h264parse", "rtph264pay"],
        ),
        # A camera's second, smaller stream, as grid tiles ask for it.
        "h264-sub": (
            f"( {source(width // 2, height // 2)} ! {x264('threads=1 sliced-threads=false')} "
            f"! {H264_CAPS} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            ["videotestsrc", "x264enc", "h264parse", "rtph264pay"],
        ),
        # Ten seconds between keyframes, as many city cameras with "smart" codecs send.
        "h264-long-gop": (
            f"( {src} ! {x264('threads=1 sliced-threads=false', key_int=10 * FPS)} ! {H264_CAPS} "
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            ["videotestsrc", "x264enc", "h264parse", "rtph264pay"],
        ),
        "pattern": (
            f"( {source(width, height, moving=False)} ! {x264('threads=1 sliced-threads=false')} "
            f"! {H264_CAPS} ! h264parse "
            "! rtph264pay name=pay0 pt=96 config-interval=-1 )",
            ["videotestsrc", "x264enc", "h264parse", "rtph264pay"],
        ),
    }


def missing_elements(elements: list[str]) -> list[str]:
    return [name for name in elements if Gst.ElementFactory.find(name) is None]


def parse_args(argv: list[str], all_mounts: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GStreamer RTSP test camera")
    parser.add_argument("--port", type=int, required=True, help="RTSP port on 127.0.0.1")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--mounts",
        default=",".join(all_mounts),
        help=f"comma-separated mounts to build (default all: {','.join(all_mounts)})",
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    Gst.init(None)
    names = list(mount_launches(640, 360))
    args = parse_args(sys.argv[1:] if argv is None else argv, names)
    launches = mount_launches(args.width, args.height)
    wanted = [m.strip().strip("/") for m in args.mounts.split(",") if m.strip()]

    unknown = [m for m in wanted if m not in launches]
    if unknown:
        print(f"camera_server: unknown mount(s) {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    for mount in wanted:
        missing = missing_elements(launches[mount][1])
        if missing:
            detail = ", ".join(f"{e} (Debian package {PACKAGES.get(e, '?')})" for e in missing)
            print(f"camera_server: mount /{mount} needs missing GStreamer element(s): {detail}", file=sys.stderr)
            return 2

    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    # Each client's requests in a thread of its own: by default every client is served from
    # the one main loop, and a client whose shared media is still prerolling (or being torn
    # down after the last viewer left) keeps the others' OPTIONS unanswered for seconds on a
    # loaded machine (seen in CI: a camera offline for 15 s behind two that came up).
    server.get_thread_pool().set_max_threads(16)
    mounts = server.get_mount_points()
    for mount in wanted:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launches[mount][0])
        factory.set_shared(True)  # one encoder per mount, however many clients
        mounts.add_factory(f"/{mount}", factory)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"camera_server: cannot listen on {args.address}:{args.port}", file=sys.stderr)
        return 1

    def on_signal(*_args: object) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, on_signal)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, on_signal)

    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
