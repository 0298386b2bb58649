"""The fault-injection hook of the tests: every operation of :mod:`resumable._fs` calls it.

:data:`hook`, when set, is called with the name of each operation and its path just before
the operation runs, and may raise (``EIO``, ``ENOSPC``) or end the process
(``tests/workers/fault_worker.py``). Only status queries (``stat``) bypass it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["hook"]

#: ``(operation, path)`` before each operation. None (the normal case) costs one lookup per
#: operation.
hook: Callable[[str, Path], None] | None = None
