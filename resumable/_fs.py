"""Every file and directory operation of the file store and the locks, in one place.

Atomic writes are spelled once here: a temp name (uuid + pid) in the same directory, write,
flush, fsync when durability asks for it, ``os.replace``, fsync the directory.
Stores create files owner-only (0600) in owner-only directories (0700).

Nothing here follows a symlink at the path it is given: files are opened with ``O_NOFOLLOW``
(new ones with ``O_EXCL``), checked on the opened descriptor (a regular file, one link, owned
by you or root: :mod:`resumable._trust`), and written through a descriptor of their directory,
itself opened without following links. The directories above were checked once, when the store
or backup directory was opened (:func:`makedirs`, :func:`_trust.resolve_dir`). Below a file
store's root, not even a directory is named by path: each is opened relative to the one above
(:class:`Dir`).

Tests inject faults here: :data:`_fault`, when set, is called with the name of each
operation and its path just before the operation runs, and may raise (``EIO``, ``ENOSPC``)
or end the process (``tests/fault_worker.py``). Only status queries (``stat``) bypass it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

from . import _trust
from ._trust import UnsafePath

__all__ = [
    "TEMP_MARK",
    "Dir",
    "atomic_write",
    "copy_file",
    "create_new",
    "fsync_dir",
    "fsync_file",
    "hash_file",
    "link_or_copy",
    "list_names",
    "locked",
    "lstat_or_none",
    "makedirs",
    "open_dir",
    "open_lock",
    "read_bytes",
    "read_with_status",
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


#: Flags of every open: never through a symlink, never inherited by a child process.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
#: Flags of a new file: created here, never an existing one, never through a symlink.
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
#: Flags of a directory opened to work in: never through a symlink.
_DIR = os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW
#: Opening a FIFO for reading waits for a writer; with this it does not wait (and fstat
#: then refuses it).
_NOWAIT = os.O_NONBLOCK


def _refused(path: Path | str, exc: OSError) -> OSError:
    """``exc`` from an ``O_NOFOLLOW`` open, as UnsafePath if the path is a symlink."""
    if exc.errno == errno.ELOOP:
        return UnsafePath(path, "it is a symbolic link", "remove the link")
    return exc


def makedirs(path: Path) -> Path:
    """Create directory ``path`` and any missing parents, each owner-only; return its real path.

    Every existing directory on the way is checked (:func:`_trust.resolve_dir`): owned by
    you or root, not writable by others; a symlink on the way only if you or root made it.
    Each directory created is checked again once made (someone may have been first).

    Raises:
        UnsafePath: a directory on the way is another user's, or writable by others.
    """
    real = _trust.resolve_dir(path)
    missing = []
    probe = real
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        if _fault is not None:
            _fault("mkdir", folder)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o700)
        _trust.check_dir(folder, os.lstat(folder))
    return real


def open_dir(path: Path) -> int:
    """A descriptor of directory ``path`` (not through a symlink), checked as in ``makedirs``.

    Raises:
        FileNotFoundError: there is no ``path``.
        UnsafePath: it is a symlink, not a directory, another user's, or writable by others.
    """
    try:
        fd = os.open(path, _DIR)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            _trust.check_dir(path, os.lstat(path))  # says what it is instead
        raise _refused(path, exc) from None
    try:
        _trust.check_dir(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | flags)
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
    folder = open_dir(path.parent)
    try:
        _write_in(folder, path, data, durable=durable)
    finally:
        os.close(folder)


def _check_status(
    path: Path | str,
    st: os.stat_result,
    *,
    trusted: bool,
    before: os.stat_result | None = None,
) -> None:
    """Refuse what a checked open must not open: anything but a regular file.

    With ``trusted``, also anything :func:`_trust.check_file` refuses (a hard link, another
    user's file); with ``before`` (the status looked at before the open), another file.
    """
    if before is not None and not os.path.samestat(st, before):
        raise UnsafePath(path, "it was replaced while it was opened", "try again")
    if trusted:
        _trust.check_file(path, st)
    elif stat.S_ISLNK(st.st_mode):
        raise UnsafePath(path, "it is a symbolic link", "remove the link")
    elif not stat.S_ISREG(st.st_mode):
        raise UnsafePath(path, "it is not a regular file", "read regular files only")


def open_file(path: Path, flags: int = os.O_RDONLY) -> int:
    """A descriptor of the existing file ``path``, checked: regular, one link, yours or root's.

    Never through a symlink, never a FIFO or a device (the status is looked at before the
    open, and the opened descriptor's is compared with it).

    Raises:
        FileNotFoundError: there is no such file.
        UnsafePath: anything but a regular file of yours with one link.
    """
    return _open_checked(None, path, path, flags)[0]


def read_bytes(path: Path, *, limit: int) -> bytes:
    """The whole content of the regular file ``path``, at most ``limit`` bytes.

    Raises:
        FileNotFoundError: there is no such file.
        UnsafePath: a symlink, FIFO, device, hard link or another user's file, or a file
            larger than ``limit`` (checked before anything is read).
    """
    return _read_checked(None, path, path, limit)[0]


def read_with_status(path: Path, *, limit: int) -> tuple[bytes, os.stat_result]:
    """:func:`read_bytes`, and the status of the opened file (whose owner may decide more).

    Raises:
        FileNotFoundError: there is no such file.
        UnsafePath: see :func:`read_bytes`.
    """
    return _read_checked(None, path, path, limit)


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


# --- whole files: the backups (resumable/backup/) ---------------------------------------------

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
    os.close(os.open(path, _NEW, 0o600))


def _write_all(
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
    if _fault is not None and not each_chunk:
        _fault("write", path)
    for chunk in chunks:
        if _fault is not None and each_chunk:
            _fault("write", path)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    if durable:
        if _fault is not None:
            _fault("fsync", path)
        os.fsync(fd)


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
    if _fault is not None:
        _fault("read", src)
    src_fd = _open_checked(None, src, src, os.O_RDONLY, trusted=trusted)[0]
    with open(src_fd, "rb", buffering=0) as fin:
        before = os.fstat(fin.fileno())
        if _fault is not None:
            _fault("create", dst)
        fd = os.open(dst, _NEW, 0o600)
        try:
            try:
                if mode & 0o777 != 0o600:
                    os.fchmod(fd, mode & 0o777)
                buf = bytearray(CHUNK)
                view = memoryview(buf)

                def chunks() -> Iterator[memoryview]:
                    while n := fin.readinto(buf):
                        if hasher is not None:
                            hasher.update(view[:n])
                        yield view[:n]

                _write_all(fd, chunks(), dst, durable=durable, each_chunk=True)
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
    if _fault is not None:
        _fault("read", path)
    fd = _open_checked(None, path, path, os.O_RDONLY, trusted=trusted)[0]
    with open(fd, "rb", buffering=0) as f:
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
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # no hard links on this file system (or too many): copy instead
        copy_file(src, dst, durable=False, mode=os.lstat(src).st_mode & 0o777)


def list_names(path: Path) -> list[str]:
    """The entry names of directory ``path``; none if it does not exist."""
    try:
        if _fault is not None:
            _fault("listdir", path)
        fd = os.open(path, _DIR)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _refused(path, exc) from None
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


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
            raise _refused(path, exc) from None
    raise FileNotFoundError(f"{path} keeps disappearing while it is opened")


@contextlib.contextmanager
def locked(path: Path, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
    """Hold an ``flock`` on ``path`` (created owner-only if missing) for the block.

    Yields whether the lock is held: always True when ``wait``; False without ``wait`` when
    another holder conflicts. The lock belongs to this open file description, so it also
    keeps threads of one process apart, and the kernel drops it when the process dies.
    """
    if _fault is not None:
        _fault("lock", path)
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


def lstat_or_none(path: Path) -> os.stat_result | None:
    """The status of ``path`` itself (a symlink's own), or None if there is nothing there."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def same_file(fd: int, path: Path) -> bool:
    """Whether descriptor ``fd`` is the file at ``path`` now (not a symlink to it, not replaced).

    Raises:
        FileNotFoundError: there is no ``path``.
    """
    return os.path.samestat(os.fstat(fd), os.lstat(path))


# --- below an open directory: the file store's records ---------------------------------------
#
# A path handed to the kernel is resolved through every symlink on it. The file store
# therefore never names a file below its root by path: it opens the root (checked when the
# store opened), then each directory below it relative to the one above (O_NOFOLLOW, checked
# as open_dir checks), and reads, writes, renames, lists and removes by name relative to the
# last one. A symlink planted at any component (ops/<key>, checkpoints/, a record) is refused,
# never followed. (Like coreutils' rm and install: openat and friends, never a full path.)


def _write_in(folder: int, path: Path, data: bytes | Iterable[bytes], *, durable: bool) -> None:
    """:func:`atomic_write` of ``path``, whose directory is open as ``folder``."""
    chunks = (data,) if isinstance(data, bytes | bytearray | memoryview) else data
    tmp = temp_path(path)
    fd = -1
    try:  # the open inside: an interrupt right after it must not leak the descriptor
        if _fault is not None:
            _fault("create", tmp)
        fd = os.open(tmp.name, _NEW, 0o600, dir_fd=folder)
        try:
            _write_all(fd, chunks, tmp, durable=durable)
        finally:
            os.close(fd)
        if _fault is not None:
            _fault("replace", path)
        try:
            os.replace(tmp.name, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except IsADirectoryError:
            raise UnsafePath(path, "it is a directory, not a file", "move it aside") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name, dir_fd=folder)
        raise
    if durable:
        if _fault is not None:
            _fault("fsync_dir", path.parent)
        os.fsync(folder)


def _open_checked(
    folder: int | None, name: str | Path, path: str | Path, flags: int, *, trusted: bool = True
) -> tuple[int, os.stat_result]:
    """:func:`open_file` of ``name`` (relative to directory ``folder`` if given), and its status.

    ``path`` names it in messages (a string: a pathlib join costs more than the open). The
    status is looked at before the open (a FIFO or a device is never opened) and compared
    with the opened descriptor's. Without ``trusted``, any regular file is accepted.
    """
    before = os.stat(name, dir_fd=folder, follow_symlinks=False)
    _check_status(path, before, trusted=trusted)
    try:
        fd = os.open(name, flags | NOFOLLOW | _NOWAIT, dir_fd=folder)
    except OSError as exc:
        raise _refused(path, exc) from None
    try:
        st = os.fstat(fd)
        _check_status(path, st, trusted=trusted, before=before)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_checked(
    folder: int | None, name: str | Path, path: str | Path, limit: int
) -> tuple[bytes, os.stat_result]:
    """:func:`read_with_status` of ``name``, relative to directory ``folder`` if given.

    ``path`` names it in messages, as in :func:`_open_checked`.
    """
    if _fault is not None:
        _fault("read", Path(path))
    fd, st = _open_checked(folder, name, path, os.O_RDONLY)
    try:
        _trust.check_size(path, st, limit)
        with open(fd, "rb", closefd=False) as f:
            # Its size, not the limit: a buffered read of n bytes allocates n bytes first.
            data = f.read(st.st_size + 1)
        if len(data) > st.st_size:  # grew since fstat: no record is written in place
            raise UnsafePath(path, "it grew while it was read", "try again")
        return data, st
    finally:
        os.close(fd)


def _open_below(folder: int, name: str, where: str, *, create: bool) -> int:
    """Directory ``name`` in ``folder``, not through a symlink; ``where`` is its path.

    (Paths here are strings: a pathlib join costs more than the open.)
    """
    try:
        return os.open(name, _DIR, dir_fd=folder)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        # ENOTDIR for a symlink, a file, a FIFO (never opened: O_DIRECTORY is checked first).
        raise _refused_below(folder, name, where, exc) from None
    if _fault is not None:
        _fault("mkdir", Path(where))
    with contextlib.suppress(FileExistsError):  # someone else may be first: checked below
        os.mkdir(name, 0o700, dir_fd=folder)
    try:
        return os.open(name, _DIR, dir_fd=folder)
    except OSError as exc:
        raise _refused_below(folder, name, where, exc) from None


def _refused_below(folder: int, name: str, where: str, exc: OSError) -> OSError:
    """Why directory ``name`` in ``folder`` could not be opened, as UnsafePath if it is unsafe."""
    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
        return exc
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except OSError:
        return exc
    if stat.S_ISLNK(st.st_mode):
        return UnsafePath(
            where,
            "it is a symbolic link, and nothing below a store's directory is reached through one",
            "remove the link",
        )
    try:
        _trust.check_dir(where, st)
    except UnsafePath as unsafe:
        return unsafe
    return exc


class Dir:
    """An open directory: its descriptor, and its path (for messages and the fault hook).

    Everything below it is reached by name relative to the descriptor, never through a
    symlink (see the section comment). A context manager that closes the descriptor.
    """

    __slots__ = ("fd", "path", "where")

    def __init__(self, fd: int, path: Path, where: str = "") -> None:
        self.fd = fd
        self.path = path
        #: ``path`` as a string (messages of reads: a pathlib join costs more than the read)
        self.where = where or str(path)

    @classmethod
    def open(cls, path: Path) -> Dir:
        """Directory ``path``, opened and checked as :func:`open_dir` does."""
        return cls(open_dir(path), path)

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the descriptor (once)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def sub(self, *parts: str, create: bool = False) -> Dir:
        """The directory ``parts`` below this one, never reached through a symlink.

        Each component is opened relative to the one above (``O_NOFOLLOW``) and checked as
        :func:`open_dir` checks (owner, write access). With ``create``, a missing component is
        made owner-only (and checked once made).

        Raises:
            FileNotFoundError: a component is missing (without ``create``).
            UnsafePath: a component is a symlink, not a directory, another user's, or
                writable by others.
        """
        fd, where = self.fd, self.where
        try:
            for name in parts:
                where = f"{where}/{name}"
                above, fd = fd, _open_below(fd, name, where, create=create)
                if above != self.fd:
                    os.close(above)
                _trust.check_dir(where, os.fstat(fd))
        except BaseException:
            if fd != self.fd:
                os.close(fd)
            raise
        return Dir(fd if fd != self.fd else os.dup(fd), self.path.joinpath(*parts), where)

    def read(self, name: str, *, limit: int) -> bytes:
        """The whole content of file ``name``, as :func:`read_bytes` reads it.

        Raises:
            FileNotFoundError: there is no such file.
            UnsafePath: not a regular file of yours with one link, or larger than ``limit``.
        """
        return _read_checked(self.fd, name, f"{self.where}/{name}", limit)[0]

    def write(self, name: str, data: bytes | Iterable[bytes], *, durable: bool) -> None:
        """Replace file ``name`` with ``data`` atomically, as :func:`atomic_write` does.

        The new file is renamed over the name: a symlink there is replaced, never followed.
        """
        _write_in(self.fd, self.path / name, data, durable=durable)

    def names(self) -> list[str]:
        """The names of the entries of this directory."""
        if _fault is not None:
            _fault("listdir", self.path)
        return os.listdir(self.fd)

    def lstat(self, name: str) -> os.stat_result:
        """The status of entry ``name`` itself (a symlink's own, not its target's)."""
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def remove(self, name: str, *, missing_ok: bool = True) -> None:
        """Unlink entry ``name`` (a symlink itself, never its target)."""
        try:
            if _fault is not None:
                _fault("unlink", self.path / name)
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self, name: str) -> None:
        """Remove entry ``name`` and, if it is a directory, everything in it, as far as possible.

        Never through a symlink (one is removed itself), never opening a FIFO.
        """
        if _fault is not None:
            _fault("rmtree", self.path / name)
        _remove_entry(self.fd, name)

    def replace(self, src: str, dst: str, *, durable: bool) -> None:
        """Rename entry ``src`` over ``dst`` atomically; with ``durable``, fsync this directory."""
        if _fault is not None:
            _fault("replace", self.path / dst)
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        if durable:
            self.fsync()

    def fsync(self) -> None:
        """Make a rename or unlink in this directory durable."""
        if _fault is not None:
            _fault("fsync_dir", self.path)
        os.fsync(self.fd)


def _remove_entry(folder: int, name: str) -> None:
    """Remove ``name`` in ``folder`` and all below it; errors are ignored (as far as possible)."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=folder)
            return
        fd = os.open(name, _DIR, dir_fd=folder)
    except OSError:
        return
    try:
        opened = os.fstat(fd)
        if os.path.samestat(st, opened):  # not swapped meanwhile
            for entry in os.listdir(fd):
                _remove_entry(fd, entry)
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=folder)
