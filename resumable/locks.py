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
import threading
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


_HELD_FDS: set[int] = set()
_HELD_GUARD = threading.Lock()


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
        _fs.makedirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the file was replaced after we opened it: the lock guards nothing
            os.close(fd)
            return False
        self._fd = fd
        with _HELD_GUARD:
            _HELD_FDS.add(fd)
        return True

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock; wait up to ``timeout`` seconds (None: fail at once)."""
        if self._fd is not None:
            raise RuntimeError(f"lock for {self.op_id!r} is already held by this object")
        deadline = time.monotonic() + (timeout or 0.0)
        while not self._try_once():
            if timeout is None or not _sleep_steps(deadline):
                raise OperationLocked(self.op_id, waited=timeout or 0)

    def release(self) -> None:
        """Unlock and close."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with _HELD_GUARD:
            _HELD_FDS.discard(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class ThreadLock:
    """A lock for process-local stores (``memory://``): one holder per op in this process."""

    _held: ClassVar[set[tuple[int, str]]] = set()
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, scope: int, op_id: str) -> None:
        self._key = (scope, op_id)
        self.op_id = op_id
        self._holding = False

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock; wait up to ``timeout`` seconds (None: fail at once)."""
        deadline = time.monotonic() + (timeout or 0.0)
        while True:
            with self._guard:
                if self._key not in self._held:
                    self._held.add(self._key)
                    self._holding = True
                    return
            if timeout is None or not _sleep_steps(deadline):
                raise OperationLocked(self.op_id, "another block in this process", timeout or 0)

    def release(self) -> None:
        """Give the lock back."""
        if self._holding:
            with self._guard:
                self._held.discard(self._key)
            self._holding = False
