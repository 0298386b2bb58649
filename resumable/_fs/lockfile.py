"""Lock files: opened (or created owner-only) never through a symlink, checked as a record."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from . import faults
from .checked import NOFOLLOW, open_file, refused


def open_lock(path: Path) -> int:
    """A descriptor of lock file ``path``, created owner-only if missing; checked as a record.

    Raises:
        UnsafePath: ``path`` is a symlink, FIFO, device, hard link or another user's file.
    """
    for _ in range(3):  # created or opened; removed between the two: again
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                return open_file(path, os.O_RDWR)
        except OSError as exc:
            raise refused(path, exc) from None
    raise FileNotFoundError(f"{path} keeps disappearing while it is opened")


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Hold an ``flock`` on ``path`` (created owner-only if missing) for the block.

    Yields whether the lock is held: always True when ``wait``; False without ``wait`` when
    another holder conflicts. The lock belongs to this open file description, so it also
    keeps threads of one process apart, and the kernel drops it when the process dies.
    """
    if faults.hook is not None:
        faults.hook("lock", path)
    fd = open_lock(path)
    try:
        kind = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, kind if wait else kind | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(fd)
