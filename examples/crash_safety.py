"""Test a job's crash safety: kill it at each commit, run it again, compare.

    python examples/crash_safety.py          # checks two jobs with assert_crash_safe
    python -m pytest examples/crash_safety.py   # the same, as tests using the crash_safe fixture

Two versions of one job write a line per order to a report and keep a total: the first through
``cp.open``, the second through a plain ``open(..., "a")``. Each is run once uninterrupted,
then killed just before and just after each of its commits and run again: the first ends the
same every time; the second writes the orders since its last commit twice, and the check says
which file, which line, and how to reproduce that one crash.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from resumable.testing import assert_crash_safe

if TYPE_CHECKING:
    from resumable.testing.pytest_plugin import CrashSafe

SAFE_JOB = """\
from resumable import checkpointed

with checkpointed("orders", state={"total": 0}, every=10) as cp:
    report = cp.open("report.txt")          # truncated back to the last commit on a re-run
    for order in cp.iterate(range(1, 41)):
        report.write(f"order {order}: {order * 3} EUR\\n")
        cp.state.total += order * 3
print(f"{cp.state.total} EUR in 40 orders")
"""

# The mistake the check is for: a plain file opened per item gets the orders written since
# the last commit a second time when the job is run again after a crash.
PLAIN_JOB = """\
from resumable import checkpointed

with checkpointed("orders", state={"total": 0}, every=10) as cp:
    for order in cp.iterate(range(1, 41)):
        with open("report.txt", "a") as report:
            report.write(f"order {order}: {order * 3} EUR\\n")
        cp.state.total += order * 3
print(f"{cp.state.total} EUR in 40 orders")
"""


def check(job: str, directory: Path) -> str:
    """The outcome of assert_crash_safe on ``job`` as one line."""
    (directory / "job").mkdir()
    (directory / "job" / "job.py").write_text(job)
    (directory / "runs").mkdir()  # where the copies are made (outside the job's directory)
    try:
        report = assert_crash_safe(
            [sys.executable, "job.py"],
            cwd=directory / "job",
            outputs=["report.txt"],
            workdir=directory / "runs",
        )
    except AssertionError as failure:
        print(failure)  # the crash point, what differs, how to reproduce it
        return "not crash safe: " + str(failure).splitlines()[1].strip(" -")
    return (
        f"crash safe at {len(report.cases)} crash points over {report.commits} commits, "
        f"each ending with {report.last_line!r}"
    )


def test_the_job_with_cp_open_is_crash_safe(crash_safe: CrashSafe, tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(SAFE_JOB)
    crash_safe([sys.executable, "job.py"], outputs=["report.txt"])


def test_the_job_with_a_plain_file_is_not(crash_safe: CrashSafe, tmp_path: Path) -> None:
    import pytest

    (tmp_path / "job.py").write_text(PLAIN_JOB)
    with pytest.raises(AssertionError, match=r"report\.txt differs at line 11"):
        crash_safe([sys.executable, "job.py"], outputs=["report.txt"])


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as safe, tempfile.TemporaryDirectory() as plain:
        print("cp.open job:", check(SAFE_JOB, Path(safe)))
        print("plain-file job:", check(PLAIN_JOB, Path(plain)))
