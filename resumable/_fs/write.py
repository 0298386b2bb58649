"""Writing, copying and removing files: atomic writes spelled once.

An atomic write: a temp name (random hex + pid) in the same directory, write, flush, fsync when
durability asks for it, ``os.replace``, fsync the directory. New files are created owner-only
(0600), with ``O_EXCL`` and never through a symlink, and written through a descriptor of their
directory, itself opened without following links (:func:`.checked.open_dir`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

from resumable._trust import UnsafePath

from . import faults
from .checked import NEW_FLAGS, NOFOLLOW, open_checked, open_dir

#: Temp files carry this in their name; readers skip them and cleanup removes them.
TEMP_MARK = ".tmp-"


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in directory ``path`` durable."""
    if faults.hook is not None:
        faults.hook("fsync_dir", path)
    _fsync(path, os.O_DIRECTORY)


def fsync_file(path: Path) -> None:
    """Flush the content of ``path`` to stable storage."""
    if faults.hook is not None:
        faults.hook("fsync", path)
    _fsync(path, 0)


def temp_path(path: Path) -> Path:
    """A new temp name beside ``path``, of the form :func:`atomic_write` uses (no file made)."""
    # 48 random bits, as uuid4().hex[:12] gave, without importing uuid (and platform) for it.
    return path.with_name(f"{path.name}{TEMP_MARK}{os.urandom(6).hex()}.{os.getpid()}")


def atomic_write(path: Path, data: bytes | Iterable[bytes], *, durable: bool) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old file or the new, never a mix.

    ``data`` is bytes, or an iterable of byte chunks written in turn (so a large file is
    never built whole in memory). With ``durable``, the file and its directory are fsynced,
    so the write survives power loss. On any failure the temp file is removed and the old
    file is untouched.
    """
    folder = open_dir(path.parent)
    try:
        write_in(folder, path, data, durable=durable)
    finally:
        os.close(folder)


def write_in(folder: int, path: Path, data: bytes | Iterable[bytes], *, durable: bool) -> None:
    """:func:`atomic_write` of ``path``, whose directory is open as ``folder``."""
    chunks = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    tmp = temp_path(path)
    fd = -1
    try:  # the open inside: an interrupt right after it must not leak the descriptor
        if faults.hook is not None:
            faults.hook("create", tmp)
        fd = os.open(tmp.name, NEW_FLAGS, 0o600, dir_fd=folder)
        try:
            write_all(fd, chunks, tmp, durable=durable)
        finally:
            os.close(fd)
        if faults.hook is not None:
            faults.hook("replace", path)
        try:
            os.replace(tmp.name, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except IsADirectoryError:
            raise UnsafePath(path, "it is a directory, not a file", "move it aside") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name, dir_fd=folder)
        raise
    if durable:
        if faults.hook is not None:
            faults.hook("fsync_dir", path.parent)
        os.fsync(folder)


def write_all(
    fd: int,
    chunks: Iterable[bytes | bytearray | memoryview],
    path: Path,
    *,
    durable: bool,
    each_chunk: bool = False,
) -> None:
    """Write every chunk to ``fd`` (the file ``path``, for the fault hook); fsync if durable.

    The fault hook sees one ``write`` before the first chunk, or before each with
    ``each_chunk``.
    """
    if faults.hook is not None and not each_chunk:
        faults.hook("write", path)
    for chunk in chunks:
        if faults.hook is not None and each_chunk:
            faults.hook("write", path)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    if durable:
        if faults.hook is not None:
            faults.hook("fsync", path)
        os.fsync(fd)


def create_new(path: Path) -> None:
    """Create ``path`` empty and owner-only; it must not exist yet."""
    if faults.hook is not None:
        faults.hook("create", path)
    os.close(os.open(path, NEW_FLAGS, 0o600))


def replace(src: Path, dst: Path, *, durable: bool) -> None:
    """Rename ``src`` over ``dst`` atomically; with ``durable``, fsync the directory too."""
    if faults.hook is not None:
        faults.hook("replace", dst)
    os.replace(src, dst)
    if durable:
        fsync_dir(dst.parent)


def remove(path: Path, *, missing_ok: bool = True) -> None:
    """Unlink ``path``."""
    try:
        if faults.hook is not None:
            faults.hook("unlink", path)
        os.unlink(path)
    except FileNotFoundError:
        if not missing_ok:
            raise


def remove_tree(path: Path) -> None:
    """Remove directory ``path`` and everything in it, as far as possible."""
    if faults.hook is not None:
        faults.hook("rmtree", path)
    import shutil  # with bz2 and lzma: ~3 ms that only removing a tree needs

    shutil.rmtree(path, ignore_errors=True)


# --- whole files: the backups (resumable/backup.py) -------------------------------------------

#: Bytes per read of the copy and hash loops: large enough that the per-call cost vanishes,
#: small enough to stay in the CPU cache between the read, the hash and the write.
CHUNK = 1 << 20


#: A durable copy starts the disk writing every this many bytes, as it goes (see
#: :func:`start_writeback`).
WRITEBACK_STEP = 8 << 20


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing the dirty pages of ``fd``'s byte range to disk, without waiting for it.

    A durable copy fsyncs at the end; without this the disk sits idle while the whole file
    is copied into the page cache, and only then writes it all (measured here on 512 MiB:
    the fsync took 0.7 s after the copy, against 0.02 s with writeback started as it goes,
    the copy 0.94 s in all against 0.76 s, and ``cp`` + ``sync FILE`` 0.84 s). Linux starts
    that writeback on ``POSIX_FADV_DONTNEED`` of a dirty range (pages under writeback stay
    cached; any already written may leave the cache). It is only a hint, and a failed one is
    ignored: the fsync that follows is what makes the copy durable. Elsewhere this does
    nothing.
    """
    if _FADVISE is not None:
        with contextlib.suppress(OSError):
            _FADVISE(fd, offset, length, os.POSIX_FADV_DONTNEED)


