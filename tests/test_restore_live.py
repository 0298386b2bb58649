"""Restoring an SQLite database that other processes have open, and the CLI's words and times.

A restore over a live database goes through SQLite (its online backup API into the database),
so the processes that keep it open see one consistent switch and go on writing to the restored
database. Every process here is real and every step is handed over through its stdin and
stdout: no test sleeps and hopes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from resumable import ResumableError
from resumable.backup import Backups, _copy

WORKER = Path(__file__).parent / "workers" / "backup_worker.py"
SCRIPT = Path(sys.executable).with_name("resumable")
TIMEOUT = 60.0
CRASHED = 86  # backup_worker.CRASHED
ROWS = [f"row {i:03d} " + "x" * 80 for i in range(200)]  # several pages: not one leaf


def make_db(path: Path, rows: list[str] = ROWS, *, journal_mode: str = "wal") -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(f"PRAGMA journal_mode={journal_mode}")
        con.execute("CREATE TABLE t (v TEXT)")
        con.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
    finally:
        con.close()


def check(path: Path) -> list[str]:
    """The rows of table ``t`` after ``PRAGMA integrity_check`` said ``ok``."""
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [v for (v,) in con.execute("SELECT v FROM t ORDER BY rowid")]
    finally:
        con.close()


def beside(path: Path) -> list[str]:
    """The names in the directory of ``path`` (temp and safety copies would show here)."""
    return sorted(p.name for p in path.parent.iterdir())


class Writer:
    """``backup_worker.py serve-writes``: another process that keeps the database open."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "serve-writes", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.read() == "ready"

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the writer ended: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return line.strip()

    def send(self, command: str) -> str:
        """Send one command; return the writer's answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        """Let the writer close its connection and end; it must end cleanly."""
        _, err = self.proc.communicate("quit\n", timeout=TIMEOUT)
        assert self.proc.returncode == 0, err


@contextmanager
def writer(db: Path) -> Iterator[Writer]:
    w = Writer(db)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.close()


# --- a live writer ------------------------------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_restore_under_a_live_writer_keeps_the_database_whole(
    tmp_path: Path, journal_mode: str
) -> None:
    """Restored under an open writer: integrity ok, the backup's rows, then the writer's."""
    db = tmp_path / "live.db"
    make_db(db, journal_mode=journal_mode)
    backups = Backups(tmp_path / "backups")
    with writer(db) as w:
        assert w.send("before the backup") == "ok"
        info = backups.create(db)
        assert w.send("after the backup") == "ok"  # the restore takes it away
        assert backups.restore(info.backup_id) == str(db)
        assert w.send("after the restore 1") == "ok"
        assert w.send("after the restore 2") == "ok"
        w.close()
    assert check(db) == [*ROWS, "before the backup", "after the restore 1", "after the restore 2"]
    assert beside(db) == ["backups", "live.db"]


def test_restore_under_a_running_job_keeps_its_final_commit(tmp_path: Path) -> None:
    """`resumable restore` of .resumable/state.db under a running job keeps its final commit."""
    env = {k: v for k, v in os.environ.items() if k != "RESUMABLE_STORE"}
    job = subprocess.Popen(
        [sys.executable, str(WORKER), "step-job", "10"], cwd=tmp_path, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert job.stdin is not None and job.stdout is not None

    def cli(*args: str) -> dict[str, Any]:
        proc = subprocess.run(
            [str(SCRIPT), *args, "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        doc: dict[str, Any] = json.loads(proc.stdout)
        return doc

    def run_to(item: int) -> None:
        while (line := job.stdout.readline().strip()) != f"item {item}":  # type: ignore[union-attr]
            assert line.startswith("item "), (line, job.stderr.read())  # type: ignore[union-attr]
            job.stdin.write("go\n")  # type: ignore[union-attr]
            job.stdin.flush()  # type: ignore[union-attr]

    try:
        run_to(4)  # items 0-3 committed
        made = cli("backup", ".resumable/state.db", "--backup-dir", "backups")["backup"]
        job.stdin.write("go\ngo\n")
        job.stdin.flush()
        run_to(6)  # items 4 and 5 committed after the backup
        restored = cli("restore", made["backup_id"], "--backup-dir", "backups")["restored"]
        assert restored["path"] == str(tmp_path / ".resumable" / "state.db")
        assert cli("show", "job")["position"] == 4  # what every process now reads
        out, err = job.communicate("go\n" * 4, timeout=TIMEOUT)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"count": 10, "total": 45}
    doc = cli("show", "job")
    assert (doc["state"], doc["position"], doc["progress"]) == ("completed", 10, 1.0)
    con = sqlite3.connect(tmp_path / ".resumable" / "state.db")
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()


# --- locks --------------------------------------------------------------------------------


def test_restore_waits_for_a_write_transaction_to_end(tmp_path: Path) -> None:
    """A restore started during another process's write transaction lands after its commit."""
    db = tmp_path / "live.db"
    make_db(db)
    backups = Backups(tmp_path / "backups")
    info = backups.create(db)
    done: list[object] = []
    with writer(db) as w:
        assert w.send("hold in flight") == "held"
        restoring = threading.Thread(target=lambda: done.append(backups.restore(info.backup_id)))
        restoring.start()
        assert w.send("commit") == "ok"
        restoring.join(TIMEOUT)
        assert done == [str(db)]
        assert w.send("after the restore") == "ok"
    assert check(db) == [*ROWS, "after the restore"]


