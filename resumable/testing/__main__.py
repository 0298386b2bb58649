"""``python -m resumable.testing``: check one crash point of a job, or all of them.

    python -m resumable.testing --at before:3:KILL --output out.txt -- python job.py

runs the job once uninterrupted in a copy of ``--cwd`` (default: the current directory), then
the one case ``--at`` names (without ``--at``: every crash point, as ``assert_crash_safe``),
and prints what differs. Exit status 0 if the job ended as the uninterrupted run, 1 if not,
2 for a mistake in the arguments. The line an ``AssertionError`` of ``assert_crash_safe``
prints to reproduce a case is such a command.
"""

from __future__ import annotations

import argparse
import sys

from resumable._crashpoint import parse

from ._args import checked
from ._check import check


def main(argv: list[str] | None = None) -> int:
    """Run the check the arguments ask for; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m resumable.testing",
        description="Kill a job at its commits, run it again, and compare with an "
        "uninterrupted run.",
    )
    parser.add_argument("--at", help="one crash point, such as before:3:KILL (default: all)")
    parser.add_argument("--cwd", help="the job's directory, copied for each run (default: .)")
    parser.add_argument("--output", action="append", default=[], help="a file it writes")
    parser.add_argument("--signal", action="append", help="KILL, INT or TERM (default: KILL)")
    parser.add_argument("--max-points", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command that runs the job")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    try:
        only = None if args.at is None else parse(args.at)
        options = checked(
            cmd=cmd, outputs=args.output, cwd=args.cwd, signals=args.signal or ["KILL"],
            max_points=args.max_points, timeout=args.timeout, workdir=None,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    try:
        report = check(**options, only=only)
    except AssertionError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(
        f"crash safe: {len(report.cases)} case(s) over {report.commits} commit(s) ended as the "
        f"uninterrupted run did ({report.last_line!r})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
