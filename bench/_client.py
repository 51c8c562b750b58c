"""Client side of the live benchmarks: processes, CPU from /proc, sign-in, WHEP viewers.

Everything here talks to a gateway running as its own process, the way an outside client
would: HTTP on loopback, aiortc peers, no imports from the gateway's internals.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

SDP_TYPE = "application/sdp"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- processes and CPU -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def thread_run_seconds(pid: int) -> dict[int, float] | None:
    """Each live thread's time on a CPU, exactly (nanoseconds from /proc/<pid>/task/*/schedstat),
    or None where the kernel keeps no schedstat."""
    times: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                times[int(tid)] = int(f.read().split()[0]) / 1e9
        except FileNotFoundError:  # the thread just ended
            continue
        except (OSError, ValueError, IndexError):
            return None
    return times


class CpuMeter:
    """Percent of one core a process used between ``start()`` and ``stop()``.

    From the scheduler's exact run time of each thread where the kernel has it: /proc/<pid>/stat
    counts in 10 ms ticks, sampled, which at 1 % of a core over 20 s is about 20 ticks, so a
    reading is good to ±0.2 % and the cost of one viewer (a difference of two readings) drowns in
    it. A thread that ends within the window takes its run time with it, so then (and where
    there is no schedstat) the reading is the tick count of /proc/<pid>/stat, which keeps the
    time of ended threads.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu = 0.0
        self._threads: dict[int, float] | None = None
        self._wall = 0.0

    def start(self) -> None:
        self._threads = thread_run_seconds(self.pid)
        self._cpu, self._wall = process_cpu_seconds(self.pid), time.monotonic()

    def stop(self) -> float:
        threads = thread_run_seconds(self.pid)
        cpu, wall = process_cpu_seconds(self.pid) - self._cpu, time.monotonic() - self._wall
        before = self._threads
        if before is not None and threads is not None and before.keys() <= threads.keys():
            cpu = sum(seconds - before.get(tid, 0.0) for tid, seconds in threads.items())
        return 100 * cpu / wall


