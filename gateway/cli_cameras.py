"""``citygate cameras discover``: the cameras of another Citygate, as ``cameras.toml`` tables.

    DISTRICT1_TOKEN=... citygate cameras discover --url https://citygate.district1.example \
        --token-env DISTRICT1_TOKEN [--prefix d1-] [--node central]

Lists every camera the token's account may see on the remote gateway (name, area, tags;
owner, address and location where it may read the remote inventory; state as a comment) as ``[[camera]]`` tables of the ``citygate`` vendor, to paste into
``conf/cameras.toml``. The token is read from the environment (never from the command
line, where other users of the machine could see it) and is not printed: the tables name
the variable (``token-env``).

Exit status: 0 listed, 1 the remote gateway refused or could not be reached, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from gateway.errors import GatewayError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    cameras = subparsers.add_parser("cameras", help="cameras: discover those of another Citygate")
    sub = cameras.add_subparsers(dest="cameras_command", required=True)
    discover = sub.add_parser("discover", help="print cameras.toml tables for a remote Citygate's cameras")
    discover.add_argument("--url", required=True, help="the remote gateway's base URL")
    discover.add_argument("--token-env", required=True, help="environment variable holding an API token there")
    discover.add_argument("--prefix", default="", help="put before each remote camera id (ids must be unique here)")
    discover.add_argument("--node", default="", help="this gateway's name in the remote audit log")
    discover.set_defaults(func=cmd_discover)


def cmd_discover(args: argparse.Namespace) -> int:
    # the built-in federation vendor does the talking
    from citygate_plugins.cameras.citygate import cameras_toml, discover

    token = os.environ.get(args.token_env)
    if not token:
        print(f"environment variable {args.token_env} is not set", file=sys.stderr)
        return 2
    try:
        cameras = asyncio.run(discover(args.url, token))
    except GatewayError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(f"# {len(cameras)} cameras of {args.url}", flush=True)
    sys.stdout.write(cameras_toml(cameras, base_url=args.url, token_env=args.token_env, prefix=args.prefix, node=args.node))
    return 0
