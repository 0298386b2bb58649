"""One runner per operation: OS file locks that the kernel frees when the owner dies.

Never ``lockf``/``F_SETLK`` (POSIX process-associated record locks): they drop when the
process closes *any* descriptor of the file, which a library cannot prevent. Two kinds of lock
have the right semantics — tied to an open file description, released when its last
descriptor closes, so by the kernel when the owner dies:

- :class:`RangeLock` (Linux): an *open file description* byte-range lock (``F_OFD_SETLK``) on
  one byte of one shared lock file per store, the byte chosen by a 62-bit digest of the op
  id. Taking it is one ``fcntl`` call: no file is created per operation (creating one cost
  ~30 us, half of a ``@resumable`` miss). Blocks in the same process are kept apart by a
  table of held ids, since one process shares one descriptor.
- :class:`FileLock` (elsewhere): ``fcntl.flock`` on one lock file per operation.

Both compare the lock file's inode with the path's after acquiring, so a lock file removed and
recreated meanwhile is not trusted. A lock file is never opened through a symlink and must be a
regular file of yours or root's (:func:`resumable._fs.open_lock`): another user's could be held
by them forever. Its directory is created or checked once per store
(:meth:`LockFile.folder`): whoever owns it could remove a held lock file and let a second
runner in. Forked children close inherited lock descriptors, so a
process pool started inside a block never keeps its parent's lock alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

import xxhash

from . import _fs
from .errors import OperationLocked

__all__ = ["FileLock", "Lock", "LockFile", "RangeLock", "ThreadLock", "keep_trying", "store_lock"]


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


def _close_own(fd: int, pid: int) -> None:
    """Close lock descriptor ``fd`` opened by process ``pid`` (a forked child closed its copy)."""
    if os.getpid() == pid and fd in _HELD_FDS:
        _HELD_FDS.discard(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def keep_trying(attempt: Callable[[], bool], timeout: float | None, *, most: float = 0.05) -> bool:
    """Call ``attempt`` until it returns True, for up to ``timeout`` seconds (None: once).

    The one wait of every lock (file, range, in-process, PostgreSQL lease) and of SQLite's
    switch to WAL. The pauses between attempts grow from 1 ms to ``most`` seconds: a lock given
    back soon is taken soon, one held long costs few attempts. False once the time is up.
    """
    deadline = time.monotonic() + (timeout or 0.0)
    pause = 0.001
    while not attempt():
        remaining = deadline - time.monotonic()
        if timeout is None or remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(2 * pause, most)
    return True


def _open(path: Path) -> int:
    """:func:`resumable._fs.open_lock`; a directory removed since it was checked is made again."""
    try:
        return _fs.open_lock(path)
    except FileNotFoundError:
        _fs.makedirs(path.parent)
        return _fs.open_lock(path)


class FileLock:
    """An exclusive ``flock`` on ``path`` for operation ``op_id``.

    ``file`` is the store's :class:`LockFile` in the same directory, which checks the
    directory once; without it the directory is checked at every attempt.
    """

    def __init__(self, path: Path, op_id: str, *, file: LockFile | None = None) -> None:
        self.path = path
        self.op_id = op_id
        self._file = file
        self._fd: int | None = None

    def _try_once(self) -> bool:
        if self._file is not None:
            self._file.folder()
        else:
            _fs.makedirs(self.path.parent)
        fd = _open(self.path)
        # Owned from here on: release() closes it, whatever interrupts us below.
        self._fd = fd
        _HELD_FDS.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            return False
        try:
            same = _fs.same_file(fd, self.path)
        except FileNotFoundError:
            same = False
        if not same:  # the file was replaced after we opened it: the lock guards nothing
            self.release()
        return same

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock; wait up to ``timeout`` seconds (None: fail at once)."""
        if self._fd is not None:
            raise RuntimeError(f"lock for {self.op_id!r} is already held by this object")
        try:
            taken = keep_trying(self._try_once, timeout)
        except BaseException:
            self.release()  # an interrupt mid-acquire must not leave a descriptor holding it
            raise
        if not taken:
            raise OperationLocked(self.op_id, waited=timeout or 0)

    def release(self) -> None:
        """Unlock and close (no-op if not held).

        Unlocking explicitly, not just closing, matters after a fork: a child that has not yet
        closed its inherited copy of the descriptor would otherwise keep the lock alive.
        """
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD_FDS.discard(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
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
        if not keep_trying(lambda: self._held.setdefault(self._key, self) is self, timeout):
            raise OperationLocked(self.op_id, "another block in this process", timeout or 0)

    def release(self) -> None:
        """Give the lock back."""
        if self._held.get(self._key) is self:
            del self._held[self._key]


# --- open file description range locks -------------------------------------------------------

_OFD_SETLK: int | None = getattr(fcntl, "F_OFD_SETLK", None)
#: struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks).
_FLOCK = struct.Struct("hhqqi")
_RANGE = (1 << 62) - 1


class LockFile:
    """The one lock file of a store, opened once per process; holds the in-process table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._folder_checked = False
        self._pid = os.getpid()
        self._closer: weakref.finalize[[int, int], LockFile] | None = None
        #: op key -> the RangeLock holding it in this process (dict.setdefault is atomic)
        self.held: dict[str, RangeLock] = {}

    def fd(self, *, reopen: bool = False) -> int:
        """This process's descriptor of the lock file (a new one after a fork or on ``reopen``)."""
        forked = self._pid != os.getpid()
        if self._fd >= 0 and not forked and not reopen:
            return self._fd
        if self._fd >= 0 and not forked:
            self._close()
        self.folder()
        fd = _open(self.path)
        _HELD_FDS.add(fd)  # closed in forked children (their locks are the parent's)
        self._fd, self._pid = fd, os.getpid()
        # Closed when this object is collected: every RangeLock refers to it, so by then no
        # lock is held through the descriptor. (A store opened per task must not leak one.)
        self._closer = weakref.finalize(self, _close_own, fd, self._pid)
        if forked:
            self.held = {}  # the parent's claims, copied by fork: not ours
        return fd

    def folder(self) -> None:
        """Create the lock directory, or check the one there (once per object).

        Whoever owns the directory can remove a lock file while it is held and let a second
        runner in, so a directory of another user (or writable by others without the
        sticky bit) is refused, as the store's own (:func:`resumable._fs.makedirs`).

        Raises:
            UnsafePath: the directory, or one above it, is unsafe.
        """
        if not self._folder_checked:
            _fs.makedirs(self.path.parent)
            self._folder_checked = True

    def close(self) -> None:
        """Close the descriptor if no operation of this process holds a lock through it."""
        if self._fd >= 0 and self._pid == os.getpid() and not self.held:
            self._close()

    def _close(self) -> None:
        closer, self._closer, self._fd = self._closer, None, -1
        if closer is not None:
            closer()

    def opened_here(self) -> bool:
        """Whether this process opened the descriptor (not a forked child of the opener)."""
        return self._pid == os.getpid()

    def current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at the path (not removed and recreated)."""
        try:
            return _fs.same_file(fd, self.path)
        except FileNotFoundError:
            return False


class RangeLock:
    """An OFD byte-range lock on one byte of a store's lock file, for one operation."""

    def __init__(self, file: LockFile, op_id: str, key: str) -> None:
        self.file = file
        self.op_id = op_id
        self.key = key
        self.offset = xxhash.xxh3_64_intdigest(key.encode()) & _RANGE
        self._fd = -1

    def _fcntl(self, fd: int, kind: int) -> bool:
        try:
            fcntl.fcntl(fd, _OFD_SETLK, _FLOCK.pack(kind, os.SEEK_SET, self.offset, 1, 0))  # type: ignore[arg-type]
        except (BlockingIOError, PermissionError):
            return False
        return True

    def _try_once(self) -> bool:
        held = self.file.held
        if held.setdefault(self.key, self) is not self:
            return False  # another block in this process
        try:
            fd = self.file.fd()
            for _ in range(3):
                if not self._fcntl(fd, fcntl.F_WRLCK):
                    break
                if self.file.current(fd):
                    self._fd = fd
                    return True
                # The lock file was replaced: our lock guards nothing. Reopen and retry.
                self._fcntl(fd, fcntl.F_UNLCK)
                fd = self.file.fd(reopen=True)
        except BaseException:
            self._drop_claim()
            raise
        self._drop_claim()
        return False

    def _drop_claim(self) -> None:
        if self.file.held.get(self.key) is self:
            del self.file.held[self.key]

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock; wait up to ``timeout`` seconds (None: fail at once)."""
        try:
            taken = keep_trying(self._try_once, timeout)
        except BaseException:
            self.release()
            raise
        if not taken:
            in_process = isinstance(self.file.held.get(self.key), RangeLock)
            where = "another block in this process" if in_process else "another process"
            raise OperationLocked(self.op_id, where, timeout or 0)

    def release(self) -> None:
        """Unlock the byte (no-op if not held)."""
        fd, self._fd = self._fd, -1
        if fd >= 0 and self.file.opened_here():
            with contextlib.suppress(OSError):
                self._fcntl(fd, fcntl.F_UNLCK)
        self._drop_claim()


def store_lock(lock_file: LockFile, op_id: str, op_key: str) -> Lock:
    """The lock of ``op_id`` in a store whose lock file is ``lock_file``."""
    if _OFD_SETLK is not None:
        return RangeLock(lock_file, op_id, op_key)
    return FileLock(lock_file.path.with_name(f"{op_key}.lock"), op_id, file=lock_file)
