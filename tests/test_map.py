"""``cp.map``: results in input order, only unfinished items re-run, failures set aside, and
completions batched; real worker processes (map_worker.py) are killed and run again.

Every wait is bounded: the kill test synchronises with the worker through its START log; the
random kill delays come from a seeded generator.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from conftest import url_for

from resumable import (
    ProcessState,
    ResumableError,
    SerializationError,
    Store,
    checkpointed,
    open_store,
)
from resumable.keys import digest_value
from resumable.stores import resolve_store

WORKER = Path(__file__).parent / "workers" / "map_worker.py"
TIMEOUT = 30.0


class Calls:
    """A thread-safe record of which items a function was called with, and which returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started: Counter[Any] = Counter()
        self.returned: set[Any] = set()

    def start(self, x: Any) -> None:
        with self._lock:
            self.started[x] += 1

    def done(self, x: Any) -> None:
        with self._lock:
            self.returned.add(x)


def recorded(store: Store, op_id: str, number: int = 0) -> set[str]:
    """The item keys (after ``map<n>:``) that have a stored result, failures excluded."""
    prefix = f"map{number}:"
    return {
        k[len(prefix) :]
        for k, rec in store.load_results(op_id, prefix).items()
        if rec.serializer != "!error"
    }


def key_of(item: Any) -> str:
    """An item's key text under the default key: ``d`` and the digest of the item."""
    return "d" + digest_value(item)


def items_of(keys: Iterable[str], items: Iterable[Any]) -> set[Any]:
    """The items of ``items`` whose default keys are ``keys``; a key of no item fails."""
    by_key = {key_of(x): x for x in items}
    stray = set(keys) - by_key.keys()
    assert not stray, f"records of no item of the input: {sorted(stray)[:5]}"
    return {by_key[k] for k in keys}


# --- module-level functions: a process pool pickles them -----------------------------------


def square(x: int) -> int:
    return x * x


def identity(x: Any) -> Any:
    return x


class Unpicklable(Exception):
    """An exception that holds a lock, so it cannot be pickled back from a worker."""

    def __init__(self, x: int) -> None:
        super().__init__(f"item {x}")
        self.lock = threading.Lock()


class NeedsTwoArgs(Exception):
    """Pickles, but cannot be unpickled.

    Its own ``__reduce__`` rebuilds it with one argument where ``__init__`` wants two. (An
    exception relying on the default reduction would not do: importing ``distributed``, as
    test_dask does, installs a reducer that rebuilds any exception.)
    """

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (NeedsTwoArgs, (str(self),))


def fails_oddly(x: int) -> int:
    if x == 3:
        raise Unpicklable(x)
    if x == 5:
        raise NeedsTwoArgs(x, 1)
    if x == 7:
        raise KeyError(x)
    return x


def exits(x: int) -> int:
    if x == 2:
        os._exit(1)
    return x


# --- 1. order -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "file", "memory"])
def test_results_come_back_in_input_order_from_threads(kind: str, tmp_path: Path) -> None:
    """Items that finish out of order still come back in input order, all recorded."""
    url = url_for(kind, tmp_path)

    def uneven(x: int) -> int:
        time.sleep((x * 7 % 5) * 0.0005)
        return x * x

    with checkpointed("order", store=url) as cp:
        out = cp.map(uneven, range(400), workers=8)
    assert out == [x * x for x in range(400)]
    assert items_of(recorded(resolve_store(url), "order"), range(400)) == set(range(400))
    assert resolve_store(url).load_operation("order").state is ProcessState.COMPLETED


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_results_come_back_in_input_order_from_processes(kind: str, tmp_path: Path) -> None:
    """A ProcessPoolExecutor works too (with retries), and is left open for its owner."""
    url = url_for(kind, tmp_path)
    with ProcessPoolExecutor(2) as pool:
        with checkpointed("procs", store=url) as cp:
            out = cp.map(square, range(300), executor=pool, retry=2)
        assert pool.submit(square, 3).result() == 9  # not shut down by cp.map
    assert out == [x * x for x in range(300)]
    assert items_of(recorded(resolve_store(url), "procs"), range(300)) == set(range(300))