_FADVISE = getattr(os, "posix_fadvise", None) if os.name == "posix" else None


class Hasher(Protocol):
    """Anything fed the bytes of a copy, e.g. ``xxhash.xxh3_128()``."""

    def update(self, data: memoryview, /) -> None:
        """Add ``data`` to the digest."""


def copy_file(
    src: Path,
    dst: Path,
    *,
    durable: bool,
    hasher: Hasher | None = None,
    mode: int = 0o600,
    trusted: bool = False,
) -> tuple[os.stat_result, os.stat_result]:
    """Copy ``src`` into the new file ``dst`` in one pass, feeding each chunk to ``hasher``.

    ``src`` must be a regular file, not reached through a final symlink (with ``trusted``:
    also yours or root's, with one link). ``dst`` must not exist; it is created (never through
    a symlink) with the permission bits of ``mode`` (``& 0o777``: never setuid, setgid or
    sticky), and fsynced when ``durable``. On any failure ``dst`` is removed.

    Returns:
        The status of the open source before and after the copy: if they differ, the source
        changed while it was read and the copy may mix two versions.

    Raises:
        UnsafePath: ``src`` is not a regular file (or, with ``trusted``, not a safe one).
    """
    if faults.hook is not None:
        faults.hook("read", src)
    src_fd = open_checked(None, src, src, os.O_RDONLY, trusted=trusted)[0]
    with open(src_fd, "rb", buffering=0) as fin:
        before = os.fstat(fin.fileno())
        if faults.hook is not None:
            faults.hook("create", dst)
        fd = os.open(dst, NEW_FLAGS, 0o600)
        try:
            try:
                if mode & 0o777 != 0o600:
                    os.fchmod(fd, mode & 0o777)
                buf = bytearray(CHUNK)
                view = memoryview(buf)

                def chunks() -> Iterator[memoryview]:
                    written = kicked = 0
                    while n := fin.readinto(buf):
                        if hasher is not None:
                            hasher.update(view[:n])
                        yield view[:n]
                        written += n
                        if durable and written - kicked >= WRITEBACK_STEP:
                            start_writeback(fd, kicked, written - kicked)
                            kicked = written

                write_all(fd, chunks(), dst, durable=durable, each_chunk=True)
            finally:
                os.close(fd)
        except BaseException:
            remove(dst)
            raise
        after = os.fstat(fin.fileno())
    return before, after


def hash_file(path: Path, hasher: Hasher, *, trusted: bool = False) -> int:
    """Feed the content of ``path`` to ``hasher``; return its size in bytes.

    ``path`` must be a regular file, not reached through a final symlink (with ``trusted``:
    also yours or root's, with one link, as :func:`copy_file`).
    """
    size = 0
    if faults.hook is not None:
        faults.hook("read", path)
    fd = open_checked(None, path, path, os.O_RDONLY, trusted=trusted)[0]
    with open(fd, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            hasher.update(view[:n])
            size += n
    return size


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` (new) hold what ``src`` holds now: a hard link, or a copy where links fail.

    A later :func:`replace` onto ``src`` swaps its directory entry and leaves the linked file
    as it was, so the link is a free safety copy.
    """
    try:
        if faults.hook is not None:
            faults.hook("link", dst)
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # no hard links on this file system (or too many): copy instead
        copy_file(src, dst, durable=False, mode=os.lstat(src).st_mode & 0o777)
