"""Opening and reading files and directories, checked: never through a symlink at the path.

Files are opened with ``O_NOFOLLOW``, their status looked at before the open (a FIFO or a
device is never opened) and checked again on the opened descriptor (a regular file, one link,
owned by you or root: :mod:`resumable._trust`); records are read only up to a size cap, checked
before a byte is read. Directories are opened with ``O_DIRECTORY | O_NOFOLLOW`` and checked on
the descriptor (:func:`open_dir`); those above were checked once, when the store or backup
directory was opened (:func:`makedirs`, :func:`_trust.resolve_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from resumable import _trust
from resumable._trust import UnsafePath

from . import faults

#: Flags of every open: never through a symlink, never inherited by a child process.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
#: Flags of a new file: created here, never an existing one, never through a symlink.
NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
#: Flags of a directory opened to work in: never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW
#: Opening a FIFO for reading waits for a writer; with this it does not wait (and fstat
#: then refuses it).
_NOWAIT = os.O_NONBLOCK


def refused(path: Path | str, exc: OSError) -> OSError:
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
        if faults.hook is not None:
            faults.hook("mkdir", folder)
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
        fd = os.open(path, DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            _trust.check_dir(path, os.lstat(path))  # says what it is instead
        raise refused(path, exc) from None
    try:
        _trust.check_dir(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_status(
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
    return open_checked(None, path, path, flags)[0]


def read_bytes(path: Path, *, limit: int) -> bytes:
    """The whole content of the regular file ``path``, at most ``limit`` bytes.

    Raises:
        FileNotFoundError: there is no such file.
        UnsafePath: a symlink, FIFO, device, hard link or another user's file, or a file
            larger than ``limit`` (checked before anything is read).
    """
    return read_checked(None, path, path, limit)[0]


def read_with_status(path: Path, *, limit: int) -> tuple[bytes, os.stat_result]:
    """:func:`read_bytes`, and the status of the opened file (whose owner may decide more).

    Raises:
        FileNotFoundError: there is no such file.
        UnsafePath: see :func:`read_bytes`.
    """
    return read_checked(None, path, path, limit)


def open_checked(
    folder: int | None, name: str | Path, path: str | Path, flags: int, *, trusted: bool = True
) -> tuple[int, os.stat_result]:
    """:func:`open_file` of ``name`` (relative to directory ``folder`` if given), and its status.

    ``path`` names it in messages (a string: a pathlib join costs more than the open). The
    status is looked at before the open (a FIFO or a device is never opened) and compared
    with the opened descriptor's. Without ``trusted``, any regular file is accepted.
    """
    before = os.stat(name, dir_fd=folder, follow_symlinks=False)
    check_status(path, before, trusted=trusted)
    try:
        fd = os.open(name, flags | NOFOLLOW | _NOWAIT, dir_fd=folder)
    except OSError as exc:
        raise refused(path, exc) from None
    try:
        st = os.fstat(fd)
        check_status(path, st, trusted=trusted, before=before)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_checked(
    folder: int | None, name: str | Path, path: str | Path, limit: int
) -> tuple[bytes, os.stat_result]:
    """:func:`read_with_status` of ``name``, relative to directory ``folder`` if given.

    ``path`` names it in messages, as in :func:`open_checked`.
    """
    if faults.hook is not None:
        faults.hook("read", Path(path))
    fd, st = open_checked(folder, name, path, os.O_RDONLY)
    try:
        _trust.check_size(path, st, limit)
        # Its size, not the limit: a read of n bytes allocates n bytes first. One read(2)
        # of a byte more than its size takes a regular file whole and shows that it grew (a
        # file object would read twice, after its own setup).
        data = os.read(fd, st.st_size + 1)
        while len(data) < st.st_size and (more := os.read(fd, st.st_size + 1 - len(data))):
            data += more  # a short read (over 2 GiB, a signal), or the file shrank
        if len(data) > st.st_size:  # grew since fstat: no record is written in place
            raise UnsafePath(path, "it grew while it was read", "try again")
        return data, st
    finally:
        os.close(fd)


def list_names(path: Path) -> list[str]:
    """The entry names of directory ``path``; none if it does not exist."""
    try:
        if faults.hook is not None:
            faults.hook("listdir", path)
        fd = os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise refused(path, exc) from None
    try:
        return os.listdir(fd)
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
