"""A worker script run as a real process, read through its stdout pipe, with bounded waits.

Used by the crash tests (test_crash.py, test_torture_exactly_once.py): a test starts workers
with the ``spawn`` fixture each module makes from :func:`spawner`, reads the lines they print,
kills them with real signals, and reads the JSON line a finished one prints last.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The longest any one worker may take to say something or to exit.
TIMEOUT = 30.0


class Worker:
    """One run of a worker script; stdout is a pipe, stderr goes to a file."""

    def __init__(self, script: Path, args: tuple[str, ...], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                bufsize=0,
            )
        self._buf = b""

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def _read(self, deadline: float) -> bool:
        """Read what the worker printed until ``deadline``; False once its stdout is closed."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return False
                self._buf += chunk
                if b"\n" in chunk:
                    return True
        return True

    def read_line(self, timeout: float = TIMEOUT) -> str:
        """The next line the worker prints, waiting at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            if not self._read(deadline):
                code = self.proc.wait(TIMEOUT)
                raise AssertionError(f"worker exited ({code}) early; stderr:\n{self.stderr}")
            assert time.monotonic() < deadline, (
                f"worker printed no line within {timeout} s; stderr:\n{self.stderr}"
            )
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def run_for(self, seconds: float) -> None:
        """Let the worker run ``seconds`` more, reading its output so it never blocks on it."""
        deadline = time.monotonic() + seconds
        while self._read(deadline) and time.monotonic() < deadline:
            pass

    def finish(self, timeout: float = TIMEOUT) -> tuple[int, str]:
        """Wait for the worker to exit; its exit code and what it printed since the last read."""
        try:
            rest, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=TIMEOUT)
            raise AssertionError(
                f"worker did not exit within {timeout} s; stderr:\n{self.stderr}"
            ) from None
        return self.proc.returncode, (self._buf + (rest or b"")).decode()

    def result(self) -> dict[str, Any]:
        """The JSON line a worker prints last, once it has exited 0."""
        code, out = self.finish()
        assert code == 0, f"worker exited {code}; stderr:\n{self.stderr}"
        last: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return last


def spawner(script: Path, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """For a ``spawn`` fixture: start workers of ``script``; any still running at the end of
    the test is killed and reaped."""
    workers: list[Worker] = []

    def start(*args: str) -> Worker:
        worker = Worker(script, args, tmp_path / f"worker-{len(workers)}.stderr")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.communicate(timeout=TIMEOUT)
