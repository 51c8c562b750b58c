"""``citygate export verify PACKAGE.zip [--key PUBKEY]``: check a signed evidence package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="evidence packages")
    sub = export.add_subparsers(dest="export_command", required=True)
    verify = sub.add_parser("verify", help="check a package's signature and the hash of every file in it")
    verify.add_argument("package", help="the package (.zip)")
    verify.add_argument(
        "--key", help="the gateway's public key (PEM, from GET /api/evidence/public-key); default: the key in the package"
    )
    verify.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.evidence.signing import load_public_key, verify_package

    key = None
    if args.key:
        try:
            key = load_public_key(Path(args.key).read_bytes())
        except (OSError, ValueError) as exc:
            print(f"cannot use key {args.key}: {exc}", file=sys.stderr)
            return 2
    report = verify_package(Path(args.package), key)
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(f"package {args.package} verified: signature valid (key {report.key_fingerprint}), {report.files_checked} files intact")
        return 0
    print(f"package {args.package} FAILED verification ({len(report.problems)} problems):")
    for problem in report.problems:
        print(f"  - {problem}")
    return 1
