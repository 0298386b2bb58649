"""Every file and directory operation of the file store and the locks, in one place.

Atomic writes are spelled once here: a temp name (uuid + pid) in the same directory, write,
flush, fsync when durability asks for it, ``os.replace``, fsync the directory.
Stores create files owner-only (0600) in owner-only directories (0700).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

__all__ = ["TEMP_MARK", "atomic_write", "fsync_dir", "makedirs", "read_bytes", "remove"]

#: Temp files carry this in their name; readers skip them and cleanup removes them.
TEMP_MARK = ".tmp-"


def makedirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each owner-only."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new, never a mix.

    With ``durable``, the file and its directory are fsynced, so the write survives power loss.
    On any failure the temp file is removed and the old file is untouched.
    """
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def read_bytes(path: Path) -> bytes:
    """The whole content of ``path``."""
    with open(path, "rb") as f:
        return f.read()


def remove(path: Path, *, missing_ok: bool = True) -> None:
    """Unlink ``path``."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise
