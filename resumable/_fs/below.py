"""Below an open directory: the file store's records, reached by name, never by path.

A path handed to the kernel is resolved through every symlink on it. The file store
therefore never names a file below its root by path: it opens the root (checked when the
store opened), then each directory below it relative to the one above (O_NOFOLLOW, checked
as open_dir checks), and reads, writes, renames, lists and removes by name relative to the
last one. A symlink planted at any component (ops/<key>, checkpoints/, a record) is refused,
never followed. (Like coreutils' rm and install: openat and friends, never a full path.)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from resumable import _trust
from resumable._trust import UnsafePath

from . import faults
from .checked import DIR_FLAGS, open_dir, read_checked
from .write import write_in


def _open_below(folder: int, name: str, where: str, *, create: bool) -> int:
    """Directory ``name`` in ``folder``, not through a symlink; ``where`` is its path.

    (Paths here are strings: a pathlib join costs more than the open.)
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        # ENOTDIR for a symlink, a file, a FIFO (never opened: O_DIRECTORY is checked first).
        raise _refused_below(folder, name, where, exc) from None
    if faults.hook is not None:
        faults.hook("mkdir", Path(where))
    with contextlib.suppress(FileExistsError):  # someone else may be first: checked below
        os.mkdir(name, 0o700, dir_fd=folder)
    try:
        return os.open(name, DIR_FLAGS, dir_fd=folder)
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
    symlink (see the module doc). A context manager that closes the descriptor.
    """

    __slots__ = ("fd", "path", "where")

    def __init__(self, fd: int, path: Path, where: str = "") -> None:
        self.fd = fd
        self.path = path
        #: ``path`` as a string (messages of reads: a pathlib join costs more than the read)
        self.where = where or str(path)

    @classmethod
    def open(cls, path: Path) -> Dir:
        """Directory ``path``, opened and checked as :func:`.checked.open_dir` does."""
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
        :func:`.checked.open_dir` checks (owner, write access). With ``create``, a missing
        component is made owner-only (and checked once made).

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
        """The whole content of file ``name``, as :func:`.checked.read_bytes` reads it.

        Raises:
            FileNotFoundError: there is no such file.
            UnsafePath: not a regular file of yours with one link, or larger than ``limit``.
        """
        return read_checked(self.fd, name, f"{self.where}/{name}", limit)[0]

    def write(self, name: str, data: bytes | Iterable[bytes], *, durable: bool) -> None:
        """Replace file ``name`` with ``data`` atomically, as :func:`.write.atomic_write` does.

        The new file is renamed over the name: a symlink there is replaced, never followed.
        """
        write_in(self.fd, self.path / name, data, durable=durable)

    def names(self) -> list[str]:
        """The names of the entries of this directory."""
        if faults.hook is not None:
            faults.hook("listdir", self.path)
        return os.listdir(self.fd)

    def lstat(self, name: str) -> os.stat_result:
        """The status of entry ``name`` itself (a symlink's own, not its target's)."""
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def remove(self, name: str, *, missing_ok: bool = True) -> None:
        """Unlink entry ``name`` (a symlink itself, never its target)."""
        try:
            if faults.hook is not None:
                faults.hook("unlink", self.path / name)
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def remove_tree(self, name: str) -> None:
        """Remove entry ``name`` and, if it is a directory, everything in it, as far as possible.

        Never through a symlink (one is removed itself), never opening a FIFO.
        """
        if faults.hook is not None:
            faults.hook("rmtree", self.path / name)
        _remove_entry(self.fd, name)

    def replace(self, src: str, dst: str, *, durable: bool) -> None:
        """Rename entry ``src`` over ``dst`` atomically; with ``durable``, fsync this directory."""
        if faults.hook is not None:
            faults.hook("replace", self.path / dst)
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        if durable:
            self.fsync()

    def fsync(self) -> None:
        """Make a rename or unlink in this directory durable."""
        if faults.hook is not None:
            faults.hook("fsync_dir", self.path)
        os.fsync(self.fd)


def _remove_entry(folder: int, name: str) -> None:
    """Remove ``name`` in ``folder`` and all below it; errors are ignored (as far as possible)."""
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=folder)
            return
        fd = os.open(name, DIR_FLAGS, dir_fd=folder)
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
