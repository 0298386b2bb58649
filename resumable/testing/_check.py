"""``assert_crash_safe``: run a job killed at each of its commit points, and compare.

One uninterrupted run, in a fresh copy of the job's directory, is the reference: its exit
status, its last line on stdout, its output files, and the log of its commit points (see
:mod:`resumable._crashpoint`). Then, for each chosen crash point and signal, a fresh copy runs
the job with the crash armed, then runs it again to completion, and what it left is compared
with the reference. Nothing is timed: the library itself sends the signal at the commit point,
so each case is the same on every run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from resumable._crashpoint import AT_VAR, LOG_VAR, CrashAt

from ._outcome import Outcome, differences, read_outputs

__all__ = ["CrashReport", "Point", "assert_crash_safe", "check", "choose"]

#: Not copied into the runs' directories: the library's default store (progress from an
#: earlier run would make the reference find its work done), version control, virtual
#: environments and caches.
IGNORED = (
    ".resumable", ".git", ".hg", ".venv", "venv", ".tox", "node_modules", "__pycache__",
    ".pytest_cache", ".mypy_cache", ".ruff_cache",
)  # fmt: skip
#: Removed from the runs' environment: a store named there would be shared by every run.
_UNSET = (AT_VAR, LOG_VAR, "RESUMABLE_STORE")
_SIGNAL_WORDS = {
    "KILL": "killed (SIGKILL)",
    "INT": "interrupted (SIGINT)",
    "TERM": "terminated (SIGTERM)",
}


@dataclass(frozen=True, slots=True)
class Point:
    """A crash point of the reference run: just before or after one of its commits."""

    when: str  # "before" or "after"
    number: int  # the commit, counted from 1
    kind: str  # what the commit writes: "checkpoint", "record", "map", "step", "failsafe"
    op_id: str
    position: int | None

    @property
    def name(self) -> str:
        """The point as ``RESUMABLE_CRASH_AT`` writes it, without the signal."""
        return f"{self.when}:{self.number}"

    def describe(self, commits: int) -> str:
        """``just before commit 3 of 9 (the checkpoint of 'job' at position 16)``."""
        what = {
            "checkpoint": f"the checkpoint of {self.op_id!r} at position {self.position}",
            "record": f"the record of {self.op_id!r}",
            "map": f"{self.position} cp.map result(s) of {self.op_id!r}",
            "step": f"a cp.step result of {self.op_id!r}",
            "failsafe": f"a FailsafeManager checkpoint of {self.op_id!r}",
        }.get(self.kind, f"{self.kind} of {self.op_id!r}")
        return f"just {self.when} commit {self.number} of {commits} ({what})"


@dataclass(frozen=True, slots=True)
class CrashReport:
    """What :func:`assert_crash_safe` checked, when every case ended as the reference did."""

    #: Commits of the uninterrupted run (each has a crash point before and after it).
    commits: int
    #: The cases run, in order, as ``RESUMABLE_CRASH_AT`` values (``"before:3:KILL"``).
    cases: tuple[str, ...]
    #: The reference run's last line on stdout, which every case ended with too.
    last_line: str
    #: Wall-clock seconds of the whole check.
    seconds: float


def read_log(path: Path) -> list[Point]:
    """The crash points a run's ``RESUMABLE_CRASH_LOG`` lists, in order."""
    if not path.exists():
        return []
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        when, number = entry["point"].split(":")
        points.append(
            Point(when, int(number), entry["kind"], entry["op_id"], entry.get("position"))
        )
    return points


def choose(points: Sequence[Point], max_points: int) -> list[Point]:
    """At most ``max_points`` of ``points``, spread over the run, in the run's order.

    Every point if they fit. Else the points just before a commit come first (the most work
    done and not yet recorded), spread evenly from the first commit to the last, then as
    many points just after one as remain, spread the same way.
    """
    if len(points) <= max_points:
        return list(points)
    before = [p for p in points if p.when == "before"]
    after = [p for p in points if p.when == "after"]
    chosen = _spread(before, max_points) + _spread(after, max_points - len(before))
    return sorted(chosen, key=points.index)


def _spread(items: list[Point], count: int) -> list[Point]:
    if count <= 0:
        return []
    if count >= len(items):
        return list(items)
    if count == 1:
        return [items[-1]]
    step = (len(items) - 1) / (count - 1)
    return [items[round(i * step)] for i in range(count)]


