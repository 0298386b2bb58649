"""The `resumable` command line, run as a real subprocess of the installed console script."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import url_for
from test_stores import corrupt_checkpoint

from resumable import checkpointed
from resumable.operation import ResultRecord
from resumable.stores import resolve_store

SCRIPT = Path(sys.executable).with_name("resumable")
COMMANDS = ["backup", "backups", "gc", "list", "recover", "reset", "restore", "show", "stats"]
COMMANDS += ["verify"]


def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run the console script; check its exit code and that no traceback was printed."""
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def cli_json(*args: str, code: int = 0) -> dict:
    return json.loads(cli(*args, "--json", code=code).stdout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a user mistake."""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("resumable: error: ")
    return lines[0]


def finished_and_failed(url: str) -> list[int]:
    """Run a finished operation (5 items) and a failed one (fails at item 4 of 10).

    Returns the list the finished operation's body appends to, to count its runs.
    """
    ran: list[int] = []
    with checkpointed("finished", store=url, state={"n": 0}) as cp:
        for i in cp.iterate(range(5)):
            ran.append(i)
    with (
        pytest.raises(ValueError, match="bad row"),
        checkpointed("failed", store=url, every_seconds=0) as cp,
    ):
        for i in cp.iterate(range(10), total=10):
            if i == 4:
                raise ValueError("bad row")
    return ran


@pytest.fixture(params=["sqlite", "file", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL that the test process and the CLI both open."""
    return url_for(request.param, tmp_path)


def test_python_m_resumable_lists_the_commands() -> None:
    """`python -m resumable --help` names every command."""
    proc = subprocess.run(
        [sys.executable, "-m", "resumable", "--help"], capture_output=True, text=True, check=True
    )
    listed = proc.stdout.split("Commands:")[1].split()
    assert all(command in listed for command in COMMANDS), proc.stdout


def test_list_show_recover_reset(url: str) -> None:
    """A finished and a failed operation: listed, explained, recovered, and reset to run again."""
    ran = finished_and_failed(url)
    listed = cli_json("list", "--store", url)
    states = {op["op_id"]: op["state"] for op in listed["operations"]}
    assert states == {"finished": "completed", "failed": "failed"}
    assert cli_json("list", "--store", url, "--state", "failed")["count"] == 1

    shown = cli_json("show", "failed", "--store", url)
    assert (shown["state"], shown["position"], shown["error"]) == (
        "failed", 4, "ValueError: bad row",
    )  # fmt: skip
    assert shown["decision"] == {
        "action": "resume",
        "reason": "resumable at position 4 (it failed: ValueError: bad row)",
        "position": 4,
        "corrupt": [],
    }
    text = cli("show", "failed", "--store", url).stdout
    assert "resume: resumable at position 4 (it failed: ValueError: bad row)" in text

    recoverable = cli_json("recover", "--store", url)["operations"]
    assert [(r["operation_id"], r["strategy"]) for r in recoverable] == [("failed", "retry")]

    checked = cli_json("verify", "--store", url)
    stats = cli_json("stats", "--store", url)["operations"]
    assert checked["ok"] and checked["checked"]["operations"] == stats["operations"] == 2
    assert checked["checked"]["checkpoints"] == stats["checkpoints"] >= 2
    assert stats["by_state"]["failed"] == stats["by_state"]["completed"] == 1

    assert "reset 'finished'" in cli("reset", "finished", "--store", url).stdout
    assert [op["op_id"] for op in cli_json("list", "--store", url)["operations"]] == ["failed"]
    with checkpointed("finished", store=url) as cp:
        ran.extend(cp.iterate(range(5)))
    assert ran == [0, 1, 2, 3, 4] * 2  # the reset operation ran its whole loop again


def test_reset_all_of_a_state_and_a_running_operation_is_refused(tmp_path: Path) -> None:
    """`reset --all --state failed` resets only failed ones; a running operation is refused."""
    url = url_for("sqlite", tmp_path)
    finished_and_failed(url)
    done = cli_json("reset", "--all", "--state", "failed", "--store", url)
    assert [d["op_id"] for d in done["reset"]] == ["failed"]
    assert [op["op_id"] for op in cli_json("list", "--store", url)["operations"]] == ["finished"]

    hold = textwrap.dedent(f"""
        import sys, time
        from resumable import checkpointed
        with checkpointed("finished", store={url!r}, fresh=True) as cp:
            print("running", flush=True)
            time.sleep(60)
    """)
    with subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True) as p:
        try:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "running"
            line = one_error_line(cli("reset", "finished", "--store", url, code=1))
            assert "operation 'finished' is running" in line
            skipped = cli_json("reset", "--all", "--yes", "--store", url)["skipped"]
            assert [s["op_id"] for s in skipped] == ["finished"]
        finally:
            p.kill()
    assert cli_json("show", "finished", "--store", url)["state"] == "running"