def test_an_empty_input_gives_an_empty_list(store_url: str) -> None:
    """No items: no call, an empty result, a completed operation."""
    with checkpointed("empty", store=store_url) as cp:
        assert cp.map(square, []) == []
    assert resolve_store(store_url).load_operation("empty").state is ProcessState.COMPLETED


# --- 2. a failure, then a re-run ------------------------------------------------------------


def test_rerun_after_a_failure_runs_only_unfinished_items(store_url: str, store: Store) -> None:
    """Items that returned before the failure are recorded and never run again."""
    broken = True
    first, second = Calls(), Calls()

    def fn(calls: Calls) -> Callable[[int], int]:
        def run(x: int) -> int:
            calls.start(x)
            if x == 250 and broken:
                raise ValueError("boom at 250")
            time.sleep(0.0002)
            calls.done(x)
            return 3 * x

        return run

    with (
        pytest.raises(ValueError, match="boom at 250"),
        checkpointed("crashy", store=store_url) as cp,
    ):
        cp.map(fn(first), range(400), workers=4)
    done = items_of(recorded(store, "crashy"), range(400))
    assert done == first.returned  # every item that returned, and only those
    assert 0 < len(done) < 400
    assert 250 not in done
    assert store.load_operation("crashy").state is ProcessState.FAILED

    broken = False
    with checkpointed("crashy", store=store_url) as cp:
        out = cp.map(fn(second), range(400), workers=4)
    assert out == [3 * x for x in range(400)]
    assert set(second.started) == set(range(400)) - done
    assert set(second.started.values()) == {1}


def test_several_maps_in_one_block_resume_each_in_turn(store: Store, store_url: str) -> None:
    """Each map of a block has its own records; a re-run skips the first, resumes the second."""
    broken = True
    calls = Calls()

    def second(x: int) -> int:
        calls.start(x)
        if x == 40 and broken:
            raise RuntimeError("second map broke")
        return x + 1000

    with (
        pytest.raises(RuntimeError, match="second map broke"),
        checkpointed("two", store=store_url) as cp,
    ):
        a = cp.map(square, range(50))
        cp.map(second, range(50), workers=2)
    assert a == [x * x for x in range(50)]
    done = items_of(recorded(store, "two", 1), range(50))
    broken, calls.started = False, Counter()
    with checkpointed("two", store=store_url) as cp:
        a = cp.map(lambda x: pytest.fail(f"the first map ran item {x} again"), range(50))
        b = cp.map(second, range(50), workers=2)
    assert a == [x * x for x in range(50)]
    assert b == [x + 1000 for x in range(50)]
    assert set(calls.started) == set(range(50)) - done


def test_ctrl_c_during_a_map_keeps_what_finished(store_url: str, store: Store) -> None:
    """SIGINT in the main thread mid-map: finished items are flushed, the run is PAUSED."""
    main = threading.main_thread().ident
    assert main is not None
    first, second = Calls(), Calls()

    def fn(calls: Calls, interrupt: bool) -> Callable[[int], int]:
        def run(x: int) -> int:
            calls.start(x)
            if x == 600 and interrupt:
                signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.0002)
            calls.done(x)
            return -x

        return run

    with pytest.raises(KeyboardInterrupt), checkpointed("ctrl-c", store=store_url) as cp:
        cp.map(fn(first, True), range(2000), workers=4)
    done = items_of(recorded(store, "ctrl-c"), range(2000))
    assert done  # what finished before the interrupt was flushed on the way out
    assert done <= first.returned
    assert store.load_operation("ctrl-c").state is ProcessState.PAUSED
    with checkpointed("ctrl-c", store=store_url) as cp:
        out = cp.map(fn(second, False), range(2000), workers=4)
    assert out == [-x for x in range(2000)]
    assert set(second.started) == set(range(2000)) - done


# --- 3. on_error="skip" ---------------------------------------------------------------------


