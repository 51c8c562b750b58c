"""``citygate users``: manage accounts from the shell (the first administrator, rescue).

    citygate users add alice --role operator --areas centre,north [--all-areas] [--name "Alice Smith"]
    citygate users list
    citygate users disable bob | enable bob | unlock bob
    citygate users reset-password bob
    citygate users set-role bob --role supervisor
    citygate users set-areas bob --areas north | --all-areas
    citygate users pending | confirm ID | cancel ID

Every command takes ``--config DIR``; changes are audited as ``cli:<os user>``.
Generated passwords are printed once and must be changed at the first sign-in.

The two-person rule holds here too: giving an account ``export.approve``,
``export.produce`` or ``users.manage`` (add, set-role, set-areas widening, reset-password)
only records a pending change while an enabled administrator exists; another
administrator confirms it in the web client, or another OS user with ``confirm ID``, and
receives the one-time password. With no enabled administrator at all (bootstrapping, or
rescue after every administrator was disabled) such changes apply at once. Whoever has root
on the server can get around any rule (the database and the key are there); the audit
chain shows every change the CLI made and under which OS user.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.access.identity import Identity
    from gateway.access.policy import Policy
    from gateway.config import Config

Command = Callable[[argparse.Namespace, "Identity", str], Awaitable[int]]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    users = subparsers.add_parser("users", help="manage user accounts")
    sub = users.add_subparsers(dest="users_command", required=True)

    def command(name: str, func: Command, help: str, *, username: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", dest="config_dir", help="config directory (default: conf, or $CITYGATE_CONFIG)")
        if username:
            p.add_argument("username")
        p.set_defaults(func=lambda args: run(args, func))
        return p

    add = command("add", _add, "create an account; prints its one-time password")
    add.add_argument("--role", required=True, help="a role from roles.toml")
    add.add_argument("--areas", default="", help="comma-separated areas (districts)")
    add.add_argument("--all-areas", action="store_true", help="every area, present and future")
    add.add_argument("--name", default="", help="display name, e.g. \"Alice Smith\"")

    command("list", _list, "list accounts", username=False)
    command("disable", _disable, "disable an account and end its sessions")
    command("enable", _enable, "enable a disabled account")
    command("unlock", _unlock, "lift a lock after failed sign-ins")
    command("reset-password", _reset, "set a new one-time password and end the account's sessions")
    role = command("set-role", _set_role, "change an account's role")
    role.add_argument("--role", required=True)
    areas = command("set-areas", _set_areas, "change an account's areas")
    group = areas.add_mutually_exclusive_group(required=True)
    group.add_argument("--areas", help="comma-separated areas (replaces the current ones)")
    group.add_argument("--all-areas", action="store_true", help="every area")
    command("pending", _pending, "list account changes waiting for a second administrator", username=False)
    confirm = command("confirm", _confirm, "confirm another administrator's pending change", username=False)
    confirm.add_argument("id", type=int)
    cancel = command("cancel", _cancel, "withdraw or reject a pending change", username=False)
    cancel.add_argument("id", type=int)
    return users


def _who() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"cli:{name}"


def _areas(value: str | None) -> list[str]:
    return [a.strip() for a in (value or "").split(",") if a.strip()]


def run(args: argparse.Namespace, func: Command) -> int:
    from gateway.loading import load_config_only
    from gateway.access.policy import load_roles

    config = load_config_only(args.config_dir)
    policy = load_roles(config.root)
    try:
        return asyncio.run(_session(config, policy, args, func))
    except GatewayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


async def _session(config: Config, policy: Policy, args: argparse.Namespace, func: Command) -> int:
    from gateway.access.audit import AuditLog
    from gateway.access.identity import Identity  # noqa: F811 - the runtime import
    from gateway.db import Database

    async with Database(config.database_url) as db, AuditLog(db) as audit:
        identity = Identity(db, audit, config.security, policy)
        return await func(args, identity, _who())


def _print_password(username: str, password: str) -> None:
    print(f"one-time password for {username}: {password}")
    print("  shown only now; it must be changed at the first sign-in")


def _print_pending(change_id: int, what: str) -> None:
    print(f"{what} needs a second administrator: pending change {change_id}")
    print(f"  another administrator confirms it in the web client, or another OS user runs 'citygate users confirm {change_id}'")


async def _add(args: argparse.Namespace, identity: Identity, by: str) -> int:
    changes = {"role": args.role, "areas": _areas(args.areas), "all_areas": args.all_areas, "display_name": args.name}
    identity.check_role(args.role)
    if await identity.needs_second_person("create", args.username, changes):
        change = await identity.request_change("create", args.username, changes, by=by)
        _print_pending(change.id, f"creating {args.username} (role {args.role})")
        return 0
    user, password = await identity.create_user(
        args.username, role=args.role, areas=_areas(args.areas), all_areas=args.all_areas, display_name=args.name, by=by
    )
    areas = "all" if user.all_areas else ",".join(sorted(user.areas)) or "none"
    print(f"created {user.username} (role {user.role}, areas {areas})")
    if password is not None:
        _print_password(user.username, password)
    return 0


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) + "Z" if t else "never"


async def _list(args: argparse.Namespace, identity: Identity, by: str) -> int:
    now = time.time()
    rows = [("USERNAME", "ROLE", "AREAS", "DISABLED", "LOCKED", "MUST CHANGE", "LAST LOGIN")]
    for u in await identity.list_users():
        rows.append(
            (
                u.username,
                u.role,
                "all" if u.all_areas else ",".join(sorted(u.areas)) or "-",
                "yes" if u.disabled else "no",
                f"until {_when(u.locked_until)}" if u.locked(now) else "no",
                "yes" if u.must_change_password else "no",
                _when(u.last_login_at),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


async def _disable(args: argparse.Namespace, identity: Identity, by: str) -> int:
    await identity.set_disabled(args.username, True, by=by)
    print(f"disabled {args.username}; their sessions have ended")
    return 0


async def _enable(args: argparse.Namespace, identity: Identity, by: str) -> int:
    await identity.set_disabled(args.username, False, by=by)
    print(f"enabled {args.username}")
    return 0


async def _unlock(args: argparse.Namespace, identity: Identity, by: str) -> int:
    await identity.unlock(args.username, by=by)
    print(f"unlocked {args.username}")
    return 0


async def _reset(args: argparse.Namespace, identity: Identity, by: str) -> int:
    if await identity.needs_second_person("reset-password", args.username, {}):
        change = await identity.request_change("reset-password", args.username, {}, by=by)
        _print_pending(change.id, f"resetting the password of {args.username}")
        return 0
    password = await identity.reset_password(args.username, by=by)
    print(f"reset the password of {args.username}; their sessions have ended")
    _print_password(args.username, password)
    return 0


async def _set_role(args: argparse.Namespace, identity: Identity, by: str) -> int:
    identity.check_role(args.role)
    if await identity.needs_second_person("update", args.username, {"role": args.role}):
        change = await identity.request_change("update", args.username, {"role": args.role}, by=by)
        _print_pending(change.id, f"giving {args.username} the role {args.role}")
        return 0
    user = await identity.set_role(args.username, args.role, by=by)
    print(f"{user.username} now has role {user.role}")
    return 0


async def _set_areas(args: argparse.Namespace, identity: Identity, by: str) -> int:
    changes = {"areas": _areas(args.areas), "all_areas": args.all_areas}
    if await identity.needs_second_person("update", args.username, changes):
        change = await identity.request_change("update", args.username, changes, by=by)
        _print_pending(change.id, f"widening the areas of {args.username}")
        return 0
    user = await identity.set_areas(args.username, _areas(args.areas), args.all_areas, by=by)
    print(f"{user.username} now has areas {'all' if user.all_areas else ','.join(sorted(user.areas)) or 'none'}")
    return 0


async def _pending(args: argparse.Namespace, identity: Identity, by: str) -> int:
    rows = [("ID", "CHANGE", "USERNAME", "DETAILS", "REQUESTED BY", "EXPIRES")]
    for c in await identity.pending_changes():
        details = ", ".join(f"{k}={v}" for k, v in sorted(c.payload.items()))
        rows.append((str(c.id), c.kind, c.username, details or "-", c.requested_by, _when(c.expires_at)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


async def _confirm(args: argparse.Namespace, identity: Identity, by: str) -> int:
    change, user, password = await identity.confirm_change(args.id, by=by)
    print(f"confirmed change {change.id} ({change.kind} of {user.username}, asked for by {change.requested_by})")
    if password is not None:
        _print_password(user.username, password)
    return 0


async def _cancel(args: argparse.Namespace, identity: Identity, by: str) -> int:
    change = await identity.cancel_change(args.id, by=by)
    print(f"cancelled change {change.id} ({change.kind} of {change.username})")
    return 0
