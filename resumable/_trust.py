"""Who may have put a file or directory there: the checks that keep other local users out.

A store or backup directory may sit where other users of the machine can write (a team's
``/srv/jobs``, a scratch directory under ``/tmp``). Whoever can write it can swap a file for a
symlink (and make the library write through it), plant a record (a pickle runs as you), or hold
a lock file open. So, as OpenSSH does with ``~/.ssh``:

- a directory the library uses, and every directory above it, must be owned by you or root
  and not writable by other users, unless it has the sticky bit (``/tmp``: others may add
  names but not rename or remove yours). Group-writable is accepted when the group is the
  owner's private group (one user, as ``umask 002`` systems make them);
- a file it reads or writes must be a regular file owned by you or root, with one link (a
  hard link is a file someone else may own the other name of);
- a symlink on the way to a directory (or to a file that is only read) is followed only if
  you or root made it (a link another user made would point you anywhere, shared directory
  or not); below a store's root, never.

A directory shared on purpose is listed in ``RESUMABLE_SHARED_DIRS`` (``os.pathsep``
separated): in it and below it, other owners and group/other write access are accepted.
Symlinks, non-regular files and hard links are refused there as well.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from pathlib import Path

from .errors import SHARED_ENV, UnsafePath

__all__ = [
    "SHARED_ENV",
    "UnsafePath",
    "check_dir",
    "check_file",
    "check_size",
    "resolve_dir",
    "resolve_file",
    "shared",
    "user_name",
]

#: Symlinks followed on the way to one directory before giving up (as the kernel's ELOOP).
_MAX_HOPS = 40


def user_name(uid: int) -> str:
    """The user ``uid`` is, in words for a message: its name and uid, or the uid alone."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _shared_roots() -> tuple[str, ...]:
    raw = os.environ.get(SHARED_ENV, "")
    return tuple(os.path.realpath(p) for p in raw.split(os.pathsep) if p.strip())


