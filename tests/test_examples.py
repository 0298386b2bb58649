"""The examples run, and resume after a real Ctrl-C or SIGKILL with the same outcome."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_quickstart_resumes_after_ctrl_c(tmp_path: Path) -> None:
    """Interrupted with SIGINT and run again, the demo says where it resumes and ends the same."""
    (tmp_path / "a").mkdir()
    uninterrupted = run([str(EXAMPLES / "quickstart.py")], tmp_path / "a")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    done_line = uninterrupted.stdout.strip().splitlines()[-1]
    assert done_line.startswith("Done: 300 thumbnails")

    work = tmp_path / "b"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("Starting on 300 photos")
    # Wait until the bar shows real progress (tqdm writes to stderr), then press Ctrl-C.
    seen = ""
    while not re.search(r"\| *[1-9][0-9]*/300", seen):
        chunk = proc.stderr.read(64)
        assert chunk, "the demo ended before showing progress"
        seen += chunk
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    # The library's own line says where it paused and what to do; no traceback.
    assert re.search(r"^resumable: paused 'quickstart-photos' at [1-9]", err, re.M), err
    assert "run it again to resume there" in err and "Traceback" not in err

    again = run([str(EXAMPLES / "quickstart.py")], work)
    assert again.returncode == 0, again.stderr
    assert again.stderr.startswith("resumable: resuming 'quickstart-photos' at ")
    assert again.stdout.strip().splitlines() == [done_line]

    third = run([str(EXAMPLES / "quickstart.py")], work)
    assert third.stderr.startswith("resumable: skipping 'quickstart-photos': it completed")
    assert third.stdout.strip().splitlines() == [done_line]


def test_shared_workers_split_the_job_and_each_returns_every_result(tmp_path: Path) -> None:
    done = run([str(EXAMPLES / "shared_workers.py")], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(1 for line in lines if line.endswith("hashed here")) == 3
    assert all(" 240 results," in line for line in lines if line.startswith("participant"))
    assert "all 240 files hashed once, by" in done.stdout


def test_crash_safety_example_is_also_a_test_file_for_pytest(tmp_path: Path) -> None:
    """Run by pytest from an empty directory, the example's two tests pass through the
    crash_safe fixture (registered by the package, not imported)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         str(EXAMPLES / "crash_safety.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


# --- every example, and the kill-and-re-run of some ---------------------------------------

ALL = sorted(path.name for path in EXAMPLES.glob("*.py"))
#: Examples whose last line is the same on every run (a re-run finds the work done).
SAME_LAST_LINE = {
    "api_crawl.py", "crash_safety.py", "etl.py", "failsafe_walkthrough.py", "notebook.py",
    "parallel_map.py", "photo_batch.py", "quickstart.py",
}  # fmt: skip
DEADLINE = 30.0  # seconds a test waits for a subprocess before it fails


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("example", ALL)
def test_example_runs_in_an_empty_directory(example: str, tmp_path: Path) -> None:
    """Every example exits 0 in an empty directory, as CI runs it; run again, it ends the same."""
    first = last_line(run([str(EXAMPLES / example)], tmp_path))
    if example in SAME_LAST_LINE:
        assert last_line(run([str(EXAMPLES / example)], tmp_path)) == first


def start(example: str, cwd: Path) -> subprocess.Popen[str]:
    """Start an example; it is killed after DEADLINE seconds whatever happens."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / example)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    watchdog = threading.Timer(DEADLINE, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    return proc


def kill(proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, "the example finished before it could be killed mid-way"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)
    assert proc.returncode == -signal.SIGKILL


def wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], what: str) -> None:
    """Poll ``ready`` until it holds; fail if the example ends or DEADLINE passes first."""
    deadline = time.monotonic() + DEADLINE
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, f"no progress: {what}"
        time.sleep(0.005)


@pytest.mark.slow
def test_photo_batch_resumes_after_sigkill(tmp_path: Path) -> None:
    """Killed mid-batch and run again, it ends the same, its manifest listing each photo once."""
    (tmp_path / "a").mkdir()
    uninterrupted = last_line(run([str(EXAMPLES / "photo_batch.py")], tmp_path / "a"))
    assert uninterrupted.startswith("Done: 48 thumbnails")
    manifest = (tmp_path / "a" / "manifest.tsv").read_text()
    assert len(set(manifest.splitlines())) == 48

    work = tmp_path / "b"
    work.mkdir()
    proc = start("photo_batch.py", work)
    thumbs = work / "thumbnails"
    # 12 thumbnails written: the first 10 photos are committed (it commits every 5), and
    # the manifest has lines past the last commit, flushed or not.
    wait_for(proc, lambda: thumbs.is_dir() and len(list(thumbs.iterdir())) >= 12, "12 thumbs")
    kill(proc)

    again = run([str(EXAMPLES / "photo_batch.py")], work)
    assert again.stderr.startswith("resumable: resuming 'photo-batch' at ")  # the library's line
    assert "Making thumbnails" not in again.stdout
    assert last_line(again) == uninterrupted
    assert len(list(thumbs.iterdir())) == 48
    assert (work / "manifest.tsv").read_text() == manifest


@pytest.mark.slow
def test_etl_resumes_after_sigkill_and_writes_each_row_once(tmp_path: Path) -> None:
    """Killed mid-load and run again, the ETL ends the same: each order loaded once, each
    reject written once, and the counts in its state equal to an uninterrupted run's."""
    (tmp_path / "a").mkdir()
    uninterrupted = last_line(run([str(EXAMPLES / "etl.py")], tmp_path / "a"))
    assert uninterrupted.startswith("Loaded 586 orders (586 counted by the job)")
    assert uninterrupted.endswith("14 rejected to rejects.csv.")
    rejects = (tmp_path / "a" / "rejects.csv").read_text()
    assert len(set(rejects.splitlines())) == 15  # the header and 14 rows

    work = tmp_path / "b"
    work.mkdir()
    proc = start("etl.py", work)
    assert proc.stdout is not None
    for line in proc.stdout:  # ends if the watchdog kills it
        loaded = re.match(r"line ([0-9]+): ", line)
        if loaded and int(loaded[1]) > 200:
            break
    else:
        raise AssertionError("the ETL ended before loading 200 lines")
    kill(proc)

    again = run([str(EXAMPLES / "etl.py")], work)
    assert again.stderr.startswith("resumable: resuming 'etl-orders' at ")
    assert last_line(again) == uninterrupted
    assert (work / "rejects.csv").read_text() == rejects
    with closing(sqlite3.connect(work / "warehouse.db")) as db:
        ids = [row[0] for row in db.execute("SELECT id FROM orders ORDER BY id")]
    assert ids == [i for i in range(1, 601) if i % 41]


@pytest.mark.slow
def test_api_crawl_resumes_after_sigkill_and_writes_each_record_once(tmp_path: Path) -> None:
    """Killed mid-crawl and run again, the JSONL file ends byte for byte as an uninterrupted
    run's, each record in it once, the 404s set aside once; a third run requests nothing."""
    (tmp_path / "a").mkdir()
    uninterrupted = last_line(run([str(EXAMPLES / "api_crawl.py")], tmp_path / "a"))
    assert uninterrupted == (
        "116 lines in records.jsonl, 116 distinct records of 120; not found: [29, 58, 87, 116]."
    )
    records = (tmp_path / "a" / "records.jsonl").read_text()

    work = tmp_path / "b"
    work.mkdir()
    proc = start("api_crawl.py", work)
    out = work / "records.jsonl"
    # Line-buffered: the lines written since the last commit are in the file when it dies.
    wait_for(proc, lambda: out.exists() and out.read_text().count("\n") >= 40, "40 records")
    kill(proc)

    again = run([str(EXAMPLES / "api_crawl.py")], work)
    assert again.stderr.startswith("resumable: resuming 'crawl-records' at ")
    assert last_line(again) == uninterrupted
    assert out.read_text() == records

    third = run([str(EXAMPLES / "api_crawl.py")], work)
    assert third.stderr.startswith("resumable: skipping 'crawl-records': it completed")
    assert "0 requests made in this run." in third.stdout
    assert last_line(third) == uninterrupted
