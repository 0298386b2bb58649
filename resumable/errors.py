"""Errors raised by resumable.

Every error says what to do next. The tree::

    ResumableError                  (base; RuntimeError)
    ├── OperationLocked             another live process runs this operation
    │   └── LeaseLost               this process's lease ran out and another took over
    ├── CheckpointCorrupt           a record failed its checksum or signature (ValueError)
    ├── SerializationError          state or a result could not be serialized (TypeError)
    ├── InvalidTransition           a ProcessState change the table forbids
    ├── InputChanged                a resumed loop's input differs from the one it counted
    ├── BackupRefused               a backup's manifest cannot be read or trusted (ValueError)
    └── StoreError                  the store could not be opened or written (OSError)
        └── UnsafePath              a path another local user could have put or could change

Bad arguments raise plain ``ValueError``/``TypeError`` at the call that got them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BackupRefused",
    "CheckpointCorrupt",
    "InputChanged",
    "InvalidTransition",
    "LeaseLost",
    "OperationLocked",
    "ResumableError",
    "SerializationError",
    "StoreError",
    "UnsafePath",
]


class ResumableError(RuntimeError):
    """Base class of every error resumable raises on its own account."""


class OperationLocked(ResumableError):
    """Another live process (or another block in this one) runs this operation.

    Attributes:
        op_id: The operation that is locked.
        where: Who runs it, as the message says ("another process", ...).
    """

    def __init__(
        self,
        op_id: str,
        where: str = "another process",
        waited: float = 0,
        *,
        advice: str = "let it finish, stop it, or pass lock=<seconds> to wait for it",
    ) -> None:
        self.op_id = op_id
        self.where = where
        after = f" (waited {waited:g} s)" if waited else ""
        super().__init__(f"operation {op_id!r} is being run by {where}{after}; {advice}")


class LeaseLost(OperationLocked):
    """This process's lease ran out while it was paused, and another process took over.

    The lease was on an operation, or on a batch of a shared map's items; the process wrote
    nothing more once it was taken over.

    Attributes:
        op_id: The operation whose lease was lost.
    """

    def __init__(self, op_id: str, what: str = "its lease") -> None:
        self.op_id = op_id
        ResumableError.__init__(
            self,
            f"operation {op_id!r}: this process lost {what} (it was paused, or cut off from the "
            "store, for longer than the lease) and another process took it over, so this "
            "process wrote nothing more. Its work continues there; if the pauses are expected, "
            "open the store with a longer lease (?lease=<seconds>)",
        )


class CheckpointCorrupt(ResumableError, ValueError):
    """A stored record failed its checksum or signature and was not loaded."""


class SerializationError(ResumableError, TypeError):
    """State or a result could not be serialized; the message names the field.

    Attributes:
        field: The state field (or result) that could not be serialized, if known.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class InvalidTransition(ResumableError):
    """A ``ProcessState`` change that the transition table forbids."""


class InputChanged(ResumableError, ValueError):
    """A resumed loop's input differs from the one its committed position counted.

    The item just before the committed position is not the one an earlier run finished
    there: an item was inserted or removed before it, or the file changed. Nothing ran.

    Attributes:
        op_id: The operation whose loop was resumed.
        position: The committed position (items finished before this run).
    """

    def __init__(self, message: str, op_id: str, position: int) -> None:
        self.op_id, self.position = op_id, position
        super().__init__(message)


class StoreError(ResumableError, OSError):
    """The store could not be opened, read or written (I/O, permissions, space, a server).

    Its message says what failed and what to do, and claims nothing it did not check. A
    record that was read but does not decode is not this: that is :class:`CheckpointCorrupt`.
    """


#: The environment variable that lists directories shared with other users on purpose.
SHARED_ENV = "RESUMABLE_SHARED_DIRS"


class UnsafePath(StoreError, PermissionError):
    """A path another local user could have put there, or could change under the library.

    A symlink where the library would write, a FIFO or a device where it would read, a hard
    link, another user's file or directory, or a directory others can write without the
    sticky bit (docs/security.md). A :class:`StoreError` and a ``PermissionError``: the
    message names the path, why it is refused, and what to do.

    Attributes:
        path: The refused path.
        why: Why, in words ("it is a symbolic link").
        fix: What to do.
    """

    def __init__(self, path: str | os.PathLike[str], why: str, fix: str) -> None:
        self.path = os.fspath(path)
        self.why, self.fix = why, fix  # the parts of the message, for reports (verify)
        super().__init__(
            f"refusing {self.path}: {why}; {fix}. (To share a directory with other users on "
            f"purpose, list it in {SHARED_ENV}; see docs/security.md)"
        )


class BackupRefused(ResumableError, ValueError):
    """A backup whose manifest cannot be read or trusted; nothing in it was used.

    A ``ValueError``, as the specification asks of an unknown or corrupt backup. The message
    names the manifest, says why it was refused and what to do.

    Attributes:
        backup_id: The refused backup.
        path: Its manifest.
        reason: Why, in words ("is owned by uid 65534, ...").
        fix: What to do.
    """

    def __init__(self, backup_id: str, path: Path, reason: str, fix: str) -> None:
        self.backup_id = backup_id
        self.path = str(path)
        self.reason = reason
        self.fix = fix
        super().__init__(f"backup {backup_id} is refused: its manifest {path} {reason}; {fix}")
