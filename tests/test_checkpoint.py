"""What a user of ``checkpointed`` notices: loops resume, state and position agree."""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import structlog

from resumable import (
    OperationLocked,
    ProcessState,
    Progress,
    ResumableError,
    checkpointed,
)
from resumable.keys import digest_value
from resumable.stores import resolve_store


class Boom(Exception):
    pass


def fold(h: str, x: object) -> str:
    return hashlib.sha256(f"{h}|{x}".encode()).hexdigest()[:16]


def run_loop(url: str, n: int, fail_at: int | None = None, **opts: Any) -> Any:
    """A loop that folds items into an order-sensitive hash; optionally fails at one item."""
    with checkpointed("job", store=url, state={"h": "", "n": 0}, **opts) as cp:
        for x in cp.iterate(range(n)):
            cp.state.n += 1
            if x == fail_at:
                raise Boom(x)
            cp.state.h = fold(cp.state.h, x)
    return cp


def expected(n: int) -> dict[str, Any]:
    h = ""
    for x in range(n):
        h = fold(h, x)
    return {"h": h, "n": n}


def test_first_run_completes_and_rerun_runs_no_body(store_url: str) -> None:
    """A finished operation re-entered runs no loop body and restores the final state."""
    cp = run_loop(store_url, 50)
    assert cp.state == expected(50)
    assert cp.position == 50
    assert not cp.completed_before
    ran = []
    with checkpointed("job", store=store_url, state={"h": "x"}) as cp2:
        ran.extend(cp2.iterate(range(50)))
    assert ran == []
    assert cp2.completed_before
    assert cp2.state == expected(50)
    assert resolve_store(store_url).load_operation("job").state is ProcessState.COMPLETED  # type: ignore[union-attr]


def test_a_death_between_final_checkpoint_and_record_is_finished_on_reentry(
    store_url: str,
) -> None:
    """A kill between the final checkpoint and the record leaves the record RUNNING.

    (The file store writes them one after the other.) Re-entering runs nothing and completes
    the record.
    """
    run_loop(store_url, 5)
    store = resolve_store(store_url)
    done = store.load_operation("job")
    assert done is not None
    store.save(done.with_changes(state=ProcessState.RUNNING))  # the record before the kill
    with checkpointed("job", store=store_url) as cp:
        assert list(cp.iterate(range(5))) == []
    assert cp.completed_before
    assert cp.state == expected(5)
    assert store.load_operation("job").state is ProcessState.COMPLETED  # type: ignore[union-attr]


def test_failure_then_rerun_gives_the_uninterrupted_answer(store_url: str) -> None:
    """An exception commits the last finished item; the re-run ends as if never interrupted."""
    with pytest.raises(Boom) as info:
        run_loop(store_url, 40, fail_at=17, every_seconds=None)
    assert info.value.args == (17,)
    store = resolve_store(store_url)
    op = store.load_operation("job")
    assert op is not None
    assert op.state is ProcessState.FAILED
    assert "Boom" in (op.error or "")
    ckpt = store.latest_checkpoint("job")
    assert ckpt is not None
    assert ckpt.position == 17
    cp = run_loop(store_url, 40)
    assert cp.resumed
    assert cp.state == expected(40)


def test_state_assigned_by_the_failing_item_is_rolled_back(store_url: str) -> None:
    """Fields the in-flight item assigned before it failed are not committed with it."""
    with pytest.raises(Boom):
        run_loop(store_url, 10, fail_at=4)
    with checkpointed("job", store=store_url) as cp:
        # n was incremented for item 4 before the failure; that increment is undone.
        assert cp.state.n == 4
        assert cp.position == 4


def test_exception_is_reraised_unchanged(store_url: str) -> None:
    """The block re-raises the very exception object the body raised."""
    err = Boom("mine")
    with pytest.raises(Boom) as info, checkpointed("e", store=store_url):
        raise err
    assert info.value is err


def test_keyboard_interrupt_pauses(store_url: str) -> None:
    """Ctrl-C commits the position and marks the operation PAUSED."""
    with pytest.raises(KeyboardInterrupt), checkpointed("k", store=store_url) as cp:
        for x in cp.iterate(range(10)):
            if x == 3:
                raise KeyboardInterrupt
    store = resolve_store(store_url)
    assert store.load_operation("k").state is ProcessState.PAUSED  # type: ignore[union-attr]
    assert store.latest_checkpoint("k").position == 3  # type: ignore[union-attr]


