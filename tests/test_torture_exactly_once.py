"""Exactly-once torture (issue 15): real worker processes (exactly_once_worker.py) are stopped at
random instants, by SIGKILL, SIGINT, SIGTERM or a failing item, and run again until they finish;
the state changed in place and the file written through ``cp.open`` must then be exactly those
of an uninterrupted run.

Every wait is bounded: the test synchronises with a worker through its stdout pipe or its item
log, never by sleeping and hoping; the random instants come from seeded generators.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import url_for
from exactly_once_worker import KEYS, SLOTS, binary_line, text_line
from worker_process import TIMEOUT, Worker, spawner

from resumable import ProcessState, open_store
from resumable.serializers import get_serializer

WORKER = Path(__file__).parent / "workers" / "exactly_once_worker.py"
OP = "exactly-once-job"
KINDS = ["sqlite", "file"]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers; any still running at the end of the test is killed and reaped."""
    yield from spawner(WORKER, tmp_path)


class Run(collections.UserList[int]):
    """One run in a worker's item log: where it resumed, the file's size then, items started."""

    def __init__(self, start: int, size: int | None) -> None:
        super().__init__()
        self.start, self.size = start, size


def read_log(path: Path) -> list[Run]:
    """The runs in a worker's item log, in order."""
    runs: list[Run] = []
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        if line.startswith("start "):
            fields = line.split()
            runs.append(Run(int(fields[1]), int(fields[2]) if len(fields) > 2 else None))
        else:
            runs[-1].append(int(line))
    return runs


def wait_for_items(path: Path, runs_before: int, count: int, worker: Worker) -> None:
    """Wait until the worker's run (the one after ``runs_before`` runs) started ``count`` items."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        runs = read_log(path)
        if len(runs) > runs_before and len(runs[runs_before]) >= count:
            return
        assert worker.proc.poll() is None, f"worker exited early; stderr:\n{worker.stderr}"
        assert time.monotonic() < deadline, f"worker did not start {count} items in time"
        time.sleep(0.002)


def stored(url: str) -> tuple[ProcessState, int, Any]:
    """The operation's state, and the position and state of its newest checkpoint (or None)."""
    store = open_store(url)
    try:
        op = store.load_operation(OP)
        assert op is not None
        ckpt = store.latest_checkpoint(OP)
        if ckpt is None:
            return op.state, 0, None
        return op.state, ckpt.position, get_serializer(ckpt.serializer).loads(ckpt.payload)
    finally:
        store.close()


def check_runs(runs: list[Run], n: int) -> None:
    """Each run resumed where a commit left it: never behind the one before, never past an
    item that was not started; the items of each run are consecutive; the last run ends at n."""
    previous = 0
    for run in runs:
        assert list(run) == list(range(run.start, run.start + len(run)))
        assert run.start >= previous
        previous = run.start
    for before, after in itertools.pairwise(runs):
        if before:
            assert after.start <= before[-1] + 1
    assert runs[-1].start + len(runs[-1]) == n


# --- 1. state changed in place --------------------------------------------------------------

N_STATE = 300
COST_STATE = 0.005


def uninterrupted_state(n: int) -> dict[str, Any]:
    """The ``state`` job's state after the items ``range(n)``, computed here without a store."""
    counts: collections.Counter[int] = collections.Counter()
    arr = [0] * SLOTS
    for x in range(n):
        counts[x % KEYS] += 1
        arr[x % SLOTS] += x
    return {
        "counts": {str(k): v for k, v in sorted(counts.items())},
        "seen": list(range(n)),
        "arr": arr,
        "n": n,
    }


def plain(state: Any) -> dict[str, Any]:
    """A stored ``state`` job state as JSON-able values (as the worker prints it)."""
    assert isinstance(state["counts"], collections.Counter), type(state["counts"])
    return {
        "counts": {str(k): v for k, v in sorted(state["counts"].items())},
        "seen": list(state["seen"]),
        "arr": [int(v) for v in state["arr"]],
        "n": state["n"],
    }