def test_skip_sets_failures_aside_until_they_succeed(store_url: str, store: Store) -> None:
    """Failed items go to cp.failed and FAIL the block; later runs retry only them."""
    bad = {3, 17}
    calls = Calls()

    def fn(x: int) -> int:
        calls.start(x)
        if x in bad:
            raise KeyError(x)
        return -x

    def run() -> tuple[list[Any], Any]:
        calls.started = Counter()
        with checkpointed("skip", store=store_url) as cp:
            out = cp.map(fn, range(40), on_error="skip", workers=3)
        return out, cp

    out, cp = run()
    assert cp.failed == {3, 17}
    assert isinstance(out[3], KeyError) and isinstance(out[17], KeyError)
    assert [out[i] for i in range(40) if i not in bad] == [-i for i in range(40) if i not in bad]
    assert set(calls.started) == set(range(40))
    op = store.load_operation("skip")
    assert op.state is ProcessState.FAILED and "3" in (op.error or "")

    out, cp = run()  # still broken: only the two run, and fail again
    assert set(calls.started) == {3, 17}
    assert cp.failed == {3, 17}
    assert store.load_operation("skip").state is ProcessState.FAILED

    bad = set()
    out, cp = run()  # fixed: they succeed
    assert set(calls.started) == {3, 17}
    assert out == [-x for x in range(40)] and cp.failed == set()
    assert store.load_operation("skip").state is ProcessState.COMPLETED

    out, cp = run()  # completed: nothing runs
    assert not calls.started and cp.completed_before
    assert out == [-x for x in range(40)]


def test_failures_from_processes_come_back_picklable() -> None:
    """An exception that cannot travel back becomes a RuntimeError carrying its repr."""
    with ProcessPoolExecutor(2) as pool, checkpointed("odd") as cp:
        out = cp.map(fails_oddly, range(10), executor=pool, on_error="skip")
    assert cp.failed == {3, 5, 7}
    assert isinstance(out[3], RuntimeError) and "Unpicklable('item 3')" in str(out[3])
    assert isinstance(out[5], RuntimeError) and "NeedsTwoArgs" in str(out[5])
    assert isinstance(out[7], KeyError) and out[7].args == (7,)
    assert "fails_oddly" in str(out[7].__cause__)  # the worker's traceback
    assert [out[i] for i in (0, 1, 2, 4, 6, 8, 9)] == [0, 1, 2, 4, 6, 8, 9]


def test_an_item_that_cannot_be_sent_is_set_aside_alone() -> None:
    """A chunk that fails to pickle is split: only the item at fault is set aside."""

    class Local:  # digested by its type and attributes; a local class does not pickle
        def __init__(self) -> None:
            self.n = 11

    odd = Local()
    items: list[Any] = list(range(30))
    items[11] = odd
    with ProcessPoolExecutor(2) as pool, checkpointed("unsendable") as cp:
        out = cp.map(identity, items, executor=pool, on_error="skip")
    assert cp.failed == {odd}
    assert isinstance(out[11], Exception)
    assert [out[i] for i in range(30) if i != 11] == [i for i in range(30) if i != 11]


def test_a_result_that_cannot_be_stored_fails_its_item() -> None:
    """A result no serializer can write is that item's failure, named in the error."""

    def fn(x: int) -> Any:
        return (y for y in range(x)) if x == 2 else x

    with checkpointed("gen") as cp:
        out = cp.map(fn, range(5), on_error="skip")
    assert cp.failed == {2}
    assert isinstance(out[2], SerializationError) and "item 2" in str(out[2])
    with pytest.raises(SerializationError), checkpointed("gen2") as cp:
        cp.map(fn, range(5))


def test_a_broken_process_pool_stops_the_map_even_when_skipping() -> None:
    """A worker process that dies breaks the pool: that is raised, not set aside."""
    with (
        pytest.raises(BrokenProcessPool),
        ProcessPoolExecutor(2) as pool,
        checkpointed("broken") as cp,
    ):
        cp.map(exits, range(10), executor=pool, on_error="skip")


