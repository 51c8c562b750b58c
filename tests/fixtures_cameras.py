"""Test cameras as pytest fixtures: the GStreamer RTSP camera and the stalled camera.

Loaded from ``tests/conftest.py`` with ``pytest_plugins = ["tests.fixtures_cameras"]``.

``GstCamera`` runs ``tests/gst/camera_server.py`` under the system Python (which has
GObject introspection and GstRtspServer) on a free loopback port. Tests marked
``@pytest.mark.gstreamer`` (and tests using these fixtures) are skipped, with the reason,
when that Python cannot load GstRtspServer; with ``CITYGATE_REQUIRE_GSTREAMER=1`` (CI,
where the packages are installed) they fail instead, so they can never silently vanish.

The stalled camera (``tests/stalled_rtsp.py``) answers RTSP up to PLAY and then sends
nothing; it needs no GStreamer.

In async tests, call the blocking ``GstCamera`` methods through ``asyncio.to_thread``
when the event loop must keep running (e.g. a source reconnecting meanwhile).
"""

from __future__ import annotations

import contextlib
import logging
import ctypes
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.stalled_rtsp import StalledRtspServer, serve_in_thread

SYSTEM_PYTHON = "/usr/bin/python3"
CAMERA_SERVER = Path(__file__).parent / "gst" / "camera_server.py"
MOUNTS = ("h264", "h265", "h264-sdp-only", "h264-sliced", "h264-sub", "h264-long-gop", "pattern")
GI_CHECK = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when pytest dies, so no camera outlives it."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def gstreamer_unavailable_reason() -> str | None:
    """Why the GStreamer camera cannot run here, or None if it can."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} not found (the GStreamer camera runs under the system Python)"
    try:
        proc = subprocess.run([SYSTEM_PYTHON, "-c", GI_CHECK], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} cannot check for GstRtspServer: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return (
            f"{SYSTEM_PYTHON} cannot load GstRtspServer ({last}); install python3-gi, "
            "gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{good,bad,ugly}"
        )
    return None


class GstCameraError(RuntimeError):
    """The GStreamer camera process did not start."""


class GstCamera:
    """One ``camera_server.py`` process on a loopback port.

    ``kill()`` then ``restart()`` simulates a camera that drops off the network and comes
    back on the same address, for reconnect tests.
    """

    def __init__(
        self,
        mounts: tuple[str, ...] | list[str] = MOUNTS,
        port: int | None = None,
        host: str = "127.0.0.1",
        start_timeout: float = 15.0,
        env: dict[str, str] | None = None,
        heal: bool = False,
    ) -> None:
        self.host = host
        #: Restart the server when it dies on its own. gst-rtsp-server 1.22 occasionally
        #: aborts in ``gst_rtsp_media_get_rates`` when a client arrives while a shared media
        #: is being torn down; the shared session camera must outlive that. Tests that kill
        #: the camera on purpose use their own, unhealed instance.
        self._heal = heal
        self._lock = threading.RLock()
        self._intended_exit = False
        self._closed = False
        self._monitor: threading.Thread | None = None
        self._port_chosen = port is None
        self.port = port or free_port(host)
        self.mounts = tuple(mounts)
        self.start_timeout = start_timeout
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def url(self, mount: str = "h264") -> str:
        return f"rtsp://{self.host}:{self.port}/{mount.lstrip('/')}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> GstCamera:
        with self._lock:
            if self.running:
                return self
            self._intended_exit = False
            camera = self._start_with_retries()
            if self._heal and self._monitor is None:
                self._monitor = threading.Thread(target=self._watch, name="gst-camera-heal", daemon=True)
                self._monitor.start()
            return camera

    def _watch(self) -> None:
        while not self._closed:
            time.sleep(0.2)
            with self._lock:
                if self._closed or self._intended_exit or self.proc is None or self.proc.poll() is None:
                    continue
                status, stderr = self.proc.returncode, self.stderr_text().strip()[-400:]
                logging.getLogger(__name__).warning(
                    "GStreamer test camera on port %d died (status %s); restarting it: %s", self.port, status, stderr
                )
                try:
                    self._start_once()
                except GstCameraError as exc:
                    logging.getLogger(__name__).warning("restarting the GStreamer test camera failed: %s", exc)

    def _start_with_retries(self) -> GstCamera:
        for attempt in range(3):
            try:
                return self._start_once()
            except GstCameraError as exc:
                # Another process took the port between free_port() and the bind.
                if not self._port_chosen or "cannot listen" not in str(exc) or attempt == 2:
                    raise
                self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def _start_once(self) -> GstCamera:
        cmd = [
            SYSTEM_PYTHON,
            str(CAMERA_SERVER),
            "--port",
            str(self.port),
            "--address",
            self.host,
            "--mounts",
            ",".join(self.mounts),
        ]
        # stderr goes to a file, not a pipe: nobody reads it while the camera runs, and
        # a full pipe would freeze the server on its next GStreamer warning.
        self._close_pipes()
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self.env,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it first
            # The death signal follows the thread that forks: only tie it to the main one.
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self._terminate(kill_after=0.5)
            self._close_pipes()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        buffered = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffered:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise GstCameraError(self._failure(f"no READY within {self.start_timeout:.0f}s"))
                if not sel.select(timeout=remaining):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:  # EOF: the process exited
                    self.proc.wait(timeout=5)
                    raise GstCameraError(self._failure(f"exited with status {self.proc.returncode}"))
                buffered += chunk
        line = buffered.split(b"\n", 1)[0].decode(errors="replace").strip()
        if line != f"READY {self.port}":
            raise GstCameraError(self._failure(f"unexpected first line {line!r}"))

    def _failure(self, what: str) -> str:
        self._terminate(kill_after=0.5)
        stderr = self.stderr_text().strip()
        return f"GStreamer camera on port {self.port}: {what}; stderr: {stderr or '(empty)'}"

    def _terminate(self, kill_after: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stderr_text(self) -> str:
        """What the camera process wrote on stderr so far (this run only)."""
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def _close_pipes(self) -> None:
        pipes = [self._stderr, self.proc.stdout if self.proc is not None else None]
        for pipe in pipes:
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._stderr = None

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 3 s; wait for the process."""
        with self._lock:
            self._intended_exit = True
            self._closed = True
            self._terminate(kill_after=3.0)
            self._close_pipes()

    def kill(self) -> None:
        """SIGKILL at once: the camera vanishes without closing its connections cleanly."""
        with self._lock:
            self._intended_exit = True
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._close_pipes()

    def restart(self) -> GstCamera:
        """Stop if running, then start again on the same port."""
        with self._lock:
            self._intended_exit = True
            self._terminate(kill_after=3.0)
            self._close_pipes()
            deadline = time.monotonic() + 5
            while True:  # the old listener may linger for a moment after SIGKILL
                try:
                    camera = self._start_once()  # never a new port, unlike start()
                    self._intended_exit = False
                    return camera
                except GstCameraError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def __enter__(self) -> GstCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


