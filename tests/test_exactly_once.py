"""Exactly-once results (issue 15, DESIGN §3): ``cp.lines``, input identity, nested blocks keyed
by the outer item, ``cp.open``, ``cp.before_commit``, and the state a failed block leaves.

The subprocess torture tests of the same contract are in test_torture_exactly_once.py.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import url_for

from resumable import (
    CheckpointCorrupt,
    InputChanged,
    ProcessState,
    checkpointed,
    open_store,
)

OP = "job"


class Boom(Exception):
    pass


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite store, for the tests whose subject does not depend on the store."""
    return url_for("sqlite", tmp_path)


@pytest.fixture(params=["sqlite", "file", "postgres"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each persistent store (Postgres when a server answers, see conftest)."""
    return url_for(request.param, tmp_path)


def stored(url: str, op: str = OP) -> tuple[ProcessState, int]:
    """The operation's state and the position of its newest checkpoint (0 without one)."""
    store = open_store(url)
    try:
        record = store.load_operation(op)
        assert record is not None
        ckpt = store.latest_checkpoint(op)
        return record.state, 0 if ckpt is None else ckpt.position
    finally:
        store.close()


# --- 3. cp.lines ----------------------------------------------------------------------------


def read_lines(
    url: str,
    path: Path,
    *,
    stop_at: int | None = None,
    encoding: str = "utf-8",
    op: str = OP,
    **options: Any,
) -> list[str]:
    """The lines one run's body saw; the body raises Boom on the ``stop_at``-th line it sees."""
    seen: list[str] = []
    with checkpointed(op, store=url, **options) as cp:
        for line in cp.lines(path, encoding=encoding):
            if len(seen) == stop_at:
                raise Boom(line)
            seen.append(line)
    return seen


def stop_then_resume(url: str, path: Path, stop_at: int, **options: Any) -> list[str]:
    """Run until the body raises at line ``stop_at``; the lines the re-run then sees."""
    with pytest.raises(Boom):
        read_lines(url, path, stop_at=stop_at, **options)
    return read_lines(url, path, **options)


def test_lines_resumes_a_two_million_line_file_at_the_right_line(url: str, tmp_path: Path) -> None:
    """Stopped at line 1,999,000 of 2,000,000, the re-run's first line is exactly that one."""
    n, stop = 2_000_000, 1_999_000
    path = tmp_path / "big.txt"
    path.write_text("".join(f"row {i}\n" for i in range(n)))
    first = 0
    with pytest.raises(Boom), checkpointed(OP, store=url) as cp:
        for line in cp.lines(path):
            if first == stop:
                raise Boom(line)
            first += 1
    assert first == stop
    assert stored(url) == (ProcessState.FAILED, stop)
    with checkpointed(OP, store=url) as cp:
        assert cp.position == stop
        rest = list(cp.lines(path))
    assert rest == [f"row {i}\n" for i in range(stop, n)]
    assert cp.position == n


def test_lines_seeks_to_the_committed_offset_instead_of_counting_lines(
    url: str, tmp_path: Path
) -> None:
    """The re-run seeks by byte offset: lines merged before the offset (same bytes, one
    newline fewer, last finished line unchanged) do not shift the line it starts at."""
    lines = [f"{i:03d}\n" for i in range(100)]
    path = tmp_path / "in.txt"
    path.write_text("".join(lines))
    with pytest.raises(Boom):
        read_lines(url, path, stop_at=60)
    with path.open("r+b") as f:
        f.write(b"000x")  # "000\n001\n" -> "000x001\n": the same length, one line fewer
    assert read_lines(url, path) == lines[60:]


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("utf-8", "日本語の行 {i}、表示とソース、한국어 {i} 😀\n"),
        ("shift_jis", "表示ソース能 {i} 日本語の行\n"),  # 表, ソ and 能 end in 0x5C
        ("utf-8", "crlf line {i}\r\n"),
    ],
    ids=["utf-8-cjk", "shift_jis", "crlf"],
)
def test_lines_resumes_multibyte_and_crlf_files_at_the_right_line(
    url: str, tmp_path: Path, encoding: str, text: str
) -> None:
    """Multi-byte encodings and "\\r\\n" files resume at the right line ("\\r\\n" read as "\\n")."""
    raw = [text.format(i=i) for i in range(50)]
    path = tmp_path / "in.txt"
    path.write_bytes("".join(raw).encode(encoding))
    want = [line.replace("\r\n", "\n") for line in raw]
    assert stop_then_resume(url, path, 17, encoding=encoding) == want[17:]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("commit", ["loop", "body"])