def test_every_n_items_commits(store_url: str) -> None:
    """every=N writes a checkpoint at least every N items."""
    seen = []
    with checkpointed("ev", store=store_url, every=5, every_seconds=None) as cp:
        for _ in cp.iterate(range(23)):
            seen.append(cp.store.latest_checkpoint("ev"))  # type: ignore[union-attr]
    positions = sorted({c.position for c in seen if c is not None})
    assert positions == [5, 10, 15, 20]


def test_every_seconds_zero_commits_every_item() -> None:
    """every_seconds=0 commits after every item."""
    with checkpointed("z", store="memory://", every_seconds=0) as cp:
        for i in cp.iterate(range(5)):
            latest = cp.store.latest_checkpoint("z")  # type: ignore[union-attr]
            assert (latest.position if latest else 0) == i


def test_break_completes_the_operation(store_url: str) -> None:
    """Leaving a loop with break ends the block normally: the operation is COMPLETED."""
    with checkpointed("b", store=store_url, state={"seen": 0}) as cp:
        for x in cp.iterate(range(100)):
            cp.state.seen += 1
            if x == 9:
                break
    assert cp.position == 10
    assert resolve_store(store_url).load_operation("b").state is ProcessState.COMPLETED  # type: ignore[union-attr]


def test_commit_inside_body_counts_the_current_item(store_url: str) -> None:
    """cp.commit() in a body commits that item as finished, even if the body fails after."""
    with pytest.raises(Boom), checkpointed("c", store=store_url, state={"n": 0}) as cp:
        for x in cp.iterate(range(10)):
            cp.state.n += 1
            if x == 6:
                cp.commit()
                raise Boom
    with checkpointed("c", store=store_url) as cp:
        assert cp.position == 7
        assert cp.state.n == 7


def test_step_runs_once_per_operation(store_url: str) -> None:
    """cp.step runs its function once; later runs return the stored result."""
    calls = []

    def load(x: int) -> list[int]:
        calls.append(x)
        return [x, x * 2]

    with pytest.raises(Boom), checkpointed("s", store=store_url) as cp:
        assert cp.step("load", load, 3) == [3, 6]
        raise Boom
    with checkpointed("s", store=store_url) as cp:
        assert cp.step("load", load, 3) == [3, 6]
    assert calls == [3]
    with checkpointed("s", store=store_url) as cp:
        assert cp.completed_before
        assert cp.step("load", load, 3) == [3, 6]
        with pytest.raises(ResumableError, match="not part of the completed"):
            cp.step("new", load, 1)
    assert calls == [3]


def test_enumerate_gives_absolute_indexes_on_resume(store_url: str) -> None:
    """cp.enumerate yields each item's index in the whole input, also after a resume."""
    with pytest.raises(Boom), checkpointed("en", store=store_url) as cp:
        for _, x in cp.enumerate("abcdef"):
            if x == "d":
                raise Boom
    with checkpointed("en", store=store_url) as cp:
        assert list(cp.enumerate("abcdef")) == [(3, "d"), (4, "e"), (5, "f")]


class CountingSeq(Sequence[int]):
    def __init__(self, n: int) -> None:
        self.n = n
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            raise AssertionError("resume must not copy the sequence")
        if not 0 <= i < self.n:
            raise IndexError(i)
        self.reads.append(i)
        return i


def test_sequence_resumes_by_index_without_reading_done_items() -> None:
    """A Sequence resumes at its position, reading of the finished items only the last.

    That one is read once, to check it is still the item the checkpoint's digest names.
    """
    with pytest.raises(Boom), checkpointed("q", store="memory://", every=1) as cp:
        for x in cp.iterate(range(1000)):
            if x == 990:
                raise Boom
    seq = CountingSeq(1000)
    with checkpointed("q", store="memory://") as cp:
        got = list(cp.iterate(seq))
    assert got == list(range(990, 1000))
    assert seq.reads == [989, *range(990, 1000)]


class Seekable:
    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.start = 0
        self.seeks: list[int] = []

    def seek(self, position: int) -> None:
        self.seeks.append(position)
        self.start = position

    def __iter__(self) -> Iterator[str]:
        return iter(self.items[self.start :])


def test_seekable_source_resumes_by_seeking() -> None:
    """An object with seek(position) is resumed by seeking, not by reading."""
    with pytest.raises(Boom), checkpointed("sk", store="memory://") as cp:
        for x in cp.iterate(Seekable(list("abcde"))):
            if x == "c":
                raise Boom
    src = Seekable(list("abcde"))
    with checkpointed("sk", store="memory://") as cp:
        assert list(cp.iterate(src)) == ["c", "d", "e"]
    assert src.seeks == [2]