def stop_process(proc: subprocess.Popen | None, timeout: float = 8.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- sign-in -----------------------------------------------------------------------------

PASSWORD_LINE = re.compile(r"one-time password for (\S+): (\S+)")


def create_user(config_dir: Path, username: str, role: str = "operator") -> str | None:
    """Run ``citygate users add``; the one-time password, or None when the command does not exist yet."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "users", "add", username, "--role", role, "--all-areas", "--config", str(config_dir)],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0:
        if "invalid choice" in proc.stderr:  # no `users` command in this build: no access control yet
            return None
        raise RuntimeError(f"`citygate users add` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    match = PASSWORD_LINE.search(proc.stdout)
    if match is None:
        raise RuntimeError(f"`citygate users add` printed no one-time password: {proc.stdout!r}")
    return match.group(2)


async def sign_in(base_url: str, username: str, one_time_password: str) -> str | None:
    """Sign in, change the one-time password, and return an API token (None: the gateway has no sign-in)."""
    # unsafe=True: aiohttp keeps no cookies from a bare IP address (127.0.0.1) otherwise.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        login = {"username": username, "password": one_time_password}
        async with http.post(f"{base_url}/api/session", json=login) as resp:
            if resp.status == 404:
                return None
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"sign-in failed: {resp.status} {body}")
        password = one_time_password
        if body.get("must_change_password"):
            password = "Lv-" + secrets.token_urlsafe(18)  # must not contain the username
            change = {"old_password": one_time_password, "new_password": password}
            async with http.post(
                f"{base_url}/api/session/password", json=change, headers={"X-CSRF-Token": body["csrf_token"]}
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"password change failed: {resp.status} {await resp.text()}")
        token_login = {"username": username, "password": password, "kind": "token", "name": "bench/live.py"}
        async with http.post(f"{base_url}/api/session", json=token_login) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"token sign-in failed: {resp.status} {body}")
            return body["token"]


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def wait_camera_online(http: aiohttp.ClientSession, base_url: str, camera_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        async with http.get(f"{base_url}/api/cameras/{camera_id}") as resp:
            if resp.status == 200:
                last = await resp.json()
                if last.get("state") == "online" and last.get("codec"):
                    return
            else:
                last = f"{resp.status} {await resp.text()}"
        await asyncio.sleep(0.2)
    raise RuntimeError(f"camera {camera_id} not online within {timeout:.0f}s: {last}")


# -- WHEP viewers ------------------------------------------------------------------------


@dataclass
class Viewer:
    pc: RTCPeerConnection
    location: str
    posted_at: float  #: time.monotonic() just before the offer was POSTed
    profile: str = ""  #: the stream the gateway chose (its Citygate-Profile header)

    @property
    def track(self):  # -> RemoteStreamTrack
        return self.pc.getTransceivers()[0].receiver.track


#: The viewers' UDP receive buffer. Linux's default (208 KiB) holds well under a second of
#: a 2 Mbit/s stream; an event loop that stalls longer (several peers in one process on a
#: busy machine) then loses packets in the kernel, and aiortc has no big buffer of its own
#: the way browsers do. Capped by net.core.rmem_max.
RECEIVE_BUFFER = 4 * 1024 * 1024


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int = RECEIVE_BUFFER) -> None:
    """Set SO_RCVBUF on the ICE sockets aiortc gathered (after setLocalDescription)."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection  # aioice.Connection
        for protocol in connection._protocols:
            sock = protocol.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def udp_receive_errors() -> int:
    """Datagrams the kernel dropped, machine-wide, because a socket's receive buffer was full."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


async def open_viewer(http: aiohttp.ClientSession, base_url: str, camera_id: str, profile: str | None = None) -> Viewer:
    """Offer a recvonly video peer to the WHEP endpoint and apply the answer (``profile``: "main" or "sub")."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: loopback only
    try:
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        enlarge_receive_buffers(pc)
        posted = time.monotonic()
        async with http.post(
            f"{base_url}/api/cameras/{camera_id}/whep",
            params={"profile": profile} if profile else None,
            data=pc.localDescription.sdp.encode(),
            headers={"Content-Type": SDP_TYPE},
        ) as resp:
            answer = await resp.text()
            if resp.status != 201:
                raise RuntimeError(f"WHEP offer refused: {resp.status} {answer.strip()}")
            location = resp.headers["Location"]
            chosen = resp.headers.get("Citygate-Profile", "")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    except BaseException:
        await pc.close()
        raise
    return Viewer(pc, location, posted, chosen)


async def close_viewer(http: aiohttp.ClientSession, base_url: str, viewer: Viewer) -> None:
    """DELETE the WHEP session (as a polite client does), then close the peer."""
    try:
        async with http.delete(base_url + viewer.location, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            await resp.read()
    except (aiohttp.ClientError, TimeoutError):
        pass  # the peer's close below ends the session anyway
    await viewer.pc.close()


async def packets_received(viewer: Viewer) -> int:
    """RTP packets the viewer's receiver got (its ``inbound-rtp`` statistics)."""
    report = await viewer.pc.getTransceivers()[0].receiver.getStats()
    return sum(s.packetsReceived for s in report.values() if s.type == "inbound-rtp")


def luma_top(frame, rows: int = 16) -> np.ndarray:
    """The top ``rows`` rows of a decoded frame's Y plane, without converting the whole frame."""
    plane = frame.planes[0]
    data = np.frombuffer(plane, dtype=np.uint8)
    return data[: rows * plane.line_size].reshape(rows, plane.line_size)[:, : frame.width]


def install_frame_counter() -> dict[int, list[int]]:
    """Make aiortc's receivers count complete frames instead of decoding them.

    aiortc reassembles each frame from RTP in its jitter buffer (that part stays, as in any
    receiver) and hands it to a decoder thread per receiver; this replaces that thread's
    body with a counter. Returns ``{id(track queue): [frames, bytes]}``, filled as frames
    arrive; nothing reaches ``track.recv()``. Call before any peer receives.
    """
    import aiortc.rtcrtpreceiver as receiver_module

    counts: dict[int, list[int]] = {}

    def count_frames(loop, input_q, output_q, decode_error) -> None:
        slot = counts.setdefault(id(output_q), [0, 0])
        while True:
            task = input_q.get()
            if task is None:
                asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
                return
            slot[0] += 1
            slot[1] += len(task[1].data)

    receiver_module.decoder_worker = count_frames
    return counts


#: Which frame counter the benchmark's viewer processes use (``BENCH_VIEWER_COUNTER``):
#: "header" (default) counts from the SRTP packets' clear RTP headers, "jitter" lets aiortc
#: decrypt and reassemble every frame (a much heavier viewer).
VIEWER_COUNTER_ENV = "BENCH_VIEWER_COUNTER"
#: Seconds between the receiver reports a header-counting viewer sends.
REPORT_INTERVAL = 1.0


class JitterBufferCounter:
    """Complete frames from aiortc's jitter buffer (``install_frame_counter``); packets from
    the receiver's statistics."""

    def __init__(self) -> None:
        self._counts = install_frame_counter()

    def frames(self, viewer) -> int:
        return self._counts.get(id(viewer.track._queue), [0, 0])[0]

    async def packets(self, viewer) -> int:
        return await packets_received(viewer)


class _CountingSrtp:
    """Stands in for a DTLS transport's receiving SRTP session: SRTCP is unprotected as
    usual; an SRTP packet is counted from its clear RTP header and then refused (aiortc drops
    it quietly), so no per-packet decryption, parsing, jitter buffer or NACK runs. A receiver
    report for the media stream goes back about once a second, as any receiver sends."""

    def __init__(self, session, transport, slot: list[int]) -> None:
        self._session = session
        self._transport = transport
        self._slot = slot  # frames, packets
        self._ssrc: int | None = None
        self._last_marker: int | None = None
        self._since_marker = 0
        self._highest = 0
        self._cycles = 0
        self._reported = 0.0

    def unprotect_rtcp(self, data: bytes) -> bytes:
        return self._session.unprotect_rtcp(data)

    def unprotect(self, data: bytes) -> bytes:
        import pylibsrtp

        ssrc = int.from_bytes(data[8:12], "big")
        if self._ssrc is None:
            self._ssrc = ssrc
        if ssrc == self._ssrc:  # retransmissions (RTX) come on another SSRC
            self._count(int.from_bytes(data[2:4], "big"), data[1] & 0x80)
        raise pylibsrtp.Error("counted from the clear header")

    def _count(self, seq: int, marker: int) -> None:
        slot = self._slot
        slot[1] += 1
        self._since_marker += 1
        if seq < self._highest and self._highest - seq > 0x8000:
            self._cycles += 0x10000
        if ((seq - self._highest) & 0xFFFF) < 0x8000:
            self._highest = seq
        if marker:
            # a frame is complete when every packet since the previous marker arrived
            if self._last_marker is not None and self._since_marker == (seq - self._last_marker) & 0xFFFF:
                slot[0] += 1
            self._last_marker = seq
            self._since_marker = 0
            now = time.monotonic()
            if now - self._reported >= REPORT_INTERVAL:
                self._reported = now
                asyncio.ensure_future(self._report())

    async def _report(self) -> None:
        from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

        report = RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(
            ssrc=self._ssrc, fraction_lost=0, packets_lost=0, highest_sequence=self._cycles + self._highest,
            jitter=0, lsr=0, dlsr=0,
        )])
        try:
            await self._transport._send_rtp(bytes(report))
        except ConnectionError:
            pass