def test_lines_resumes_at_an_offset_the_loop_committed(
    url: str, tmp_path: Path, ending: str, commit: str
) -> None:
    """The offsets a loop commits while every line read has finished (its own commits,
    cp.commit() in a body) are where the re-run starts, for each kind of line end.

    A Counter in the state makes the failing run keep its last commit instead of writing
    one at the exception (whose offset is found another way), so the re-run starts exactly
    at an offset the loop's commit took.
    """
    raw = [f"line {i}{ending}" for i in range(40)]
    path = tmp_path / "in.txt"
    path.write_bytes("".join(raw).encode())
    seen: list[str] = []
    state = {"counts": collections.Counter()}
    every = {"every": 7} if commit == "loop" else {"every_seconds": None}
    with pytest.raises(Boom), checkpointed(OP, store=url, state=state, **every) as cp:
        for n, line in enumerate(cp.lines(path)):
            if n == 30:
                raise Boom
            cp.state.counts[line[-1]] += 1
            seen.append(line)
            if commit == "body" and n % 5 == 4:
                cp.commit()
    committed = 28 if commit == "loop" else 30
    assert stored(url) == (ProcessState.FAILED, committed)
    with checkpointed(OP, store=url, state=state) as cp:
        rest = list(cp.lines(path))
    assert rest == [f"line {i}\n" for i in range(committed, 40)]


def test_lines_yields_a_last_line_without_newline_and_resumes_at_it(
    url: str, tmp_path: Path
) -> None:
    """A last line without "\\n" is yielded as it is, including when a re-run starts at it."""
    path = tmp_path / "in.txt"
    path.write_text("a\nb\nlast")
    assert read_lines(url, path, op="whole") == ["a\n", "b\n", "last"]
    assert stop_then_resume(url, path, 2) == ["last"]


def test_csv_reader_over_lines_resumes_at_the_right_row(url: str, tmp_path: Path) -> None:
    """csv.reader(cp.lines(path)) with quoted fields resumes at the first unfinished row."""
    path = tmp_path / "in.csv"
    rows = [["id", "name", "note"]] + [
        [str(i), f"Smith, J{i}", f'said "hi {i}", left'] for i in range(20)
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    assert '"Smith, J0","said ""hi 0"", left"' in path.read_text(encoding="utf-8")

    def run(stop_at: int | None = None) -> list[list[str]]:
        seen: list[list[str]] = []
        with checkpointed(OP, store=url) as cp:
            for row in csv.reader(cp.lines(path)):
                if len(seen) == stop_at:
                    raise Boom(row)
                seen.append(row)
        return seen

    with pytest.raises(Boom):
        run(stop_at=8)
    assert run() == rows[8:]


def test_lines_edited_before_the_offset_raises_input_changed(url: str, tmp_path: Path) -> None:
    """A last finished line edited, or the file cut short, raises InputChanged before any body."""
    lines = [f"row {i}\n" for i in range(10)]
    path = tmp_path / "in.txt"
    path.write_text("".join(lines))
    with pytest.raises(Boom):
        read_lines(url, path, stop_at=5)

    path.write_text("".join([*lines[:4], "row X\n", *lines[5:]]))  # the last finished line
    bodies: list[str] = []
    with pytest.raises(InputChanged) as info, checkpointed(OP, store=url) as cp:
        bodies.extend(cp.lines(path))
    assert bodies == []
    assert (info.value.op_id, info.value.position) == (OP, 5)

    path.write_text("".join(lines[:3]))  # shorter than the committed offset
    with pytest.raises(InputChanged), checkpointed(OP, store=url) as cp:
        bodies.extend(cp.lines(path))
    assert bodies == []

    path.write_text("".join(lines) + "row 10\n")  # restored, and a line appended: fine
    assert read_lines(url, path) == [*lines[5:], "row 10\n"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "UTF-16-LE"])
