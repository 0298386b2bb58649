"""Crash tests: real worker processes (crash_worker.py) are killed, terminated or interrupted
in the middle of a checkpointed loop, then run again, and must end as an uninterrupted run.

Every wait is bounded: the test synchronises with a worker through its stdout pipe or its item
log, never by sleeping and hoping; the random kill delays come from seeded generators.
"""

from __future__ import annotations

import hashlib
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
from worker_process import TIMEOUT, Worker, spawner

from resumable import ProcessState, open_store
from resumable.serializers import get_serializer

WORKER = Path(__file__).parent / "workers" / "crash_worker.py"
OP = "crash-job"
KINDS = ["sqlite", "file"]
LOCKED_EXIT = 3  # crash_worker.LOCKED_EXIT

# The SIGKILL sweep: one uninterrupted run takes about N_SWEEP * COST_SWEEP = 1.2 s.
N_SWEEP = 300
COST_SWEEP = 0.004
#: Extra bytes of state: commits every 10 ms then take a good part of the loop's time, so
#: kills land inside commits as well as between them.
PAD_SWEEP = 200_000
MIN_KILLS = 20
MAX_ATTEMPTS = 100


def fold(h: str, x: int) -> str:
    """The hash after item ``x``, as the worker computes it."""
    return hashlib.sha256((h + str(x)).encode()).hexdigest()


def uninterrupted(n: int, pad: int = 0) -> dict[str, Any]:
    """The state after the items ``range(n)``, computed here without any store."""
    h = ""
    for x in range(n):
        h = fold(h, x)
    return {"h": h, "n": n, "pad": "x" * pad}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers; any still running at the end of the test is killed and reaped."""
    yield from spawner(WORKER, tmp_path)


def read_log(path: Path) -> list[tuple[int, list[int]]]:
    """The runs in a worker's item log: (position resumed at, items started) per run."""
    runs: list[tuple[int, list[int]]] = []
    for line in path.read_text().splitlines():
        if line.startswith("start "):
            runs.append((int(line.split()[1]), []))
        else:
            runs[-1][1].append(int(line))
    return runs


def wait_for_items(path: Path, count: int, worker: Worker) -> None:
    """Wait until the worker's log shows ``count`` items started (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    while not (path.exists() and len(path.read_text().splitlines()) > count):  # + "start" line
        assert worker.proc.poll() is None, f"worker exited early; stderr:\n{worker.stderr}"
        assert time.monotonic() < deadline, f"worker did not start {count} items in time"
        time.sleep(0.002)


def stored(url: str) -> tuple[ProcessState, int, dict[str, Any]]:
    """The operation's state, and the position and state of its newest checkpoint."""
    store = open_store(url)
    try:
        op = store.load_operation(OP)
        ckpt = store.latest_checkpoint(OP)
        assert op is not None and ckpt is not None
        state = get_serializer(ckpt.serializer).loads(ckpt.payload)
        return op.state, ckpt.position, dict(state)
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_at_random_instants_ends_as_uninterrupted_run(
    kind: str, tmp_path: Path, spawn: Callable[..., Worker]
) -> None:
    """A job SIGKILLed at 20+ random instants and re-run each time ends as if never killed."""
    url = url_for(kind, tmp_path)
    log = tmp_path / "items.log"
    command = (
        "--store", url, "--op", OP, "--n", str(N_SWEEP), "--cost", str(COST_SWEEP),
        "--every-seconds", "0.01", "--log", str(log), "--pad", str(PAD_SWEEP),
    )  # fmt: skip
    rng = random.Random(f"sigkill-{kind}")
    kills = kills_in_loop = 0
    final: dict[str, Any] | None = None
    for _ in range(MAX_ATTEMPTS):
        worker = spawn(*command)
        if kills < MIN_KILLS and rng.random() < 0.25:
            # Timed from the start: lands in start-up, in entering the block, or early on.
            worker.run_for(rng.uniform(0.0, 0.25))
            in_loop = False
        else:
            assert worker.read_line() == "started"
            # Short delays until MIN_KILLS kills have landed, so the job cannot finish first.
            worker.run_for(rng.uniform(0.0, 0.05 if kills < MIN_KILLS else 0.4))
            in_loop = True
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGKILL)
        code, out = worker.finish()
        if code == -signal.SIGKILL:
            kills += 1
            kills_in_loop += in_loop
            continue
        assert code == 0, f"run after {kills} kills exited {code}; stderr:\n{worker.stderr}"
        final = json.loads(out.strip().splitlines()[-1])
        break
    assert final is not None, f"no run finished within {MAX_ATTEMPTS} attempts"
    assert kills >= MIN_KILLS, f"the job finished after only {kills} kills"
    assert kills_in_loop >= MIN_KILLS // 2

    expected = uninterrupted(N_SWEEP, PAD_SWEEP)
    assert final["state"] == expected
    assert final["position"] == N_SWEEP
    assert stored(url) == (ProcessState.COMPLETED, N_SWEEP, expected)

    # Each run resumed where a commit left it: never behind the one before, never past an
    # item that was not started; every item's body ran, and interrupted ones ran again.
    runs = read_log(log)
    assert kills_in_loop + 1 <= len(runs) <= kills + 1  # some kills land before the block
    previous = 0
    for start, items in runs:
        assert items == list(range(start, start + len(items)))
        assert start >= previous
        previous = start
    for (_, items), (start, _) in itertools.pairwise(runs):
        if items:
            assert start <= items[-1] + 1
    assert runs[-1][1] == list(range(runs[-1][0], N_SWEEP))
    started = [x for _, items in runs for x in items]
    assert len(started) > N_SWEEP  # kills landed mid-item, between commits

    again = spawn(*command).result()
    assert again["bodies"] == 0
    assert again["completed_before"] is True
    assert again["state"] == expected
    assert again["position"] == N_SWEEP
    assert read_log(log)[-1] == (N_SWEEP, [])