REQUIRE_ENV = "CITYGATE_REQUIRE_GSTREAMER"
_REASON_KEY = pytest.StashKey[str | None]()


def _check_gstreamer(config: pytest.Config) -> None:
    """Skip (or, with CITYGATE_REQUIRE_GSTREAMER=1 as in CI, fail) without GStreamer."""
    if _REASON_KEY not in config.stash:
        config.stash[_REASON_KEY] = gstreamer_unavailable_reason()
    reason = config.stash[_REASON_KEY]
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gstreamer") is not None:
        _check_gstreamer(item.config)


@pytest.fixture
def gstreamer_available(request: pytest.FixtureRequest) -> None:
    """Skip the test, with the reason, when the GStreamer camera cannot run here."""
    _check_gstreamer(request.config)


@pytest.fixture
def gst_camera(gstreamer_available: None) -> Iterator[GstCamera]:
    """A fresh GStreamer camera with every mount, for tests that stop, kill or restart it."""
    camera = GstCamera()
    try:
        camera.start()
        yield camera
    finally:
        camera.stop()


@pytest.fixture(scope="session")
def _session_gst_camera() -> Iterator[GstCamera]:
    camera = GstCamera(heal=True)
    try:
        yield camera
    finally:
        camera.stop()


@pytest.fixture
def shared_gst_camera(gstreamer_available: None, _session_gst_camera: GstCamera) -> GstCamera:
    """One GStreamer camera for the whole session, for tests that only read from it.

    Started on first use; started again if it died, so one crash does not fail every
    later test. Do not stop or kill it: use ``gst_camera`` for that.
    """
    return _session_gst_camera.start()


@pytest.fixture
def stalled_camera() -> Iterator[str]:
    """URL of an RTSP camera that completes PLAY and then never sends media."""
    with serve_in_thread() as server:
        yield server.url


@pytest.fixture
def stalled_server() -> Iterator[StalledRtspServer]:
    """The stalled camera itself, for tests that look at the requests it received."""
    with serve_in_thread() as server:
        yield server
