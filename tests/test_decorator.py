"""@resumable: finished calls never run twice, across processes, for every kind of callable.

Cross-process tests run tests/workers/decorator_worker.py as real processes that share one SQLite
store; the worker appends a line to ``calls.log`` per real call, so the tests count real
calls. Every subprocess has a bounded timeout; nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import decorator_worker
import pytest
import tenacity
from conftest import require_package, url_for
from tenacity import stop_after_attempt, wait_none

from resumable import (
    OperationLocked,
    ProcessState,
    ResumableError,
    Store,
    checkpointed,
    open_store,
    resumable,
)
from resumable.stores import resolve_store

WORKER = Path(__file__).parent / "workers" / "decorator_worker.py"
#: The longest one worker process may take.
TIMEOUT = 60.0
QUICK = {"stop": stop_after_attempt(2), "wait": wait_none()}


class Flaky(Exception):
    """The error the test functions raise."""


def default_store() -> Store:
    """The store a call without ``store=`` uses (SQLite under the test's directory)."""
    return resolve_store(None)


def logged(tmp_path: Path) -> list[str]:
    """The lines worker functions appended to ``calls.log``, one per real call."""
    path = tmp_path / decorator_worker.CALLS
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def run_worker(tmp_path: Path, *args: str, seed: str = "0") -> subprocess.CompletedProcess[str]:
    """Run decorator_worker.py once in ``tmp_path`` against the shared SQLite store."""
    env = {
        **os.environ,
        "RESUMABLE_STORE": url_for("sqlite", tmp_path),
        "PYTHONHASHSEED": seed,
    }
    return subprocess.run(
        [sys.executable, str(WORKER), *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def worker_json(tmp_path: Path, *args: str, seed: str = "0") -> Any:
    """Run the worker, which must exit 0, and return the JSON line it printed."""
    proc = run_worker(tmp_path, *args, seed=seed)
    assert proc.returncode == 0, f"worker {args} exited {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- 1. across processes --------------------------------------------------------------------


def test_second_process_skips_every_finished_call(tmp_path: Path) -> None:
    """A second process runs none of the calls the first finished and returns equal results."""
    first = worker_json(tmp_path, "calls")
    ran = logged(tmp_path)
    kinds = collections.Counter(line.split()[0] for line in ran)
    assert kinds == {
        "square": 3, "asquare": 3, "amul": 2, "mul": 3, "tag": 2, "plus": 2,
    }  # fmt: skip
    assert first == {
        "square": [1, 4, 9],
        "asquare": [1, 4, 9],
        "amul": [3, 6],
        "mul": [3, 6, 5],
        "tag": ["Calc:1", "Calc:2"],
        "plus": [101, 102],
    }

    second = worker_json(tmp_path, "calls")

    assert logged(tmp_path) == ran
    assert second == first


def test_failed_call_runs_again_in_next_process_then_never(tmp_path: Path) -> None:
    """A call that raised runs again in the next process; once it succeeded, never again."""
    first = worker_json(tmp_path, "flaky", "--fail")
    assert first == {
        "fragile": {"error": "RuntimeError: fragile(7) failed"},
        "afragile": {"error": "RuntimeError: afragile(7) failed"},
    }
    assert logged(tmp_path) == ["fragile 7", "afragile 7"]

    second = worker_json(tmp_path, "flaky")
    assert second == {"fragile": {"result": 8}, "afragile": {"result": 9}}
    assert logged(tmp_path) == ["fragile 7", "afragile 7"] * 2

    # Even with the failure switched back on, the third process runs nothing.
    third = worker_json(tmp_path, "flaky", "--fail")
    assert third == second
    assert len(logged(tmp_path)) == 4


def test_failed_first_call_is_recorded_failed_with_its_error(store_url: str, store: Store) -> None:
    """A first call that raises leaves its operation FAILED, with the error and one attempt."""

    @resumable(store=store_url)
    def breaks(x: int) -> int:
        raise Flaky(f"breaks({x})")

    with pytest.raises(Flaky):
        breaks(3)
    op = store.load_operation(breaks.op_id_for(3))
    assert op is not None
    assert op.state is ProcessState.FAILED
    assert op.error == "Flaky: breaks(3)"
    assert op.attempts == 1
    assert store.load_results(op.op_id, "") == {}
    assert not breaks.is_done(3)


# --- 2. op_id_for / is_done / reset ------------------------------------------------------------


def test_helpers_on_a_function(store_url: str, store: Store) -> None:
    """op_id_for names the stored operation, is_done flips on success, reset makes it run again."""
    ran: list[int] = []

    @resumable(store=store_url)
    def inc(x: int) -> int:
        ran.append(x)
        return x + 1

    op_id = inc.op_id_for(1)
    assert isinstance(op_id, str)
    assert op_id != inc.op_id_for(2)
    assert not inc.is_done(1)

    assert inc(1) == 2
    assert [op.op_id for op in store.list_operations()] == [op_id]
    assert inc.is_done(1)
    assert not inc.is_done(2)
    assert inc(1) == 2
    assert ran == [1]

    assert inc.reset(1) is True
    assert not inc.is_done(1)
    assert list(store.list_operations()) == []
    assert inc(1) == 2
    assert ran == [1, 1]
    assert inc.is_done(1)
    assert inc.reset(99) is False


def test_call_that_returned_none_is_finished_too(store_url: str) -> None:
    """A call whose result is None is stored like any other and never runs twice."""
    ran: list[int] = []

    @resumable(store=store_url)
    def touch(x: int) -> None:
        ran.append(x)

    assert touch(1) is None
    assert touch.is_done(1)
    assert touch(1) is None
    assert ran == [1]


def test_helpers_on_bound_methods(store_url: str, store: Store) -> None:
    """obj.method.op_id_for / is_done / reset work on instance, class and static methods."""
    ran: list[str] = []

    class Job:
        def __init__(self, k: int) -> None:
            self.k = k

        @resumable(store=store_url)
        def run(self, x: int) -> int:
            ran.append(f"run {self.k} {x}")
            return self.k * x

        @resumable(store=store_url)
        @classmethod
        def build(cls, x: int) -> str:
            ran.append(f"build {x}")
            return f"{cls.__name__}{x}"

        @resumable(store=store_url)
        @staticmethod
        def helper(x: int) -> int:
            ran.append(f"helper {x}")
            return -x

    job, other = Job(3), Job(4)
    ids = {
        job.run.op_id_for(2),
        other.run.op_id_for(2),
        Job.build.op_id_for(2),
        Job.helper.op_id_for(2),
    }
    assert len(ids) == 4
    assert job.run.op_id_for(2) == Job(3).run.op_id_for(2)
    assert Job.build.op_id_for(2) == job.build.op_id_for(2)
    assert Job.helper.op_id_for(2) == job.helper.op_id_for(2)
    assert not job.run.is_done(2)

    assert (job.run(2), Job.build(2), Job.helper(2)) == (6, "Job2", -2)
    assert {op.op_id for op in store.list_operations()} == {
        job.run.op_id_for(2),
        Job.build.op_id_for(2),
        Job.helper.op_id_for(2),
    }
    assert job.run.is_done(2)
    assert not other.run.is_done(2)
    assert Job.build.is_done(2)
    assert job.helper.is_done(2)
    assert (job.run(2), job.build(2), job.helper(2)) == (6, "Job2", -2)
    assert len(ran) == 3

    assert job.run.reset(2) is True
    assert Job.build.reset(2) is True
    assert Job.helper.reset(2) is True
    assert not job.run.is_done(2)
    assert (job.run(2), Job.build(2), Job.helper(2)) == (6, "Job2", -2)
    assert len(ran) == 6


# --- 3. digests across processes ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["python values", "numpy arrays"])
def test_op_ids_equal_across_processes_and_hash_seeds(tmp_path: Path, kind: str) -> None:
    """op_id_for gives the same ids in processes with different PYTHONHASHSEED and orders."""
    extra: tuple[str, ...] = ()
    if kind == "numpy arrays":
        require_package("numpy", "pip install -e '.[dev]'")  # fails, not skips, in CI
        extra = ("--numpy",)
    outputs = [
        worker_json(tmp_path, "digests", "--order", str(order), *extra, seed=seed)
        for order, seed in enumerate(["0", "1", "12345"])
    ]

    assert outputs[0] == outputs[1] == outputs[2]
    ids = list(outputs[0].values())
    assert len(set(ids)) == len(ids), "distinct arguments must give distinct ids"
    assert logged(tmp_path) == [], "op_id_for must not call the function"


# --- 4. a checkpointed loop inside a call --------------------------------------------------------


def test_loop_inside_a_call_resumes_where_it_failed(store_url: str) -> None:
    """Re-running a failed call resumes its checkpointed loop at the committed position."""
    items = list(range(10))
    bodies: list[int] = []
    fail_at: list[int | None] = [4]

    @resumable(store=store_url)
    def sum_of_squares(values: list[int]) -> int:
        with checkpointed(store=store_url, state={"total": 0}) as cp:
            for x in cp.iterate(values):
                bodies.append(x)
                if x == fail_at[0]:
                    raise Flaky(f"item {x}")
                cp.state.total += x * x
        return int(cp.state.total)

    with pytest.raises(Flaky, match="item 4"):
        sum_of_squares(items)
    assert bodies == [0, 1, 2, 3, 4]

    fail_at[0] = None
    bodies.clear()
    assert sum_of_squares(items) == sum(x * x for x in items)
    assert bodies == [4, 5, 6, 7, 8, 9]

    bodies.clear()
    assert sum_of_squares(items) == sum(x * x for x in items)
    assert bodies == []


# --- 5. bound arguments ---------------------------------------------------------------------


def test_equivalent_argument_spellings_are_one_call() -> None:
    """f(2, y=3), f(2, 3) and f(x=2, y=3) are one call; f(2) is f(2, y=<default>)."""
    ran: list[tuple[int, int]] = []

    @resumable
    def f(x: int, y: int = 7) -> int:
        ran.append((x, y))
        return x * y

    assert f.op_id_for(2, y=3) == f.op_id_for(2, 3) == f.op_id_for(x=2, y=3)
    assert f.op_id_for(2) == f.op_id_for(2, y=7) == f.op_id_for(2, 7)
    assert f.op_id_for(2) != f.op_id_for(2, 3)

    assert [f(2, y=3), f(2, 3), f(x=2, y=3)] == [6, 6, 6]
    assert [f(2), f(2, y=7), f(x=2)] == [14, 14, 14]
    assert ran == [(2, 3), (2, 7)]


# --- 6. ignore=, undigestable arguments, op_id= ------------------------------------------------


def test_ignored_argument_is_left_out_of_the_id() -> None:
    """ignore=["client"]: calls differing only in that argument are one call."""
    ran: list[str] = []

    class Client:
        def __init__(self) -> None:
            self.lock = threading.Lock()  # undigestable: ignore= is the only way

    @resumable(ignore=["client"])
    def fetch(url: str, client: Client) -> str:
        ran.append(url)
        return url.upper()

    assert fetch.op_id_for("a", Client()) == fetch.op_id_for("a", client=Client())
    assert fetch.op_id_for("a", Client()) != fetch.op_id_for("b", Client())
    assert fetch("a", Client()) == "A"
    assert fetch("a", client=Client()) == "A"
    assert fetch("b", Client()) == "B"
    assert ran == ["a", "b"]


@pytest.mark.parametrize("kind", ["lambda", "open file", "threading.Lock", "nested lambda"])
def test_undigestable_argument_is_a_type_error_naming_it(tmp_path: Path, kind: str) -> None:
    """An undigestable argument raises TypeError naming it and showing ignore= and op_id=."""
    ran: list[object] = []

    @resumable
    def job(name: str, callback: Any) -> None:
        ran.append(callback)

    with open(tmp_path / "f.txt", "w", encoding="utf-8") as fh:
        bad = {
            "lambda": lambda: 0,
            "open file": fh,
            "threading.Lock": threading.Lock(),
            "nested lambda": {"hooks": [1, lambda: 0]},
        }[kind]
        with pytest.raises(TypeError) as info:
            job("n", bad)
        with pytest.raises(TypeError):
            job.op_id_for("n", callback=bad)
    message = str(info.value)
    assert "callback" in message
    if kind == "nested lambda":
        assert "callback['hooks'][1]" in message
    assert "ignore=['callback']" in message
    assert "op_id=" in message
    assert ran == []
    assert list(default_store().list_operations()) == []


def test_op_id_format_string(store_url: str, store: Store) -> None:
    """op_id="resize-{path}" names the operation from the bound arguments."""
    ran: list[str] = []

    @resumable(op_id="resize-{path}-{size}", store=store_url)
    def resize(path: str, size: int = 64) -> str:
        ran.append(path)
        return f"{path}@{size}"

    assert resize.op_id_for("a.jpg") == "resize-a.jpg-64"
    assert resize.op_id_for(path="a.jpg", size=64) == "resize-a.jpg-64"
    assert resize("a.jpg") == "a.jpg@64"
    assert resize("a.jpg", size=64) == "a.jpg@64"
    assert resize("b.jpg", 32) == "b.jpg@32"
    assert ran == ["a.jpg", "b.jpg"]
    assert {op.op_id for op in store.list_operations()} == {"resize-a.jpg-64", "resize-b.jpg-32"}


def test_op_id_callable(store_url: str, store: Store) -> None:
    """op_id=callable names the operation with whatever the callable returns."""
    ran: list[str] = []

    @resumable(op_id=lambda path, **kw: f"thumb:{path.lower()}", store=store_url)
    def thumb(path: str, quality: int = 80) -> str:
        ran.append(path)
        return path

    assert thumb.op_id_for("A.JPG") == "thumb:a.jpg"
    assert thumb("A.JPG") == "A.JPG"
    assert thumb("a.jpg", quality=10) == "A.JPG"  # the same operation: the stored result
    assert ran == ["A.JPG"]
    assert [op.op_id for op in store.list_operations()] == ["thumb:a.jpg"]


def test_op_id_format_naming_a_missing_argument_is_a_value_error() -> None:
    """A format string naming no argument of the function raises ValueError, never runs it."""
    ran: list[str] = []
    with pytest.raises(ValueError, match="nope"):

        @resumable(op_id="job-{nope}")
        def job(path: str) -> None:
            ran.append(path)

        job("a")
    assert ran == []


# --- 7. retries -----------------------------------------------------------------------------


def test_retry_int_retries_and_stores_one_result() -> None:
    """retry=3 retries a flaky function until it succeeds, and stores one result."""
    ran: list[int] = []

    @resumable(retry=3)
    def flaky(x: int) -> int:
        ran.append(x)
        if len(ran) < 3:
            raise Flaky("not yet")
        return x * 2

    assert flaky(5) == 10
    assert ran == [5, 5, 5]
    assert flaky(5) == 10
    assert ran == [5, 5, 5]
    op_id = flaky.op_id_for(5)
    op = default_store().load_operation(op_id)
    assert op is not None
    assert op.state is ProcessState.COMPLETED
    assert op.attempts == 3
    assert len(default_store().load_results(op_id, "")) == 1


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_retry_int_waits_and_stops_by_attempt_number(
    asynchronous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retry=3: backoff 0.1 s then 0.2 s (plus up to 0.1 s jitter), three runs, then the error."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # tenacity's sync sleep
    real_sleep = asyncio.sleep

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", no_wait)  # tenacity's async sleep
    ran: list[int] = []

    def body(x: int) -> int:
        ran.append(x)
        raise Flaky(f"run {len(ran)}")

    async def abody(x: int) -> int:
        return body(x)

    broken = resumable(retry=3)(abody if asynchronous else body)
    with pytest.raises(Flaky, match="run 3"):
        asyncio.run(broken(4)) if asynchronous else broken(4)
    assert ran == [4, 4, 4]
    assert len(slept) == 2
    assert 0.1 <= slept[0] <= 0.2
    assert 0.2 <= slept[1] <= 0.3


@pytest.mark.parametrize(
    "retry",
    [2, QUICK, tenacity.Retrying(stop=stop_after_attempt(2))],
    ids=["int", "dict", "Retrying"],
)
def test_final_failure_reraises_the_functions_own_exception(retry: Any) -> None:
    """After the last retry the function's own exception propagates, not tenacity.RetryError."""
    ran: list[int] = []

    @resumable(retry=retry)
    def broken(x: int) -> int:
        ran.append(x)
        raise Flaky(f"broken {x}")

    with pytest.raises(Flaky, match="broken 1"):
        broken(1)
    assert ran == [1, 1]
    op = default_store().load_operation(broken.op_id_for(1))
    assert op is not None
    assert op.state is ProcessState.FAILED
    assert "broken 1" in (op.error or "")
    assert not broken.is_done(1)


@pytest.mark.parametrize(
    "retry",
    [QUICK, tenacity.Retrying(stop=stop_after_attempt(2))],
    ids=["dict", "Retrying"],
)
def test_retry_dict_and_retrying_recover_a_flaky_function(retry: Any) -> None:
    """retry={...} and retry=tenacity.Retrying(...) retry a function that fails once."""
    ran: list[int] = []

    @resumable(retry=retry)
    def once(x: int) -> int:
        ran.append(x)
        if len(ran) == 1:
            raise Flaky("first")
        return x + 1

    assert once(1) == 2
    assert once(1) == 2
    assert ran == [1, 1]


@pytest.mark.parametrize(
    "retry",
    [
        QUICK,
        tenacity.Retrying(stop=stop_after_attempt(2)),
        tenacity.AsyncRetrying(stop=stop_after_attempt(2)),
    ],
    ids=["dict", "Retrying", "AsyncRetrying"],
)
def test_retry_on_an_async_function(retry: Any) -> None:
    """retry= works on async def: a flaky coroutine is retried, a broken one re-raises its error."""
    ran: list[str] = []

    @resumable(retry=retry)
    async def once(x: int) -> int:
        ran.append(f"once {x}")
        await asyncio.sleep(0)
        if ran.count(f"once {x}") == 1:
            raise Flaky("first")
        return x + 1

    @resumable(retry=retry)
    async def broken(x: int) -> int:
        ran.append(f"broken {x}")
        await asyncio.sleep(0)
        raise Flaky("always")

    assert asyncio.run(once(1)) == 2
    assert asyncio.run(once(1)) == 2
    with pytest.raises(Flaky, match="always"):
        asyncio.run(broken(1))
    assert ran == ["once 1", "once 1", "broken 1", "broken 1"]


# --- 8. max_attempts ----------------------------------------------------------------------------


def test_max_attempts_counts_killed_runs_and_reset_clears_it(tmp_path: Path) -> None:
    """max_attempts=2: two SIGKILLed runs, then 'failed for good' without a call; reset re-runs."""
    for run in (1, 2):
        proc = run_worker(tmp_path, "doomed")
        assert proc.returncode == -signal.SIGKILL, f"run {run}: {proc.stderr}"
        assert logged(tmp_path) == ["doomed 4"] * run

    third = worker_json(tmp_path, "doomed", "--survive")
    assert "failed for good" in third["error"]
    assert "result" not in third
    assert logged(tmp_path) == ["doomed 4"] * 2

    fourth = worker_json(tmp_path, "doomed", "--survive", "--reset")
    assert fourth == {"reset": True, "result": 8}
    assert logged(tmp_path) == ["doomed 4"] * 3

    fifth = worker_json(tmp_path, "doomed")  # would kill itself if it ran
    assert fifth == {"result": 8}
    assert len(logged(tmp_path)) == 3


def test_max_attempts_counts_failed_calls() -> None:
    """max_attempts=2: after two failed calls the third says 'failed for good', runs nothing."""
    ran: list[int] = []

    @resumable(max_attempts=2)
    def broken(x: int) -> int:
        ran.append(x)
        raise Flaky("no")

    for _ in range(2):
        with pytest.raises(Flaky):
            broken(1)
    with pytest.raises(ResumableError, match="failed for good"):
        broken(1)
    assert ran == [1, 1]
    assert broken.reset(1) is True
    with pytest.raises(Flaky):
        broken(1)
    assert ran == [1, 1, 1]


def test_retries_stop_at_max_attempts() -> None:
    """retry= within one call stops at max_attempts: the function runs max_attempts times."""
    ran: list[int] = []

    @resumable(retry={"stop": stop_after_attempt(5), "wait": wait_none()}, max_attempts=2)
    def broken(x: int) -> int:
        ran.append(x)
        raise Flaky("no")

    with pytest.raises(ResumableError, match="max_attempts=2") as info:
        broken(1)
    assert ran == [1, 1]
    assert "after 2 attempts" in str(info.value)
    op = default_store().load_operation(broken.op_id_for(1))
    assert op is not None
    assert op.attempts == 2
    with pytest.raises(ResumableError, match="failed for good"):
        broken(1)
    assert ran == [1, 1]


# --- 9. code changes --------------------------------------------------------------------------


def _code_changed(caplog: pytest.LogCaptureFixture) -> bool:
    return any(getattr(r, "event", "") == "resumable.call.code_changed" for r in caplog.records)


def test_code_change_warn_logs_and_returns_stored_result(caplog: pytest.LogCaptureFixture) -> None:
    """on_code_change="warn" (default): a changed body logs code_changed and reuses the result."""
    caplog.set_level(logging.WARNING, logger="resumable")
    ran: list[str] = []

    @resumable(op_id="job-{x}")
    def old(x: int) -> int:
        ran.append("old")
        return x + 1

    @resumable(op_id="job-{x}")
    def new(x: int) -> int:
        ran.append("new")
        return x * 10

    assert old(3) == 4
    assert not _code_changed(caplog)
    assert new(3) == 4
    assert ran == ["old"]
    assert _code_changed(caplog)


def test_code_change_rerun_runs_the_new_code(caplog: pytest.LogCaptureFixture) -> None:
    """on_code_change="rerun": a changed body runs again, and its result is then reused."""
    caplog.set_level(logging.WARNING, logger="resumable")
    ran: list[str] = []

    @resumable(op_id="job-{x}")
    def old(x: int) -> int:
        ran.append("old")
        return x + 1

    @resumable(op_id="job-{x}", on_code_change="rerun")
    def new(x: int) -> int:
        ran.append("new")
        return x * 10

    assert old(3) == 4
    assert new(3) == 30
    assert new(3) == 30
    assert ran == ["old", "new"]


def test_code_change_error_raises() -> None:
    """on_code_change="error": a changed body raises ResumableError and does not run."""
    ran: list[str] = []

    @resumable(op_id="job-{x}")
    def old(x: int) -> int:
        ran.append("old")
        return x + 1

    @resumable(op_id="job-{x}", on_code_change="error")
    def new(x: int) -> int:
        ran.append("new")
        return x * 10

    assert old(3) == 4
    with pytest.raises(ResumableError, match="changed"):
        new(3)
    assert ran == ["old"]


def test_same_version_reuses_result_across_code_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """version= pins the code: a changed body with the same version reuses the result quietly."""
    caplog.set_level(logging.WARNING, logger="resumable")
    ran: list[str] = []

    @resumable(op_id="job-{x}", version=1)
    def old(x: int) -> str:
        ran.append("old")
        return "old"

    @resumable(op_id="job-{x}", version=1, on_code_change="error")
    def new(x: int) -> str:
        ran.append("new")
        return "new"

    assert old(1) == "old"
    assert new(1) == "old"
    assert ran == ["old"]
    assert not _code_changed(caplog)


def test_new_version_reruns() -> None:
    """Changing version= invalidates the stored result: the call runs again."""
    ran: list[str] = []

    @resumable(op_id="job-{x}", version="2026-01")
    def old(x: int) -> str:
        ran.append("old")
        return "old"

    @resumable(op_id="job-{x}", version="2026-02")
    def new(x: int) -> str:
        ran.append("new")
        return "new"

    assert old(1) == "old"
    assert new(1) == "new"
    assert new(1) == "new"
    assert ran == ["old", "new"]


# --- 10. pickling and process pools ---------------------------------------------------------


def test_module_level_functions_pickle_by_reference() -> None:
    """A decorated module-level function or method pickles to the very same object."""
    for fn in (decorator_worker.square, decorator_worker.asquare, decorator_worker.doomed):
        assert pickle.loads(pickle.dumps(fn)) is fn


def test_local_function_pickling_error_says_why() -> None:
    """A decorated function defined inside a function refuses to pickle, saying why."""

    @resumable
    def local(x: int) -> int:
        return x

    with pytest.raises(pickle.PicklingError, match="module level"):
        pickle.dumps(local)


def test_works_in_a_process_pool(tmp_path: Path) -> None:
    """Calls made in a ProcessPoolExecutor are stored; later calls anywhere skip them."""
    context = multiprocessing.get_context("spawn")
    square = decorator_worker.square
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        assert list(pool.map(square, [1, 2, 3], timeout=TIMEOUT)) == [1, 4, 9]
        assert sorted(logged(tmp_path)) == ["square 1", "square 2", "square 3"]
        assert list(pool.map(square, [3, 2, 1], timeout=TIMEOUT)) == [9, 4, 1]
    assert len(logged(tmp_path)) == 3
    assert [square(x) for x in (1, 2, 3, 4)] == [1, 4, 9, 16]
    assert sorted(logged(tmp_path)) == ["square 1", "square 2", "square 3", "square 4"]


# --- 11. bad options at decoration time ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"retry": "x"}, TypeError),
        ({"retry": 0}, ValueError),
        ({"on_code_change": "sometimes"}, ValueError),
        ({"ignore": ["nope"]}, ValueError),
        ({"max_attempts": 0}, ValueError),
        ({"op_id": 42}, TypeError),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v.__name__,
)
def test_bad_options_fail_at_decoration(options: dict[str, Any], error: type[Exception]) -> None:
    """A bad option raises at decoration time, naming the option."""
    name = next(iter(options))
    with pytest.raises(error, match=name):

        @resumable(**options)
        def job(path: str) -> None: ...


@pytest.mark.parametrize(
    "target", [42, "job", None, object()], ids=["int", "str", "None", "object"]
)
def test_decorating_a_non_callable_is_a_type_error(target: Any) -> None:
    """@resumable on something that is not a function raises TypeError."""
    with pytest.raises(TypeError):
        resumable()(target)
    if target is not None:  # resumable(None) is the same as resumable()
        with pytest.raises(TypeError):
            resumable(target)


# --- 12. a hit neither locks nor writes ---------------------------------------------------------


def test_finished_call_rerun_writes_nothing(store_url: str, store: Store) -> None:
    """Re-calling a finished function leaves its operation record and checkpoints unchanged."""

    @resumable(store=store_url)
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    op_id = double.op_id_for(4)
    before = store.load_operation(op_id)
    checkpoints = list(store.iter_checkpoints(op_id))
    assert before is not None
    assert before.state is ProcessState.COMPLETED

    assert double(4) == 8

    after = store.load_operation(op_id)
    assert after == before
    assert after is not None
    assert after.updated == before.updated
    assert list(store.iter_checkpoints(op_id)) == checkpoints


def test_finished_call_does_not_take_the_lock(store_url: str, store: Store) -> None:
    """A finished call returns its result even while someone else holds its operation's lock."""
    ran: list[int] = []

    @resumable(store=store_url, lock=False)  # raise, not wait, where the lock is needed
    def double(x: int) -> int:
        ran.append(x)
        return 2 * x

    op_id = double.op_id_for(4)
    lock = store.lock(op_id)
    lock.acquire()
    try:
        with pytest.raises(OperationLocked):
            double(4)  # not finished yet: it needs the lock
    finally:
        lock.release()
    assert double(4) == 8
    lock = store.lock(op_id)
    lock.acquire()
    try:
        assert double(4) == 8
    finally:
        lock.release()
    assert ran == [4]


def test_open_store_sees_what_the_call_stored(tmp_path: Path) -> None:
    """A fresh open_store(url) lists the operation op_id_for names, COMPLETED."""
    url = url_for("sqlite", tmp_path)

    @resumable(store=url)
    def hello(name: str) -> str:
        return f"hello {name}"

    assert hello("you") == "hello you"
    fresh = open_store(url)
    try:
        ops = list(fresh.list_operations())
    finally:
        fresh.close()
    assert [(op.op_id, op.state) for op in ops] == [
        (hello.op_id_for("you"), ProcessState.COMPLETED)
    ]
