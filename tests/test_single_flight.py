"""@resumable single flight: a call that another thread, task or process is running waits for it.

The waiting call returns the running call's result (its body runs once), or runs the body
itself if that run failed or died. ``lock=False`` raises ``OperationLocked`` at once and
``lock=<seconds>`` bounds the wait; either message names ``lock=``.

Nothing here depends on timing to see contention: a running body holds on until the other
callers have reported that they wait (the ``resumable.call.waiting`` event, or the
``OperationLocked`` they raised instead), and processes meet through files. Every wait is
bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableSequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import url_for
from structlog.testing import capture_logs

from resumable import OperationLocked, ProcessState, resumable
from resumable.stores import resolve_store

WORKER = Path(__file__).parent / "workers" / "decorator_worker.py"
#: The longest any one wait in these tests may take.
TIMEOUT = 60.0
THREADS = 16


class Flaky(Exception):
    """The error a test function raises."""


def wait_until(what: str, done: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``done`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"gave up after {timeout:g} s waiting for {what}"
        time.sleep(0.002)


def waiting(logs: MutableSequence[dict[str, Any]], op_id: str) -> int:
    """How many calls of ``op_id`` logged that they wait for another (so far)."""
    return sum(
        1 for e in list(logs) if e["event"] == "resumable.call.waiting" and e["op_id"] == op_id
    )


@pytest.fixture
def logs() -> Any:
    """The library's events, captured (from every thread) for the test's duration."""
    structlog.configure(processors=[])  # capture_logs needs structlog configured
    with capture_logs() as captured:
        yield captured


# --- threads ---------------------------------------------------------------------------------


def test_sixteen_threads_with_the_same_arguments_share_each_run(
    store_url: str, logs: list[dict[str, Any]]
) -> None:
    """16 threads x 100 calls over 20 arguments: no OperationLocked, right results, one run each."""
    keys, calls = 20, 100
    ran: collections.Counter[int] = collections.Counter()
    guard = threading.Lock()
    errors: list[BaseException] = []

    @resumable(store=store_url)
    def slow(x: int) -> int:
        with guard:
            ran[x] += 1
        if x == 0:  # the first run holds on until the 15 other callers wait (or gave up)
            op_id = slow.op_id_for(0)
            wait_until(
                "the other callers of slow(0)",
                lambda: waiting(logs, op_id) + len(errors) >= THREADS - 1,
            )
        time.sleep(0.005)
        return x * x

    def caller() -> list[int | None]:
        out: list[int | None] = []
        for k in range(calls):
            try:
                out.append(slow(k % keys))
            except OperationLocked as exc:
                errors.append(exc)
                out.append(None)
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda _: caller(), range(THREADS)))

    assert [str(e) for e in errors[:3]] == [], f"{len(errors)} calls raised OperationLocked"
    expected = [(k % keys) ** 2 for k in range(calls)]
    assert all(r == expected for r in results)
    assert ran == dict.fromkeys(range(keys), 1)


def test_a_waiter_runs_the_call_itself_when_the_running_one_fails(
    store_url: str, logs: list[dict[str, Any]]
) -> None:
    """If the run a call waited for fails, the waiter runs the body itself and returns its value."""
    runs: list[str] = []
    main_done = threading.Event()

    @resumable(store=store_url)
    def flaky(x: int) -> int:
        runs.append(threading.current_thread().name)
        if len(runs) == 1:  # the first run fails, once the main thread waits for it
            op_id = flaky.op_id_for(x)
            wait_until(
                "the main thread to wait", lambda: waiting(logs, op_id) > 0 or main_done.is_set()
            )
            raise Flaky("the first run fails")
        return x + 1

    outcome: list[BaseException | int] = []

    def first() -> None:
        try:
            outcome.append(flaky(5))
        except Exception as exc:
            outcome.append(exc)

    holder = threading.Thread(target=first, name="holder")
    holder.start()
    wait_until("the holder to run", lambda: bool(runs))
    try:
        assert flaky(5) == 6
    finally:
        main_done.set()
        holder.join(TIMEOUT)
    assert runs == ["holder", threading.current_thread().name]
    assert len(outcome) == 1
    assert isinstance(outcome[0], Flaky)
    op = resolve_store(store_url).load_operation(flaky.op_id_for(5))
    assert op is not None
    assert op.state is ProcessState.COMPLETED
    assert flaky(5) == 6
    assert len(runs) == 2


@pytest.mark.parametrize("lock", [False, 0.2])
def test_a_call_that_may_not_wait_raises_operation_locked_naming_lock(
    store_url: str, lock: bool | float
) -> None:
    """lock=False raises at once, lock=0.2 after 0.2 s; the message says what lock= to pass."""
    entered, release = threading.Event(), threading.Event()

    @resumable(store=store_url, lock=lock)
    def held(x: int) -> int:
        entered.set()
        if not release.wait(TIMEOUT):
            raise TimeoutError("never released")
        return x * 2

    holder = threading.Thread(target=held, args=(4,))
    holder.start()
    try:
        assert entered.wait(TIMEOUT)
        started = time.monotonic()
        with pytest.raises(OperationLocked) as info:
            held(4)
        elapsed = time.monotonic() - started
    finally:
        release.set()
        holder.join(TIMEOUT)
    message = str(info.value)
    assert info.value.op_id == held.op_id_for(4)
    assert "in this process" in message
    if lock is False:
        assert elapsed < 1.0
        assert "waited" not in message
        assert "pass lock=True (the default) or lock=<seconds> to @resumable" in message
    else:
        assert 0.2 <= elapsed < 10.0
        assert "(waited 0.2" in message
        assert "pass lock=<seconds> to @resumable to wait longer" in message
    assert held(4) == 8  # the holder finished: a hit, which never waits


def test_a_call_that_calls_itself_raises_instead_of_waiting_forever(store_url: str) -> None:
    """A call of itself with the same arguments, inside that call, raises OperationLocked."""

    @resumable(store=store_url)
    def again(x: int) -> int:
        return again(x)

    with pytest.raises(OperationLocked, match="calls itself with the same arguments"):
        again(1)


# --- async -----------------------------------------------------------------------------------


def test_async_calls_share_one_run_without_blocking_the_event_loop(
    store_url: str, logs: list[dict[str, Any]]
) -> None:
    """16 gathered async calls with the same arguments: one run, all get its result.

    The running body awaits, on the same event loop, until the 15 others report that they
    wait: a waiter that blocked the loop would never let it get there.
    """
    ran: list[int] = []
    errors: list[BaseException] = []

    @resumable(store=store_url)
    async def slow(x: int) -> int:
        ran.append(x)
        op_id = slow.op_id_for(x)
        deadline = time.monotonic() + TIMEOUT
        while waiting(logs, op_id) + len(errors) < THREADS - 1:
            assert time.monotonic() < deadline, "the other calls never waited"
            await asyncio.sleep(0.002)
        return x * 3

    async def caller() -> int | None:
        try:
            return await slow(7)
        except OperationLocked as exc:
            errors.append(exc)
            return None

    async def main() -> list[int | None]:
        return list(await asyncio.gather(*(caller() for _ in range(THREADS))))

    results = asyncio.run(main())
    assert [str(e) for e in errors[:3]] == []
    assert results == [21] * THREADS
    assert ran == [7]


def test_async_lock_seconds_raises_after_that_long(store_url: str) -> None:
    """An async call with lock=0.2 raises OperationLocked naming lock= once 0.2 s have passed."""
    store = resolve_store(store_url)

    @resumable(store=store_url, lock=0.2)
    async def held(x: int) -> int:
        return x

    lock = store.lock(held.op_id_for(1))
    lock.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(OperationLocked, match=r"pass lock=<seconds> to @resumable"):
            asyncio.run(held(1))
        assert time.monotonic() - started >= 0.2
    finally:
        lock.release()
    assert asyncio.run(held(1)) == 1


# --- processes -------------------------------------------------------------------------------


def start_worker(tmp_path: Path, url: str, name: str) -> subprocess.Popen[bytes]:
    """Start ``decorator_worker.py held`` in ``tmp_path``; its output goes to ``name``.out/err."""
    env = {**os.environ, "RESUMABLE_STORE": url}
    with (
        open(tmp_path / f"{name}.out", "wb") as out,
        open(tmp_path / f"{name}.err", "wb") as err,
    ):
        return subprocess.Popen(
            [sys.executable, str(WORKER), "held"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )


def printed(tmp_path: Path, name: str, proc: subprocess.Popen[bytes]) -> Any:
    """The JSON line worker ``name`` printed; it must have exited 0."""
    code = proc.wait(TIMEOUT)
    err = (tmp_path / f"{name}.err").read_text(encoding="utf-8")
    assert code == 0, f"worker {name} exited {code}:\n{err}"
    return json.loads((tmp_path / f"{name}.out").read_text(encoding="utf-8").splitlines()[-1])


def reports_waiting(tmp_path: Path, name: str, proc: subprocess.Popen[bytes]) -> bool:
    """True once worker ``name`` logged that it waits, or has exited."""
    err = (tmp_path / f"{name}.err").read_text(encoding="utf-8")
    # Its logging is configured (basicConfig, INFO): the event's line is its message.
    return "INFO:resumable:waiting for " in err or proc.poll() is not None


def calls_logged(tmp_path: Path) -> list[str]:
    """The real calls the workers recorded, one line each."""
    path = tmp_path / "calls.log"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@contextlib.contextmanager
def a_running_and_a_waiting_process(
    kind: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """Two workers calling held(3): the first runs it, the second has reported that it waits.

    (Unless the second gave up at once: then it has exited.) Both are killed at the end if
    still alive.
    """
    url = url_for(kind, tmp_path)
    procs = [start_worker(tmp_path, url, "first")]
    try:
        wait_until("the first worker to enter", (tmp_path / "entered").exists)
        procs.append(start_worker(tmp_path, url, "second"))
        wait_until(
            "the second worker to wait", lambda: reports_waiting(tmp_path, "second", procs[1])
        )
        yield procs[0], procs[1]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(TIMEOUT)


@pytest.mark.parametrize("kind", ["sqlite", "file", "postgres"])
def test_a_second_process_waits_for_the_first_and_returns_its_result(
    kind: str, tmp_path: Path
) -> None:
    """A process calling what another process runs waits, and returns that run's result."""
    with a_running_and_a_waiting_process(kind, tmp_path) as (first, second):
        (tmp_path / "release").touch()
        assert printed(tmp_path, "first", first) == {"result": 33}
        assert printed(tmp_path, "second", second) == {"result": 33}
    assert calls_logged(tmp_path) == ["held 3"]


