"""resumable.testing (issue 18): ``assert_crash_safe`` kills real jobs at their commit points.

Every job here is a real script run in subprocesses, killed by the library's own crash point
(``RESUMABLE_CRASH_AT``), run again, and compared with an uninterrupted run: nothing is mocked
and nothing is timed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resumable.testing import CrashReport, assert_crash_safe
from resumable.testing._check import Point, choose
from resumable.testing._outcome import Outcome, differences

#: The shape every job below shares: 60 items, a commit every 8 (7 in the loop, the final
#: one: 8 commits), the total kept in cp.state and printed last.
HEAD = """\
import os, sys
from resumable import checkpointed, resumable
"""

SAFE = (
    HEAD
    + """\
with checkpointed("job", state={"total": 0}, every=8) as cp:
    out = cp.open("out.txt")
    for i in cp.iterate(range(60)):
        out.write(f"item {i}\\n")
        cp.state.total += i
print("total", cp.state.total)
"""
)

#: Appends to a plain file: the items since the last commit are written again on a re-run.
PLAIN_APPEND = (
    HEAD
    + """\
with checkpointed("job", state={"total": 0}, every=8) as cp:
    for i in cp.iterate(range(60)):
        with open("out.txt", "a") as out:
            out.write(f"item {i}\\n")
        cp.state.total += i
print("total", cp.state.total)
"""
)

#: A side effect outside the library: a counter file incremented once per item "sent".
COUNTER = (
    HEAD
    + """\
def send(i):
    n = int(open("sent.txt").read()) if os.path.exists("sent.txt") else 0
    with open("sent.txt", "w") as f:
        f.write(str(n + 1))

with checkpointed("job", state={"total": 0}, every=8) as cp:
    for i in cp.iterate(range(60)):
        send(i)
        cp.state.total += i
print("total", cp.state.total)
"""
)

#: The same job made idempotent: each item's sending is recorded under the item's own name,
#: so sending it again changes nothing.
IDEMPOTENT = (
    HEAD
    + """\
def send(i):
    os.makedirs("sent", exist_ok=True)
    with open(f"sent/{i:02d}.txt", "w") as f:
        f.write(f"item {i}\\n")

with checkpointed("job", state={"total": 0}, every=8) as cp:
    for i in cp.iterate(range(60)):
        send(i)
        cp.state.total += i
print("total", cp.state.total)
"""
)

#: A state that changes in place (a list): an exit by Ctrl-C or SIGTERM keeps the last commit,
#: so the items since then run again, and a plain file gets their lines twice.
LIST_STATE = (
    HEAD
    + """\
with checkpointed("job", state={"seen": []}, every=8) as cp:
    for i in cp.iterate(range(60)):
        with open("out.txt", "a") as out:
            out.write(f"item {i}\\n")
        cp.state.seen.append(i)
print("seen", len(cp.state.seen))
"""
)

#: Side effects in @resumable calls: each call's result is stored as it returns.
CALLS = (
    HEAD
    + """\
@resumable
def send(i):
    with open("calls.txt", "a") as f:
        f.write(f"sent {i}\\n")
    return i * i

print("sum", sum(send(i) for i in range(6)))
"""
)


def job(tmp_path: Path, source: str, name: str = "job.py") -> Path:
    """A directory holding the job script ``source``."""
    directory = tmp_path / "job"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(source)
    return directory


def check(tmp_path: Path, source: str, **options: object) -> CrashReport:
    """assert_crash_safe on ``source`` run as ``python job.py``, copies under tmp_path."""
    runs = tmp_path / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    return assert_crash_safe(
        [sys.executable, "job.py"], cwd=job(tmp_path, source), workdir=runs,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


def run_job(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``job.py`` once in ``directory`` with ``env`` added."""
    return subprocess.run(
        [sys.executable, "job.py"], cwd=directory, capture_output=True, text=True,
        env={**os.environ, **env}, timeout=60, check=False,
    )  # fmt: skip


# --- what must hold ---------------------------------------------------------------------


def test_a_job_writing_through_cp_open_with_totals_in_state_passes(tmp_path: Path) -> None:
    """cp.open and cp.state: every crash point before and after each of the 8 commits (plus
    cp.open's first one) ends as the uninterrupted run."""
    report = check(tmp_path, SAFE, outputs=["out.txt"])
    assert report.commits == 9  # cp.open's starting length, 7 in the loop, the final one
    assert len(report.cases) == 18
    assert report.cases[:3] == ("before:1:KILL", "after:1:KILL", "before:2:KILL")
    assert report.last_line == "total 1770"
    assert list((tmp_path / "runs").iterdir()) == []  # nothing left behind when it passes