def test_lines_refuses_encodings_whose_newline_is_not_one_byte(
    url: str, tmp_path: Path, encoding: str
) -> None:
    """utf-16 and utf-32 raise ValueError naming the encoding, at the cp.lines call."""
    path = tmp_path / "in.txt"
    path.write_text("a\nb\n", encoding=encoding)
    with checkpointed(OP, store=url) as cp:
        with pytest.raises(ValueError) as info:
            cp.lines(path, encoding=encoding)
        assert cp.position == 0
    names = {encoding.lower(), codecs.lookup(encoding).name}
    assert any(name in str(info.value).lower() for name in names), str(info.value)


# --- 4. input identity ----------------------------------------------------------------------


def loop(
    url: str,
    items: Iterable[str],
    *,
    fail_at: str | None = None,
    numbered: bool = False,
    **options: Any,
) -> list[str]:
    """The items whose body ran in this run; the body raises Boom at ``fail_at``."""
    ran: list[str] = []
    with checkpointed(OP, store=url, **options) as cp:
        loop_items = (x for _, x in cp.enumerate(items)) if numbered else cp.iterate(items)
        for x in loop_items:
            if x == fail_at:
                raise Boom(x)
            ran.append(x)
    return ran


ITEMS = [f"item-{i}" for i in range(10)]

#: How the first run commits before it fails: only on its way out (the default every_seconds
#: lets a quick loop make no commit of its own), after every other item (the last loop commit
#: is one item before the position the way out commits), or after every item.
COMMITS = {
    "exit-commit": {},
    "every-2-items": {"every": 2, "every_seconds": None},
    "every-item": {"every": 1, "every_seconds": None},
}


