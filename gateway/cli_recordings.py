"""``citygate recordings restore``: bring recordings back from the replica into the primary.

    citygate recordings restore --camera cam1 --from 2026-03-01T08:00 --to 2026-03-01T12:00 [--dry-run]

For every catalogued segment of the camera overlapping the range whose primary copy is
gone or does not match the catalogue's SHA-256, the replica's copy
(``recording.replicate-to``) is read, checked against the same SHA-256 and only then
written to the primary storage (read back and checked again). Segments whose replica copy
is missing or corrupted are listed and left alone. Runs beside a running gateway (the
database is shared); audited as ``recording.restore`` by ``cli:<os user>``.

Exit status: 0 every segment of the range is intact on the primary now, 1 some could not
be restored, 2 unusable arguments or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from gateway.errors import BadRequest, GatewayError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    recordings = subparsers.add_parser("recordings", help="recorded video: restore from the replica")
    sub = recordings.add_subparsers(dest="recordings_command", required=True)
    restore = sub.add_parser("restore", help="copy segments the primary storage lost back from the replica")
    restore.add_argument("--config", dest="config_dir", help="config directory (default: conf, or $CITYGATE_CONFIG)")
    restore.add_argument("--camera", required=True, help="camera id")
    restore.add_argument("--from", dest="start", required=True, help="start: ISO 8601 time or epoch seconds")
    restore.add_argument("--to", dest="end", required=True, help="end: ISO 8601 time or epoch seconds")
    restore.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    restore.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    from gateway.loading import load_config_only
    from gateway.api.audit import parse_time

    config = load_config_only(args.config_dir)
    try:
        start, end = parse_time("from", args.start), parse_time("to", args.end)
    except BadRequest as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if start is None or end is None or end <= start:
        print("error: --to must be after --from", file=sys.stderr)
        return 2
    if config.camera(args.camera) is None:
        print(f"error: no camera {args.camera!r} in {config.root}", file=sys.stderr)
        return 2
    if config.recording.replicate_to is None:
        print("error: no replica is configured (recording.replicate-to): there is nothing to restore from", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_restore(config, args, start, end))
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


async def _restore(config, args: argparse.Namespace, start: float, end: float) -> int:  # config: Config
    from gateway.access.audit import AuditLog
    from gateway.cli_users import _who
    from gateway.db import Database
    from gateway.plugins import load_plugins
    from gateway.recording.index import Catalogue
    from gateway.recording.replication import restore
    from gateway.recording.service import make_backend

    plugins = load_plugins()
    data_dir = str(config.data_dir)
    replica_cfg = config.recording.replicate_to
    primary = make_backend(plugins, config.storage.backend, config.storage.options, data_dir, "storage.backend")
    replica = make_backend(plugins, replica_cfg.backend, replica_cfg.options, data_dir, "recording.replicate-to.backend")
    async with Database(config.database_url) as db, AuditLog(db) as audit, primary, replica:
        report = await restore(
            Catalogue(db, audit), primary, replica, args.camera, start, end, audit=audit, by=_who(), dry_run=args.dry_run,
        )
    verb = "would restore" if args.dry_run else "restored"
    print(f"camera {args.camera}: {report.checked} segments in the range; {len(report.intact)} intact, "
          f"{len(report.restored)} {verb} from {replica.id()}, {len(report.unrecoverable)} cannot be restored")
    for seg_id in report.restored:
        print(f"  {verb}: segment {seg_id}")
    for lost in report.unrecoverable:
        print(f"  NOT restored: segment {lost['segment']} ({lost['storage_key']}): {lost['reason']}")
    return 1 if report.unrecoverable else 0
