"""resumable: make long batch jobs crash-safe.

Kill the job, run the same script again: finished work is skipped, loops continue from the
last committed position with their local state restored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._configure import configure
from ._progress import Progress
from ._state import State
from .checkpoint import Checkpoint, checkpointed
from .errors import (
    BackupRefused,
    CheckpointCorrupt,
    InputChanged,
    InvalidTransition,
    LeaseLost,
    OperationLocked,
    ResumableError,
    SerializationError,
    StoreError,
    UnsafePath,
)
from .operation import CheckpointRecord, OperationRecord, ProcessState
from .serializers import Serializer, register_serializer
from .stores import open_store
from .stores.base import Store

if TYPE_CHECKING:
    from .backup import BackupInfo
    from .decorator import ResumableFunction, resumable
    from .failsafe import CheckpointData, FailsafeManager, get_failsafe_manager

__all__ = [
    "BackupInfo",
    "BackupRefused",
    "Checkpoint",
    "CheckpointCorrupt",
    "CheckpointData",
    "CheckpointRecord",
    "FailsafeManager",
    "InputChanged",
    "InvalidTransition",
    "LeaseLost",
    "OperationLocked",
    "OperationRecord",
    "ProcessState",
    "Progress",
    "ResumableError",
    "ResumableFunction",
    "SerializationError",
    "Serializer",
    "State",
    "Store",
    "StoreError",
    "UnsafePath",
    "checkpointed",
    "configure",
    "get_failsafe_manager",
    "open_store",
    "register_serializer",
    "resumable",
]


def __getattr__(name: str) -> Any:
    # The decorator loads on first use: wrapt and tenacity cost ~60 ms that a script using
    # only `checkpointed` (or the command line) should not pay at `import resumable`.
    if name in ("resumable", "ResumableFunction"):
        from . import decorator

        return getattr(decorator, name)
    if name in ("BackupInfo", "CheckpointData", "FailsafeManager", "get_failsafe_manager"):
        from . import failsafe

        return getattr(failsafe, name)
    if name == "__version__":
        from importlib.metadata import version

        return version("resumable")
    raise AttributeError(f"module 'resumable' has no attribute {name!r}")
