"""One behaviour suite for every storage backend: local disk and S3 (a real moto server)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from citygate_plugins.storage.local import LocalOptions, LocalStorage
from citygate_plugins.storage.s3 import S3Options, S3Storage
from gateway.errors import NotFound
from gateway.interfaces import StorageBackend
from tests.fixtures_s3 import MotoServer

KEY = "cam1/2025/01/31/cam1-1738300000000.mp4"


async def read_all(backend: StorageBackend, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in backend.open_segment(key, start, end)])


@pytest.fixture(params=["local", "s3"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageBackend]:
    if request.param == "local":
        store: StorageBackend = LocalStorage(LocalOptions(), data_dir=str(tmp_path))
    else:
        server: MotoServer = request.getfixturevalue("moto_server")
        bucket = server.create_bucket()
        options = msgspec.convert(server.storage_options(bucket, prefix="rec/"), S3Options)
        store = S3Storage(options, data_dir=str(tmp_path))
    async with store:
        yield store


async def test_write_then_read_whole_and_ranges(backend: StorageBackend) -> None:
    data = os.urandom(700_000)
    await backend.write_segment(KEY, data)
    assert await read_all(backend, KEY) == data
    assert await read_all(backend, KEY, 1000, 2000) == data[1000:2000]
    assert await read_all(backend, KEY, 699_990) == data[699_990:]
    assert await read_all(backend, KEY, 0, 1) == data[:1]


async def test_overwrite_same_key_keeps_one_object(backend: StorageBackend) -> None:
    await backend.write_segment(KEY, b"first")
    await backend.write_segment(KEY, b"second")
    assert await read_all(backend, KEY) == b"second"


async def test_delete_is_idempotent(backend: StorageBackend) -> None:
    await backend.write_segment(KEY, b"x" * 1000)
    await backend.delete(KEY)
    await backend.delete(KEY)
    await backend.delete("cam1/never/written.mp4")
    with pytest.raises(NotFound):
        await read_all(backend, KEY)


async def test_usage_counts_stored_bytes(backend: StorageBackend) -> None:
    before = await backend.usage()
    await backend.write_segment(KEY, b"a" * 10_000)
    await backend.write_segment(KEY.replace("000.mp4", "001.mp4"), b"b" * 5_000)
    after = await backend.usage()
    assert after.used_bytes - before.used_bytes == 15_000
    if isinstance(backend, LocalStorage):
        assert after.free_bytes is not None and after.free_bytes > 0
    else:
        assert after.free_bytes is None


async def test_keys_cannot_escape(backend: StorageBackend) -> None:
    for bad in ("../etc/passwd", "/abs/path.mp4", "cam1//x.mp4", ""):
        with pytest.raises(ValueError):
            await backend.write_segment(bad, b"x")


# -- backend specifics ---------------------------------------------------------------------


async def test_local_layout_and_partials_removed_at_open(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    (root / "cam1/2025/01/31").mkdir(parents=True)
    partial = root / "cam1/2025/01/31/cam1-1.mp4.part"
    partial.write_bytes(b"half a segment")
    async with LocalStorage(LocalOptions(), data_dir=str(tmp_path)) as store:
        assert not partial.exists()
        assert store.removed_partials == ["cam1/2025/01/31/cam1-1.mp4.part"]
        await store.write_segment(KEY, b"data")
    assert (root / KEY).read_bytes() == b"data"
    assert not list(root.rglob("*.part"))


async def test_s3_multipart_upload(tmp_path: Path, moto_server: MotoServer, s3_bucket: str) -> None:  # noqa: F811
    options = msgspec.convert(moto_server.storage_options(s3_bucket, **{"multipart-threshold-mb": 1}), S3Options)
    data = os.urandom(11 * 1024 * 1024)  # three parts of at least 5 MiB (the last smaller)
    async with S3Storage(options, data_dir=str(tmp_path)) as store:
        await store.write_segment(KEY, data)
        assert await read_all(store, KEY, 5 * 1024 * 1024 - 10, 5 * 1024 * 1024 + 10) == data[5 * 1024 * 1024 - 10 : 5 * 1024 * 1024 + 10]
    assert moto_server.get(s3_bucket, KEY) == data


async def test_s3_spools_while_unreachable_and_uploads_in_order(tmp_path: Path, own_moto_server: MotoServer) -> None:  # noqa: F811
    server = own_moto_server
    bucket = server.create_bucket()
    options = msgspec.convert(server.storage_options(bucket, retries=2, timeout=1.0), S3Options)
    async with S3Storage(options, data_dir=str(tmp_path)) as store:
        await store.write_segment("cam1/a.mp4", b"before")
        server.stop()
        await store.write_segment("cam1/b.mp4", b"during-1")
        await store.write_segment("cam1/c.mp4", b"during-2")
        assert store.spooled == 2
        # spooled counts as stored: readable now, from the spool
        assert await read_all(store, "cam1/b.mp4", 1, 4) == b"uri"
        spool_files = sorted(p.name for p in store.spool_path.iterdir())
        assert len(spool_files) == 2 and spool_files[0].endswith("cam1%2Fb.mp4.seg")
        server.start()  # re-creates the (now empty) bucket
        await store.wait_drained(timeout=15)
        assert server.list_keys(bucket) == {"cam1/b.mp4": 8, "cam1/c.mp4": 8}
        assert await read_all(store, "cam1/c.mp4") == b"during-2"
        assert not list(store.spool_path.iterdir())


async def test_s3_spool_survives_restart(tmp_path: Path, own_moto_server: MotoServer) -> None:  # noqa: F811
    server = own_moto_server
    bucket = server.create_bucket()
    options = msgspec.convert(server.storage_options(bucket, retries=1, timeout=1.0), S3Options)
    server.stop()
    async with S3Storage(options, data_dir=str(tmp_path)) as store:
        await store.write_segment("cam1/x.mp4", b"kept")
        assert store.spooled == 1
    server.start()
    async with S3Storage(options, data_dir=str(tmp_path)) as store:
        await store.wait_drained(timeout=15)
    assert server.list_keys(bucket) == {"cam1/x.mp4": 4}
