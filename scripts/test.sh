#!/usr/bin/env bash
# Install everything the test suite needs and run it.
#   scripts/test.sh            # whole suite
#   scripts/test.sh -k hub     # extra args go to pytest
# As root it installs the Debian packages for the real test parts: the GStreamer RTSP
# server (the third-party test camera), FFmpeg (ffprobe/ffmpeg as independent readers).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

apt_install ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-plugins-ugly gstreamer1.0-libav
ensure_venv
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]"
exec "$VENV/bin/python" -m pytest "$@"