@pytest.mark.parametrize("kind", KINDS)
def test_state_changed_in_place_survives_signals_and_a_failing_item(
    kind: str, tmp_path: Path, spawn: Callable[..., Worker]
) -> None:
    """A Counter, a list and a numpy array changed in place, and an int assigned, end exactly as
    in an uninterrupted run after SIGINTs, SIGTERMs and one failing item at random instants."""
    pytest.importorskip("numpy")
    url, log, marker = url_for(kind, tmp_path), tmp_path / "items.log", tmp_path / "failed"
    command = ("state", "--store", url, "--op", OP, "--n", str(N_STATE),
               "--cost", str(COST_STATE), "--every-seconds", "0.01", "--log", str(log))  # fmt: skip
    rng = random.Random(f"state-{kind}")
    rounds: list[signal.Signals | str] = [signal.SIGINT] * 3 + [signal.SIGTERM] * 3 + ["fail"]
    rng.shuffle(rounds)
    fail_args: tuple[str, ...] = ()
    for stop in rounds:
        runs_before = len(read_log(log))
        if stop == "fail":
            position = stored(url)[1] if runs_before else 0
            fail_at = position + rng.randint(3, 30)
            fail_args = ("--fail-at", str(fail_at), "--marker", str(marker))
            worker = spawn(*command, *fail_args)
            code, _ = worker.finish()
            assert code == 1, f"exited {code}; stderr:\n{worker.stderr}"
            assert "Boom" in worker.stderr
            assert read_log(log)[-1][-1] == fail_at
            expected_state = ProcessState.FAILED
        else:
            assert isinstance(stop, signal.Signals)
            worker = spawn(*command, *fail_args)
            assert worker.read_line() == "started"
            wait_for_items(log, runs_before, rng.randint(3, 40), worker)
            time.sleep(rng.uniform(0.0, COST_STATE))  # somewhere inside the item in flight
            worker.proc.send_signal(stop)
            code, _ = worker.finish()
            # Python ends on an unhandled KeyboardInterrupt by killing itself with SIGINT.
            want = -signal.SIGINT if stop == signal.SIGINT else 143
            assert code == want, f"{stop!r}: exited {code}; stderr:\n{worker.stderr}"
            expected_state = ProcessState.PAUSED
        # What is committed is the state of exactly the items before the position.
        op_state, position, values = stored(url)
        assert op_state is expected_state, f"after {stop!r}"
        run = read_log(log)[-1]
        assert run.start <= position <= run.start + len(run)
        if values is not None:
            assert plain(values) == uninterrupted_state(position), f"after {stop!r}"

    final = spawn(*command, *fail_args).result()
    expected = uninterrupted_state(N_STATE)
    assert final["state"] == expected
    assert final["position"] == N_STATE
    op_state, position, values = stored(url)
    assert (op_state, position, plain(values)) == (ProcessState.COMPLETED, N_STATE, expected)
    runs = read_log(log)
    assert len(runs) == len(rounds) + 1
    check_runs(runs, N_STATE)
    assert sum(len(r) for r in runs) > N_STATE  # the stops landed mid-item; those ran again


# --- 2. a file written through cp.open ------------------------------------------------------

N_FILE = 200
COST_FILE = 0.004
HEADER = {"a": "header kept by mode a\n", "w": "stale, dropped by mode w\n"}


def expected_file(mode: str, n: int) -> bytes:
    """The file after the items ``range(n)`` of an uninterrupted run of mode ``mode``."""
    if "b" in mode:
        lines = b"".join(head + tail for head, tail in map(binary_line, range(n)))
    else:
        lines = "".join(head + tail for head, tail in map(text_line, range(n))).encode()
    header = HEADER[mode[0]].encode() if mode[0] == "a" else b""
    return header + lines


def file_command(kind: str, mode: str, tmp_path: Path) -> tuple[str, ...]:
    out = tmp_path / "out.dat"
    out.write_text(HEADER[mode[0]])  # what was there before the first run
    return ("file", "--store", url_for(kind, tmp_path), "--op", OP, "--n", str(N_FILE),
            "--out", str(out), "--mode", mode, "--every-seconds", "0.01",
            "--log", str(tmp_path / "items.log"))  # fmt: skip


