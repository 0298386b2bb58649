"""What ``assert_crash_safe`` costs per crash point, against a bare interpreter start.

Usage (from the repository root)::

    python benchmarks/crash_safe.py              # 5 rounds, prints a Markdown table
    python benchmarks/crash_safe.py --quick      # 2 rounds

``benchmarks/run.py`` runs it as the ``testing`` group and writes docs/benchmarks.md.

The job checked is the one the issue names: 60 items, a commit every 8 (8 commits, so 16 crash
points, 33 runs of the job), its totals kept in ``cp.state`` and written to a file at the
end. Each crash point costs a fresh copy of the job's directory and two runs of the
job (crashed, then run again). The figures compared with it, measured in the same rounds,
alternating with the check: ``python -c pass`` (a bare interpreter start), ``python -c "import
resumable"``, and one uninterrupted run of the job. A crash point is gated against that one
run: what the check adds to the two runs of the job it needs (the copy, the comparison) is
its own cost; the runs themselves are the job's, mostly the interpreter's start and the
import of ``resumable``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import _util
from _util import Row, fmt_ratio, median

JOB = """\
from resumable import checkpointed

with checkpointed("job", state={"total": 0, "squares": 0}, every=8) as cp:
    for i in cp.iterate(range(60)):
        cp.state.total += i
        cp.state.squares += i * i
with open("totals.txt", "w") as f:
    f.write(f"{cp.state.total} {cp.state.squares}\\n")
print("total", cp.state.total)
"""


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def run(quick: bool, directory: Path) -> list[Row]:
    """The check's rows: the whole check against its goal, a crash point against a run."""
    from resumable.testing import assert_crash_safe

    rounds = 2 if quick else 5
    source = directory / "job"
    source.mkdir()
    (source / "job.py").write_text(JOB)
    python = sys.executable
    bare, imported, job, point, whole = [], [], [], [], []
    cases = commits = 0
    timed([python, "-c", "import resumable"], directory)  # fills the bytecode cache
    for round_ in range(rounds):
        print(f"... round {round_ + 1} of {rounds}", file=sys.stderr)
        for _ in range(5):
            bare.append(timed([python, "-c", "pass"], directory))
            imported.append(timed([python, "-c", "import resumable"], directory))
        for _ in range(3):
            where = directory / "once"
            shutil.copytree(source, where)
            job.append(timed([python, "job.py"], where))
            shutil.rmtree(where)
        report = assert_crash_safe(
            [python, "job.py"], cwd=source, outputs=["totals.txt"], workdir=directory
        )
        cases, commits = len(report.cases), report.commits
        whole.append(report.seconds)
        point.append(report.seconds / cases)
    starts = (
        f'`python -c pass`: {median(bare) * 1e3:.0f} ms, `python -c "import resumable"`: '
        f"{median(imported) * 1e3:.0f} ms"
    )
    return [
        Row(
            figure=(
                f"`assert_crash_safe` on a 60-item job with {commits} commits "
                f"({cases} crash points, SIGKILL)"
            ),
            measured=f"{median(whole):.1f} s",
            goal="<= 30 s (well under a minute)",
            compared=f"one uninterrupted run of the job: {median(job) * 1e3:.0f} ms; {starts}",
            ratio=fmt_ratio(median(whole), median(job)),
            value=median(whole),
            limit=30.0,
        ),
        Row(
            figure="one crash point of that check (a fresh copy, the crashed run, the run again)",
            measured=f"{median(point) * 1e3:.0f} ms",
            goal="<= 2.5x one uninterrupted run of the job",
            compared=(
                f"one uninterrupted run of the job: {median(job) * 1e3:.0f} ms, most of it the "
                f"interpreter's start and the import ({starts})"
            ),
            ratio=fmt_ratio(median(point), median(job)),
            value=median(point) / median(job),
            limit=2.5,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    return _util.run_alone(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
