"""The data directory holds the database, the recordings and the keys: only the gateway's
own account may read it. Directories are created 0700 and files 0600 (recordings 0640),
whatever the process umask; a data directory or database found open to others is tightened,
with a warning naming it.

Blocking file-system calls: run them at start-up or in a worker thread.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = True) -> Path:
    """Create ``path`` 0700 (missing parents too); tighten an existing one open to others."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another writer
            pass
    if tighten and not missing:
        _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as a file of mode 0600 (an empty file if missing)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.close(fd)
    return path


def _tighten(path: Path, mode: int) -> None:
    current = path.stat().st_mode & 0o777
    if current & 0o077:
        logger.warning("%s is open to other accounts (mode %o); tightening it to %o", path, current, mode)
        path.chmod(mode)
