"""Every file and directory operation of the file store and the locks, in one place.

Atomic writes are spelled once here: a temp name (uuid + pid) in the same directory, write,
flush, fsync when durability asks for it, ``os.replace``, fsync the directory.
Stores create files owner-only (0600) in owner-only directories (0700).

Tests inject faults here: :data:`_fault`, when set, is called with the name of each
operation and its path just before the operation runs, and may raise (``EIO``, ``ENOSPC``)
or end the process (``tests/fault_worker.py``). Only status queries (``stat``) bypass it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

__all__ = [
    "TEMP_MARK",
    "atomic_write",
    "copy_file",
    "create_new",
    "fsync_dir",
    "fsync_file",
    "hash_file",
    "link_or_copy",
    "list_names",
    "locked",
    "makedirs",
    "read_bytes",
    "remove",
    "remove_tree",
    "replace",
    "temp_path",
]

#: Temp files carry this in their name; readers skip them and cleanup removes them.
TEMP_MARK = ".tmp-"

#: The fault-injection hook of the tests: ``(operation, path)`` before each operation. None
#: (the normal case) costs one global lookup per operation.
_fault: Callable[[str, Path], None] | None = None


def makedirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each owner-only."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        if _fault is not None:
            _fault("mkdir", folder)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    if _fault is not None:
        _fault("fsync_dir", path)
    _fsync(path, os.O_DIRECTORY)


def atomic_write(path: Path, data: bytes | Iterable[bytes], *, durable: bool) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new, never a mix.

    ``data`` is bytes, or an iterable of byte chunks written in turn (so a large file is
    never built whole in memory). With ``durable``, the file and its directory are fsynced,
    so the write survives power loss. On any failure the temp file is removed and the old
    file is untouched.
    """
    chunks = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    tmp = temp_path(path)
    fd = -1
    try:  # the open inside: an interrupt right after it must not leak the descriptor
        if _fault is not None:
            _fault("create", tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if _fault is not None:
                _fault("write", tmp)
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if durable:
                if _fault is not None:
                    _fault("fsync", tmp)
                os.fsync(fd)
        finally:
            os.close(fd)
        if _fault is not None:
            _fault("replace", path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            remove(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def read_bytes(path: Path) -> bytes:
    """The whole content of ``path``."""
    if _fault is not None:
        _fault("read", path)
    with open(path, "rb") as f:
        return f.read()


def remove(path: Path, *, missing_ok: bool = True) -> None:
    """Unlink ``path``."""
    try:
        if _fault is not None:
            _fault("unlink", path)
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def remove_tree(path: Path) -> None:
    """Remove directory ``path`` and everything in it, as far as possible."""
    if _fault is not None:
        _fault("rmtree", path)
    shutil.rmtree(path, ignore_errors=True)


# --- whole files: the backups (resumable/backup.py) -------------------------------------------

#: Bytes per read of the copy and hash loops: large enough that the per-call cost vanishes,
#: small enough to stay in the CPU cache between the read, the hash and the write.
CHUNK = 1 << 20


class Hasher(Protocol):
    """Anything fed the bytes of a copy, e.g. ``xxhash.xxh3_128()``."""

    def update(self, data: memoryview, /) -> None:
        """Add ``data`` to the digest."""


def temp_path(path: Path) -> Path:
    """A new temp name beside ``path``, of the form :func:`atomic_write` uses (no file made)."""
    return path.with_name(f"{path.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}.{os.getpid()}")


def create_new(path: Path) -> None:
    """Create ``path`` empty and owner-only; it must not exist yet."""
    if _fault is not None:
        _fault("create", path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def copy_file(
    src: Path,
    dst: Path,
    *,
    durable: bool,
    hasher: Hasher | None = None,
    mode: int = 0o600,
) -> tuple[os.stat_result, os.stat_result]:
    """Copy ``src`` into the new file ``dst`` in one pass, feeding each chunk to ``hasher``.

    ``dst`` must not exist; it is created with permissions ``mode`` and fsynced when
    ``durable``. On any failure ``dst`` is removed.

    Returns:
        The status of the open source before and after the copy: if they differ, the source
        changed while it was read and the copy may mix two versions.
    """
    if _fault is not None:
        _fault("read", src)
    with open(src, "rb", buffering=0) as fin:
        before = os.fstat(fin.fileno())
        if _fault is not None:
            _fault("create", dst)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                if mode != 0o600:
                    os.fchmod(fd, mode)
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := fin.readinto(buf):
                    chunk = view[:n]
                    if hasher is not None:
                        hasher.update(chunk)
                    if _fault is not None:
                        _fault("write", dst)
                    while chunk:
                        chunk = chunk[os.write(fd, chunk) :]
                if durable:
                    if _fault is not None:
                        _fault("fsync", dst)
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            remove(dst)
            raise
        after = os.fstat(fin.fileno())
    return before, after


def hash_file(path: Path, hasher: Hasher) -> int:
    """Feed the content of ``path`` to ``hasher``; return its size in bytes."""
    size = 0
    if _fault is not None:
        _fault("read", path)
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            hasher.update(view[:n])
            size += n
    return size


def fsync_file(path: Path) -> None:
    """Flush the content of ``path`` to stable storage."""
    if _fault is not None:
        _fault("fsync", path)
    _fsync(path, 0)


def replace(src: Path, dst: Path, *, durable: bool) -> None:
    """Rename ``src`` over ``dst`` atomically; with ``durable``, fsync the directory too."""
    if _fault is not None:
        _fault("replace", dst)
    os.replace(src, dst)
    if durable:
        fsync_dir(dst.parent)


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` (new) hold what ``src`` holds now: a hard link, or a copy where links fail.

    A later :func:`replace` onto ``src`` swaps its directory entry and leaves the linked file
    as it was, so the link is a free safety copy.
    """
    try:
        if _fault is not None:
            _fault("link", dst)
        os.link(src, dst)
    except OSError:  # no hard links on this file system (or too many): copy instead
        copy_file(src, dst, durable=False, mode=os.stat(src).st_mode & 0o7777)


def list_names(path: Path) -> list[str]:
    """The entry names of directory ``path``; none if it does not exist."""
    try:
        if _fault is not None:
            _fault("listdir", path)
        return os.listdir(path)
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Hold an ``flock`` on ``path`` (created owner-only if missing) for the block.

    Yields whether the lock is held: always True when ``wait``; False without ``wait`` when
    another holder conflicts. The lock belongs to this open file description, so it also
    keeps threads of one process apart, and the kernel drops it when the process dies.
    """
    if _fault is not None:
        _fault("lock", path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
