"""``citygate reload``: the running gateway reads ``conf/`` again, without a restart.

    citygate reload [--config conf] [--timeout 30]

Finds the running gateway by ``citygate.pid`` in the data directory, writes who asks
(``reload-request.json``: the operating-system user, for the audit log), sends SIGHUP and
waits for the gateway's answer (``reload-result.json``): the cameras added, removed and
changed, the roles changed, the sections that need a restart, or the errors (file, key,
reason) for which the new config was refused whole while the running one stays.

Exit status: 0 applied, 2 refused (configuration errors), 1 no running gateway or no answer.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import time
import tomllib
import uuid
from pathlib import Path

from gateway.loading import config_dir
from gateway.reload import PID_FILE, REQUEST_FILE, RESULT_FILE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    reload = subparsers.add_parser("reload", help="make the running gateway read conf/ again (cameras, roles) without a restart")
    reload.add_argument("--config", dest="config_dir", help="config directory (default: conf, or $CITYGATE_CONFIG)")
    reload.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the gateway's answer (default 30)")
    reload.set_defaults(func=cmd_reload)


def data_dir(root: Path) -> Path:
    """The data directory named by ``gateway.toml`` (read plainly: the files may be the
    broken ones the gateway is about to refuse)."""
    default = "../data"
    try:
        server = tomllib.loads((root / "gateway.toml").read_text()).get("server", {})
        value = server.get("data-dir", default) if isinstance(server, dict) else default
    except (OSError, tomllib.TOMLDecodeError):
        value = default
    return (root / (value if isinstance(value, str) else default)).resolve()


def write_pid_file(data: Path) -> Path:
    """For the supervisor of ``--workers``: it passes SIGHUP on to its workers."""
    path = data / PID_FILE
    path.write_text(f"{os.getpid()}\n")
    return path


def cmd_reload(args: argparse.Namespace) -> int:
    root = Path(config_dir(args.config_dir))
    data = data_dir(root)
    try:
        pid = int((data / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        print(f"citygate reload: no running gateway (no live process in {data / PID_FILE})", file=sys.stderr)
        return 1
    if not _is_gateway(pid):  # a stale pid file: its number may belong to another program now
        print(f"citygate reload: process {pid} of {data / PID_FILE} is not a Citygate gateway (stale pid file)", file=sys.stderr)
        return 1
    request_id = uuid.uuid4().hex
    request = {"id": request_id, "user": getpass.getuser(), "pid": os.getpid(), "at": time.time()}
    tmp = data / f"{REQUEST_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(request))
    os.replace(tmp, data / REQUEST_FILE)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            result = json.loads((data / RESULT_FILE).read_text())
        except (OSError, ValueError):
            result = None
        if isinstance(result, dict) and result.get("request") == request_id:
            return _report(result)
        time.sleep(0.1)
    print(f"citygate reload: no answer from process {pid} in {args.timeout:.0f} s (see its log)", file=sys.stderr)
    return 1


def _is_gateway(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: trust the pid file
    return b"gateway" in cmdline or b"citygate" in cmdline


def _report(result: dict) -> int:
    if not result.get("ok"):
        errors = result.get("errors", [])
        print(f"reload refused; the running configuration stays. {len(errors)} error(s):", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return 2
    print("reloaded")
    for key, title in (("added", "cameras added"), ("removed", "cameras removed"), ("changed", "cameras changed"),
                       ("restarted", "cameras restarted")):
        if result.get(key):
            print(f"  {title}: {', '.join(result[key])}")
    for what, names in (result.get("roles") or {}).items():
        if names:
            print(f"  roles {what}: {', '.join(names)}")
    if result.get("restart_needed"):
        print(f"  applied at the next restart only: [{'], ['.join(result['restart_needed'])}]")
    return 0