@pytest.mark.parametrize("kind", KINDS)
def test_running_operation_is_locked_until_its_process_dies(
    kind: str, tmp_path: Path, spawn: Callable[..., Worker]
) -> None:
    """A second process is refused at once while the first runs, and let in at once after a kill."""
    url = url_for(kind, tmp_path)
    log = tmp_path / "items.log"
    n = 2000
    common = ("--store", url, "--op", OP, "--n", str(n), "--every-seconds", "0.01")
    first = spawn(*common, "--cost", "0.05", "--log", str(log))  # 100 s unless killed
    assert first.read_line() == "started"
    wait_for_items(log, 3, first)  # so items 0 and 1 are finished and committed

    second = spawn(*common)
    code, out = second.finish()
    assert code == LOCKED_EXIT, f"second run exited {code}; stderr:\n{second.stderr}"
    refused = json.loads(out.strip().splitlines()[-1])
    assert refused["locked"] is True
    assert refused["seconds"] < 1.0
    assert first.proc.poll() is None

    first.proc.send_signal(signal.SIGKILL)
    assert first.finish()[0] == -signal.SIGKILL

    third = spawn(*common).result()  # lock=True: it would fail at once if still locked
    assert third["enter_seconds"] < 1.0
    assert third["resumed"] is True
    assert third["bodies"] <= n - 2  # it resumed after the first's commits
    assert third["state"] == uninterrupted(n)
    assert third["position"] == n


N_SIGNAL = 400  # 4 s at COST_SIGNAL per item: far longer than the test waits before signalling
COST_SIGNAL = 0.01


def signal_command(tmp_path: Path, kind: str) -> tuple[str, ...]:
    """The job the signal tests interrupt, with no periodic commit in the loop.

    Only the commit on the way out can then save the progress made before the signal.
    """
    url = url_for(kind, tmp_path)
    log = tmp_path / "items.log"
    return ("--store", url, "--op", OP, "--n", str(N_SIGNAL), "--every-seconds", "3600",
            "--log", str(log))  # fmt: skip


def interrupt_mid_loop(
    kind: str, tmp_path: Path, spawn: Callable[..., Worker], sig: signal.Signals
) -> Worker:
    """Run the job, send it ``sig`` a random number of items into its loop, wait for its end."""
    rng = random.Random(f"{sig.name}-{kind}")
    worker = spawn(*signal_command(tmp_path, kind), "--cost", str(COST_SIGNAL))
    assert worker.read_line() == "started"
    wait_for_items(tmp_path / "items.log", rng.randint(5, 40), worker)
    time.sleep(rng.uniform(0.0, COST_SIGNAL))  # somewhere inside the item in flight
    worker.proc.send_signal(sig)
    worker.finish()
    return worker


def check_paused_then_resumed(kind: str, tmp_path: Path, spawn: Callable[..., Worker]) -> None:
    """The interrupted job is PAUSED, consistent, and a re-run redoes only the item in flight."""
    url, log = url_for(kind, tmp_path), tmp_path / "items.log"
    [(_, interrupted)] = read_log(log)
    assert interrupted == list(range(len(interrupted)))
    state, position, values = stored(url)
    assert state is ProcessState.PAUSED
    assert len(interrupted) - 1 <= position <= len(interrupted)
    assert values == uninterrupted(position)  # the half-applied item was rolled back

    rerun = spawn(*signal_command(tmp_path, kind)).result()  # at full speed: no --cost
    _, (start, items) = read_log(log)
    assert start == position
    assert items == list(range(position, N_SIGNAL))
    assert len(set(interrupted) & set(items)) <= 1  # only the item in flight runs again
    assert rerun["bodies"] == N_SIGNAL - position
    assert rerun["state"] == uninterrupted(N_SIGNAL)
    assert rerun["position"] == N_SIGNAL
    assert stored(url) == (ProcessState.COMPLETED, N_SIGNAL, uninterrupted(N_SIGNAL))


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_mid_loop_pauses_and_resumes(
    kind: str, tmp_path: Path, spawn: Callable[..., Worker]
) -> None:
    """SIGTERM mid-loop exits 143 with the operation PAUSED; a re-run redoes at most one item."""
    worker = interrupt_mid_loop(kind, tmp_path, spawn, signal.SIGTERM)
    assert worker.proc.returncode == 143, f"stderr:\n{worker.stderr}"
    check_paused_then_resumed(kind, tmp_path, spawn)


@pytest.mark.parametrize("kind", KINDS)
def test_keyboard_interrupt_mid_loop_pauses_and_resumes(
    kind: str, tmp_path: Path, spawn: Callable[..., Worker]
) -> None:
    """Ctrl-C mid-loop ends by KeyboardInterrupt, PAUSED; a re-run redoes at most one item."""
    worker = interrupt_mid_loop(kind, tmp_path, spawn, signal.SIGINT)
    # Python ends on an unhandled KeyboardInterrupt by killing itself with SIGINT.
    assert worker.proc.returncode == -signal.SIGINT, f"stderr:\n{worker.stderr}"
    assert "KeyboardInterrupt" in worker.stderr
    check_paused_then_resumed(kind, tmp_path, spawn)