def test_generator_and_file_are_fast_forwarded(store_url: str) -> None:
    """A generator or a text file resumes after the finished items (a file is not seeked)."""
    text = "".join(f"line {i}\n" for i in range(8))
    with pytest.raises(Boom), checkpointed("g", store=store_url) as cp:
        for line in cp.iterate(io.StringIO(text)):
            if line == "line 5\n":
                raise Boom
    with checkpointed("g", store=store_url) as cp:
        assert list(cp.iterate(io.StringIO(text))) == ["line 5\n", "line 6\n", "line 7\n"]
    with pytest.raises(Boom), checkpointed("g2", store=store_url) as cp:
        for x in cp.iterate(x * x for x in range(10)):
            if x == 16:
                raise Boom
    with checkpointed("g2", store=store_url) as cp:
        assert list(cp.iterate(x * x for x in range(10))) == [16, 25, 36, 49, 64, 81]


def test_two_loops_in_one_block_resume_in_order(store_url: str) -> None:
    """Sequential loops share one position: a re-run skips the first and resumes the second."""
    with pytest.raises(Boom), checkpointed("two", store=store_url) as cp:
        assert list(cp.iterate(range(3))) == [0, 1, 2]
        for x in cp.iterate("abc"):
            if x == "b":
                raise Boom
    with checkpointed("two", store=store_url) as cp:
        assert list(cp.iterate(range(3))) == []
        assert list(cp.iterate("abc")) == ["b", "c"]


def test_nested_blocks_get_stable_child_ids(store_url: str) -> None:
    """A block nested in a loop derives its id from the parent and the item, stably.

    From the item itself (its digest), not its index: the same item gets the same child
    wherever it moves in the input; outside a loop body, the position stands for the item.
    """

    def child_ids(items: list[str], op: str) -> list[str]:
        ids = []
        with checkpointed(op, store=store_url) as cp:
            for _ in cp.iterate(items):
                with checkpointed(store=store_url) as inner:
                    ids.append(inner.op_id)
                with checkpointed(store=store_url, name="extra") as inner:
                    ids.append(inner.op_id)
            with checkpointed(store=store_url) as after:
                ids.append(after.op_id)
        return ids

    tag = {x: "i" + digest_value(x, "item")[:16] for x in "abc"}
    assert child_ids(["a", "b", "c"], "parent") == [
        f"parent/{tag['a']}:0", f"parent/{tag['a']}:extra", f"parent/{tag['b']}:0",
        f"parent/{tag['b']}:extra", f"parent/{tag['c']}:0", f"parent/{tag['c']}:extra",
        "parent/3:0",
    ]  # fmt: skip
    moved = child_ids(["c", "a"], "other")
    assert moved[:4] == [f"other/{tag['c']}:0", f"other/{tag['c']}:extra",
                         f"other/{tag['a']}:0", f"other/{tag['a']}:extra"]  # fmt: skip


def test_nested_inner_loop_resumes_inside_the_outer_item(store_url: str) -> None:
    """An inner block resumes its own loop when the outer item is re-run."""
    done: list[tuple[int, int]] = []

    def job(fail: bool) -> None:
        with checkpointed("outer", store=store_url) as cp:
            for i in cp.iterate(range(3)):
                with checkpointed(store=store_url) as inner:
                    for j in inner.iterate(range(4)):
                        if fail and (i, j) == (1, 2):
                            raise Boom
                        done.append((i, j))

    with pytest.raises(Boom):
        job(fail=True)
    job(fail=False)
    assert done == [(i, j) for i in range(3) for j in range(4)]


def test_iterate_loops_cannot_nest_in_one_block() -> None:
    """A second iterate inside an iterate body of the same block is refused, clearly."""
    with checkpointed("n", store="memory://") as cp:
        for _ in cp.iterate(range(2)):
            with pytest.raises(RuntimeError, match="nested"):
                cp.iterate(range(2))


def test_fresh_discards_earlier_progress(store_url: str) -> None:
    """fresh=True starts over even after a completed run."""
    run_loop(store_url, 5)
    with checkpointed("job", store=store_url, state={"h": "", "n": 0}, fresh=True) as cp:
        assert not cp.completed_before
        assert list(cp.iterate(range(5))) == [0, 1, 2, 3, 4]
        assert cp.state.n == 0


