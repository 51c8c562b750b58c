"""``citygate serve --workers N``: one node per core behind one HTTP port, on one machine.

The parent process supervises; each worker is a whole gateway process and a node of a
cluster on the shared SQLite database (or PostgreSQL, if configured). Every worker listens
on the public port with ``SO_REUSEPORT`` — the kernel spreads connections over them — and
on a loopback port of its own, its ``advertise-url``, where the others forward what runs
on it. The cluster secret is a file in the data dir, made at the first start.

Worker 0 starts first and alone (it migrates the database and creates the first
administrator); the others start once it listens. A worker that dies is started again
after a second; its cameras have moved to the others meanwhile and some come back when it
rejoins. SIGTERM or SIGINT to the parent stops every worker, each giving its cameras away.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from aiohttp import web

from gateway.config import ClusterConfig, Config
from gateway.datadir import private_file

SECRET_FILE = "cluster.key"
RESTART_DELAY = 1.0
READY_TIMEOUT = 120.0


def worker_node(index: int) -> str:
    return f"{socket.gethostname().split('.')[0] or 'node'}-w{index}"


def ensure_secret(data_dir: Path) -> Path:
    path = data_dir / SECRET_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    private_file(path)
    return path


def worker_ports(config: Config, workers: int) -> list[int]:
    """Where each worker takes forwarded requests. Alone on a machine: free loopback ports.
    As part of a cluster of machines (``[cluster] node-id``): the ports after the node's
    advertised one (8081, 8082... for 8080), fixed so that firewalls can let them through."""
    if config.cluster.enabled and config.cluster.advertise_url:
        base = urllib.parse.urlsplit(config.cluster.advertise_url).port or 80
        return [base + 1 + i for i in range(workers)]
    return [_free_port() for _ in range(workers)]


def worker_config(config: Config, index: int, port: int, secret: Path) -> Config:
    """The config of worker ``index``: a node of its own, reached on ``port``. On one machine
    alone it is ``<host>-w<i>`` on loopback; in a cluster of machines, ``<node-id>-w<i>`` on
    the node's advertised host, with the cluster's secret."""
    import msgspec

    own = config.cluster
    if own.enabled and own.advertise_url and own.node_id:
        advertised = urllib.parse.urlsplit(own.advertise_url)
        cluster = msgspec.structs.replace(
            own, node_id=f"{own.node_id}-w{index}", advertise_url=f"{advertised.scheme}://{advertised.hostname}:{port}",
            capacity=max(1, own.capacity // max(1, _workers_of(config))),
        )
    else:
        cluster = ClusterConfig(
            node_id=worker_node(index), advertise_url=f"http://127.0.0.1:{port}",
            capacity=own.capacity, lease_seconds=own.lease_seconds, secret_file=str(secret),
        )
    # the re-stream: worker i on the configured port + i; clients of one worker's port are
    # redirected to the worker that runs the camera
    rtsp_out = msgspec.structs.replace(config.rtsp_out, port=config.rtsp_out.port + index)
    return msgspec.structs.replace(config, cluster=cluster, rtsp_out=rtsp_out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def supervise(argv: list[str], workers: int, ports: list[int], secret: Path) -> int:
    """Run ``workers`` worker processes (``argv`` + their flags) until told to stop."""
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def spawn(i: int) -> subprocess.Popen[bytes]:
        cmd = [*argv, "--worker-index", str(i), "--worker-port", str(ports[i]), "--worker-secret", str(secret)]
        return subprocess.Popen(cmd, env={**os.environ, WORKERS_ENV: str(workers)})

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def reload(signum: int, _frame: object) -> None:  # `citygate reload`: every worker reads conf/ again
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    procs[0] = spawn(0)
    deadline = time.monotonic() + READY_TIMEOUT
    while not stopping and not _listening(ports[0]):
        if procs[0].poll() is not None:
            print(f"citygate: worker 0 exited with {procs[0].returncode} before it was ready", file=sys.stderr, flush=True)
            return procs[0].returncode or 1
        if time.monotonic() > deadline:
            stop(signal.SIGTERM, None)
            break
        time.sleep(0.2)
    for i in range(1, workers):
        if not stopping:
            procs[i] = spawn(i)
    while True:
        for i, proc in list(procs.items()):
            code = proc.poll()
            if code is None or stopping:
                continue
            print(f"citygate: worker {i} exited with {code}; starting it again", file=sys.stderr, flush=True)
            time.sleep(RESTART_DELAY)
            procs[i] = spawn(i)
        if stopping and all(p.poll() is not None for p in procs.values()):
            return 0
        time.sleep(0.2)


async def run_sites(
    app: web.Application, *, host: str, port: int, ssl_context: object, internal_port: int | None,
    internal_host: str = "127.0.0.1", internal_ssl: object = None,
) -> None:
    """Serve ``app`` on the public port (shared by the workers) and its own loopback port,
    until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=True).start()  # type: ignore[arg-type]
        if internal_port is not None:  # forwarded requests: on loopback, or the host's address in a cluster of machines
            await web.TCPSite(runner, internal_host, internal_port, ssl_context=internal_ssl).start()  # type: ignore[arg-type]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _workers_of(config: Config) -> int:
    """How many workers share this machine's node (its capacity is divided among them)."""
    return int(os.environ.get(WORKERS_ENV, "1"))


#: Set by the supervisor for its workers: how many there are.
WORKERS_ENV = "CITYGATE_WORKERS"
