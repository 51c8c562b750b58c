# Shared by scripts/run.sh and scripts/test.sh.
VENV="${CITYGATE_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

apt_install() {
  # Install Debian packages that are missing, when we are root; otherwise say what is needed.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages (run as root, or: sudo apt-get install ${missing[*]})" >&2
    return 1
  fi
}

ensure_c_compiler() {
  # The WebRTC sender's C part (gateway/live/_rtpsend.c) is compiled when Citygate is installed:
  # a C compiler and the Python headers. Without them Citygate still installs and sends from
  # Python, more slowly (the gateway logs it at start), so a non-root install only warns.
  local include
  include="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  if command -v cc >/dev/null 2>&1 && [ -f "$include/Python.h" ]; then
    return 0
  fi
  apt_install gcc libc6-dev python3-dev || echo "no C compiler: WebRTC viewers will be sent to from Python" >&2
}

ensure_venv() {
  if ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "Citygate needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  fi
}

install_mediapipe() {
  # BlazeFace for the media release: mediapipe 0.10.21 is the last release whose wheel carries
  # the face models (wheels for CPython 3.9-3.12). --no-deps: its metadata pins numpy<2 and
  # opencv-contrib-python, which would replace numpy 2 and opencv-python-headless; what it
  # really imports is in pyproject.toml. Without it the media release uses the Haar cascades.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "mediapipe==0.10.21"
}