@pytest.fixture(params=list(COMMITS))
def commits(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The options of the run that fails half way."""
    return COMMITS[request.param]


def half_done(url: str, **options: Any) -> None:
    """Items 0-4 finished and committed, item 5 failed."""
    with pytest.raises(Boom):
        loop(url, ITEMS, fail_at="item-5", **options)
    assert stored(url) == (ProcessState.FAILED, 5)


def test_item_inserted_before_the_position_raises_input_changed_at_the_call(
    url: str, commits: dict[str, Any]
) -> None:
    """An item inserted before the position: InputChanged from cp.iterate(...), no body runs,
    nothing committed; the unchanged list then resumes where it was."""
    half_done(url, **commits)
    called = False
    with pytest.raises(InputChanged) as info, checkpointed(OP, store=url) as cp:
        cp.iterate(["new", *ITEMS])
        called = True
    assert not called  # raised by the call, not by the first next()
    assert (info.value.op_id, info.value.position) == (OP, 5)
    assert stored(url) == (ProcessState.FAILED, 5)
    assert loop(url, ITEMS) == ITEMS[5:]


@pytest.mark.parametrize(
    "changed",
    [
        ["new", *ITEMS],
        [*ITEMS[:2], "new", *ITEMS[2:]],
        ITEMS[1:],
        [*ITEMS[:4], *ITEMS[5:]],
        [*ITEMS[:4], "item-4-edited", *ITEMS[5:]],
    ],
    ids=["inserted-first", "inserted-middle", "removed-first", "removed-last-done", "edited"],
)
@pytest.mark.parametrize("how", ["iterate", "enumerate", "generator"])
def test_input_changed_before_the_position_runs_no_body(
    url: str, changed: list[str], how: str, commits: dict[str, Any]
) -> None:
    """Inserted, removed or edited items before the position raise InputChanged before any
    body runs (cp.iterate, cp.enumerate, and an iterable that is not a Sequence)."""
    half_done(url, **commits)
    items: Iterable[str] = iter(changed) if how == "generator" else changed
    ran: list[str] = []
    with pytest.raises(InputChanged):
        ran = loop(url, items, numbered=how == "enumerate")
    assert ran == []
    assert stored(url) == (ProcessState.FAILED, 5)
    assert loop(url, changed, fresh=True) == changed  # fresh=True starts over


@pytest.mark.parametrize("how", ["iterate", "enumerate", "generator"])
def test_items_appended_after_the_position_run_and_only_they(
    url: str, how: str, commits: dict[str, Any]
) -> None:
    """Items appended to the input run, with the unfinished ones; the finished ones do not."""
    half_done(url, **commits)
    grown = [*ITEMS, "item-10", "item-11"]
    items: Iterable[str] = iter(grown) if how == "generator" else grown
    assert loop(url, items, numbered=how == "enumerate") == grown[5:]
    assert stored(url) == (ProcessState.COMPLETED, 12)


def test_removed_item_raises_then_fresh_starts_over(url: str, commits: dict[str, Any]) -> None:
    """Removing an item before the position raises InputChanged; fresh=True then runs all."""
    half_done(url, **commits)
    shorter = ITEMS[:2] + ITEMS[3:]
    with pytest.raises(InputChanged):
        loop(url, shorter)
    assert loop(url, shorter, fresh=True) == shorter
    assert stored(url) == (ProcessState.COMPLETED, 9)


# --- nested blocks --------------------------------------------------------------------------


def outer_inner(url: str, outer: list[str], fail: tuple[str, int] | None = None) -> list[Any]:
    """An outer loop over names, each running a nested block over range(6)."""
    seen: list[Any] = []
    with checkpointed("outer", store=url) as cp:
        for name in cp.iterate(outer):
            with checkpointed() as inner:
                for j in inner.iterate(range(6)):
                    if (name, j) == fail:
                        raise Boom(name, j)
                    seen.append((name, j))
    return seen


def test_nested_block_is_keyed_by_the_outer_item_not_its_index(url: str) -> None:
    """An item inserted at the front of the outer list does not take over the inner progress
    of the item that was there: it starts at 0, and the old item resumes where it stopped."""
    with pytest.raises(Boom):
        outer_inner(url, ["a", "b"], fail=("a", 3))
    assert outer_inner(url, ["new", "a", "b"]) == [
        *[("new", j) for j in range(6)],
        *[("a", j) for j in range(3, 6)],
        *[("b", j) for j in range(6)],
    ]


# --- 5. cp.open -----------------------------------------------------------------------------


def line(x: int) -> str:
    return f"line {x} ✓\n"


def text(items: Iterable[int]) -> str:
    return "".join(map(line, items))


def write_items(
    url: str,
    path: Path | str,
    n: int = 10,
    *,
    mode: str = "a",
    fail_at: int | None = None,
    every: int | None = 2,
    op: str = OP,
) -> tuple[int, str]:
    """One run writing ``line(x)`` per item through cp.open; the body raises after writing
    (and flushing) ``fail_at``'s line. The position and the file as cp.open returned them."""
    with checkpointed(op, store=url, every=every, every_seconds=None) as cp:
        binary = "b" in mode
        f = cp.open(path, mode) if binary else cp.open(path, mode, encoding="utf-8")
        f.flush()
        at_open = Path(path).read_bytes().decode()
        position = cp.position
        for x in cp.iterate(range(n)):
            f.write(line(x).encode() if binary else line(x))
            if x == fail_at:
                f.flush()
                raise Boom(x)
    assert f.closed
    return position, at_open


@pytest.mark.parametrize("mode", ["a", "at", "w", "wt", "ab", "wb"])
def test_open_cuts_the_file_back_to_the_committed_length(
    any_url: str, tmp_path: Path, mode: str
) -> None:
    """A failed run's lines after the last commit are cut off on re-entry; the re-run then
    writes each line once, in order (text and binary modes, every store)."""
    path = tmp_path / "out.txt"
    with pytest.raises(Boom):
        write_items(any_url, path, mode=mode, fail_at=5)
    assert path.read_text(encoding="utf-8") == text(range(6))  # flushed and closed by the block
    assert stored(any_url) == (ProcessState.FAILED, 4)  # the last commit: no new one
    position, at_open = write_items(any_url, path, mode=mode)
    assert (position, at_open) == (4, text(range(4)))
    assert path.read_text(encoding="utf-8") == text(range(10))


def test_open_first_run_w_starts_empty_and_a_keeps_what_is_there(
    any_url: str, tmp_path: Path
) -> None:
    """First run: "w" empties the file, "a" keeps its content (committed at once, so a re-run
    keeps it too)."""
    for mode in ("w", "a"):
        path = tmp_path / f"{mode}.txt"
        path.write_text("before\n")
        with pytest.raises(Boom):
            write_items(any_url, path, mode=mode, fail_at=0, op=mode)
        kept = "before\n" if mode == "a" else ""
        assert path.read_text(encoding="utf-8") == kept + line(0)
        assert write_items(any_url, path, mode=mode, op=mode) == (0, kept)
        assert path.read_text(encoding="utf-8") == kept + text(range(10))


def test_open_with_a_shorter_or_missing_file_raises_checkpoint_corrupt(
    any_url: str, tmp_path: Path
) -> None:
    """A file shorter than its committed length, or gone, raises CheckpointCorrupt naming it."""
    path = tmp_path / "out.txt"
    with pytest.raises(Boom):
        write_items(any_url, path, fail_at=5)
    committed = len(text(range(4)).encode())
    with path.open("r+b") as f:
        f.truncate(committed - 1)
    with pytest.raises(CheckpointCorrupt, match=re.escape(str(path))):
        write_items(any_url, path)
    path.unlink()
    with pytest.raises(CheckpointCorrupt, match=re.escape(str(path))):
        write_items(any_url, path)


def test_open_as_a_context_manager_inside_the_block(url: str, tmp_path: Path) -> None:
    """`with cp.open(...) as f:` closes the file before the block ends, and still resumes."""
    path = tmp_path / "out.txt"

    def run(fail_at: int | None = None) -> None:
        with (
            checkpointed(OP, store=url, every=3, every_seconds=None) as cp,
            cp.open(path, encoding="utf-8") as f,
        ):
            for x in cp.iterate(range(10)):
                f.write(line(x))
                if x == fail_at:
                    raise Boom(x)
        assert f.closed

    with pytest.raises(Boom):
        run(fail_at=7)
    run()
    assert path.read_text(encoding="utf-8") == text(range(10))


def test_open_on_a_completed_operation_appends_without_truncating(
    any_url: str, tmp_path: Path
) -> None:
    """Re-entering a COMPLETED operation opens its file for appending, cutting nothing."""
    path = tmp_path / "out.txt"
    write_items(any_url, path)
    with path.open("a") as by_hand:
        by_hand.write("added by hand\n")
    with checkpointed(OP, store=any_url) as cp:
        assert cp.completed_before
        f = cp.open(path)
        f.write("after\n")
    assert f.closed
    assert path.read_text(encoding="utf-8") == text(range(10)) + "added by hand\nafter\n"


def test_open_keys_each_path_as_given(url: str, tmp_path: Path) -> None:
    """Two files of one block, one named by a relative path, are each cut back to their own
    committed length."""
    short, long = Path("short.txt"), tmp_path / "long.txt"  # relative (cwd is tmp_path)
    at_open: list[tuple[int, int, int]] = []

    def run(fail_at: int | None = None) -> None:
        with checkpointed(OP, store=url, every=2, every_seconds=None) as cp:
            s = cp.open(short, encoding="utf-8")
            g = cp.open(long, encoding="utf-8")
            at_open.append((cp.position, short.stat().st_size, long.stat().st_size))
            for x in cp.iterate(range(10)):
                s.write(line(x))
                g.write(line(x) * 2)
                if x == fail_at:
                    raise Boom(x)

    with pytest.raises(Boom):
        run(fail_at=6)
    run()
    size = len(text(range(6)).encode())
    assert at_open == [(0, 0, 0), (6, size, 2 * size)]
    assert short.read_text(encoding="utf-8") == text(range(10))
    assert long.read_text(encoding="utf-8") == "".join(line(x) * 2 for x in range(10))


@pytest.mark.parametrize("mode", ["r", "rb", "r+", "a+", "w+", "x", "xb", "ab+", "rt"])
def test_open_refuses_other_modes(url: str, mode: str) -> None:
    """Only "a", "at", "ab", "w", "wt", "wb" are accepted; others raise ValueError."""
    with checkpointed(OP, store=url) as cp, pytest.raises(ValueError):
        cp.open("out.txt", mode)
    assert not Path("out.txt").exists()


def test_open_refused_inside_a_loop_body_and_in_a_shared_block(url: str) -> None:
    """cp.open inside a cp.iterate body: RuntimeError; in a shared block: ValueError."""
    with checkpointed(OP, store=url) as cp:
        for _ in cp.iterate(range(1)):
            with pytest.raises(RuntimeError):
                cp.open("out.txt")
    with checkpointed("shared", store=url, shared=True) as cp, pytest.raises(ValueError):
        cp.open("out.txt")
    assert not Path("out.txt").exists()


# --- 5. cp.before_commit --------------------------------------------------------------------


def test_before_commit_runs_before_every_commit(any_url: str) -> None:
    """fn() runs before the loop's commits, cp.commit() and the final commit: a buffer it
    flushes holds every item exactly once, even across a failure."""
    sink: list[int] = []

    def run(fail_at: int | None = None) -> list[int]:
        pending: list[int] = []
        calls: list[int] = []
        with checkpointed(OP, store=any_url, every=3, every_seconds=None) as cp:

            @cp.before_commit
            def flush() -> None:
                calls.append(len(pending))
                sink.extend(pending)
                pending.clear()

            assert callable(flush)
            for x in cp.iterate(range(10)):
                pending.append(x)
                if x == fail_at:
                    raise Boom(x)
        return calls

    with pytest.raises(Boom):
        run(fail_at=7)
    assert stored(any_url) == (ProcessState.FAILED, 6)  # a before_commit fn: no new commit
    assert sink == list(range(6))
    assert len(run()) >= 2
    assert sink == list(range(10))  # item 9 too: flushed by the commit after the loop

    explicit: list[str] = []
    with checkpointed("explicit", store=any_url, every_seconds=None) as cp:
        record = cp.before_commit(lambda: explicit.append("commit"))
        assert record() is None  # it returns fn itself, so it serves as a decorator
        explicit.clear()
        cp.commit()
        assert explicit == ["commit"]
    assert explicit == ["commit", "commit"]  # and the final commit


def test_before_commit_error_fails_that_commit_and_keeps_the_previous(url: str) -> None:
    """An exception in fn propagates; the checkpoint stays the one before; a re-run resumes
    from it."""
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Boom("flush failed")

    ran: list[int] = []
    with (
        pytest.raises(Boom, match="flush failed"),
        checkpointed(OP, store=url, every=2, every_seconds=None) as cp,
    ):
        cp.before_commit(flaky)
        for x in cp.iterate(range(10)):
            ran.append(x)
    assert stored(url) == (ProcessState.FAILED, 2)
    assert ran == [0, 1, 2, 3]
    assert loop_ints(url) == list(range(2, 10))

    with checkpointed("commit", store=url, every_seconds=None) as cp:
        cp.before_commit(flaky)
        calls = 1  # the next call is the second: it raises
        with pytest.raises(Boom, match="flush failed"):
            cp.commit()
    assert stored(url, "commit") == (ProcessState.COMPLETED, 0)  # the final commit went on


def loop_ints(url: str) -> list[int]:
    with checkpointed(OP, store=url) as cp:
        return list(cp.iterate(range(10)))


def test_before_commit_refuses_what_is_not_callable(url: str) -> None:
    """A fn that is not callable raises TypeError at the call."""
    with checkpointed(OP, store=url) as cp, pytest.raises(TypeError):
        cp.before_commit("flush")  # type: ignore[arg-type]


# --- 5. cp.state after a failed block -------------------------------------------------------


def mutating_run(
    url: str, state: dict[str, Any], change: Callable[[Any, int], None], exc: BaseException
) -> Any:
    """Items 0-9 applied by ``change``, committing every 3; item 4 raises ``exc`` after its
    change. The Checkpoint after the block."""
    with (
        pytest.raises(type(exc)),
        checkpointed(OP, store=url, state=state, every=3, every_seconds=None) as cp,
    ):
        for x in cp.iterate(range(10)):
            change(cp.state, x)
            if x == 4:
                raise exc
    return cp


def append(state: Any, x: int) -> None:
    state.seen.append(x)
    state.n = state.n + 1


@pytest.mark.parametrize(
    ("exc", "after"),
    [(Boom(), ProcessState.FAILED), (KeyboardInterrupt(), ProcessState.PAUSED)],
)
def test_failed_block_with_mutable_state_keeps_the_last_commit(
    any_url: str, exc: BaseException, after: ProcessState
) -> None:
    """With a list in the state, an exception writes no new checkpoint, and cp.state after the
    block holds the values of the last commit; a re-run redoes the items after it."""
    cp = mutating_run(any_url, {"seen": [], "n": 0}, append, exc)
    assert dict(cp.state) == {"seen": [0, 1, 2], "n": 3}
    assert stored(any_url) == (after, 3)
    with checkpointed(OP, store=any_url, every=3, every_seconds=None) as cp:
        assert dict(cp.state) == {"seen": [0, 1, 2], "n": 3}
        for x in cp.iterate(range(10)):
            append(cp.state, x)
    assert dict(cp.state) == {"seen": list(range(10)), "n": 10}


def test_failed_block_with_counter_dict_and_numpy_state(url: str) -> None:
    """A Counter, a dict and a numpy array changed in place: cp.state after the block holds
    the last commit's values, not the half-applied item's."""
    np = pytest.importorskip("numpy")

    def change(state: Any, x: int) -> None:
        state.counts[x % 2] += 1
        state.d[x] = str(x)
        state.arr[x % 3] += x

    state = {"counts": collections.Counter(), "d": {}, "arr": np.zeros(3, dtype=np.int64)}
    cp = mutating_run(url, state, change, Boom())
    assert cp.state.counts == collections.Counter({0: 2, 1: 1})
    assert cp.state.d == {0: "0", 1: "1", 2: "2"}
    assert cp.state.arr.tolist() == [0, 1, 2]
    assert stored(url) == (ProcessState.FAILED, 3)


def test_tuple_holding_a_list_counts_as_mutable(url: str) -> None:
    """A tuple is immutable only if what it holds is: ([],) falls back to the last commit."""
    cp = mutating_run(url, {"t": ([],)}, lambda s, x: s.t[0].append(x), Boom())
    assert cp.state.t == ([0, 1, 2],)
    assert stored(url) == (ProcessState.FAILED, 3)


def test_failed_block_with_immutable_state_commits_the_last_finished_item(url: str) -> None:
    """With only immutable values, the failing item's assignments are undone and the items
    before it are committed (position 4, not the last commit's 3)."""

    def change(state: Any, x: int) -> None:
        state.n = state.n + 1
        state.t = (*state.t, x)
        state.s = state.s + str(x)

    cp = mutating_run(url, {"n": 0, "t": (), "s": "", "none": None}, change, Boom())
    assert dict(cp.state) == {"n": 4, "t": (0, 1, 2, 3), "s": "0123", "none": None}
    assert stored(url) == (ProcessState.FAILED, 4)


def test_open_file_makes_an_immutable_state_fall_back_to_the_last_commit(
    url: str, tmp_path: Path
) -> None:
    """Immutable state plus a cp.open file: the exception exit keeps the last commit, so the
    state and the file agree."""
    path = tmp_path / "out.txt"
    with (
        pytest.raises(Boom),
        checkpointed(OP, store=url, state={"n": 0}, every=3, every_seconds=None) as cp,
    ):
        f = cp.open(path, encoding="utf-8")
        for x in cp.iterate(range(10)):
            f.write(line(x))
            cp.state.n = cp.state.n + 1
            if x == 4:
                raise Boom(x)
    assert cp.state.n == 3
    assert stored(url) == (ProcessState.FAILED, 3)
    with checkpointed(OP, store=url) as cp:
        cp.open(path, encoding="utf-8")
        assert path.read_text(encoding="utf-8") == text(range(3))


@pytest.mark.parametrize(
    ("exc", "after"),
    [(Boom("flush failed"), ProcessState.FAILED), (KeyboardInterrupt(), ProcessState.PAUSED)],
)
def test_before_commit_failing_at_the_final_commit_marks_the_operation(
    url: str, exc: BaseException, after: ProcessState
) -> None:
    """At a normal exit, a before_commit function that raises writes no checkpoint and marks
    the operation FAILED (PAUSED for Ctrl-C): not left RUNNING by a process that lives on."""
    final = False

    def flush() -> None:
        if final:
            raise exc

    with (
        pytest.raises(type(exc)),
        checkpointed(OP, store=url, state={"n": 0}, every=4, every_seconds=None) as cp,
    ):
        cp.before_commit(flush)
        for _ in cp.iterate(range(10)):
            cp.state.n += 1
        final = True
    assert stored(url) == (after, 8)
    assert cp.state.n == 8  # put back to the last commit
    assert loop_ints(url) == [8, 9]


class Row:
    """An object of the kind ORM queries yield: not plain data, and it changes between runs."""

    def __init__(self, key: int, loaded: float) -> None:
        self.key, self.loaded = key, loaded


def test_items_that_are_not_plain_data_resume_by_position(url: str) -> None:
    """A loop over objects records no identity: their attributes (a load time here) may differ
    from run to run without the input changing, which must not refuse the resume."""
    seen: list[int] = []
    with pytest.raises(Boom), checkpointed(OP, store=url, every=1) as cp:
        for row in cp.iterate([Row(k, 1.0) for k in range(6)]):
            if row.key == 3:
                raise Boom
            seen.append(row.key)
    with checkpointed(OP, store=url) as cp:
        seen.extend(row.key for row in cp.iterate([Row(k, 2.0) for k in range(6)]))
    assert seen == list(range(6))


def test_a_finished_lines_loop_before_another_is_skipped_whole(url: str, tmp_path: Path) -> None:
    """Two cp.lines loops in one block: a re-run past the first skips it whole (its offset
    recorded as its end), even with lines appended to it since, and resumes the second at
    its committed line, twice in a row."""
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("".join(f"a{i}\n" for i in range(5)))
    second.write_text("".join(f"b{i}\n" for i in range(5)))

    def job(stop: str | None, seen: list[str]) -> None:
        with checkpointed(OP, store=url, every=1) as cp:
            for x in cp.iterate(range(3)):
                seen.append(str(x))
            seen.extend(line.strip() for line in cp.lines(first))
            for line in cp.lines(second):
                if line.strip() == stop:
                    raise Boom
                seen.append(line.strip())

    runs: list[list[str]] = [[], [], []]
    for stop, seen in zip(["b2", "b4", None], runs, strict=True):
        with pytest.raises(Boom) if stop else contextlib.nullcontext():
            job(stop, seen)
        with first.open("a") as f:  # lines appended to a loop that had ended: not read
            f.write("".join(f"late{i}\n" for i in range(5)))
    assert runs == [["0", "1", "2", "a0", "a1", "a2", "a3", "a4", "b0", "b1"], ["b2", "b3"], ["b4"]]


def test_open_recreates_a_missing_empty_output_as_open_would(url: str, tmp_path: Path) -> None:
    """A file committed empty and deleted since is made again with open()'s mode bits."""
    path = tmp_path / "out.txt"
    with pytest.raises(Boom), checkpointed(OP, store=url) as cp:
        cp.open(path, "w")
        raise Boom
    path.unlink()
    with checkpointed(OP, store=url) as cp:
        cp.open(path).write("x\n")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert path.read_text() == "x\n"
