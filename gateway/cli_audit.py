"""``citygate audit verify``: prove the audit chain is unbroken."""

from __future__ import annotations

import argparse
import asyncio


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser("audit", help="the tamper-evident audit log")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser("verify", help="walk the hash chain and name the first broken entry")
    verify.add_argument("--config", dest="config_dir", help="config directory (default: conf)")
    verify.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.__main__ import load_config_only

    config = load_config_only(args.config_dir)
    return asyncio.run(_verify(config.database_url))


async def _verify(url: str) -> int:
    from gateway.access.audit import AuditLog
    from gateway.db import Database

    async with Database(url) as db:
        result = await AuditLog(db).verify()
    if result.ok:
        print(f"audit chain intact: {result.checked} entries, head {result.head}")
        return 0
    print(f"audit chain BROKEN at entry {result.broken_id}: {result.reason} ({result.checked} entries before it verified)")
    return 1
