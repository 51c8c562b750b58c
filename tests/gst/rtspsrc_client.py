"""GStreamer's rtspsrc as an independent RTSP client, run under the system Python.

    /usr/bin/python3 tests/gst/rtspsrc_client.py URL USER PASSWORD tcp|udp FRAMES

Pulls H.264 through rtspsrc (Digest with ``user-id``/``user-pw``), decodes it and prints
``FRAMES n`` with the number of decoded frames (stops at FRAMES, or after 20 s), or
``ERROR message`` lines for pipeline errors.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

Gst.init(None)
url, user, password, protocol, wanted = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
pipeline = Gst.parse_launch(
    f"rtspsrc name=src protocols={protocol} latency=0 ! rtph264depay ! h264parse ! avdec_h264 "
    "! fakesink name=sink signal-handoffs=true sync=false"
)
src = pipeline.get_by_name("src")
src.set_property("location", url)
src.set_property("user-id", user)
src.set_property("user-pw", password)
loop = GLib.MainLoop()
frames = 0


def handoff(sink, buffer, pad):
    global frames
    frames += 1
    if frames == wanted:
        GLib.idle_add(loop.quit)


def on_message(bus, message):
    if message.type == Gst.MessageType.ERROR:
        print("ERROR", message.parse_error()[0].message, flush=True)
        loop.quit()
    elif message.type == Gst.MessageType.EOS:
        loop.quit()


pipeline.get_by_name("sink").connect("handoff", handoff)
bus = pipeline.get_bus()
bus.add_signal_watch()
bus.connect("message", on_message)
GLib.timeout_add_seconds(20, loop.quit)
pipeline.set_state(Gst.State.PLAYING)
loop.run()
pipeline.set_state(Gst.State.NULL)
print("FRAMES", frames, flush=True)