def test_a_plain_append_file_is_reported_unsafe_naming_the_file(tmp_path: Path) -> None:
    """open(..., "a") per item: the first commit that follows written items is named, with
    the file, its first differing line, and a command that reproduces the case."""
    with pytest.raises(AssertionError) as failed:
        check(tmp_path, PLAIN_APPEND, outputs=["out.txt"])
    message = str(failed.value)
    assert "is not crash safe: killed (SIGKILL) just before commit 1 of 8" in message
    assert "(the checkpoint of 'job' at position 8)" in message
    assert "out.txt differs at line 9: 'item 0\\n' instead of 'item 8\\n'" in message
    assert "-m resumable.testing --at before:1:KILL" in message
    assert "RESUMABLE_CRASH_AT=before:1:KILL" in message
    assert message.endswith(
        "a side effect that is not idempotent (docs: Test your job's crash safety)."
    )


def test_the_reproduce_command_reproduces_the_case(tmp_path: Path) -> None:
    """The command line of the message runs that one case and fails the same way (exit 1)."""
    with pytest.raises(AssertionError) as failed:
        check(tmp_path, PLAIN_APPEND, outputs=["out.txt"])
    line = next(x for x in str(failed.value).splitlines() if "-m resumable.testing" in x)
    again = subprocess.run(
        line, shell=True, capture_output=True, text=True, timeout=60, check=False
    )
    assert again.returncode == 1, again.stderr
    assert "out.txt differs at line 9" in again.stderr
    assert "just before commit 1 of 8" in again.stderr


def test_a_side_effect_sent_twice_is_reported_and_the_idempotent_job_passes(
    tmp_path: Path,
) -> None:
    """A counter file incremented per item is unsafe; sending under the item's name is not."""
    with pytest.raises(AssertionError, match=r"sent.txt differs at line 1: '68' instead of '60'"):
        check(tmp_path / "counter", COUNTER, outputs=["sent.txt"])
    report = check(tmp_path / "idempotent", IDEMPOTENT, outputs=["sent"])
    assert report.commits == 8
    assert len(report.cases) == 16


def test_sigint_and_sigterm_crash_points_work(tmp_path: Path) -> None:
    """INT and TERM crash points stop the job as Ctrl-C and SIGTERM do (SIGINT and 143,
    the operation PAUSED), a safe job passes under them, and an unsafe one is caught."""
    directory = job(tmp_path / "direct", SAFE)
    interrupted = run_job(directory, RESUMABLE_CRASH_AT="before:3:INT")
    assert interrupted.returncode == -signal.SIGINT  # Python dies by SIGINT: 130 in a shell
    assert "resumable: paused 'job' at 8" in interrupted.stderr
    terminated = run_job(directory, RESUMABLE_CRASH_AT="after:5:TERM")
    assert terminated.returncode == 143
    # Resumed at 8, its commits are at 16, 24, 32, 40, 48: killed just after the fifth.
    assert "resumable: paused 'job' at 48" in terminated.stderr

    report = check(tmp_path / "safe", SAFE, outputs=["out.txt"], signals=["INT", "TERM"])
    assert len(report.cases) == 36
    assert {case.rsplit(":", 1)[1] for case in report.cases} == {"INT", "TERM"}
    for name, words in (("INT", "interrupted (SIGINT)"), ("TERM", "terminated (SIGTERM)")):
        with pytest.raises(AssertionError, match=re.escape(f"{words} just before commit 1 of 8")):
            check(tmp_path / name, LIST_STATE, outputs=["out.txt"], signals=[name])


def test_a_sixty_item_job_of_eight_commits_is_checked_well_under_a_minute(
    tmp_path: Path,
) -> None:
    """16 crash points, 33 runs of the job: well under a minute (most of it interpreter
    start; benchmarks/crash_safe.py measures the ratio)."""
    report = check(tmp_path, IDEMPOTENT, outputs=["sent"])
    assert report.commits == 8
    assert report.seconds < 30, report


