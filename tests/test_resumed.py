"""``cp.resumed``: True whenever a run continues an earlier unfinished run's progress.

Progress is a checkpoint or a recorded result (a ``cp.map`` item, a ``cp.step``); a process
SIGKILLed before its first checkpoint leaves only results, and its re-run is resumed too. The
kills are real: map_worker.py is killed once the store holds recorded results (polled, with a
deadline), and a step script kills itself right after its step is stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import url_for
from test_map import TIMEOUT, Run, items_of, recorded

from resumable import ProcessState, checkpointed, open_store


def kill_once_recorded(run: Run, url: str, op_id: str, n: int) -> set[int]:
    """SIGKILL ``run``'s process group once the store holds a result; the items recorded then."""
    store = open_store(url)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not (done := items_of(recorded(store, op_id), range(n))):
            assert run.proc.poll() is None, f"the worker ended before the kill: {run.stderr()}"
            assert time.monotonic() < deadline, "no result was recorded in time"
            time.sleep(0.005)
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(TIMEOUT)
    finally:
        if run.proc.stdout is not None:
            run.proc.stdout.close()
        store.close()
    assert run.proc.returncode == -signal.SIGKILL
    assert len(done) < n, "every item was recorded before the kill: the test proved nothing"
    return done


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_a_map_killed_before_any_checkpoint_is_resumed(kind: str, tmp_path: Path) -> None:
    """SIGKILLed mid-map (results recorded, no checkpoint): the re-run says resumed, reuses them."""
    url, op_id, n = url_for(kind, tmp_path), "killed-map", 200
    args = ("--store", url, "--op", op_id, "--n", str(n), "--cost", "0.02", "--workers", "2")
    first = Run(tmp_path, "first", *args)
    done = kill_once_recorded(first, url, op_id, n)
    store = open_store(url)
    try:
        assert store.latest_checkpoint(op_id) is None  # only results: the case that was missed
        assert store.load_operation(op_id).state is ProcessState.RUNNING
    finally:
        store.close()

    second = Run(tmp_path, "second", *args)
    result = second.finish()
    assert result["resumed"] is True
    assert result["completed_before"] is False
    assert result["results"] == [x * x for x in range(n)]
    assert not done & set(second.starts()), "a recorded item ran again"


def killed_in(url: str, op_id: str, statement: str) -> None:
    """Run ``statement`` in ``checkpointed(op_id)`` in a new interpreter that then kills itself."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from resumable import checkpointed
        with checkpointed({op_id!r}, store={url!r}) as cp:
            {statement}
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


def test_a_step_stored_before_a_sigkill_makes_the_rerun_resumed(tmp_path: Path) -> None:
    """A run killed right after its cp.step was stored: the next run is resumed, the step reused."""
    url = url_for("sqlite", tmp_path)
    killed_in(url, "steps", 'cp.step("fetch", lambda: 42)')
    calls: list[int] = []
    with checkpointed("steps", store=url) as cp:
        assert cp.resumed
        assert cp.step("fetch", lambda: calls.append(1) or 0) == 42
    assert calls == []


def test_a_run_killed_before_any_progress_is_not_resumed(tmp_path: Path) -> None:
    """A run that died having recorded nothing left no progress: the next run is not resumed."""
    url = url_for("sqlite", tmp_path)
    killed_in(url, "nothing", "pass")
    with checkpointed("nothing", store=url) as cp:
        assert not cp.resumed
        assert cp.store is not None
        assert cp.store.load_operation("nothing").attempts == 2  # it did see the earlier run


def test_first_runs_and_completed_operations_are_not_resumed(tmp_path: Path) -> None:
    """A first run is not resumed; nor is re-entering a completed one (that is completed_before)."""
    url = url_for("sqlite", tmp_path)
    with checkpointed("once", store=url) as cp:
        assert not cp.resumed
        assert cp.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]
        assert cp.step("s", lambda: "v") == "v"
    with checkpointed("once", store=url) as cp:
        assert not cp.resumed
        assert cp.completed_before