def test_backup_round_trip_and_a_flipped_byte(tmp_path: Path) -> None:
    """backup, backups, verify, restore and stats round-trip a file; a flipped byte fails verify."""
    url = url_for("sqlite", tmp_path)
    finished_and_failed(url)
    source = tmp_path / "notes.txt"
    source.write_text("first version\n")
    made = cli_json("backup", str(source))["backup"]
    assert made["source_path"] == str(source)
    listed = cli_json("backups")["backups"]
    assert [b["backup_id"] for b in listed] == [made["backup_id"]]
    checked = cli_json("verify", "--store", url)
    assert checked["ok"] and checked["checked"]["backups"] == 1
    assert checked["checked"]["operations"] == 2

    source.write_text("second version, longer\n")
    restored = cli_json("restore", made["backup_id"])["restored"]
    assert restored["path"] == str(source)
    assert source.read_text() == "first version\n"
    moved = tmp_path / "elsewhere.txt"
    cli("restore", made["backup_id"], "--to", str(moved))
    assert moved.read_text() == "first version\n"

    stats = cli_json("stats", "--store", url)
    assert stats["backups"]["total"] == 1
    assert stats["operations"]["by_state"]["completed"] == 1
    assert stats["operations"]["by_state"]["failed"] == 1

    copy = Path(made["backup_path"])
    data = bytearray(copy.read_bytes())
    data[3] ^= 1
    copy.write_bytes(bytes(data))
    proc = cli("verify", "--store", url, code=1)
    assert f"backup {made['backup_id']}" in proc.stdout and "failed its checksum" in proc.stdout
    assert cli_json("verify", "--store", url, code=1)["bad"][0]["name"] == made["backup_id"]


def test_verify_names_a_checkpoint_with_a_flipped_byte(tmp_path: Path) -> None:
    """A flipped byte in a stored checkpoint: verify exits 1 and names it; show falls back."""
    url = url_for("sqlite", tmp_path)
    finished_and_failed(url)
    store = resolve_store(url)
    newest = store.latest_checkpoint("failed")
    assert newest is not None
    corrupt_checkpoint(store, "failed", newest.seq)
    proc = cli("verify", "--store", url, code=1)
    assert f"checkpoint seq {newest.seq} of operation 'failed': failed its checksum" in proc.stdout
    bad = cli_json("verify", "--store", url, code=1)["bad"]
    assert [(b["kind"], b["name"]) for b in bad] == [("checkpoint", "failed")]
    listed = cli_json("list", "--store", url)
    assert listed["damaged"] == ["failed"]
    decision = cli_json("show", "failed", "--store", url)["decision"]
    assert decision["corrupt"] == [newest.seq] and "falls back" in decision["reason"]


def test_each_user_mistake_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Unknown op or backup, bad URL, unreadable store, Postgres down: one line, exit 1."""
    url = url_for("sqlite", tmp_path)
    finished_and_failed(url)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database " * 100)
    cases = {
        "no operation 'nope'": ["show", "nope", "--store", url],
        "no operation 'gone'": ["reset", "gone", "--store", url],
        "no backup 'x'": ["restore", "x"],
        "unknown store URL": ["list", "--store", "foo://bar"],
        "sqlite:///relative": ["list", "--store", "sqlite://host/x.db"],
        "not a database": ["list", "--store", f"sqlite:///{garbage}"],
        "could not reach the PostgreSQL server": [
            "list", "--store", "postgresql://postgres@127.0.0.1:1/test",
        ],
        "no such file": ["backup", str(tmp_path / "missing.txt")],
        "no store at": ["recover", "--store", "sqlite:///nothing-here.db"],
    }  # fmt: skip
    for expected, args in cases.items():
        line = one_error_line(cli(*args, code=1))
        assert expected in line, (args, line)
    assert not (tmp_path / "nothing-here.db").exists()  # a read never creates a store


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Usage errors are click's own: exit 2."""
    cli("show", code=2)
    cli("reset", code=2)
    cli("list", "--state", "sleeping", code=2)


