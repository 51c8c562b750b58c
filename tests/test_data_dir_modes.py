"""The data directory (database, recordings, keys) is the gateway account's alone: a gateway
started on a fresh data dir, under the usual umask 022, creates it 0700 with every directory
in it 0700, the database (and its WAL) and the signing key 0600, recordings 0640."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from gateway.appkeys import CONFIG
from tests.fixtures_app import camera_toml


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_a_fresh_data_dir_is_private(make_gateway, umask_022) -> None:
    gw = await make_gateway(
        camera_toml("demo", "demo", width=160, height=120, keyframe_interval=1.0), "[recording]\nsegment-seconds = 1\n"
    )
    config = gw.app[CONFIG]
    data = config.data_dir
    recordings = data / "recordings"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not [p for p in recordings.rglob("*") if p.is_file() and not p.name.endswith(".part")]:
        assert loop.time() < deadline, "no recorded segment within 30s"
        await asyncio.sleep(0.2)

    assert mode(data) == 0o700
    directories = [p for p in data.rglob("*") if p.is_dir()]
    assert recordings in directories and data / "keys" in directories
    assert {str(p.relative_to(data)): oct(mode(p)) for p in directories if mode(p) != 0o700} == {}

    segments = [p for p in recordings.rglob("*") if p.is_file()]
    assert segments and {oct(mode(p)) for p in segments} == {"0o640"}
    assert mode(data / "keys" / "evidence-signing-key.pem") == 0o600
    if config.database_url.startswith("sqlite"):
        database = data / "citygate.db"
        assert mode(database) == 0o600
        assert mode(data / "citygate.db-wal") == 0o600  # SQLite gives its WAL the database's mode
    # nothing in the data dir is readable, writable or searchable by others
    opened = {str(p.relative_to(data)): oct(mode(p)) for p in data.rglob("*") if mode(p) & 0o007}
    assert opened == {}
