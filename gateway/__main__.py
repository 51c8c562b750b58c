"""The ``citygate`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from gateway import __version__
from gateway.datadir import private_dir
from gateway.db import DatabaseUnavailable
from gateway.errors import ConfigError, ConfigErrors, PluginError

from gateway.loading import DEFAULT_CONFIG_DIR, load_config_only  # noqa: F401 - the CLI's names
from gateway.loading import config_dir as _config_dir
from gateway.loading import load_all as _load


def cmd_check_config(args: argparse.Namespace) -> int:
    config, _, policy = _load(_config_dir(args.config_dir))
    print(f"configuration in {config.root} is valid")
    print(f"  server: {'https' if config.server.tls_cert else 'http'}://{config.server.bind}:{config.server.port}/")
    print(f"  data dir: {config.data_dir}")
    print(f"  storage: {config.storage.backend}")
    print(f"  cameras: {len(config.cameras)} ({sum(c.enabled for c in config.cameras)} enabled)")
    for camera in config.cameras:
        flags = [] if camera.enabled else ["disabled"]
        if camera.record:
            flags.append(f"recorded {camera.retention_days} d")
        print(f"    {camera.id:<16} {camera.vendor:<14} area={camera.area:<12} {camera.title}  [{', '.join(flags)}]")
    print(f"  roles: {', '.join(sorted(policy.roles))}")
    if args.probe:
        return probe_storage(config)
    return 0


def probe_storage(config) -> int:  # noqa: ANN001 - gateway.config.Config
    """``check-config --probe``: try each storage backend; 2 if one is unusable as configured,
    1 if one cannot be reached now (an outage), else 0."""
    from gateway.plugins import load_plugins
    from gateway.recording.service import probe_storage as probe

    code = 0
    for section, state, detail in asyncio.run(probe(config, load_plugins())):
        print(f"  probe [{section}]: {state}: {detail}")
        code = max(code, {"ok": 0, "unreachable": 1, "failed": 2}[state])
    return code


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from gateway.plugins import load_plugins

    plugins = load_plugins()
    rows = plugins.describe()
    for info in rows:
        print(f"{info.name}")
        print(f"    kinds:    {', '.join(info.kinds) or '-'}")
        if info.provides:
            print(f"    provides: {', '.join(info.provides)}")
        print(f"    from:     {info.source}")
    for name in plugins.blocked():
        print(f"{name}\n    blocked by CITYGATE_DISABLE_PLUGINS")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.app import build_app, ssl_context

    from gateway import cli_reload
    from gateway.cluster import workers
    from gateway.reload import RELOAD_SIGNALS

    config, plugins, policy = _load(_config_dir(args.config_dir))
    # Whatever the server writes (recordings, packages, checkpoint file) is never world-readable
    # (any stricter bits of the operator's umask are kept); the data dir itself is 0700.
    os.umask(os.umask(0o027) | 0o027)
    private_dir(Path(config.data_dir))
    host = args.bind or config.server.bind
    port = args.port if args.port is not None else config.server.port
    if args.workers > 1 and args.worker_index is None:
        print(f"Citygate {__version__}: {args.workers} workers on port {port}", flush=True)
        argv = [sys.executable, "-m", "gateway", *sys.argv[1:]]
        # alone on a machine the workers share a secret made in the data dir; as a node of a
        # cluster of machines they are its nodes <node-id>-w<i> and use the cluster's secret
        secret = Path(config.root) / config.cluster.secret_file if config.cluster.enabled and config.cluster.secret_file \
            else workers.ensure_secret(Path(config.data_dir))
        pid_file = cli_reload.write_pid_file(Path(config.data_dir))  # `citygate reload`: SIGHUP passed on to the workers
        try:
            return workers.supervise(argv, args.workers, workers.worker_ports(config, args.workers), secret)
        finally:
            pid_file.unlink(missing_ok=True)
    machines = config.cluster.enabled  # a node of a cluster of machines (before this worker's own config)
    if args.worker_index is not None:
        config = workers.worker_config(config, args.worker_index, args.worker_port, Path(args.worker_secret))
    app = build_app(config, plugins, policy, on_first_admin=_print_first_admin)
    app[RELOAD_SIGNALS] = args.worker_index is None  # SIGHUP (`citygate reload`) reads conf/ again; pid file
    ctx = ssl_context(config)
    scheme = "https" if ctx else "http"
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    loop = _new_loop()
    if args.worker_index is not None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(workers.run_sites(
            app, host=host, port=port, ssl_context=ctx, internal_port=args.worker_port,
            # the other machines forward to this worker: on the server's address, with its TLS if advertised so
            internal_host=host if machines else "127.0.0.1",
            internal_ssl=ctx if machines and (config.cluster.advertise_url or "").startswith("https:") else None,
        ))
        return 0
    print(f"Citygate {__version__}: {len(config.cameras)} cameras; open {scheme}://{shown}:{port}/ in a browser", flush=True)
    web.run_app(app, host=host, port=port, ssl_context=ctx, loop=loop, print=None, access_log=None, shutdown_timeout=5)
    return 0


def _print_first_admin(username: str, password: str) -> None:
    print(
        f"\n  First start: created the administrator account\n\n"
        f"      username: {username}\n      password: {password}\n\n"
        "  This password is shown only once; you must change it at first sign-in.\n",
        flush=True,
    )


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is optional on platforms without it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="citygate", description="Citygate video gateway for city CCTV monitoring centres")
    parser.add_argument("--version", action="version", version=f"citygate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", dest="config_dir", help="config directory (default: conf, or $CITYGATE_CONFIG)")
    serve.add_argument("--bind", help="override server.bind")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="run N worker processes (one per core) as nodes of a cluster behind one port (default 1)",
    )
    # set by --workers for its worker processes
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-port", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-secret", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate the configuration and print a summary")
    check.add_argument("config_dir", nargs="?", help="config directory (default: conf)")
    check.add_argument("--probe", action="store_true", help="also try the storage backends (bucket, credentials, rights)")
    check.set_defaults(func=cmd_check_config)

    plugins = sub.add_parser("plugins", help="inspect plugins")
    plugins_sub = plugins.add_subparsers(dest="plugins_command", required=True)
    plist = plugins_sub.add_parser("list", help="list discovered plugins, their kinds and origin")
    plist.set_defaults(func=cmd_plugins_list)

    from gateway import cli_audit, cli_cameras, cli_cluster, cli_export, cli_recordings, cli_reload, cli_users

    cli_audit.add_parser(sub)
    cli_cameras.add_parser(sub)
    cli_cluster.add_parser(sub)
    cli_export.add_parser(sub)
    cli_recordings.add_parser(sub)
    cli_reload.add_parser(sub)
    cli_users.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aioice").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except ConfigError as exc:  # found while starting (a path the config names, say)
        print(f"configuration error:\n  {exc.message}", file=sys.stderr)
        return 2
    except ConfigErrors as exc:
        print("configuration error:" if len(exc.errors) == 1 else f"{len(exc.errors)} configuration errors:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error.message}", file=sys.stderr)
        return 2
    except PluginError as exc:
        print(f"plugin error: {exc.message}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"cannot start: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
