"""``citygate audit verify`` and ``citygate audit checkpoint``: prove the audit chain is
unbroken and was not rewritten since it was signed."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser("audit", help="the tamper-evident audit log")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = sub.add_parser(
        "verify", help="walk the hash chain, check the signed checkpoints, and name the first thing that does not fit"
    )
    verify.add_argument("--config", dest="config_dir", help="config directory (default: conf)")
    verify.add_argument(
        "--key", action="append", default=[], metavar="PUBKEY",
        help="a trusted public key (PEM, from GET /api/evidence/public-key); default: the gateway's own key; repeatable",
    )
    verify.add_argument(
        "--anchor-file", action="append", default=[], metavar="FILE",
        help="checkpoints kept outside the database ([audit] checkpoint-file, or a SIEM export as JSON lines); repeatable",
    )
    verify.set_defaults(func=cmd_verify)
    checkpoint = sub.add_parser("checkpoint", help="sign the chain's head now (before a backup or a handover)")
    checkpoint.add_argument("--config", dest="config_dir", help="config directory (default: conf)")
    checkpoint.set_defaults(func=cmd_checkpoint)


def _trusted_keys(config, key_files: list[str]) -> dict:
    """The keys given with --key, or else the gateway's own (if this host has it)."""
    from gateway.evidence.signing import Signer, fingerprint, gateway_key_path, load_public_key

    keys = []
    own = gateway_key_path(config)
    if not key_files and own.exists():
        keys.append(Signer.load_or_create(own).public_key)
    for name in key_files:
        keys.append(load_public_key(Path(name).read_bytes()))
    return {fingerprint(key): key for key in keys}


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.loading import load_config_only
    from gateway.access.checkpoints import read_anchor_file

    config = load_config_only(args.config_dir)
    try:
        trusted = _trusted_keys(config, args.key)
    except (OSError, ValueError) as exc:
        print(f"cannot use the key: {exc}", file=sys.stderr)
        return 2
    anchors, problems = [], []
    for name in args.anchor_file:
        try:
            found, bad_lines = read_anchor_file(Path(name))
        except OSError as exc:
            print(f"cannot read {name}: {exc}", file=sys.stderr)
            return 2
        anchors += found
        problems += bad_lines
    every = config.audit.checkpoint_minutes * 60  # 0: checkpoints are off, none can be missing
    return asyncio.run(_verify(config.database_url, trusted, anchors, problems, every))


async def _verify(url: str, trusted: dict, anchors: list, problems: list[str], every: float = 0.0) -> int:
    from gateway.access.checkpoints import verify_chain
    from gateway.db import Database

    async with Database(url) as db:
        report = await verify_chain(db, trusted, anchors=anchors, every=every)
    chain = report.chain
    problems = problems + report.problems
    if chain.ok:
        print(f"audit chain intact: {chain.checked} entries, head {chain.head}")
    else:
        print(f"audit chain BROKEN at entry {chain.broken_id}: {chain.reason} ({chain.checked} entries before it verified)")
    if report.newest is not None:
        print(
            f"signed checkpoints: {report.checkpoints} checked, {chain.vouched} matched the chain; "
            f"the newest vouches for entry {report.newest.entry_id}"
        )
    else:
        print("signed checkpoints: none (entries can be rewritten without trace by someone who can write the database)")
    for problem in problems:
        print(f"  - {problem}")
    return 0 if chain.ok and not problems else 1


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from gateway.loading import load_config_only

    config = load_config_only(args.config_dir)
    return asyncio.run(_checkpoint(config))


async def _checkpoint(config) -> int:
    from gateway.access.checkpoints import AuditCheckpointer, checkpoint_file
    from gateway.webroot import WEBCLIENT_DIR
    from gateway.db import Database
    from gateway.evidence.signing import gateway_signer

    signer = await asyncio.to_thread(gateway_signer, config, WEBCLIENT_DIR)
    async with Database(config.database_url) as db:
        cp = await AuditCheckpointer(db, signer, every=0, file=checkpoint_file(config)).checkpoint()
    if cp is None:
        print("the newest checkpoint already covers the chain's head (or the chain is empty)")
    else:
        print(f"checkpoint {cp.id}: entry {cp.entry_id} has hash {cp.entry_hash} (signed by key {cp.key_fingerprint})")
    return 0
