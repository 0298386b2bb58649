"""The examples run, and the quickstart demo resumes after a real Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

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
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Interrupted after photo" in out

    again = run([str(EXAMPLES / "quickstart.py")], work)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Resuming at photo")
    assert again.stdout.strip().splitlines()[-1] == done_line

    third = run([str(EXAMPLES / "quickstart.py")], work)
    assert third.stdout.startswith("Nothing to do")
    assert third.stdout.strip().splitlines()[-1] == done_line


def test_shared_workers_split_the_job_and_each_returns_every_result(tmp_path: Path) -> None:
    done = run([str(EXAMPLES / "shared_workers.py")], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(1 for line in lines if line.endswith("hashed here")) == 3
    assert all(" 240 results," in line for line in lines if line.startswith("participant"))
    assert "all 240 files hashed once, by" in done.stdout