class ClearHeaderCounter:
    """Complete frames and packets counted from the SRTP packets' clear RTP headers, as the
    issue's own measurement did: the viewer costs little, so the server is what is measured.
    Installs itself on aiortc's DTLS transports (call before any peer connects)."""

    def __init__(self) -> None:
        from aiortc.rtcdtlstransport import RTCDtlsTransport

        slots = self._slots = {}

        def get_rx(transport):
            return transport.__dict__.get("_bench_rx")

        def set_rx(transport, session) -> None:
            if session is not None:
                session = _CountingSrtp(session, transport, slots.setdefault(id(transport), [0, 0]))
            transport.__dict__["_bench_rx"] = session

        RTCDtlsTransport._rx_srtp = property(get_rx, set_rx)

    def _slot(self, viewer) -> list[int]:
        return self._slots.get(id(viewer.pc.getTransceivers()[0].receiver.transport), [0, 0])

    def frames(self, viewer) -> int:
        return self._slot(viewer)[0]

    async def packets(self, viewer) -> int:
        return self._slot(viewer)[1]


def viewer_counter():
    """The frame counter ``BENCH_VIEWER_COUNTER`` names (default: clear headers)."""
    kind = os.environ.get(VIEWER_COUNTER_ENV, "header")
    if kind == "jitter":
        return JitterBufferCounter()
    if kind == "header":
        return ClearHeaderCounter()
    raise SystemExit(f"{VIEWER_COUNTER_ENV} must be 'header' or 'jitter', not {kind!r}")
