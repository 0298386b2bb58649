"""What ``assert_crash_safe`` costs per crash point, against a bare interpreter start.

Usage (from the repository root)::

    python benchmarks/crash_safe.py              # 5 rounds
    python benchmarks/crash_safe.py --rounds 3

The job checked is the one the issue names: 60 items, a commit every 8 (8 commits, so 16 crash
points, 33 runs of the job), its totals kept in ``cp.state`` and written to a file at the
end. Each crash point costs a fresh copy of the job's directory and two runs of the
job (crashed, then run again). The figures compared with it, measured in the same rounds,
alternating with the check: ``python -c pass`` (a bare interpreter start), ``python -c "import
resumable"``, and one uninterrupted run of the job. Not part of ``benchmarks/run.py``: the
check is a test tool, and its cost is the jobs' own.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util
from _util import median

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from resumable.testing import assert_crash_safe

    root = Path(tempfile.mkdtemp(prefix="resumable-bench-crash-"))
    try:
        source = root / "job"
        source.mkdir()
        (source / "job.py").write_text(JOB)
        python = sys.executable
        bare, imported, job, point, run_of_check = [], [], [], [], []
        cases = commits = 0
        timed([python, "-c", "import resumable"], root)  # fills the bytecode cache
        for round_ in range(args.rounds):
            print(f"... round {round_ + 1} of {args.rounds}", file=sys.stderr)
            for _ in range(5):
                bare.append(timed([python, "-c", "pass"], root))
                imported.append(timed([python, "-c", "import resumable"], root))
            for _ in range(3):
                where = root / "once"
                shutil.copytree(source, where)
                job.append(timed([python, "job.py"], where))
                shutil.rmtree(where)
            report = assert_crash_safe(
                [python, "job.py"], cwd=source, outputs=["totals.txt"], workdir=root
            )
            cases, commits = len(report.cases), report.commits
            point.append(report.seconds / cases)
            run_of_check.append(report.seconds / (1 + 2 * cases))
        base = median(bare)
        rows = [
            ("python -c pass (a bare interpreter start)", median(bare)),
            ('python -c "import resumable"', median(imported)),
            ("one uninterrupted run of the job", median(job)),
            ("one run of the job inside the check (with its copy)", median(run_of_check)),
            ("one crash point (a copy, the crashed run, the run again)", median(point)),
        ]
        total = median(point) * cases
        print(
            f"60-item job, {commits} commits, {cases} crash points, {args.rounds} rounds, "
            f"Python {sys.version.split()[0]}, nproc {_util.machine()['nproc']}; written by "
            f"`python benchmarks/crash_safe.py --rounds {args.rounds}`:\n"
        )
        print("| figure | median (ms) | ratio to a bare interpreter start |")
        print("|---|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds * 1000:.1f} | {seconds / base:.1f}x |")
        print(f"\nThe whole check: {total:.1f} s at the median cost per crash point.")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