def shared(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (a real path) is in or below a directory shared on purpose."""
    p = os.fspath(path)
    return any(p == root or p.startswith(root.rstrip("/") + "/") for root in _shared_roots())


def _trusted_uid(uid: int) -> bool:
    return uid in (0, os.geteuid())


@functools.lru_cache(maxsize=64)
def _private_group(gid: int, owner: int) -> bool:
    """Whether group ``gid`` is the private group of user ``owner`` (no one else in it)."""
    try:
        group = grp.getgrgid(gid)
        return not group.gr_mem and pwd.getpwuid(owner).pw_gid == gid
    except KeyError:
        return False


def check_dir(path: str | os.PathLike[str], st: os.stat_result) -> None:
    """Refuse directory ``path`` (status ``st``, not following links) unless it is safe to use.

    Raises:
        UnsafePath: not a directory, owned by another user, or writable by others.
    """
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise UnsafePath(path, "it is a symbolic link", "use the directory it points to")
    if not stat.S_ISDIR(mode):
        raise UnsafePath(path, "it is not a directory", "move it aside or choose another path")
    if not _trusted_uid(st.st_uid) and not shared(path):
        raise UnsafePath(
            path,
            f"it is owned by {user_name(st.st_uid)}, not by you or root, so its owner could "
            "replace what the library keeps there",
            "use a directory of your own",
        )
    if mode & stat.S_ISVTX:
        return  # others may add names, not rename or remove ours
    if mode & stat.S_IWOTH and not shared(path):
        raise UnsafePath(
            path,
            f"every user can write it (mode {stat.S_IMODE(mode):04o}) and it has no sticky bit",
            f"run chmod o-w {path} (or chmod +t to keep it open to all)",
        )
    if mode & stat.S_IWGRP and not _private_group(st.st_gid, st.st_uid) and not shared(path):
        raise UnsafePath(
            path,
            f"group {_group(st.st_gid)} can write it (mode {stat.S_IMODE(mode):04o}) and has "
            "other members than its owner",
            f"run chmod g-w {path}",
        )


def check_file(path: str | os.PathLike[str], st: os.stat_result, *, links: int = 1) -> None:
    """Refuse file ``path`` unless it is a regular file of yours or root's with one link.

    ``st`` is the status of the opened descriptor, or ``lstat``'s. In a shared directory
    another owner is accepted. ``links``: how many names it may have (more than one only
    when the caller knows the others are its own).

    Raises:
        UnsafePath: a symlink, not a regular file, a hard link, or another user's file.
    """
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        raise UnsafePath(path, "it is a symbolic link", "remove the link")
    if not stat.S_ISREG(mode):
        raise UnsafePath(path, "it is not a regular file", "move it aside")
    if st.st_nlink > links:
        raise UnsafePath(
            path,
            f"it has {st.st_nlink} hard links, so another name may belong to someone else",
            "replace it with a copy (cp FILE FILE.new && mv FILE.new FILE)",
        )
    if not _trusted_uid(st.st_uid) and not shared(Path(path).parent):
        raise UnsafePath(
            path,
            f"it is owned by {user_name(st.st_uid)}, not by you or root",
            "remove it, or restore it from a backup of your own",
        )


def check_size(path: str | os.PathLike[str], st: os.stat_result, limit: int) -> None:
    """Refuse a record file larger than ``limit`` bytes, before anything of it is read.

    ``st``: its status, which already passed :func:`check_file`.

    Raises:
        UnsafePath: larger than ``limit``.
    """
    if st.st_size > limit:
        raise UnsafePath(
            path,
            f"it holds {st.st_size} bytes, more than the {limit} any record of the library "
            "can have",
            "move it aside",
        )


def resolve_dir(path: Path) -> Path:
    """The real path of directory ``path``, every directory on the way checked.

    Walks ``path`` from ``/``: each existing directory must pass :func:`check_dir`; a
    symlink is followed only if you or root own it (its directory was checked already, so
    no one else could have put it there). Components that do not exist yet are returned as
    they are (the caller creates them).

    Raises:
        UnsafePath: a directory on the way is unsafe, or a symlink on it is another user's.
        NotADirectoryError: a component is a file.
    """
    return _walk(path, strict=True)


def resolve_file(path: Path) -> Path:
    """The real path of ``path``, to read it: a symlink on the way only if you or root made it.

    For a file the library only reads (a file to back up): directories on the way are not
    checked for their owners, but no other user's symlink is followed, the file's own name
    included, since what is read may be written back there later (a restore).

    Raises:
        UnsafePath: a symlink on the way is another user's.
        NotADirectoryError: a component before the last is a file.
    """
    return _walk(path, strict=False)


def _walk(path: Path, *, strict: bool) -> Path:
    pending = list(reversed(Path(os.path.normpath(Path.cwd() / path)).parts[1:]))
    current = Path("/")
    if strict:
        check_dir(current, current.lstat())
    hops = 0
    while pending:
        name = pending.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        nxt = current / name
        try:
            st = nxt.lstat()
        except FileNotFoundError:
            return nxt.joinpath(*reversed(pending))
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_HOPS:
                raise UnsafePath(nxt, "too many symbolic links on the way", "fix the path")
            if not _trusted_uid(st.st_uid):
                raise UnsafePath(
                    nxt,
                    f"it is a symbolic link owned by {user_name(st.st_uid)}, not by you or root",
                    "use the real path",
                )
            target = nxt.readlink()
            if target.is_absolute():
                current = Path("/")
            pending.extend(reversed(target.parts[1 if target.is_absolute() else 0 :]))
            continue
        if not stat.S_ISDIR(st.st_mode):
            if not strict and not pending:
                return nxt  # the file itself
            raise NotADirectoryError(f"{nxt} is not a directory")
        if strict:
            check_dir(nxt, st)
        current = nxt
    return current