# --- 4. a completed block -----------------------------------------------------------------


def test_a_completed_block_returns_stored_results_without_calling(store_url: str) -> None:
    """Re-entering a completed block returns the results; a map added later is refused."""
    with checkpointed("done", store=store_url) as cp:
        first = cp.map(lambda x: {"x": x}, range(100))
    with checkpointed("done", store=store_url) as cp:
        again = cp.map(lambda x: pytest.fail("called in a completed block"), range(100))
        assert cp.completed_before
        with pytest.raises(ResumableError, match="reset"):
            cp.map(lambda x: x, range(3))
    assert again == first == [{"x": x} for x in range(100)]


# --- 5. item keys --------------------------------------------------------------------------


def letters(calls: Calls, broken: Callable[[], bool]) -> Callable[[str], str]:
    """A map function: upper-cases a letter; fails at "c" while ``broken()``."""

    def fn(x: str) -> str:
        calls.start(x)
        if x == "c" and broken():
            raise ValueError("broken at c")
        return x.upper()

    return fn


def test_a_rerun_over_reordered_grown_input_returns_each_items_own_result(
    store_url: str, store: Store
) -> None:
    """The default key is the item's digest: stopped at "c" of a-d, a re-run over d,c,b,a,e
    returns each letter's own result and runs only the letters without one."""
    broken, calls = True, Calls()
    fn = letters(calls, lambda: broken)
    with pytest.raises(ValueError, match="broken"), checkpointed("moved", store=store_url) as cp:
        cp.map(fn, list("abcd"), workers=1)
    done = items_of(recorded(store, "moved"), "abcd")
    assert {"a", "b"} <= done and "c" not in done  # one thread: a and b ran before c

    broken, calls.started = False, Counter()
    with checkpointed("moved", store=store_url) as cp:
        assert cp.map(fn, list("dcbae"), workers=1) == ["D", "C", "B", "A", "E"]
    assert set(calls.started) == set("abcde") - done
    assert set(calls.started.values()) == {1}
    with checkpointed("moved", store=store_url) as cp:  # completed: found by item, no call
        assert cp.map(fn, list("edcba")) == ["E", "D", "C", "B", "A"]
    assert set(calls.started.values()) == {1}


def test_a_killed_map_rerun_over_shuffled_grown_input_runs_only_the_missing_items(
    tmp_path: Path,
) -> None:
    """SIGKILL mid-map over 0..199; a re-run over 0..299 shuffled returns x*x for each item
    in its new place, and starts exactly the items without a record, once each."""
    url = url_for("sqlite", tmp_path)
    store = open_store(url)
    args = ("--store", url, "--op", "moved", "--workers", "2")
    first = Run(tmp_path, "first", *args, "--n", "200", "--cost", "0.01")
    first.kill_when(lambda: bool(recorded(store, "moved")), "a recorded result")
    done = items_of(recorded(store, "moved"), range(200))
    assert 0 < len(done) < 200, "the kill did not land mid-map"

    second = Run(tmp_path, "second", *args, "--n", "300", "--shuffle", "3")
    result = second.finish()
    items = list(range(300))
    random.Random(3).shuffle(items)
    assert result["results"] == [x * x for x in items]
    assert sorted(second.starts()) == sorted(set(range(300)) - done)


def test_a_repeated_item_runs_once_and_fills_every_slot(store_url: str, store: Store) -> None:
    """Equal items share their digest: one call, one record, the result in every slot."""
    calls = Calls()

    def fn(x: int) -> list[int]:
        calls.start(x)
        return [x, x]

    items = [1, 1, 2, 1, 3, 2]
    with checkpointed("repeated", store=store_url) as cp:
        assert cp.map(fn, items, workers=3) == [[x, x] for x in items]
    assert calls.started == Counter({1: 1, 2: 1, 3: 1})
    assert len(recorded(store, "repeated")) == 3
    assert items_of(recorded(store, "repeated"), items) == {1, 2, 3}
    with checkpointed("repeated", store=store_url) as cp:  # completed: every slot is filled
        assert cp.map(fn, items) == [[x, x] for x in items]
    assert sum(calls.started.values()) == 3


