# Browser viewer dependencies (sourced by scripts/run.sh and scripts/test.sh).
# hls.js and Leaflet (the camera map) are installed from the npm registry into
# webclient/node_modules (gitignored) at the exact versions pinned in webclient/package-lock.json,
# and served by the gateway from there; nothing is fetched at run time. Without hls.js the
# viewer still plays over WebRTC and says that the HLS fallback is unavailable; without Leaflet
# the map page cannot open.

ensure_webclient_deps() {
  if [ -f webclient/node_modules/hls.js/package.json ] && [ -f webclient/node_modules/leaflet/package.json ]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: the web viewer will play over WebRTC only (no LL-HLS fallback)." >&2
    echo "  Install Node.js/npm (Debian: apt-get install npm) and run: npm ci --prefix webclient" >&2
    return 0
  fi
  echo "installing web viewer dependencies (npm ci --prefix webclient)"
  npm ci --prefix webclient --no-audit --no-fund --loglevel=error
}
