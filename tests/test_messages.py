"""What a person sees: one human line per event that matters, as a user's job prints it.

Jobs run as real subprocesses with logging left unconfigured, as a user's script does, and are
killed with SIGKILL where the test says: no timing involved. In-process tests check the other
two routes: a configured standard library logger, and RESUMABLE_LOG's levels.
"""

from __future__ import annotations

import ast
import itertools
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

from resumable import _messages, _run_block, checkpointed, resumable
from resumable._log import log
from resumable._run_block import SKIP_LINES

TIMEOUT = 60

JOB = """
import os, signal, sys
from resumable import checkpointed

kill_at = int(sys.argv[1]) if len(sys.argv) > 1 else -1
with checkpointed("nightly-report", every=10) as cp:
    cp.state.total = 0
    for i in cp.iterate(range(400)):
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if i == kill_at + 1000:
            raise KeyboardInterrupt
        cp.state.total += i
print(cp.state.total)
"""


def run(tmp_path: Path, code: str, *args: str, env: dict[str, str] | None = None) -> Done:
    """Run ``code`` as a script in ``tmp_path``, logging unconfigured."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(code))
    environ = {k: v for k, v in os.environ.items() if k != "RESUMABLE_LOG"}
    with subprocess.Popen(
        [sys.executable, str(script), *args], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**environ, **(env or {})},
    ) as proc:  # fmt: skip
        _, err = proc.communicate(timeout=TIMEOUT)
    return Done(proc.returncode, err, proc.pid)


class Done(NamedTuple):
    code: int
    stderr: str
    pid: int


def lines(stderr: str) -> list[str]:
    """The library's lines in ``stderr``, but the one that says where a new store is.

    (Each test's first run makes its store: test_store_discovery checks that line.)
    """
    return [
        line
        for line in stderr.splitlines()
        if line.startswith("resumable: ") and not line.startswith("resumable: keeping progress")
    ]


def test_a_killed_job_says_where_it_resumes_in_one_human_line(tmp_path: Path) -> None:
    killed = run(tmp_path, JOB, "215")
    assert killed.code == -9
    code, err, _ = run(tmp_path, JOB)
    assert code == 0, err
    assert lines(err) == [
        f"resumable: resuming 'nightly-report' at 210 (52%): its last run, process "
        f"{killed.pid}, died without finishing"
    ]
    # No raw records: no event names, no key=value dumps, no reprs of internal objects.
    assert "event=" not in err and "Owner(" not in err and "op_id=" not in err


def test_a_paused_job_says_so_and_where_the_next_run_resumes(tmp_path: Path) -> None:
    code, err, _ = run(tmp_path, JOB, "-785")  # KeyboardInterrupt at item 215
    assert code == -2 and "KeyboardInterrupt" in err
    assert lines(err) == [
        "resumable: paused 'nightly-report' at 215 (KeyboardInterrupt); run it again to "
        "resume there"
    ]
    code, err, _ = run(tmp_path, JOB)
    assert lines(err) == [
        "resumable: resuming 'nightly-report' at 215 (54%); it was paused: Ctrl-C or SIGTERM"
    ]
    code, err, _ = run(tmp_path, JOB)
    assert lines(err) == [
        "resumable: skipping 'nightly-report': it completed in an earlier run; "
        "`resumable reset nightly-report` runs it again"
    ]


def test_many_completed_blocks_are_skipped_with_a_few_lines(tmp_path: Path) -> None:
    many = """
    from resumable import checkpointed
    for name in range(50):
        with checkpointed(f"photo-{name}") as cp:
            pass
    """
    code, err, _ = run(tmp_path, many)
    assert code == 0 and lines(err) == [], err
    code, err, _ = run(tmp_path, many)
    shown = lines(err)
    assert len(shown) == SKIP_LINES + 1, err
    assert shown[0].startswith("resumable: skipping 'photo-0': it completed in an earlier run")
    assert "RESUMABLE_LOG=debug shows each" in shown[-1]


def test_calls_print_nothing_however_many(tmp_path: Path) -> None:
    calls = """
    from resumable import resumable

    @resumable
    def square(x):
        return x * x

    assert sum(square(i) for i in range(300)) == sum(i * i for i in range(300))
    """
    first, again = run(tmp_path, calls), run(tmp_path, calls)
    assert first.code == 0 and lines(first.stderr) == [], first.stderr
    assert again[:2] == (0, "")


def test_a_completed_block_with_a_map_says_one_line_not_two(tmp_path: Path) -> None:
    job = """
    from resumable import checkpointed

    def square(x):
        return x * x

    with checkpointed("squares") as cp:
        print(sum(cp.map(square, range(40))))
    """
    assert run(tmp_path, job).code == 0
    code, err, _ = run(tmp_path, job)
    assert code == 0
    assert lines(err) == [
        "resumable: skipping 'squares': it completed in an earlier run; `resumable reset "
        "squares` runs it again"
    ], err  # not also "resuming map 0 of 'squares': 40 of 40 items done"


def test_an_edited_function_is_told_once_not_per_call(tmp_path: Path) -> None:
    calls = """
    from resumable import resumable

    @resumable(op_id="square-{x}")
    def square(x):
        return x * x

    print(sum(square(i) for i in range(50)))
    """
    assert run(tmp_path, calls).code == 0
    code, err, _ = run(tmp_path, calls.replace("x * x", "x ** 2"))
    assert code == 0
    assert lines(err) == [
        "resumable: __main__.square changed since it stored the result of "
        "'square-0': returning the stored result (on_code_change='warn';"
        " 'rerun' runs the new code, version= pins one); its other calls in this process do "
        "the same without a line each"
    ], err


@pytest.mark.parametrize("level", ["quiet", "info", "debug", "bogus"])
def test_resumable_log_sets_what_is_printed(tmp_path: Path, level: str) -> None:
    run(tmp_path, JOB, "300")  # killed at item 300: the next run's recovery is a warning
    code, err, _ = run(tmp_path, JOB, env={"RESUMABLE_LOG": level})
    assert code == 0, err
    shown = lines(err)
    recovery = [line for line in shown if line.startswith("resumable: resuming 'nightly-report'")]
    assert len(recovery) == 1 and "at 300 (75%)" in recovery[0], err
    if level in ("quiet", "info"):  # the run then finishes: a debug event
        assert shown == recovery
    elif level == "bogus":
        assert shown == [
            "resumable: RESUMABLE_LOG='bogus' is not one of quiet, info, debug; using 'info'",
            *recovery,
        ]
    else:  # debug: every commit too
        assert "resumable: committed 'nightly-report' at 310 (seq " in err
        assert shown[-1] == "resumable: finished 'nightly-report' at 400"


def test_quiet_hides_notices_but_not_warnings(tmp_path: Path) -> None:
    run(tmp_path, JOB, "-785")
    code, err, _ = run(tmp_path, JOB, env={"RESUMABLE_LOG": "quiet"})
    assert code == 0 and lines(err) == [], err  # a resume after a pause is a notice
    rerun = JOB.replace('"nightly-report"', '"other"')
    run(tmp_path, rerun, "100")
    code, err, _ = run(tmp_path, rerun, env={"RESUMABLE_LOG": "quiet"})
    assert len(lines(err)) == 1 and "died without finishing" in err  # a recovery, a warning


def test_the_recoverable_list_is_logged_once_per_process(tmp_path: Path) -> None:
    save = """
    from resumable import FailsafeManager, ProcessState

    FailsafeManager().save_checkpoint("import-1", "import", ProcessState.RUNNING, 0.5, {})
    """
    saved = run(tmp_path, save)  # then its process ends: it is recoverable
    assert saved.code == 0 and lines(saved.stderr) == [], saved.stderr
    later = """
    from resumable import get_failsafe_manager

    for _ in range(3):
        get_failsafe_manager()
    """
    code, err, _ = run(tmp_path, later)
    assert code == 0, err
    assert lines(err) == [
        "resumable: 1 operation(s) can be resumed: 'import-1' "
        "(get_recoverable_operations() lists them)"
    ]


def test_a_configured_logger_gets_the_line_and_the_event(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_run_block, "_skipped", itertools.count())  # this process skipped others
    caplog.set_level(logging.INFO, logger="resumable")
    with checkpointed("report", every=1) as cp:
        for _ in cp.iterate(range(3)):
            pass
    with checkpointed("report") as cp:
        pass
    made, record = [r for r in caplog.records if r.name == "resumable"]
    assert made.event == "resumable.store.created"  # type: ignore[attr-defined]
    assert record.getMessage().startswith("skipping 'report': it completed in an earlier run")
    assert record.event == "resumable.operation.skipped"  # type: ignore[attr-defined]
    assert record.fields["op_id"] == "report"  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO


def test_a_configured_logger_at_warning_hears_no_notices(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.WARNING, logger="resumable")

    @resumable
    def double(x: int) -> int:
        return 2 * x

    with checkpointed("report") as cp:
        pass
    with checkpointed("report") as cp:
        assert double(4) == 8
    assert cp is not None
    assert [r for r in caplog.records if r.name == "resumable"] == []
    assert "resumable:" not in capfd.readouterr().err  # the logger decides, not the fallback


def test_every_event_the_library_logs_has_a_human_line() -> None:
    """A new event without a line in _messages would print its raw name and fields."""
    root = Path(__file__).parent.parent / "resumable"
    events: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "log"
            ):
                for const in ast.walk(node):
                    if isinstance(const, ast.Constant) and str(const.value).startswith(
                        "resumable."
                    ):
                        events.add(const.value)
    assert len(events) > 40
    missing = sorted(e for e in events if e not in _messages._LINES)
    # Events whose plain rendering is their line: failures with only an error to say.
    plain = {
        "resumable.backup.cleanup_failed", "resumable.backup.manifest_refused",
        "resumable.backup.sqlite_unreadable", "resumable.backup.stray_kept",
        "resumable.backup.deleted", "resumable.backup.rotated", "resumable.backup.auto_started",
        "resumable.backup.auto_stopped", "resumable.backup.strays_removed",
        "resumable.lease.release_failed", "resumable.lease.renew_failed",
        "resumable.map.release_failed", "resumable.step.release_failed",
    }  # fmt: skip
    assert missing == sorted(plain & events)


def test_a_line_that_cannot_be_made_falls_back_to_the_plain_fields() -> None:
    text = _messages.line("resumable.operation.resumed", {"op_id": "x"})  # no position
    assert text == "operation resumed: op_id=x"
    long = _messages.line("resumable.operation.completed", {"op_id": "é" * 500, "position": 3})
    assert long is not None and len(long) < 120 and "…" in long


def test_the_level_is_read_again_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESUMABLE_LOG", "debug")
    log.reread()
    try:
        assert log.threshold() == logging.DEBUG
        monkeypatch.setenv("RESUMABLE_LOG", "QUIET")
        log.reread()
        assert log.threshold() == logging.WARNING
    finally:
        monkeypatch.delenv("RESUMABLE_LOG")
        log.reread()


def test_the_troubleshooting_page_quotes_the_lines_the_library_writes() -> None:
    """Each example line of docs/troubleshooting.md is what _messages makes of its event."""
    from resumable._owner import Owner

    here = Owner.current().host
    examples = [
        ("resumable.store.created", {
            "url": "sqlite:////home/me/project/.resumable/state.db", "source": "",
        }),
        ("resumable.operation.recovered", {
            "op_id": "nightly-report", "position": 210, "progress": 0.525,
            "dead_owner": Owner(here, 28426, None),
        }),
        ("resumable.operation.resumed", {
            "op_id": "nightly-report", "position": 215, "progress": 0.5375, "attempt": 2,
            "why": "it was paused: Ctrl-C or SIGTERM",
        }),
        ("resumable.operation.skipped", {"op_id": "nightly-report", "reason": ""}),
        ("resumable.call.code_changed", {
            "op_id": "mod.f:1a2b...", "function": "f", "action": "warn", "others_quiet": True,
        }),
        ("resumable.operation.code_changed", {"op_id": "clean-rows", "action": "skipped"}),
        ("resumable.operation.code_changed", {
            "op_id": "clean-rows", "action": "resumed", "position": 120,
        }),
        ("resumable.map.started", {
            "op_id": "resize", "map": 0, "items": 300, "done_before": 297, "repeated": 0,
        }),
        ("resumable.operation.paused", {
            "op_id": "nightly-report", "position": 215, "error": "KeyboardInterrupt",
        }),
        ("resumable.operation.failed", {
            "op_id": "nightly-report", "position": 7, "error": "ValueError: bad row 7",
        }),
        ("resumable.checkpoint.fallback", {
            "op_id": "nightly-report", "corrupt_seqs": [9], "using_seq": 8,
        }),
        ("resumable.failsafe.recoverable", {
            "count": 2, "operations": ["import-1", "import-2"],
        }),
    ]  # fmt: skip
    page = (Path(__file__).parent.parent / "docs" / "troubleshooting.md").read_text()
    quoted = {line for line in page.splitlines() if line.startswith("resumable: ")}
    for event, fields in examples:
        assert f"resumable: {_messages.line(event, fields)}" in quoted, event