def test_list_on_a_missing_store_does_not_create_it(tmp_path: Path) -> None:
    """`list` where no store exists says so and creates nothing."""
    line = one_error_line(cli("list", code=1))
    assert "no store at sqlite:///.resumable/state.db" in line
    assert not (tmp_path / ".resumable").exists()
    os.environ["RESUMABLE_STORE"] = f"file://{tmp_path}/nothing"
    try:
        assert "no store at file://" in one_error_line(cli("list", code=1))
    finally:
        del os.environ["RESUMABLE_STORE"]
    assert not (tmp_path / "nothing").exists()


def test_gc_removes_only_leftovers(tmp_path: Path) -> None:
    """gc removes temp files, orphans and stray backup copies, keeps what a run can use."""
    files_url = f"file://{tmp_path}/store"
    finished_and_failed(files_url)
    folder = next((tmp_path / "store" / "ops").iterdir())
    temp = folder / "checkpoints" / "000000000009.json.tmp-0123456789ab.99999"
    temp.write_text("{half a rec")
    report = cli_json("gc", "--store", files_url)  # everything is younger than an hour
    assert report["removed"] == [] and temp.exists()
    report = cli_json("gc", "--store", files_url, "--min-age", "0", "--dry-run")
    assert [r["kind"] for r in report["removed"]] == ["temp-file"] and temp.exists()
    cli("gc", "--store", files_url, "--min-age", "0")
    assert not temp.exists()

    url = url_for("sqlite", tmp_path)
    finished_and_failed(url)
    store = resolve_store(url)
    store.put_results([ResultRecord.create("ghost", "step:x", "pickle", b"x")])
    store.put_results([ResultRecord.create("call", "return:abc", "pickle", b"x")])
    stray = tmp_path / "data" / "backups" / "a.txt.20260101T000000.000000Z-0123abcd.bak"
    stray.parent.mkdir(parents=True)
    stray.write_text("a copy whose backup was never committed")
    report = cli_json("gc", "--store", url, "--min-age", "0")
    removed = {(r["kind"], r["what"]) for r in report["removed"]}
    assert removed == {("orphan", "ghost"), ("backup-stray", stray.name)}
    assert [(k["kind"], k["what"]) for k in report["kept"]] == [("orphan", "call")]
    assert not stray.exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        keys = {row[0] for row in conn.execute("SELECT op_id FROM results")}
    assert keys == {"call"}

    report = cli_json("gc", "--store", url, "--completed-older-than", "0")
    assert [(r["kind"], r["what"]) for r in report["removed"]] == [("completed", "finished")]
    assert [op["op_id"] for op in cli_json("list", "--store", url)["operations"]] == ["failed"]


def test_tables_for_people(tmp_path: Path) -> None:
    """Without --json: plain aligned text when stdout is not a terminal, no colour codes."""
    url = url_for("sqlite", tmp_path)
    finished_and_failed(url)
    out = cli("list", "--store", url).stdout
    assert "\x1b[" not in out
    head, *rows = out.splitlines()
    assert head.split() == [
        "OPERATION", "STATE", "PROGRESS", "DONE", "ATTEMPTS", "UPDATED", "NOTE",
    ]  # fmt: skip
    assert rows[0].split()[:4] == ["failed", "failed", "40%", "4"]
    assert "nothing to recover" in cli("recover", "--store", "memory://").stdout


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_repeated_calls_in_one_process_leave_the_logger_as_it_was(
    tmp_path: Path, verbose: list[str]
) -> None:
    """Calling the command line 3 times in one process adds no handler to the `resumable`
    logger and leaves its level and propagation as they were."""
    from click.testing import CliRunner

    from resumable.cli import cli as command_line

    url = url_for("sqlite", tmp_path)
    finished_and_failed(url)
    logger = logging.getLogger("resumable")
    before = (list(logger.handlers), logger.level, logger.propagate)
    for _ in range(3):
        result = CliRunner().invoke(command_line, [*verbose, "list", "--store", url])
        assert result.exit_code == 0, result.output
        assert "2 operations in" in result.output
    assert (list(logger.handlers), logger.level, logger.propagate) == before
