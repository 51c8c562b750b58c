"""``citygate users ...`` end to end: real processes, a real database file, then sign-in."""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.access.audit import AuditLog
from gateway.access.identity import Identity
from gateway.access.policy import load_roles
from gateway.config import SecurityConfig
from gateway.db import Database
from gateway.errors import Forbidden, Locked, Unauthorized

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = re.compile(r"one-time password for (\S+): (\S+)")

# Until ``citygate users`` is wired into gateway/__main__.py, the same parser is mounted on
# a bare ``citygate``-like parser; afterwards the real entry point is used.
_HARNESS = """
import argparse, sys
from gateway import __main__ as main
parser = main.build_parser()
sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
if "users" in sub.choices:
    sys.exit(main.main(sys.argv[1:]))
from gateway.cli_users import add_parser
add_parser(sub)
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "gateway.toml").write_text('[server]\ndata-dir = "../data"\n')
    shutil.copy(ROOT / "conf" / "roles.toml", conf_dir / "roles.toml")
    return conf_dir


def citygate(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _HARNESS, "users", *args[:1], "--config", str(conf), *args[1:]],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


def ok(conf: Path, *args: str) -> str:
    result = citygate(conf, *args)
    assert result.returncode == 0, f"citygate users {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result.stdout


async def sign_in(conf: Path, username: str, password: str):
    async with Database(f"sqlite+aiosqlite:///{conf.parent / 'data' / 'citygate.db'}") as db, AuditLog(db) as audit:
        identity = Identity(db, audit, SecurityConfig(), load_roles(conf))
        principal, _ = await identity.login(username, password, client="127.0.0.1")
        return principal


async def audit_rows(conf: Path) -> list[dict]:
    async with Database(f"sqlite+aiosqlite:///{conf.parent / 'data' / 'citygate.db'}") as db:
        return await AuditLog(db).query()


def table(output: str) -> dict[str, dict[str, str]]:
    lines = output.strip().splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:^|(?<=  ))\S", header)]
    names = [header[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
    rows = {}
    for line in lines[1:]:
        cells = [line[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = dict(zip(names, cells))
    return rows


async def test_add_list_and_sign_in(conf: Path) -> None:
    out = ok(conf, "add", "alice", "--role", "operator", "--areas", "centre,north", "--name", "Alice Smith")
    assert "created alice (role operator, areas centre,north)" in out
    username, password = PASSWORD.search(out).groups()
    assert username == "alice" and len(password) == 20

    ok(conf, "add", "bob", "--role", "supervisor", "--all-areas")
    rows = table(ok(conf, "list"))
    assert rows["alice"] == {
        "USERNAME": "alice", "ROLE": "operator", "AREAS": "centre,north", "DISABLED": "no", "LOCKED": "no",
        "MUST CHANGE": "yes", "LAST LOGIN": "never",
    }
    assert rows["bob"]["AREAS"] == "all"

    principal = await sign_in(conf, "alice", password)
    assert principal.must_change_password and principal.areas == {"centre", "north"}
    assert table(ok(conf, "list"))["alice"]["LAST LOGIN"] != "never"

    actions = {(e["action"], e["user"]) for e in await audit_rows(conf)}
    assert ("user.create", f"cli:{getpass.getuser()}") in actions


async def test_disable_enable_reset_role_areas(conf: Path) -> None:
    out = ok(conf, "add", "carol", "--role", "operator", "--areas", "centre")
    _, first = PASSWORD.search(out).groups()

    assert "disabled carol" in ok(conf, "disable", "carol")
    assert table(ok(conf, "list"))["carol"]["DISABLED"] == "yes"
    with pytest.raises(Forbidden):
        await sign_in(conf, "carol", first)
    ok(conf, "enable", "carol")
    await sign_in(conf, "carol", first)

    out = ok(conf, "reset-password", "carol")
    _, second = PASSWORD.search(out).groups()
    assert second != first
    with pytest.raises(Unauthorized):
        await sign_in(conf, "carol", first)
    assert (await sign_in(conf, "carol", second)).must_change_password

    assert "now has role investigator" in ok(conf, "set-role", "carol", "--role", "investigator")
    assert "now has areas north,south" in ok(conf, "set-areas", "carol", "--areas", "south,north")
    principal = await sign_in(conf, "carol", second)
    assert principal.role == "investigator" and principal.areas == {"north", "south"} and not principal.all_areas
    ok(conf, "set-areas", "carol", "--all-areas")
    assert table(ok(conf, "list"))["carol"]["AREAS"] == "all"

    by = f"cli:{getpass.getuser()}"
    done = {e["action"] for e in await audit_rows(conf) if e["user"] == by}
    assert {"user.create", "user.disable", "user.enable", "user.reset-password", "user.set-role", "user.set-areas"} <= done


async def test_lock_shows_in_list_and_unlock(conf: Path) -> None:
    out = ok(conf, "add", "dave", "--role", "operator")
    _, password = PASSWORD.search(out).groups()
    for _ in range(5):
        with pytest.raises((Unauthorized, Locked)):
            await sign_in(conf, "dave", "definitely not it")
    assert table(ok(conf, "list"))["dave"]["LOCKED"].startswith("until ")
    ok(conf, "unlock", "dave")
    assert table(ok(conf, "list"))["dave"]["LOCKED"] == "no"
    await sign_in(conf, "dave", password)


def test_mistakes_exit_non_zero_with_a_reason(conf: Path) -> None:
    ok(conf, "add", "erin", "--role", "operator")
    for args, message in [
        (("add", "erin", "--role", "operator"), "user 'erin' already exists"),
        (("add", "frank", "--role", "chief"), "unknown role 'chief'"),
        (("add", "Frank", "--role", "operator"), "invalid username 'Frank'"),
        (("disable", "nobody"), "no user 'nobody'"),
        (("set-role", "erin", "--role", "chief"), "unknown role 'chief'"),
    ]:
        result = citygate(conf, *args)
        assert result.returncode == 1, result
        assert f"error: {message}" in result.stderr
    result = citygate(conf, "set-areas", "erin")
    assert result.returncode == 2 and "--areas" in result.stderr  # argparse: one of the two is required