def test_the_fixture_works_from_a_plain_pytest_run_in_a_fresh_directory(tmp_path: Path) -> None:
    """A test file using crash_safe, with no import of it and no conftest, run by pytest."""
    tests = tmp_path / "project"
    tests.mkdir()
    (tests / "test_job.py").write_text(
        textwrap.dedent(f"""
        import sys
        import pytest

        SAFE = {SAFE!r}
        PLAIN_APPEND = {PLAIN_APPEND!r}

        def test_safe(crash_safe, tmp_path):
            (tmp_path / "job.py").write_text(SAFE)
            report = crash_safe([sys.executable, "job.py"], outputs=["out.txt"], max_points=4)
            assert report.cases == ("before:1:KILL", "before:4:KILL", "before:6:KILL",
                                    "before:9:KILL")

        def test_unsafe(crash_safe, tmp_path):
            (tmp_path / "job.py").write_text(PLAIN_APPEND)
            with pytest.raises(AssertionError, match="out.txt differs at line 9"):
                crash_safe([sys.executable, "job.py"], outputs=["out.txt"])
        """)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_job.py"],
        cwd=tests, capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


# --- commit points ----------------------------------------------------------------------


def test_resumable_calls_are_commit_points(tmp_path: Path) -> None:
    """A @resumable call's stored result is a commit point: killed just before it, the call
    runs again (its side effect twice); killed just after, it does not."""
    with pytest.raises(AssertionError) as failed:
        check(tmp_path, CALLS, outputs=["calls.txt"])
    message = str(failed.value)
    assert "just before commit 1 of 6 (the record of '__main__.send:" in message
    assert "calls.txt differs at line 2: 'sent 0\\n' instead of 'sent 1\\n'" in message
    # Just after each commit, nothing is sent twice.
    runs = tmp_path / "after"
    runs.mkdir()
    directory = job(tmp_path / "after", CALLS)
    crashed = run_job(directory, RESUMABLE_CRASH_AT="after:3")
    assert crashed.returncode == -signal.SIGKILL
    assert run_job(directory).stdout == "sum 55\n"
    assert (directory / "calls.txt").read_text() == "".join(f"sent {i}\n" for i in range(6))


def test_the_log_names_each_kind_of_commit_point(tmp_path: Path) -> None:
    """cp.step results, cp.map result groups and checkpoints each log their points in order,
    before and after; a process started by the job is not counted (the variables are gone)."""
    source = HEAD + textwrap.dedent("""
        import subprocess
        def square(x):
            return x * x
        with checkpointed("job") as cp:
            cp.step("setup", int, "7")
            cp.map(square, range(5))
            cp.commit()
        child = subprocess.run([sys.executable, "-c", "import os, resumable;"
                                "print('RESUMABLE_CRASH_LOG' in os.environ)"],
                               capture_output=True, text=True)
        print(child.stdout.strip(), "RESUMABLE_CRASH_LOG" in os.environ)
    """)
    directory = job(tmp_path, source)
    log = tmp_path / "points.log"
    done = run_job(directory, RESUMABLE_CRASH_LOG=str(log))
    assert done.stdout == "False False\n", done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["point"], x["kind"], x["position"]) for x in lines] == [
        ("before:1", "step", None), ("after:1", "step", None),
        ("before:2", "map", 5), ("after:2", "map", 5),
        ("before:3", "checkpoint", 0), ("after:3", "checkpoint", 0),
        ("before:4", "checkpoint", 0), ("after:4", "checkpoint", 0),
    ]  # fmt: skip


def test_processes_run_one_after_another_count_on(tmp_path: Path) -> None:
    """Two Python processes in one command: the second numbers its commits after the
    first's, so a crash point names one commit of the whole command."""
    directory = job(tmp_path, HEAD + "with checkpointed(sys.argv[1]) as cp:\n    cp.commit()\n")
    log = tmp_path / "points.log"
    script = f"{sys.executable} job.py a && {sys.executable} job.py b"
    subprocess.run(
        ["sh", "-c", script], cwd=directory, env={**os.environ, "RESUMABLE_CRASH_LOG": str(log)},
        check=True, timeout=60,
    )  # fmt: skip
    points = [(x["point"], x["op_id"]) for x in map(json.loads, log.read_text().splitlines())]
    assert [p for p, op in points if p.startswith("before")] == [f"before:{n}" for n in range(1, 5)]
    assert [op for _, op in points] == ["a"] * 4 + ["b"] * 4


# --- refusals and reports ---------------------------------------------------------------


def test_a_reference_run_that_fails_is_reported(tmp_path: Path) -> None:
    """The uninterrupted run must succeed: its failure is shown, not compared with."""
    with pytest.raises(AssertionError, match=r"failed in .* before any crash \(exit status 1\)"):
        check(tmp_path, "raise SystemExit('no input')\n")


def test_a_job_that_makes_no_commit_is_refused(tmp_path: Path) -> None:
    """A job without a commit has no crash point: that is said, rather than a vacuous pass."""
    with pytest.raises(AssertionError, match="made no commit"):
        check(tmp_path, "print('done')\n")


