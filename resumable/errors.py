"""Errors raised by resumable.

Every error says what to do next. The tree::

    ResumableError                  (base; RuntimeError)
    ├── OperationLocked             another live process runs this operation
    │   └── LeaseLost               this process's lease ran out and another took over
    ├── CheckpointCorrupt           a record failed its checksum or signature (ValueError)
    ├── SerializationError          state or a result could not be serialized (TypeError)
    ├── InvalidTransition           a ProcessState change the table forbids
    └── StoreError                  the store could not be opened or written (OSError)

Bad arguments raise plain ``ValueError``/``TypeError`` at the call that got them.
"""

from __future__ import annotations

__all__ = [
    "CheckpointCorrupt",
    "InvalidTransition",
    "LeaseLost",
    "OperationLocked",
    "ResumableError",
    "SerializationError",
    "StoreError",
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


class StoreError(ResumableError, OSError):
    """The store could not be opened, read or written (I/O, permissions, space, a server).

    Its message says what failed and what to do, and claims nothing it did not check. A
    record that was read but does not decode is not this: that is :class:`CheckpointCorrupt`.
    """
