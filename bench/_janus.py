"""Janus (Debian's ``janus`` 1.1.x) as the peer of bench/relay.py: its configuration, its process,
and viewers of its streaming plugin over the plain-HTTP Janus API.

- ``write_config``: a private configs folder (nothing from /etc/janus): the HTTP transport on
  127.0.0.1 only, the streaming plugin with one RTSP mountpoint, ``event_loops`` in the core,
  ICE only on the benchmark's own interface (``ice_enforce_list``), no STUN, no IPv6;
- ``JanusSession``: one Janus session (create, attach, message, long poll, keepalive, destroy),
  several handles on it, as a browser page holds several players on one session;
- ``open_viewer``: one aiortc peer on its own handle: ``watch`` the mountpoint, Janus makes the
  offer, the peer answers with ``start``; the viewer has ``.pc`` like bench/_client.py's viewers,
  so the same frame counter and statistics work on both kinds.

Janus gathers no loopback ICE candidates, so both Janus and the viewers must run where a
non-loopback address exists: bench/relay.py runs them in a network namespace of its own.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from _client import enlarge_receive_buffers

MOUNTPOINT = 1
STREAMING = "janus.plugin.streaming"
#: Janus ends a session without a request for ``session_timeout`` (60 s by default).
KEEPALIVE_SECONDS = 15.0
#: Janus's long poll returns after 30 s without events; a little more for the HTTP timeout.
LONG_POLL_TIMEOUT = aiohttp.ClientTimeout(total=40)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)

_TRANSPORTS = ("libjanus_mqtt.so", "libjanus_nanomsg.so", "libjanus_pfunix.so", "libjanus_rabbitmq.so",
               "libjanus_websockets.so")


class JanusError(RuntimeError):
    """Janus answered a request with an error, or not as the API says."""


def janus_binary() -> str | None:
    return shutil.which("janus")


def _plugins_folder() -> Path:
    """Where Debian's janus keeps its plugins (from the packaged janus.jcfg, else the multiarch default)."""
    packaged = Path("/etc/janus/janus.jcfg")
    if packaged.exists():
        for line in packaged.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "plugins_folder":
                return Path(value.split("#")[0].strip().strip('"')).parent
    return Path("/usr/lib/x86_64-linux-gnu/janus")


def write_config(folder: Path, camera_url: str, http_port: int, interface: str, address: str, event_loops: int = 2) -> Path:
    """Write janus.jcfg and the two component configs into ``folder``; return janus.jcfg's path.

    ICE uses only ``interface``, whose IPv4 address is ``address``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lib = _plugins_folder()
    plugins = sorted(p.name for p in (lib / "plugins").glob("libjanus_*.so") if p.name != "libjanus_streaming.so")
    (folder / "janus.jcfg").write_text(
        "general: {\n"
        f'\tconfigs_folder = "{folder}"\n'
        f'\tplugins_folder = "{lib / "plugins"}"\n'
        f'\ttransports_folder = "{lib / "transports"}"\n'
        f'\tevents_folder = "{lib / "events"}"\n'
        f'\tloggers_folder = "{lib / "loggers"}"\n'
        "\tdebug_level = 4\n"
        f'\tinterface = "{address}"\n'
        "\tsession_timeout = 60\n"
        f"\tevent_loops = {event_loops}\n"
        "}\n"
        "media: {\n\tipv6 = false\n}\n"
        "nat: {\n"
        "\tnice_debug = false\n"
        "\tfull_trickle = false\n"
        f'\tice_enforce_list = "{interface}"\n'
        "}\n"
        f'plugins: {{\n\tdisable = "{",".join(plugins)}"\n}}\n'
        f'transports: {{\n\tdisable = "{",".join(_TRANSPORTS)}"\n}}\n'
        'loggers: {\n\tdisable = "libjanus_jsonlog.so"\n}\n'
        "events: {\n\tbroadcast = false\n}\n"
    )
    (folder / "janus.transport.http.jcfg").write_text(
        "general: {\n"
        '\tjson = "plain"\n'
        '\tbase_path = "/janus"\n'
        "\thttp = true\n"
        f"\tport = {http_port}\n"
        '\tip = "127.0.0.1"\n'
        "\thttps = false\n"
        "}\n"
        "admin: {\n\tadmin_http = false\n\tadmin_https = false\n}\n"
    )
    (folder / "janus.plugin.streaming.jcfg").write_text(
        "general: {\n}\n"
        "bench: {\n"
        '\ttype = "rtsp"\n'
        f"\tid = {MOUNTPOINT}\n"
        '\tdescription = "bench camera"\n'
        "\taudio = false\n"
        "\tvideo = true\n"
        f'\turl = "{camera_url}"\n'
        "\trtsp_failcheck = false\n"
        "\trtsp_reconnect_delay = 5\n"
        "}\n"
    )
    return folder / "janus.jcfg"


def start(config: Path, log: Path) -> subprocess.Popen:
    """Start Janus with the configuration ``write_config`` wrote; its output goes to ``log``."""
    binary = janus_binary()
    if binary is None:
        raise RuntimeError("janus is not installed (apt-get install janus)")
    with open(log, "w") as out:
        return subprocess.Popen(
            [binary, "--config", str(config), "--configs-folder", str(config.parent), "--disable-colors"],
            stdout=out, stderr=subprocess.STDOUT,
        )


async def wait_ready(base: str, janus: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    """Until Janus answers ``info`` with the streaming plugin loaded and the mountpoint's RTSP feed up."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if janus.poll() is not None:
                raise RuntimeError(f"janus exited ({janus.returncode}):\n{log.read_text()[-3000:]}")
            try:
                async with http.get(f"{base}/janus/info", timeout=REQUEST_TIMEOUT) as resp:
                    info = await resp.json(content_type=None)
                if STREAMING not in info.get("plugins", {}):
                    raise RuntimeError(f"janus has no streaming plugin: {sorted(info.get('plugins', {}))}")
                async with JanusSession(http, base) as session:
                    handle = await session.attach()
                    reply = await session.request(handle, {"request": "info", "id": MOUNTPOINT})
                    media = reply.get("info", {}).get("media", [])
                    if any(m.get("age_ms") is not None for m in media):
                        return
                    last = f"mountpoint {MOUNTPOINT}: no media yet ({reply})"
            except (aiohttp.ClientError, JanusError, TimeoutError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.3)
    raise RuntimeError(f"janus not ready within {timeout:.0f}s: {last}")