@pytest.mark.parametrize("kind", ["sqlite", "file", "postgres"])
def test_a_waiting_process_runs_the_call_when_the_running_one_is_killed(
    kind: str, tmp_path: Path
) -> None:
    """When the process a call waits for is SIGKILLed, the waiter runs the body and returns."""
    with a_running_and_a_waiting_process(kind, tmp_path) as (first, second):
        first.send_signal(signal.SIGKILL)
        assert first.wait(TIMEOUT) == -signal.SIGKILL
        (tmp_path / "release").touch()
        assert printed(tmp_path, "second", second) == {"result": 33}
    assert calls_logged(tmp_path) == ["held 3", "held 3"]


# --- the option ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lock", "error"),
    [
        ("5", TypeError),
        (b"1", TypeError),
        (None, TypeError),
        ([1], TypeError),
        (-1, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
    ],
)
def test_a_bad_lock_option_is_refused_at_decoration(lock: object, error: type[Exception]) -> None:
    """lock= must be True, False or seconds >= 0; anything else fails where it is written."""
    with pytest.raises(error, match=r"^lock must be"):
        resumable(lock=lock)  # type: ignore[call-overload]


@pytest.mark.parametrize("lock", [True, False, 0, 0.5, 3, math.inf])
def test_a_good_lock_option_is_accepted(lock: bool | float) -> None:
    """True, False, zero, fractions, whole numbers and infinity are all valid lock= values."""

    @resumable(store="memory://", lock=lock)
    def plus(x: int) -> int:
        return x + 1

    assert plus(1) == 2
    assert plus(1) == 2