def test_async_with(store_url: str) -> None:
    """checkpointed works as `async with` and resumes the same way."""

    async def job(fail: bool) -> Any:
        async with checkpointed("aw", store=store_url, state={"s": 0}) as cp:
            for x in cp.iterate(range(6)):
                await asyncio.sleep(0)
                if fail and x == 4:
                    raise Boom
                cp.state.s += x
        return cp.state.s

    with pytest.raises(Boom):
        asyncio.run(job(True))
    assert asyncio.run(job(False)) == 15


def test_second_block_in_same_process_is_locked_out(store_url: str) -> None:
    """While a block runs an operation, entering it again raises OperationLocked."""
    with checkpointed("l", store=store_url):
        with pytest.raises(OperationLocked, match="is being run by another"):
            checkpointed("l", store=store_url).__enter__()
        with pytest.raises(OperationLocked, match="waited"):
            checkpointed("l", store=store_url, lock=0.1).__enter__()
    with checkpointed("l", store=store_url) as cp:
        assert cp.completed_before


def test_non_dict_state_is_kept_as_is(store_url: str) -> None:
    """A state that is not a dict (a list here) is stored and restored as that object."""
    with pytest.raises(Boom), checkpointed("lst", store=store_url, state=[], every=1) as cp:
        for x in cp.iterate(range(5)):
            if x == 3:
                raise Boom
            cp.state.append(x)
    with checkpointed("lst", store=store_url, state=[]) as cp:
        assert cp.state == [0, 1, 2]


def test_initial_state_is_copied() -> None:
    """The caller's initial state object is never mutated by the loop."""
    initial = {"items": [1]}
    with checkpointed("cp", store="memory://", state=initial) as cp:
        cp.state.items.append(2)
    assert initial == {"items": [1]}


def test_state_is_readable_after_the_block() -> None:
    """cp.state keeps its final values after the block, as in the README example."""
    with checkpointed("after", store="memory://", state={"done": 0}) as cp:
        for _ in cp.iterate(range(3)):
            cp.state.done += 1
    assert cp.state.done == 3
    assert cp.state["done"] == 3
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = cp.state.missing


def test_progress_bar_starts_at_resumed_position(capsys: pytest.CaptureFixture[str]) -> None:
    """progress=True shows a tqdm bar that says where it resumed."""
    with pytest.raises(Boom), checkpointed("pb", store="memory://") as cp:
        for x in cp.iterate(range(50), progress=True):
            if x == 20:
                raise Boom
    capsys.readouterr()
    with checkpointed("pb", store="memory://") as cp:
        for _ in cp.iterate(range(50), progress=True):
            pass
    err = capsys.readouterr().err
    assert "resumed at 20" in err
    assert "50/50" in err
    assert "30 done, 20 skipped" in err


def test_progress_and_facts(store_url: str) -> None:
    """cp.progress follows the position over the known total."""
    with checkpointed("pf", store=store_url) as cp:
        assert cp.progress == 0.0
        for x in cp.iterate(range(10)):
            if x == 5:
                cp.commit()
                assert cp.progress == pytest.approx(0.6)
    assert cp.progress == 1.0
    assert cp.failed == frozenset()


