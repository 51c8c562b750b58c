"""Local disk storage for recorded segments (the default backend).

Segments are files under ``<data dir>/<path>/<key>``; the recorder's keys already lay them
out by camera and date (``cam1/2025/01/31/cam1-1738300000000.mp4``). A segment is written
to ``<name>.part``, the file is fsynced, renamed into place and its directory fsynced, so
after a crash a key either holds the complete segment or does not exist. Leftover
``.part`` files (a write cut short by a crash) are removed when the backend opens.

All file I/O runs in worker threads.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath

import msgspec

from gateway.plugin_api import NotFound, StorageBackend, StorageFailed, StorageFull, StorageUsage, hookimpl

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"
#: Recordings are the gateway's alone: directories 0700, files 0640 (never world-readable).
DIR_MODE = 0o700
FILE_MODE = 0o640
READ_CHUNK = 256 * 1024


class LocalOptions(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, rename="kebab"):
    #: Directory of the recordings; relative paths are relative to the data dir.
    path: str = "recordings"
    #: fsync every segment and its directory before it counts as stored.
    fsync: bool = True


def safe_relative(key: str) -> PurePosixPath:
    """``key`` as a relative path that cannot leave the storage root."""
    path = PurePosixPath(key)
    if not key or path.is_absolute() or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (``mkdir -p`` would give the
    parents the umask's default mode)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another writer made it meanwhile
            pass


#: errno values that mean "no space": a full file system, a disk quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_durably(path: Path, data: bytes, *, fsync: bool) -> None:
    """Write ``data`` to ``path`` (mode 0640) through a ``.part`` file and an atomic rename.

    A write cut short by a full disk removes its ``.part`` file (it would hold the space and
    nothing else) and raises ``StorageFull``; ``path`` is then untouched."""
    temp = path.with_name(path.name + PART_SUFFIX)
    try:
        private_dirs(path.parent)
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if exc.errno in NO_SPACE:
            raise StorageFull(f"no space left on {path.parent} ({exc.strerror})") from exc
        raise
    os.replace(temp, path)
    if fsync:
        fsync_dir(path.parent)


async def stream_file(path: Path, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
    """Yield bytes ``[start, end)`` of a file, read chunk by chunk in a worker thread.

    The file is opened before the first chunk, so a file deleted meanwhile is still read
    to its end (POSIX semantics).
    """
    try:
        f = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise NotFound(f"no stored segment {path.name}") from None
    try:
        await asyncio.to_thread(f.seek, start)
        remaining = None if end is None else max(0, end - start)
        while remaining is None or remaining > 0:
            data = await asyncio.to_thread(f.read, READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
            if not data:
                return
            if remaining is not None:
                remaining -= len(data)
            yield data
    finally:
        await asyncio.to_thread(f.close)


def remove_partials(root: Path) -> list[Path]:
    """Delete the ``.part`` files under ``root`` (writes a crash cut short)."""
    removed = []
    for path in root.rglob("*" + PART_SUFFIX):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


class LocalStorage(StorageBackend):
    Options = LocalOptions

    @staticmethod
    def id() -> str:
        return "local"

    def __init__(self, options: LocalOptions | None = None, *, data_dir: str) -> None:
        super().__init__(options or LocalOptions(), data_dir=data_dir)
        self.options: LocalOptions
        self.root = Path(data_dir) / self.options.path
        #: Partial segments found (and removed) when the backend opened.
        self.removed_partials: list[str] = []

    def path_of(self, key: str) -> Path:
        return self.root / safe_relative(key)

    async def __aenter__(self) -> LocalStorage:
        await asyncio.to_thread(private_dirs, self.root)
        removed = await asyncio.to_thread(remove_partials, self.root)
        self.removed_partials = [str(p.relative_to(self.root)) for p in removed]
        for key in self.removed_partials:
            logger.warning("storage local: removed partial segment %s left by a crash", key)
        return self

    async def write_segment(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(write_durably, self.path_of(key), data, fsync=self.options.fsync)

    async def open_segment(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in stream_file(self.path_of(key), start, end):
            yield chunk

    async def delete(self, key: str) -> None:
        path = self.path_of(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def probe(self) -> None:
        """The directory exists (or can be made) and files can be written in it."""
        def check() -> None:
            probe = self.root / ".citygate-probe"
            try:
                private_dirs(self.root)
                write_durably(probe, b"citygate", fsync=False)
                probe.unlink()
            except StorageFull:
                raise
            except OSError as exc:
                raise StorageFailed(f"storage local: cannot write in {self.root}: {exc.strerror or exc}", key="path") from exc

        await asyncio.to_thread(check)

    async def usage(self) -> StorageUsage:
        used = await asyncio.to_thread(tree_bytes, self.root)
        disk = await asyncio.to_thread(shutil.disk_usage, self.root)
        return StorageUsage(used_bytes=used, free_bytes=disk.free)


@hookimpl(trylast=True)
def gateway_register_storage_backends(register: Callable[[type[StorageBackend]], None]) -> None:
    """Register local disk storage, the default backend."""
    register(LocalStorage)