def test_a_repeated_item_set_aside_fails_in_every_slot_and_reruns_once(store_url: str) -> None:
    """on_error="skip": a repeated item that fails is one failure, in all its slots; the
    next run runs it once."""
    bad, calls = True, Calls()

    def fn(x: int) -> int:
        calls.start(x)
        if x == 5 and bad:
            raise KeyError(x)
        return -x

    items = [5, 1, 5, 2, 5]
    with checkpointed("repeated-skip", store=store_url) as cp:
        out = cp.map(fn, items, on_error="skip", workers=2)
    assert cp.failed == {5}
    assert isinstance(out[0], KeyError) and out[2] is out[0] and out[4] is out[0]
    assert (out[1], out[3]) == (-1, -2)
    assert calls.started == Counter({5: 1, 1: 1, 2: 1})

    bad, calls.started = False, Counter()
    with checkpointed("repeated-skip", store=store_url) as cp:
        assert cp.map(fn, items, on_error="skip", workers=2) == [-x for x in items]
    assert calls.started == Counter({5: 1}) and cp.failed == set()


def test_an_item_that_cannot_be_digested_is_refused_naming_key(store: Store) -> None:
    """No digest for an item: TypeError at the call naming the item and key=; nothing runs,
    and key= is the way out."""
    calls = Calls()
    rows = [{"id": 1}, {"id": 2, "conn": threading.Lock()}]
    with checkpointed("undigestable", store=store) as cp:
        with pytest.raises(TypeError, match=r"item 1 cannot be digested") as info:
            cp.map(calls.start, rows)
        message = str(info.value)
        assert "items[1]['conn'] = " in message
        assert "key=lambda item: item.id" in message and 'key="index"' in message
        assert cp.map(lambda r: r["id"] * 10, rows, key=lambda r: r["id"]) == [10, 20]
    assert not calls.started
    assert recorded(store, "undigestable") == {"i1", "i2"}  # map 0: the refused call ran none


def test_index_keys_name_items_by_position(store_url: str, store: Store) -> None:
    """key="index": records under the index, as every map stored them before keys were
    digests; a reordered re-run gets the stored results by position."""
    broken, calls = True, Calls()
    fn = letters(calls, lambda: broken)
    with pytest.raises(ValueError, match="broken"), checkpointed("by-index", store=store_url) as cp:
        cp.map(fn, list("abcd"), key="index", workers=1)
    names = recorded(store, "by-index")
    assert {"0", "1"} <= names <= {"0", "1", "3"}

    broken, calls.started = False, Counter()
    new = list("dcba")
    with checkpointed("by-index", store=store_url) as cp:
        out = cp.map(fn, new, key="index", workers=1)
    old = ["A", "B", "C", "D"]
    assert out == [old[i] if str(i) in names else new[i].upper() for i in range(4)]
    assert out[:2] == ["A", "B"]  # by position: d and c get a's and b's results
    assert set(calls.started) == {new[i] for i in range(4) if str(i) not in names}


def test_keys_follow_items_when_the_input_is_reordered(store_url: str, store: Store) -> None:
    """Results found by key come back right when a re-run gets the items shuffled."""
    names = [f"n{i}" for i in range(60)]
    broken = True
    calls = Calls()

    def fn(name: str) -> str:
        calls.start(name)
        if name == "n30" and broken:
            raise ValueError(name)
        return name.upper()

    with pytest.raises(ValueError, match="n30"), checkpointed("keyed", store=store_url) as cp:
        cp.map(fn, names, key=str, workers=2)
    done = {k[1:] for k in recorded(store, "keyed")}  # "s" + the name
    assert done and "n30" not in done
    broken, calls.started = False, Counter()
    shuffled = random.Random(7).sample(names, len(names))
    with checkpointed("keyed", store=store_url) as cp:
        out = cp.map(fn, shuffled, key=str, workers=2)
    assert out == [n.upper() for n in shuffled]
    assert set(calls.started) == set(names) - done
    shuffled = random.Random(8).sample(names, len(names))
    with checkpointed("keyed", store=store_url) as cp:  # completed: by key, no call
        assert cp.map(fn, shuffled, key=str) == [n.upper() for n in shuffled]


