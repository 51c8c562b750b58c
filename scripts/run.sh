#!/usr/bin/env bash
# Set up Citygate in a virtualenv (.venv) and run the gateway on the default config.
#   scripts/run.sh                 # conf/ : 4 demo cameras, http://127.0.0.1:8080/
#   scripts/run.sh --config DIR    # any other config directory; extra args go to `citygate serve`
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/webclient.sh
source scripts/webclient.sh

ensure_venv
ensure_c_compiler
"$VENV/bin/pip" install --quiet --disable-pip-version-check -e .
install_mediapipe || echo "mediapipe 0.10.21 could not be installed: media releases find faces with the Haar cascades only" >&2
ensure_webclient_deps
exec "$VENV/bin/citygate" serve "$@"
