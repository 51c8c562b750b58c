"""``citygate export verify PACKAGE.zip [--key PUBKEY | --config DIR]``: check a signed
evidence package against a key the verifier trusts.

The key inside a package proves only that the package is consistent with itself: anyone
can re-sign a forged package with a key of their own. So without a trusted key (``--key``,
the key the city publishes, or ``--config`` on the gateway's host: the gateway's own key
at ``[evidence] key-path``) the verdict is "signature valid but key NOT trusted" and the
exit status is 3. Exit status: 0 verified with a trusted key, 1 failed, 2 unusable
arguments, 3 intact but signed by a key nobody vouched for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Intact and consistently signed, but by a key the verifier did not say they trust.
UNTRUSTED = 3


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="evidence packages")
    sub = export.add_subparsers(dest="export_command", required=True)
    verify = sub.add_parser("verify", help="check a package's signature and the hash of every file in it")
    verify.add_argument("package", help="the package (.zip)")
    trust = verify.add_mutually_exclusive_group()
    trust.add_argument("--key", help="the trusted public key (PEM, from GET /api/evidence/public-key)")
    trust.add_argument(
        "--config", dest="config_dir", metavar="DIR",
        help="on the gateway's host: trust the gateway's own key ([evidence] key-path of this config)",
    )
    verify.set_defaults(func=cmd_verify)


def _trusted_key(args: argparse.Namespace):  # -> tuple[Ed25519PublicKey | None, str]
    """The key to trust and where it came from; raises OSError/ValueError."""
    from gateway.evidence.signing import gateway_key_path, gateway_public_key, load_public_key

    if args.key:
        return load_public_key(Path(args.key).read_bytes()), args.key
    if args.config_dir:
        from gateway.loading import load_config_only

        config = load_config_only(args.config_dir)
        return gateway_public_key(config), f"the gateway's key {gateway_key_path(config)}"
    return None, ""


def cmd_verify(args: argparse.Namespace) -> int:
    from gateway.evidence.signing import verify_package

    try:
        key, source = _trusted_key(args)
    except (OSError, ValueError) as exc:
        print(f"cannot use the trusted key: {exc}", file=sys.stderr)
        return 2
    report = verify_package(Path(args.package), key)
    for note in report.notes:
        print(f"note: {note}")
    if not report.ok:
        print(f"package {args.package} FAILED verification ({len(report.problems)} problems):")
        for problem in report.problems:
            print(f"  - {problem}")
        return 1
    if not report.trusted:
        print(
            f"package {args.package}: signature valid but key NOT trusted (key {report.key_fingerprint}, "
            f"the one inside the package; {report.files_checked} files intact). Anyone can sign a package "
            "with a key of their own: pass --key with the gateway's published key, or --config on the gateway's host"
        )
        return UNTRUSTED
    print(
        f"package {args.package} verified: signature valid (key {report.key_fingerprint}, trusted: {source}), "
        f"{report.files_checked} files intact"
    )
    return 0