def test_key_values_of_any_digestible_type(store_url: str) -> None:
    """int, str and tuple keys name items; cp.failed reports the key values."""
    rows = [{"id": i, "tag": ("t", i % 3)} for i in range(12)]

    def fn(row: dict[str, Any]) -> int:
        if row["id"] == 4:
            raise ValueError("row 4")
        return int(row["id"]) * 10

    with checkpointed("ints", store=store_url) as cp:
        out = cp.map(fn, rows, key=lambda r: r["id"], on_error="skip")
    assert cp.failed == {4} and out[5] == 50
    with checkpointed("tuples", store=store_url) as cp:
        cp.map(fn, rows, key=lambda r: (r["tag"], r["id"]), on_error="skip")
    assert cp.failed == {(("t", 1), 4)}
    with checkpointed("lists", store=store_url) as cp:  # unhashable: its key text stands in
        cp.map(fn, rows, key=lambda r: [r["id"]], on_error="skip")
    assert len(cp.failed) == 1 and next(iter(cp.failed)).startswith("d")


def test_duplicate_or_undigestable_keys_are_refused_before_anything_runs() -> None:
    """Two items with one key: ValueError; a key that cannot be digested: TypeError."""
    calls = Calls()
    with checkpointed("bad-keys") as cp:
        with pytest.raises(ValueError, match="items 0 and 2 have the same key 'a'"):
            cp.map(calls.start, ["a", "b", "a"], key=str)
        with pytest.raises(TypeError, match="key of item 0"):
            cp.map(calls.start, [1, 2], key=lambda x: object())
    assert not calls.started


# --- 6. retries -----------------------------------------------------------------------------


def test_retry_reruns_a_flaky_item_and_records_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """retry=3: an item that fails twice then succeeds is called 3 times, recorded once."""
    store = open_store(url_for("sqlite", tmp_path))
    written: list[str] = []
    put = store.put_results

    def counting(results: Any) -> None:
        written.extend(r.key for r in results)
        put(results)

    monkeypatch.setattr(store, "put_results", counting)
    attempts = Counter[int]()

    def flaky(x: int) -> int:
        attempts[x] += 1
        if x == 5 and attempts[x] < 3:
            raise ConnectionError("try again")
        return x

    with checkpointed("retry", store=store) as cp:
        assert cp.map(flaky, range(10), retry=3, workers=2) == list(range(10))
    assert attempts[5] == 3 and set(attempts.values()) == {1, 3}
    assert sorted(written) == sorted(f"map0:{key_of(i)}" for i in range(10))