class JanusSession:
    """One Janus API session over HTTP: handles, plugin messages, a long-poll loop and keepalives."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base.rstrip("/") + "/janus"
        self.id: int | None = None
        self._events: dict[int, asyncio.Queue] = {}
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> JanusSession:
        reply = await self._post(self.base, {"janus": "create"})
        self.id = reply["data"]["id"]
        self._tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._keepalive())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.id is not None:
            try:
                await self._post(f"{self.base}/{self.id}", {"janus": "destroy"})
            except (aiohttp.ClientError, JanusError, TimeoutError):
                pass  # Janus drops it after session_timeout anyway

    async def _post(self, url: str, message: dict) -> dict:
        message = {**message, "transaction": secrets.token_hex(6)}
        async with self.http.post(url, json=message, timeout=REQUEST_TIMEOUT) as resp:
            reply = await resp.json(content_type=None)
        if reply.get("janus") == "error" or "error" in reply:
            raise JanusError(f"{message['janus']}: {reply.get('error')}")
        return reply

    async def attach(self) -> int:
        reply = await self._post(f"{self.base}/{self.id}", {"janus": "attach", "plugin": STREAMING})
        handle = reply["data"]["id"]
        self._events[handle] = asyncio.Queue()
        return handle

    async def detach(self, handle: int) -> None:
        try:
            await self._post(f"{self.base}/{self.id}/{handle}", {"janus": "detach"})
        finally:
            self._events.pop(handle, None)

    async def request(self, handle: int, body: dict) -> dict:
        """A synchronous plugin request (info, list): the plugin's data."""
        reply = await self._post(f"{self.base}/{self.id}/{handle}", {"janus": "message", "body": body})
        if reply.get("janus") != "success":
            raise JanusError(f"{body['request']}: expected success, got {reply.get('janus')}")
        return reply["plugindata"]["data"]

    async def message(self, handle: int, body: dict, jsep: dict | None = None) -> None:
        """An asynchronous plugin request (watch, start): Janus acks, the result comes as an event."""
        message = {"janus": "message", "body": body, **({"jsep": jsep} if jsep else {})}
        await self._post(f"{self.base}/{self.id}/{handle}", message)

    async def event(self, handle: int, timeout: float) -> dict:
        """The next event Janus sent about ``handle`` (plugin events, webrtcup, hangup, ...)."""
        return await asyncio.wait_for(self._events[handle].get(), timeout)

    async def _poll(self) -> None:
        url = f"{self.base}/{self.id}"
        while True:
            try:
                async with self.http.get(url, params={"maxev": "20"}, timeout=LONG_POLL_TIMEOUT) as resp:
                    events = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            for event in events if isinstance(events, list) else [events]:
                queue = self._events.get(event.get("sender"))
                if queue is not None:
                    queue.put_nowait(event)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            try:
                await self._post(f"{self.base}/{self.id}", {"janus": "keepalive"})
            except (aiohttp.ClientError, JanusError, TimeoutError):
                pass  # the next one, or the long poll, tells


@dataclass
class JanusViewer:
    pc: RTCPeerConnection
    handle: int
    posted_at: float  #: time.monotonic() just before the ``watch`` request

    @property
    def track(self):  # -> RemoteStreamTrack
        return self.pc.getTransceivers()[0].receiver.track


async def open_viewer(session: JanusSession, timeout: float = 15.0) -> JanusViewer:
    """Watch the mountpoint on a new handle: Janus offers, this aiortc peer answers (recvonly)."""
    handle = await session.attach()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: host candidates only
    try:
        posted = time.monotonic()
        await session.message(handle, {"request": "watch", "id": MOUNTPOINT})
        offer = None
        while offer is None:
            event = await session.event(handle, timeout)
            if event.get("janus") == "hangup":
                raise JanusError(f"watch: hangup ({event.get('reason')})")
            data = event.get("plugindata", {}).get("data", {})
            if "error" in data:
                raise JanusError(f"watch: {data['error']}")
            offer = event.get("jsep")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type=offer["type"]))
        for transceiver in pc.getTransceivers():
            transceiver.direction = "recvonly"
        await pc.setLocalDescription(await pc.createAnswer())
        enlarge_receive_buffers(pc)
        await session.message(handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})
    except BaseException:
        await pc.close()
        try:
            await session.detach(handle)
        except (aiohttp.ClientError, JanusError, TimeoutError):
            pass
        raise
    return JanusViewer(pc, handle, posted)


async def close_viewer(session: JanusSession, viewer: JanusViewer) -> None:
    """Detach the handle (Janus hangs up the peer), then close the peer."""
    try:
        await session.detach(viewer.handle)
    except (aiohttp.ClientError, JanusError, TimeoutError):
        pass
    await viewer.pc.close()
