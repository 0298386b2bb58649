"""One runner per operation: OS file locks that the kernel frees when the owner dies.

``fcntl.flock`` on a lock file, not ``lockf``: POSIX record locks drop when the process
closes *any* descriptor of the file, which a library cannot prevent. After acquiring, the
lock file's inode is compared with the path's, so a lock file that was removed and recreated
meanwhile is not trusted. Forked children close inherited lock descriptors, so a process pool
started inside a block never keeps its parent's lock alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import ClassVar, Protocol

from . import _fs
from .errors import OperationLocked

__all__ = ["FileLock", "Lock", "ThreadLock"]


class Lock(Protocol):
    """A held-or-not lock on one operation."""

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock; wait up to ``timeout`` seconds (None: fail at once).

        Raises:
            OperationLocked: someone else holds it.
        """
        ...

    def release(self) -> None:
        """Give the lock back (no-op if not held)."""
        ...


#: Lock descriptors this process holds (set.add/discard are atomic; no lock is needed, and a
#: lock here could be left taken by a Ctrl-C landing as its `with` block ends).
_HELD_FDS: set[int] = set()


def _close_inherited() -> None:
    # In a forked child: drop our references to the parent's locks without unlocking them.
    for fd in list(_HELD_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited)


def _sleep_steps(deadline: float) -> bool:
    """Sleep a little toward ``deadline``; False once it has passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    time.sleep(min(0.05, remaining))
    return True


class FileLock:
    """An exclusive ``flock`` on ``path`` for operation ``op_id``."""

    def __init__(self, path: Path, op_id: str) -> None:
        self.path = path
        self.op_id = op_id
        self._fd: int | None = None

    def _try_once(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            _fs.makedirs(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # Owned from here on: release() closes it, whatever interrupts us below.
        self._fd = fd
        _HELD_FDS.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            return False
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the file was replaced after we opened it: the lock guards nothing
            self.release()
        return same

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock; wait up to ``timeout`` seconds (None: fail at once)."""
        if self._fd is not None:
            raise RuntimeError(f"lock for {self.op_id!r} is already held by this object")
        deadline = time.monotonic() + (timeout or 0.0)
        try:
            while not (taken := self._try_once()):
                if timeout is None or not _sleep_steps(deadline):
                    break
        except BaseException:
            self.release()  # an interrupt mid-acquire must not leave a descriptor holding it
            raise
        if not taken:
            raise OperationLocked(self.op_id, waited=timeout or 0)

    def release(self) -> None:
        """Close the lock's descriptor, which unlocks it (no-op if not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD_FDS.discard(fd)
        os.close(fd)


class ThreadLock:
    """A lock for process-local stores (``memory://``): one holder per op in this process."""

    #: (scope, op id) -> the holding ThreadLock; dict.setdefault makes "take if free" atomic.
    _held: ClassVar[dict[tuple[int, str], ThreadLock]] = {}

    def __init__(self, scope: int, op_id: str) -> None:
        self._key = (scope, op_id)
        self.op_id = op_id

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock; wait up to ``timeout`` seconds (None: fail at once)."""
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            if self._held.setdefault(self._key, self) is self:
                return
            if timeout is None or not _sleep_steps(deadline):
                raise OperationLocked(self.op_id, "another block in this process", timeout or 0)

    def release(self) -> None:
        """Give the lock back."""
        if self._held.get(self._key) is self:
            del self._held[self._key]