# --- 7. bad arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fn": 3}, TypeError, "fn must be callable"),
        ({"items": 5}, TypeError, "needs an iterable"),
        ({"on_error": "ignore"}, ValueError, "on_error must be 'raise' or 'skip'"),
        ({"executor": object()}, TypeError, "concurrent.futures.Executor"),
        ({"workers": 0}, ValueError, "at least 1"),
        ({"workers": "2"}, TypeError, "whole number"),
        ({"workers": True}, TypeError, "whole number"),
        ({"workers": 2, "executor": "a pool"}, ValueError, "not both"),
        ({"key": "name"}, TypeError, "function of the item"),
        ({"key": "Index"}, TypeError, '"index"'),
        ({"key": 0}, TypeError, "function of the item"),
        ({"retry": "x"}, TypeError, "retry must be"),
        ({"retry": 0}, ValueError, "at least 1"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(
    kwargs: dict[str, Any], error: type[Exception], match: str, store: Store
) -> None:
    """Each bad argument is a clear TypeError/ValueError, before any item runs."""
    calls = Calls()
    args = {"fn": calls.start, "items": [1, 2, 3], **kwargs}
    fn, items = args.pop("fn"), args.pop("items")
    with ThreadPoolExecutor(1) as pool, checkpointed("bad", store=store) as cp:
        if args.get("executor") == "a pool":
            args["executor"] = pool
        with pytest.raises(error, match=match):
            cp.map(fn, items, **args)
    assert not calls.started
    assert not store.load_results("bad", "map")


def test_map_outside_a_block_or_inside_a_loop_body_is_refused() -> None:
    """cp.map needs an active block, and refuses a cp.iterate body (use a nested block)."""
    with checkpointed("where") as cp:
        for x in cp.iterate(range(2)):
            with pytest.raises(RuntimeError, match="nested"):
                cp.map(square, [x])
            with checkpointed() as inner:
                assert inner.map(square, [x, x + 1]) == [x * x, (x + 1) ** 2]
        assert cp.map(square, [4]) == [16]  # after the loop: fine
    with pytest.raises(RuntimeError, match="only available inside"):
        cp.map(square, [1])


# --- 8. group commit ------------------------------------------------------------------------


def group_sizes(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of results in each ``put_results`` call ``store`` gets from now on."""
    sizes: list[int] = []
    put = store.put_results

    def counting(results: Any) -> None:
        sizes.append(len(results))
        put(results)

    monkeypatch.setattr(store, "put_results", counting)
    return sizes


def test_completions_are_written_in_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 tiny items take far fewer than 10,000 store writes."""
    store = open_store(url_for("sqlite", tmp_path))
    sizes = group_sizes(store, monkeypatch)
    with checkpointed("group", store=store) as cp:
        assert cp.map(identity, range(10_000)) == list(range(10_000))
    assert sum(sizes) == 10_000
    assert len(sizes) < 100
    assert items_of(recorded(store, "group"), range(10_000)) == set(range(10_000))


def test_large_results_are_written_in_smaller_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results of 1 MiB each: a group holds at most 16 MiB of them, not thousands."""
    store = open_store(url_for("sqlite", tmp_path))
    sizes = group_sizes(store, monkeypatch)
    with checkpointed("large", store=store) as cp:
        out = cp.map(lambda x: bytes([x]) * (1 << 20), range(40), workers=2)
    assert [len(b) for b in out] == [1 << 20] * 40
    assert sum(sizes) == 40 and max(sizes) <= 17


# --- 9. real processes, killed --------------------------------------------------------------


class Run:
    """One run of map_worker.py in its own process group."""

    def __init__(self, tmp_path: Path, name: str, *args: str) -> None:
        self.log = tmp_path / f"{name}.log"
        self.err = tmp_path / f"{name}.err"
        with self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), "--log", str(self.log), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )

    def starts(self) -> list[int]:
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        return [int(line.split()[1]) for line in text.splitlines() if line.startswith("START ")]

    def kill_after(self, started: int, delay: float) -> None:
        """SIGKILL the whole group once ``started`` items have started, ``delay`` s later."""
        deadline = time.monotonic() + TIMEOUT
        while len(self.starts()) < started:
            assert self.proc.poll() is None, f"the worker ended before the kill: {self.stderr()}"
            assert time.monotonic() < deadline, "the worker never started enough items"
            time.sleep(0.002)
        time.sleep(delay)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill_when(self, ready: Callable[[], bool], what: str) -> None:
        """SIGKILL the whole group as soon as ``ready()`` holds."""
        deadline = time.monotonic() + TIMEOUT
        while not ready():
            assert self.proc.poll() is None, f"the worker ended before {what}: {self.stderr()}"
            assert time.monotonic() < deadline, f"the worker never reached {what}"
            time.sleep(0.002)
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def finish(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=TIMEOUT)
        assert self.proc.returncode == 0, self.stderr()
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")


@pytest.mark.parametrize("kind", ["sqlite", "file"])
def test_sigkill_never_reruns_a_recorded_item(kind: str, tmp_path: Path) -> None:
    """Killed 3 times mid-map: recorded items never start again; the results are complete."""
    url, n = url_for(kind, tmp_path), 300
    args = ("--store", url, "--op", "killed", "--n", str(n), "--cost", "0.01", "--workers", "2")
    rng = random.Random(f"map-kill-{kind}")
    store = open_store(url)
    runs: list[Run] = []
    at_kill: list[set[int]] = []
    for i, started in enumerate((40, 60, 80)):
        run = Run(tmp_path, f"run{i}", *args)
        runs.append(run)
        run.kill_after(started, rng.uniform(0.0, 0.15))
        at_kill.append(items_of(recorded(store, "killed"), range(n)))
    last = Run(tmp_path, "last", *args)
    runs.append(last)
    result = last.finish()
    assert result["results"] == [x * x for x in range(n)]
    assert any(at_kill), "no kill found a recorded result: the test proved nothing"
    for i, done in enumerate(at_kill):
        for later in runs[i + 1 :]:
            again = done & set(later.starts())
            assert not again, f"items recorded at kill {i + 1} started again: {sorted(again)}"
    assert len(last.starts()) < n  # the kills did not lose everything
    assert store.load_operation("killed").state is ProcessState.COMPLETED


def test_a_quarantined_item_is_retried_alone_across_processes(tmp_path: Path) -> None:
    """Item 7 fails while a marker exists; later runs start only item 7, then nothing."""
    url, marker = url_for("sqlite", tmp_path), tmp_path / "broken"
    marker.touch()
    args = ("--store", url, "--op", "quarantine", "--n", "20", "--fail-item", "7")
    args += ("--marker", str(marker))
    store = open_store(url)

    first = Run(tmp_path, "q1", *args)
    result = first.finish()
    assert sorted(first.starts()) == list(range(20))
    assert result["failed"] == [7] and "broken" in result["results"][7]["error"]
    assert store.load_operation("quarantine").state is ProcessState.FAILED

    second = Run(tmp_path, "q2", *args)
    assert second.finish()["failed"] == [7]
    assert second.starts() == [7]

    marker.unlink()
    third = Run(tmp_path, "q3", *args)
    result = third.finish()
    assert third.starts() == [7]
    assert result["failed"] == [] and result["results"] == [x * x for x in range(20)]
    assert store.load_operation("quarantine").state is ProcessState.COMPLETED

    fourth = Run(tmp_path, "q4", *args)
    result = fourth.finish()
    assert fourth.starts() == []
    assert result["completed_before"] and result["results"] == [x * x for x in range(20)]


def test_exceptions_pickle_in_the_module_that_defines_them() -> None:
    """The helper exceptions behave as the process tests assume."""
    with pytest.raises(TypeError):
        pickle.dumps(Unpicklable(1))
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(NeedsTwoArgs(1, 2)))


def test_a_map_notes_its_items_in_the_record_for_the_listing(store_url: str, store: Store) -> None:
    """A map with work notes how many items it records (repeated ones once) in the operation
    record; its records then count 297 of 300 done, 3 set aside, and 300 after a rerun."""
    from resumable._map_records import Items, count_items, map_totals

    def flaky(i: int) -> int:
        if i % 100 == 7:
            raise ValueError(i)
        return i

    with checkpointed("m", store=store_url) as cp:
        cp.map(flaky, [*range(300), 5, 5], on_error="skip")  # 5 three times: one record
        cp.map(abs, [])  # an empty map has nothing to show
    op = store.load_operation("m")
    assert op is not None and map_totals(op) == {0: 300}
    assert count_items(store, "m", {0: 300}, completed=False) == Items(297, 3, 300)
    with checkpointed("m", store=store_url) as cp:
        cp.map(abs, [*range(300), 5, 5])  # the next run retries the 3
    op = store.load_operation("m")
    assert op is not None and op.state is ProcessState.COMPLETED and map_totals(op) == {0: 300}
    assert count_items(store, "m", {0: 300}, completed=False) == Items(300, 0, 300)