def test_sigterm_handler_is_installed_and_restored() -> None:
    """Inside a block SIGTERM is handled (commit, then exit); outside, the old handler is back."""
    before = signal.getsignal(signal.SIGTERM)
    with checkpointed("sig", store="memory://"):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_events_are_logged_with_structlog(store_url: str) -> None:
    """Starting, resuming, committing and completing are structlog events with the op id."""
    with structlog.testing.capture_logs() as logs:
        with pytest.raises(Boom):
            run_loop(store_url, 5, fail_at=2)
        run_loop(store_url, 5)
    events = [(e["event"], e.get("op_id")) for e in logs]
    for name in (
        "resumable.operation.started",
        "resumable.operation.failed",
        "resumable.operation.resumed",
        "resumable.checkpoint.saved",
        "resumable.operation.completed",
    ):
        assert (name, "job") in events


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"every": 0}, ValueError),
        ({"every": -1}, ValueError),
        ({"every": 1.5}, TypeError),
        ({"every": True}, TypeError),
        ({"every_seconds": -1}, ValueError),
        ({"every_seconds": "1"}, TypeError),
        ({"lock": "yes"}, TypeError),
        ({"lock": -1}, ValueError),
        ({"fresh": 1}, TypeError),
        ({"name": ""}, TypeError),
        ({"store": 42}, TypeError),
        ({"serializer": "nope"}, ValueError),
    ],
)
def test_bad_options_fail_at_the_call(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """A bad option raises ValueError/TypeError when checkpointed() is called."""
    with pytest.raises(error):
        checkpointed("x", **kwargs)


def test_bad_store_url_fails_at_entry() -> None:
    """An unknown store URL says which ones exist."""
    with pytest.raises(ValueError, match="sqlite:///"):
        checkpointed("x", store="ftp://nope").__enter__()


def test_bad_loop_arguments_fail_at_the_call() -> None:
    """iterate/step validate their arguments before anything runs."""
    with checkpointed("x", store="memory://") as cp:
        with pytest.raises(TypeError, match="iterable"):
            cp.iterate(5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="total"):
            cp.iterate([], total=-1)
        with pytest.raises(TypeError, match="progress"):
            cp.iterate([], progress="yes")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            cp.step("s", 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="name"):
            cp.step("", print)
    with pytest.raises(RuntimeError, match="inside"):
        cp.iterate([])


def test_op_id_is_required_outside_a_parent() -> None:
    """checkpointed() without an op_id outside any parent says how to fix it."""
    with pytest.raises(ValueError, match="needs an op_id"):
        checkpointed().__enter__()


def test_a_progress_callable_counts_this_runs_items_apart_from_skipped() -> None:
    """progress= takes a callable: done, skipped and total, with a rate of this run only."""
    with pytest.raises(Boom), checkpointed("pc", store="memory://", every_seconds=0) as cp:
        for x in cp.iterate(range(100)):
            if x == 30:
                raise Boom
    seen: list[Progress] = []
    with checkpointed("pc", store="memory://") as cp:
        for _ in cp.iterate(range(100), progress=seen.append):
            time.sleep(0.002)
    last = seen[-1]
    assert (last.op_id, last.done, last.skipped, last.total) == ("pc", 70, 30, 100)
    assert last.remaining == 0 and last.eta == 0
    assert len(seen) < 40  # called about ten times a second, not per item
    middle = next(p for p in seen if p.done)
    assert middle.rate is not None and middle.eta is not None
    assert middle.eta == pytest.approx((70 - middle.done) / middle.rate)
    with pytest.raises(TypeError, match="progress must be True, False or a callable"):
        cp2 = checkpointed("pc2", store="memory://")
        with cp2:
            cp2.iterate(range(3), progress="yes")  # type: ignore[arg-type]


def test_map_progress_reports_done_and_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(Boom), checkpointed("mp", store="memory://") as cp:
        cp.map(lambda x: x, range(40), workers=2)
        raise Boom
    seen: list[Progress] = []
    with checkpointed("mp", store="memory://") as cp:
        assert cp.map(lambda x: x, range(60), workers=2, progress=seen.append) == list(range(60))
    assert (seen[-1].done, seen[-1].skipped, seen[-1].total) == (20, 40, 60)
    with checkpointed("mp2", store="memory://") as cp:
        cp.map(lambda x: x, range(30), workers=2, progress=True)
    assert "30/30" in capsys.readouterr().err


def test_logging_while_another_thread_is_still_importing_structlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partly initialized structlog (another thread mid-import) is not a crash of the item."""
    import logging
    import sys
    import types

    from resumable._log import log

    monkeypatch.setitem(sys.modules, "structlog", types.ModuleType("structlog"))
    assert log.wants(logging.DEBUG) is False  # not configured, and the stdlib logger is quiet


def test_a_final_checkpoint_whose_record_was_not_written_completes_the_operation(
    store_url: str,
) -> None:
    """Killed between the final checkpoint and the record: the next run skips and repairs it."""
    with checkpointed("lag", store=store_url, state={"n": 0}) as cp:
        for _ in cp.iterate(range(3)):
            cp.state.n += 1
    store = resolve_store(store_url)
    done = store.load_operation("lag")
    assert done is not None and done.state is ProcessState.COMPLETED
    # As the file store leaves it when the process dies between its two writes.
    store.save(done.with_changes(state=ProcessState.RUNNING))

    ran = []
    with checkpointed("lag", store=store_url, state={"n": 0}) as cp:
        assert cp.completed_before
        for x in cp.iterate(range(3)):
            ran.append(x)
    assert ran == []
    assert cp.state.n == 3
    repaired = store.load_operation("lag")
    assert repaired is not None and repaired.state is ProcessState.COMPLETED
