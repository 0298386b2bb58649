"""The pytest plugin of ``resumable``: the ``crash_safe`` fixture.

Registered through the ``pytest11`` entry point, so a test only names the fixture. Disable
it with ``-p no:resumable``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from . import CrashReport

__all__ = ["CrashSafe", "crash_safe"]


class CrashSafe(Protocol):
    """What the ``crash_safe`` fixture is: ``assert_crash_safe`` without ``cwd``."""

    def __call__(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        *,
        outputs: Iterable[str | os.PathLike[str]] = (),
        signals: Iterable[str] = ("KILL",),
        max_points: int = 50,
        timeout: float = 60.0,
    ) -> CrashReport:
        """Check ``cmd`` as ``assert_crash_safe`` does, in copies of the test's tmp_path."""


@pytest.fixture
def crash_safe(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> CrashSafe:
    """``assert_crash_safe`` on copies of this test's ``tmp_path``.

    Write the job and its input into ``tmp_path``, then call
    ``crash_safe([sys.executable, "job.py"], outputs=["out.txt"])``: every run gets a fresh
    copy of ``tmp_path``, made in a directory of pytest's own (kept as pytest keeps its
    temporary directories, so a failing case can be looked at).
    """
    from . import assert_crash_safe

    def check(
        cmd: Sequence[str | os.PathLike[str]],
        *,
        outputs: Iterable[str | os.PathLike[str]] = (),
        signals: Iterable[str] = ("KILL",),
        max_points: int = 50,
        timeout: float = 60.0,
    ) -> CrashReport:
        return assert_crash_safe(
            cmd, outputs=outputs, cwd=tmp_path, signals=signals, max_points=max_points,
            timeout=timeout, workdir=tmp_path_factory.mktemp("crash-safe"),
        )  # fmt: skip

    return check
