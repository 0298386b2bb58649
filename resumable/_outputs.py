"""``cp.open``: output files written exactly once.

Each checkpoint records, with the position, the length of every file the block opened with
``cp.open`` (flushed first, and fsynced under ``durability=full``). Re-entering the operation
truncates each file back to its recorded length before the body runs, so what an interrupted
run wrote after its last commit is gone, and the items that wrote it run again. A file shorter
than its recorded length was changed by someone else (or lost in a power failure without
``durability=full``): that is an error, never a silent truncation.

Files are named in the record by the path as given (``"out/rows.csv"``), not resolved: the same
script run from another directory finds that its output is not where the record says, and
says so, rather than writing a second copy from the middle.
"""

from __future__ import annotations

import contextlib
import os
from typing import IO, Any, Final

from ._checks import path_name
from .errors import CheckpointCorrupt

__all__ = ["Outputs", "check_mode"]

#: The modes cp.open takes, and the mode it reopens a file with after truncating it.
_APPEND: Final = {"a": "a", "at": "a", "ab": "ab", "w": "a", "wt": "a", "wb": "ab"}


def check_mode(path: object, mode: object) -> str:
    """The path as the record names it; refuses a mode cp.open does not take."""
    name = path_name("cp.open", path)
    if mode not in _APPEND:
        raise ValueError(
            f"cp.open() writes a file exactly once, in mode 'a' (append; default), 'w' (start "
            f"empty on the first run), 'ab' or 'wb', not {mode!r}; read input with cp.lines() "
            "or open()"
        )
    return name


class Outputs:
    """The files a run opened with ``cp.open``, and their committed lengths."""

    __slots__ = ("committed", "files", "op_id", "untracked")

    def __init__(self, op_id: str, committed: dict[str, int]) -> None:
        self.op_id = op_id
        self.committed = committed  # path -> length at the newest checkpoint
        self.files: dict[str, tuple[IO[Any], int]] = {}  # path -> (file, a duplicate of its fd)
        self.untracked: list[IO[Any]] = []  # opened by a completed operation: closed only

    def open(self, name: str, mode: str, kwargs: dict[str, Any], *, completed: bool) -> IO[Any]:
        """Open ``name``, truncated to its committed length if it has one."""
        if name in self.files:
            raise ValueError(f"cp.open({name!r}) is already open in this block; use that file")
        if completed:  # a completed operation runs no body: its output stays as it is
            f = open(name, _APPEND[mode], **kwargs)  # noqa: SIM115 - closed by the block
            self.untracked.append(f)
            return f
        length = self.committed.get(name)
        if length is None:
            f = open(name, mode, **kwargs)  # noqa: SIM115 - closed by the block
        else:
            self._truncate(name, length)
            f = open(name, _APPEND[mode], **kwargs)  # noqa: SIM115 - closed by the block
        try:
            self.files[name] = (f, os.dup(f.fileno()))
        except BaseException:
            f.close()
            raise
        return f

    def _truncate(self, name: str, length: int) -> None:
        try:
            flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_CREAT if length == 0 else 0)
            fd = os.open(name, flags, 0o666)  # as open() creates a file: not executable
        except FileNotFoundError:
            raise CheckpointCorrupt(
                f"{name} is missing, but the checkpoint of {self.op_id!r} counted {length:,} "
                "bytes written to it: put the file back (from a backup), or start over with "
                "checkpointed(..., fresh=True)"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if size < length:
                raise CheckpointCorrupt(
                    f"{name} has {size:,} bytes, fewer than the {length:,} the checkpoint of "
                    f"{self.op_id!r} counted written to it: it was changed outside this job "
                    "(or lost writes in a power failure; durability=full prevents that). Put the "
                    "file back, or start over with checkpointed(..., fresh=True)"
                )
            if size > length:
                os.ftruncate(fd, length)  # what the interrupted run wrote after its last commit
        finally:
            os.close(fd)

    @property
    def tracked(self) -> bool:
        """True if this run opened a file whose length it commits."""
        return bool(self.files)

    def lengths(self, *, durable: bool) -> dict[str, int]:
        """Every committed length, this run's files flushed (and fsynced if ``durable``)."""
        out = dict(self.committed)
        for name, (f, fd) in self.files.items():
            if not f.closed:
                f.flush()
            if durable:
                os.fsync(fd)
            out[name] = os.fstat(fd).st_size
        return out

    def close(self) -> None:
        """Close every file (a close that fails is not this block's error to raise)."""
        for f, fd in self.files.values():
            with contextlib.suppress(OSError):
                f.close()
            os.close(fd)
        for f in self.untracked:
            with contextlib.suppress(OSError):
                f.close()
        self.files.clear()
        self.untracked.clear()