def test_restore_refused_while_the_database_stays_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database locked past the busy timeout: ResumableError, the database as it was."""
    monkeypatch.setattr(_copy, "SQLITE_BUSY_SECONDS", 0.5)
    db = tmp_path / "live.db"
    make_db(db)
    backups = Backups(tmp_path / "backups")
    info = backups.create(db)
    with writer(db) as w:
        assert w.send("after the backup") == "ok"
        assert w.send("hold in flight") == "held"
        with pytest.raises(ResumableError, match="locked by another program") as caught:
            backups.restore(info.backup_id)
        assert "was not changed" in str(caught.value)
        assert w.send("commit") == "ok"
    assert check(db) == [*ROWS, "after the backup", "in flight"]
    assert beside(db) == ["backups", "live.db"]


# --- failures -----------------------------------------------------------------------------


def test_restore_failing_half_way_leaves_the_live_database_as_it_was(tmp_path: Path) -> None:
    """A write failing part-way through the restore (file size limit) is rolled back whole."""
    db = tmp_path / "live.db"
    many = [f"{i:05d} " + "y" * 500 for i in range(2_000)]  # the backup: about 1.1 MB
    make_db(db, many)
    backups = Backups(tmp_path / "backups")
    info = backups.create(db)
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("DELETE FROM t WHERE rowid > 10")
        con.execute("VACUUM")  # the live database: a few pages
        # The copy of the backup fits under the limit; the WAL frames that write it into the
        # live database (24 bytes more per page) do not: the last ones fail with EFBIG.
        limit = info.size_bytes + 12 * (info.size_bytes // 4096)
        with writer(db) as w:
            proc = subprocess.run(
                [sys.executable, str(WORKER), "restore-capped", str(backups.dir),
                 info.backup_id, str(limit)],
                capture_output=True, text=True, timeout=TIMEOUT, check=True,
            )  # fmt: skip
            assert proc.stdout.startswith("failed ResumableError:"), proc.stdout + proc.stderr
            assert "rolled the restore back; the database was not changed" in proc.stdout
            assert w.send("after the failed restore") == "ok"
            assert con.execute("SELECT count(*) FROM t").fetchone() == (11,)
    finally:
        con.close()
    assert check(db) == [*many[:10], "after the failed restore"]
    assert beside(db) == ["backups", "live.db"]


def test_database_restore_killed_at_each_step_leaves_old_or_new_database(tmp_path: Path) -> None:
    """A restore into a database killed before each file operation: old or new, never a mix."""
    db = tmp_path / "app.db"
    old, new = ROWS[:50], [r.replace("x", "n") for r in ROWS]
    make_db(db, new)
    backups = Backups(tmp_path / "backups")
    info = backups.create(db)
    seen: set[int] = set()
    for crash_at in range(1, 40):
        for name in ("app.db", "app.db-wal", "app.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        make_db(db, old)
        proc = subprocess.run(
            [sys.executable, str(WORKER), "restore", str(backups.dir), info.backup_id, str(db),
             str(crash_at)],
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        rows = check(db)
        assert rows in (old, new), f"a mix after a crash at operation {crash_at}"
        seen.add(len(rows))
        if proc.returncode == 0:
            assert rows == new
            break
        assert proc.returncode == CRASHED, proc.stderr
    else:
        pytest.fail("the restore never completed")
    assert seen == {len(old), len(new)}
    assert beside(db) == ["app.db", "backups"]  # the last restore removed the dead leftovers


def test_backup_with_another_page_size_is_refused_over_a_wal_database(tmp_path: Path) -> None:
    """A WAL database cannot change its page size: refused up front, the database as it was."""
    db = tmp_path / "app.db"
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA page_size=8192")
        con.execute("CREATE TABLE t (v TEXT)")
        con.execute("INSERT INTO t VALUES ('backed up')")
    finally:
        con.close()
    backups = Backups(tmp_path / "backups")
    info = backups.create(db)
    db.unlink()
    make_db(db)  # 4096-byte pages, WAL
    with pytest.raises(ResumableError, match=r"page size \(4096 bytes\) differs .* \(8192\)"):
        backups.restore(info.backup_id)
    assert check(db) == ROWS
    assert backups.restore(info.backup_id, tmp_path / "elsewhere.db")
    assert check(tmp_path / "elsewhere.db") == ["backed up"]


def test_corrupt_backup_leaves_the_live_database_as_it_was(tmp_path: Path) -> None:
    """A database backup with a flipped byte: ValueError, and the open database goes on."""
    db = tmp_path / "live.db"
    make_db(db)
    backups = Backups(tmp_path / "backups")
    info = backups.create(db)
    copy = Path(info.backup_path)
    data = bytearray(copy.read_bytes())
    data[5000] ^= 1
    copy.write_bytes(bytes(data))
    with writer(db) as w:
        assert w.send("after the backup") == "ok"
        with pytest.raises(ValueError, match="corrupt"):
            backups.restore(info.backup_id)
        assert w.send("after the refused restore") == "ok"
    assert check(db) == [*ROWS, "after the backup", "after the refused restore"]
    assert beside(db) == ["backups", "live.db"]


def test_database_backup_restored_over_a_damaged_file_or_elsewhere(tmp_path: Path) -> None:
    """Where no database is live (a damaged file, a new path), the backup is swapped in."""
    db = tmp_path / "app.db"
    make_db(db, journal_mode="delete")
    backups = Backups(tmp_path / "backups")
    info = backups.create(db)
    db.write_bytes(b"not a database any more " * 100)
    backups.restore(info.backup_id)
    assert check(db) == ROWS
    other = tmp_path / "new" / "copy.db"
    assert backups.restore(info.backup_id, other) == str(other)
    assert check(other) == ROWS


# --- the command line ---------------------------------------------------------------------


def run_cli(*args: str, cwd: Path, code: int = 0, tz: str = "UTC") -> str:
    env = {k: v for k, v in os.environ.items() if k != "RESUMABLE_STORE"} | {"TZ": tz}
    proc = subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return proc.stdout if code == 0 else proc.stderr


def test_cli_corrupt_backup_message_names_the_cli_command(tmp_path: Path) -> None:
    """`resumable restore` of a corrupt backup points to `resumable backups`, not list()."""
    source = tmp_path / "notes.txt"
    source.write_text("first version\n")
    made = json.loads(run_cli("backup", str(source), "--json", cwd=tmp_path))["backup"]
    Path(made["backup_path"]).write_text("first versioN\n")
    error = run_cli("restore", made["backup_id"], cwd=tmp_path, code=1)
    assert "is corrupt" in error and "`resumable backups`" in error, error
    assert "list()" not in error
    with pytest.raises(ValueError, match=r"list_backups\(\)"):
        Backups(tmp_path / "data" / "backups").restore(made["backup_id"])


def test_cli_times_carry_the_utc_offset_like_backup_times(tmp_path: Path) -> None:
    """list, show and backups print one time format: ISO 8601 with the UTC offset."""
    from resumable import checkpointed

    url = f"sqlite:///{tmp_path}/state.db"
    with checkpointed("job", store=url, state={"n": 0}) as cp:
        for _ in cp.iterate(range(3)):
            cp.state.n += 1
    source = tmp_path / "notes.txt"
    source.write_text("text\n")
    tz = "JST-9"  # POSIX TZ: UTC+09:00 all year, no zone database needed
    run_cli("backup", str(source), cwd=tmp_path, tz=tz)
    doc = json.loads(run_cli("show", "job", "--store", url, "--json", cwd=tmp_path, tz=tz))
    listed = json.loads(run_cli("list", "--store", url, "--json", cwd=tmp_path, tz=tz))
    made = json.loads(run_cli("backups", "--json", cwd=tmp_path, tz=tz))["backups"][0]
    stamps = [doc["created"], doc["updated"], doc["heartbeat"], made["timestamp"]]
    stamps += [listed["operations"][0]["updated"], doc["checkpoints"][0]["timestamp"]]
    for stamp in stamps:
        when = dt.datetime.fromisoformat(stamp)
        assert when.utcoffset() == dt.timedelta(hours=9), stamp
        assert len(stamp) == len("2026-11-30T09:05:12.123456+09:00"), stamp
    human = {
        "show": run_cli("show", "job", "--store", url, cwd=tmp_path, tz=tz),
        "list": run_cli("list", "--store", url, cwd=tmp_path, tz=tz),
        "backups": run_cli("backups", cwd=tmp_path, tz=tz),
    }
    for command, text in human.items():
        times = [w for w in text.split() if w[:4].isdigit() and w[4:5] == "-"]
        assert times, (command, text)
        for stamp in times:
            assert dt.datetime.fromisoformat(stamp).utcoffset() == dt.timedelta(hours=9), text
            assert stamp.endswith("+09:00") and len(stamp) == len("2026-11-30T09:05:12+09:00")