def check_file_runs(tmp_path: Path, mode: str, final: dict[str, Any]) -> list[Run]:
    """The file is exactly the uninterrupted one; each run found it cut to its position."""
    assert final["position"] == N_FILE
    assert final["closed"] is True
    assert (tmp_path / "out.dat").read_bytes() == expected_file(mode, N_FILE)
    runs = read_log(tmp_path / "items.log")
    check_runs(runs, N_FILE)
    for run in runs:  # cp.open returned the file cut back to the committed length
        assert run.size == len(expected_file(mode, run.start)), f"run resumed at {run.start}"
    return runs


@pytest.mark.parametrize(
    ("kind", "mode"), [("sqlite", "a"), ("file", "w"), ("sqlite", "wb"), ("file", "ab")]
)
def test_file_written_through_cp_open_survives_sigkill(
    kind: str, mode: str, tmp_path: Path, spawn: Callable[..., Worker]
) -> None:
    """A file appended one line per item, SIGKILLed at random instants and re-run, ends exactly
    as the uninterrupted file: no line missing, none twice, in order."""
    command = file_command(kind, mode, tmp_path)
    rng = random.Random(f"sigkill-{kind}-{mode}")
    min_kills, kills, in_loop = 8, 0, 0
    final: dict[str, Any] | None = None
    for _ in range(40):
        worker = spawn(*command, "--cost", str(COST_FILE) if kills < min_kills else "0")
        if kills < min_kills and rng.random() < 0.2:
            worker.run_for(rng.uniform(0.0, 0.2))  # lands in start-up, cp.open or early on
        elif kills < min_kills:
            assert worker.read_line() == "started"
            worker.run_for(rng.uniform(0.0, 0.12))
            in_loop += 1
        if kills < min_kills and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGKILL)
        code, out = worker.finish()
        if code == -signal.SIGKILL:
            kills += 1
            continue
        assert code == 0, f"run after {kills} kills exited {code}; stderr:\n{worker.stderr}"
        final = json.loads(out.strip().splitlines()[-1])
        break
    assert final is not None
    assert kills == min_kills
    runs = check_file_runs(tmp_path, mode, final)
    assert in_loop >= min_kills // 2
    # Commits landed inside the runs: most runs resumed further on than the one before.
    assert len({run.start for run in runs}) >= min_kills // 2
    assert sum(len(r) for r in runs) > N_FILE  # kills landed mid-item; those ran again


@pytest.mark.parametrize("kind", KINDS)
def test_file_written_through_cp_open_survives_sigint_and_sigterm(
    kind: str, tmp_path: Path, spawn: Callable[..., Worker]
) -> None:
    """The same file, interrupted by SIGINT and SIGTERM mid-item: PAUSED each time, then
    exactly the uninterrupted file."""
    command = file_command(kind, "a", tmp_path)
    url, log = url_for(kind, tmp_path), tmp_path / "items.log"
    rng = random.Random(f"signals-{kind}")
    stops = [signal.SIGINT, signal.SIGTERM] * 3
    rng.shuffle(stops)
    for runs_before, stop in enumerate(stops):
        worker = spawn(*command, "--cost", str(COST_FILE))
        assert worker.read_line() == "started"
        wait_for_items(log, runs_before, rng.randint(3, 30), worker)
        time.sleep(rng.uniform(0.0, COST_FILE))
        worker.proc.send_signal(stop)
        code, _ = worker.finish()
        want = -signal.SIGINT if stop == signal.SIGINT else 143
        assert code == want, f"{stop!r}: exited {code}; stderr:\n{worker.stderr}"
        assert stored(url)[0] is ProcessState.PAUSED
    final = spawn(*command).result()
    runs = check_file_runs(tmp_path, "a", final)
    assert len(runs) == len(stops) + 1
    assert stored(url)[:2] == (ProcessState.COMPLETED, N_FILE)