def test_a_job_whose_commits_vary_between_runs_is_reported(tmp_path: Path) -> None:
    """Commits that differ from run to run (here: fewer after the first) make a crash point
    that is never reached: reported as such, not passed."""
    marker = tmp_path / "ran-once"
    source = HEAD + textwrap.dedent(f"""
        with checkpointed("job", state={{"n": 0}}) as cp:
            for i in cp.iterate(range(3 if not os.path.exists({str(marker)!r}) else 1)):
                cp.commit()
        open({str(marker)!r}, "w").close()
        print("done")
    """)
    with pytest.raises(AssertionError, match="never reached crash point before:3"):
        check(tmp_path, source)


def test_max_points_spreads_the_points_before_commits_first() -> None:
    """Capped, the points just before commits come first, spread from the first to the last,
    then points after commits; the choice is the same every time."""
    points = [
        Point(when, n, "checkpoint", "job", n) for n in range(1, 10) for when in ("before", "after")
    ]
    names = [p.name for p in choose(points, 4)]
    assert names == ["before:1", "before:4", "before:6", "before:9"]
    names = [p.name for p in choose(points, 11)]
    assert [n for n in names if n.startswith("before")] == [f"before:{n}" for n in range(1, 10)]
    assert [n for n in names if n.startswith("after")] == ["after:1", "after:9"]
    assert choose(points, 18) == points
    assert [p.name for p in choose(points, 1)] == ["before:9"]


def test_output_differences_name_the_file_and_the_line() -> None:
    """Each difference is one line: status, last line, a file's first differing line, a
    missing or extra file, a directory's files."""
    want = Outcome(0, "total 3", {"a.txt": b"x\ny\n", "d": {"1": b"one\n"}, "gone": b""}, "")
    got = Outcome(
        1, "total 4", {"a.txt": b"x\ny\ny\n", "d": {"1": b"one\n", "2": b"two\n"}, "gone": None},
        "Traceback\nBoom",
    )  # fmt: skip
    assert differences(want, got) == [
        "exit status 1 instead of 0\n      Traceback\n      Boom",
        "last line of stdout 'total 4' instead of 'total 3'",
        "a.txt differs at line 3: 'y\\n' is one line too many (3 lines instead of 2)",
        "d/2 exists, but the uninterrupted run left none",
        "gone is missing",
    ]
    assert differences(want, want) == []


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"cmd": "python job.py"}, TypeError, "cmd must be a list of arguments"),
        ({"cmd": []}, ValueError, "cmd is empty"),
        ({"cmd": ["python", 3]}, TypeError, "each argument of cmd must be a str"),
        ({"outputs": "out.txt"}, TypeError, r"outputs=\['out.txt'\]"),
        ({"outputs": ["/etc/passwd"]}, ValueError, "relative to cwd"),
        ({"outputs": ["../x"]}, ValueError, "relative to cwd"),
        ({"cwd": "/no/such/dir"}, ValueError, "is not a directory"),
        ({"signals": "KILL"}, TypeError, "signals=\\('KILL', 'INT', 'TERM'\\)"),
        ({"signals": ["HUP"]}, ValueError, "'HUP' is not one of 'KILL', 'INT'"),
        ({"signals": []}, ValueError, "signals is empty"),
        ({"max_points": 0}, ValueError, "at least 1"),
        ({"max_points": True}, TypeError, "max_points must be an int"),
        ({"timeout": 0}, ValueError, "positive number of seconds"),
        ({"timeout": "60"}, TypeError, "timeout must be a number"),
        ({"workdir": "."}, ValueError, "is inside cwd"),
    ],
)
def test_bad_arguments_are_refused_with_what_to_write(
    options: dict[str, object], error: type[Exception], words: str, tmp_path: Path
) -> None:
    """Each wrong argument is refused at the call, saying what to write instead."""
    arguments: dict[str, object] = {"cmd": [sys.executable, "job.py"], "cwd": tmp_path}
    arguments.update(options)
    cmd = arguments.pop("cmd")
    with pytest.raises(error, match=words):
        assert_crash_safe(cmd, **arguments)  # type: ignore[arg-type]


def test_a_malformed_crash_point_stops_the_job_at_import(tmp_path: Path) -> None:
    """A RESUMABLE_CRASH_AT that names no crash point fails loudly, never runs unarmed."""
    done = run_job(job(tmp_path, SAFE), RESUMABLE_CRASH_AT="before-3")
    assert done.returncode == 1
    assert "RESUMABLE_CRASH_AT='before-3' names no crash point" in done.stderr