class _Runner:
    """Runs the job in fresh copies of its directory, under one root directory."""

    def __init__(
        self, cmd: list[str], source: Path, root: Path, outputs: tuple[str, ...], timeout: float
    ) -> None:
        self.cmd, self.source, self.root, self.outputs = cmd, source, root, outputs
        self.timeout = timeout
        self.env = {k: v for k, v in os.environ.items() if k not in _UNSET}

    def copy(self, name: str) -> Path:
        """A fresh copy of the job's directory, named ``name`` under the root."""
        target = self.root / name
        shutil.copytree(self.source, target, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
        return target

    def run(self, where: Path, what: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run the job once in ``where``; AssertionError if it outlives the timeout."""
        try:
            return subprocess.run(  # noqa: S603 - the command the caller asked to check
                self.cmd, cwd=where, env={**self.env, **env}, capture_output=True, text=True,
                errors="backslashreplace", timeout=self.timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{_show(self.cmd)} did not finish within {self.timeout:g} s ({what}), in "
                f"{where}; pass a larger timeout= if it needs longer"
            ) from None

    def outcome(self, where: Path, done: subprocess.CompletedProcess[str]) -> Outcome:
        """What the finished run ``done`` left in ``where``."""
        lines = done.stdout.strip().splitlines()
        return Outcome(
            done.returncode, lines[-1] if lines else "", read_outputs(where, self.outputs),
            done.stderr,
        )  # fmt: skip


def check(
    cmd: list[str],
    *,
    outputs: tuple[str, ...],
    source: Path,
    signals: tuple[str, ...],
    max_points: int,
    timeout: float,
    workdir: Path | None,
    only: CrashAt | None = None,
) -> CrashReport:
    """:func:`assert_crash_safe` with checked arguments; ``only``: run that one case."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="crash-safe-", dir=workdir))
    runner = _Runner(cmd, source, root, outputs, timeout)
    where = runner.copy("reference")
    log = root / "reference.log"
    done = runner.run(where, "the uninterrupted run", **{LOG_VAR: str(log)})
    if done.returncode != 0:
        raise AssertionError(
            f"{_show(cmd)} failed in {where} before any crash (exit status "
            f"{done.returncode}), so there is nothing to compare with:\n{_indent(done.stderr)}"
        )
    reference = runner.outcome(where, done)
    points = [p for p in read_log(log) if p.when in {"before", "after"}]
    commits = sum(p.when == "before" for p in points)
    if commits == 0:
        raise AssertionError(
            f"{_show(cmd)} made no commit, so it has no crash point to test: it must run a "
            "checkpointed() block, a @resumable call or a cp.map in the process it starts, "
            "with resumable importable there"
        )
    if only is None:
        cases = [(p, s) for p in choose(points, max_points) for s in signals]
    else:
        cases = [(_point(points, only, commits, cmd), only.signal)]
    for point, signal in cases:
        _case(runner, reference, point, signal, commits)
    shutil.rmtree(root, ignore_errors=True)
    return CrashReport(
        commits, tuple(f"{p.name}:{s}" for p, s in cases), reference.last_line,
        time.monotonic() - started,
    )  # fmt: skip


def _point(points: list[Point], at: CrashAt, commits: int, cmd: list[str]) -> Point:
    for point in points:
        if point.when == at.when and point.number == at.number:
            return point
    raise AssertionError(
        f"{_show(cmd)} makes {commits} commits: there is no crash point {at.when}:{at.number}"
    )


def _case(runner: _Runner, reference: Outcome, point: Point, signal: str, commits: int) -> None:
    """One crash point: crash there, run again, compare; AssertionError if it differs."""
    armed = f"{point.name}:{signal}"
    name = f"{point.when}-{point.number}-{signal}"
    where = runner.copy(name)
    log = runner.root / f"{name}.log"
    runner.run(
        where, f"crashed {point.name} with SIG{signal}", **{AT_VAR: armed, LOG_VAR: str(log)}
    )
    reached = [p for p in read_log(log) if p.when == point.when and p.number == point.number]
    if not reached:
        made = sum(p.when == "before" for p in read_log(log))
        raise AssertionError(
            f"{_show(runner.cmd)} never reached crash point {point.name} when armed: that run "
            f"made {made} commit(s) where the uninterrupted run made {commits}. The job does "
            "not commit at the same points on every run (commits by the clock: every_seconds, "
            "or cp.map's timed writes of results), so its crash points cannot be reproduced; "
            "make its commits count items (checkpointed(..., every=N)) while it is tested"
        )
    done = runner.run(where, f"run again after crashing {point.name} with SIG{signal}")
    found = differences(reference, runner.outcome(where, done))
    if not found:
        shutil.rmtree(where, ignore_errors=True)
        log.unlink()
        return
    raise AssertionError(
        _message(runner, point=point, signal=signal, commits=commits, found=found, where=where)
    )


def _message(
    runner: _Runner, *, point: Point, signal: str, commits: int, found: list[str], where: Path
) -> str:
    cmd, armed = runner.cmd, f"{point.name}:{signal}"
    outputs = "".join(f" --output {shlex.quote(o)}" for o in runner.outputs)
    lines = [
        f"{_show(cmd)} is not crash safe: {_SIGNAL_WORDS[signal]} {point.describe(commits)}, "
        "then run again, it ended differently from an uninterrupted run:",
        *(f"  - {line}" for line in found),
        "Reproduce this one case (a fresh copy, the crash, the run again, the comparison):",
        f"  {_show([sys.executable, '-m', 'resumable.testing', '--at', armed])} --cwd "
        f"{shlex.quote(str(runner.source))}{outputs} -- {_show(cmd)}",
        f"or by hand, in a copy of {runner.source}:",
        f"  {AT_VAR}={armed} {_show(cmd)}; {_show(cmd)}",
        f"What this case left is in {where}.",
        "The usual causes: a file appended to outside cp.open, a total kept outside cp.state, "
        "a side effect that is not idempotent (docs: Test your job's crash safety).",
    ]
    return "\n".join(lines)


def _show(cmd: Iterable[str]) -> str:
    return shlex.join(cmd)


def _indent(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.strip().splitlines()[-20:])


def assert_crash_safe(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    outputs: Iterable[str | os.PathLike[str]] = (),
    cwd: str | os.PathLike[str] | None = None,
    signals: Iterable[str] = ("KILL",),
    max_points: int = 50,
    timeout: float = 60.0,
    workdir: str | os.PathLike[str] | None = None,
) -> CrashReport:
    """Check that ``cmd`` ends the same however it is killed at its commits, and run again.

    Runs ``cmd`` once, uninterrupted, in a fresh copy of ``cwd``: the reference is its exit
    status (which must be 0), its last line on stdout and the bytes of each path in
    ``outputs``. Then, for each crash point (just before and just after each commit of that
    run, at most ``max_points`` of them, chosen the same way every time) and each of
    ``signals``, runs it in a fresh copy with the crash armed (``RESUMABLE_CRASH_AT``: the
    library sends the signal to its own process at that commit), then again to completion,
    and compares with the reference. Nothing is timed, so every case is reproducible.

    Args:
        cmd: the command, a list as for :func:`subprocess.run`, such as
            ``[sys.executable, "job.py"]``; run in each copy of ``cwd``.
        outputs: files (or directories: every file under them) the job writes, relative to
            ``cwd``, compared byte for byte.
        cwd: the directory holding the job and its input, copied afresh for every run
            (without ``.resumable``, ``.git``, virtual environments and caches); default:
            the current directory. Keep it small: it is copied twice per crash point.
        signals: ``"KILL"``, ``"INT"`` (Ctrl-C), ``"TERM"``; each crash point is tried with each.
        max_points: the most crash points tried (per signal).
        timeout: seconds each run of ``cmd`` may take.
        workdir: where the copies are made (default: the system's temporary directory); what
            a failing case left is kept there, everything else is removed.

    Returns:
        What was checked: the number of commits, the cases run, the reference's last line.

    Raises:
        AssertionError: a case ended otherwise than the reference; the message names the
            crash point, each difference (a file and its first differing line), and a
            command line that reproduces that case. Also if the reference run fails, makes
            no commit, or a run outlives ``timeout``.
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """
    from ._args import checked

    options = checked(
        cmd=cmd, outputs=outputs, cwd=cwd, signals=signals, max_points=max_points,
        timeout=timeout, workdir=workdir,
    )  # fmt: skip
    return check(**options)
