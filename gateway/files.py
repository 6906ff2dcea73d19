"""Files and folders the gateway creates are its own alone (0600, 0700), whatever the umask it runs under.

Outside the systemd unit (UMask=0077) a gateway started from a shell gets 0022, and SQLite creates a
database file 0644 whatever the umask; health data and keys must not become readable by other local users.
"""
from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Create `path` and each missing parent as 0700; folders that already exist are left as the site made them."""
    missing = []
    for level in (path, *path.parents):
        if level.exists():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            level.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(level, DIR_MODE)  # mkdir's mode is cut by the umask; chmod is not


def open_private(path: Path, flags: int) -> int:
    """os.open that creates the file 0600 (exactly, not cut by the umask); its folder is created 0700."""
    private_dir(path.parent)
    descriptor = os.open(path, flags | os.O_CREAT, FILE_MODE)
    if os.fstat(descriptor).st_size == 0:
        os.fchmod(descriptor, FILE_MODE)
    return descriptor


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write a whole file that only this user may read (keys, certificates)."""
    flags = os.O_WRONLY | (os.O_EXCL if exclusive else os.O_TRUNC)
    with os.fdopen(open_private(path, flags), "wb") as handle:
        handle.write(data)


def create_private(path: Path) -> None:
    """Make sure a file exists, created 0600 when new (a database before SQLite opens it: its WAL and SHM
    files then take the same mode)."""
    os.close(open_private(path, os.O_RDONLY))
