#!/usr/bin/env bash
# Install everything the test suite needs and run it.
#   scripts/test.sh            # whole suite
#   scripts/test.sh -k hub     # extra args go to pytest
# As root it installs the Debian packages for the real test parts: the GStreamer RTSP
# server (the third-party test camera), FFmpeg (ffprobe/ffmpeg as independent readers),
# Chromium (the browser tests drive it with Playwright; no browser download) and npm
# (hls.js for the web client and the OpenID provider of the OIDC sign-in tests, from the npm
# registry) and OpenLDAP's slapd (the directory the LDAP sign-in tests run on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/webclient.sh
source scripts/webclient.sh

apt_install ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-plugins-ugly gstreamer1.0-libav chromium slapd ldap-utils
command -v npm >/dev/null 2>&1 || apt_install npm
ensure_venv
ensure_c_compiler
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]"
install_mediapipe  # the media-release tests need BlazeFace
# the template third-party plugin, written only against gateway.plugin_api (tests/test_plugin_api.py)
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e examples/citygate-example-plugin
ensure_webclient_deps
# The OpenID provider the OIDC sign-in tests run on loopback (panva's oidc-provider, from the
# npm registry at the versions pinned in tests/oidc_provider/package-lock.json; never at test time).
if [ ! -f tests/oidc_provider/node_modules/oidc-provider/package.json ] && command -v npm >/dev/null 2>&1; then
  npm ci --prefix tests/oidc_provider --no-audit --no-fund --loglevel=error
fi
exec "$VENV/bin/python" -m pytest "$@"
