"""``cp.iterate``'s and ``cp.lines``'s loop: where a resumed loop starts, and when it commits.

:func:`open_loop` skips the items that earlier runs finished, after checking that the input
is still the one they counted (:class:`~resumable.errors.InputChanged` if not);
:func:`run_loop` yields the rest, marks each finished with one store of the run's position,
and commits at item boundaries as ``every=`` and ``every_seconds=`` ask, looking at the clock
about every 10 ms of loop time whatever the item rate.

Input identity: a checkpoint records, for each loop of the block (by the position it started
at), the position and digest of its last finished item (``"input"``), or for ``cp.lines`` the
offset past the last finished line and a digest of that line's bytes (``"lines"``). A re-run
checks a loop's entry before it skips: the item before the entry's position must be the one
finished there. Digests are taken when a commit is made, never per item.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import itertools
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

from ._lines import LineFile
from ._log import log
from ._progress import ProgressSpec, open_progress
from .errors import InputChanged
from .keys import digest_value

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["NOTHING", "Loop", "item_digest", "open_loop", "run_loop"]

#: How often (seconds of loop time) a loop looks at the clock, whatever its item rate.
_CHECK_INTERVAL: Final = 0.01
_MAX_CHECK_STEP: Final = 1 << 16
#: No item: the loop has not handed one out, or it cannot be known.
NOTHING: Any = object()


#: At most this many values are looked at to decide whether an item is plain data.
_DATA_BUDGET: Final = 10_000
_SCALARS: Final = frozenset(
    (str, bytes, bytearray, int, float, bool, complex, type(None), range, slice)
)


def item_digest(item: Any) -> str | None:
    """The digest that identifies ``item`` across runs, or None if it has none.

    Only plain data has one: strings, numbers, bytes, paths, dates, enums, numpy arrays and
    dataclasses, and containers of those, up to :data:`_DATA_BUDGET` values. Any other object
    (an ORM row, whose attributes reach its whole session; a file) is not walked: its loop
    records no identity, and is resumed by position alone, as before identities existed.
    """
    if type(item) not in _SCALARS and not _is_data(item, [_DATA_BUDGET]):
        return None
    try:
        return digest_value(item, "item")
    except (TypeError, ValueError, RecursionError):
        return None


def _is_data(value: Any, budget: list[int]) -> bool:
    """True if ``value`` is plain data, looking at no more values than ``budget`` allows."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    t = type(value)
    if t in _SCALARS:
        return True
    if isinstance(value, tuple | list | set | frozenset):  # namedtuples too
        parts: Iterable[Any] = value
    elif t is dict:
        parts = itertools.chain.from_iterable(value.items())
    elif isinstance(value, enum.Enum):
        parts = (value.value,)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = (getattr(value, f.name) for f in dataclasses.fields(value))
    else:
        module = t.__module__
        if module == "numpy":  # scalars, and arrays that do not hold Python objects
            return t.__name__ != "ndarray" or not value.dtype.hasobject
        return module in _DATA_MODULES
    return all(_is_data(v, budget) for v in parts)


#: Modules whose value types are plain data: dates, decimals, fractions, UUIDs, paths.
_DATA_MODULES: Final = frozenset(
    ("datetime", "decimal", "_decimal", "fractions", "uuid", "pathlib")
)


class Loop:
    """One ``cp.iterate``, ``cp.enumerate`` or ``cp.lines`` loop of a run."""

    __slots__ = ("done_item", "gen", "lines", "numbered", "source", "start")

    def __init__(self, start: int, *, numbered: bool, lines: LineFile | None) -> None:
        self.start = start  # the run's position when the loop began
        self.numbered = numbered
        self.lines = lines
        self.source: Iterator[Any] = iter(())
        self.gen: Generator[Any, None, None] | None = None
        #: An item known to be finished, and the position it finished at.
        self.done_item: tuple[int, Any] = (-1, NOTHING)

    def in_body(self) -> bool:
        """True while the loop has an item out, that is, inside the loop body."""
        return self.gen is not None and bool(getattr(self.gen, "gi_suspended", False))

    def item_out(self) -> Any:
        """The item whose body is running, or NOTHING."""
        local = self._locals()
        return NOTHING if local is None else self._unwrap(local.get("item", NOTHING))

    def item_at(self, position: int) -> Any:
        """The item that finished at ``position``, if the loop knows it; else NOTHING.

        While a body runs, run_loop's locals say: ``item`` (the item out) finishes at
        ``pos + 1``, and ``done`` (the one before it) finished at ``pos``. They are read from
        the suspended frame, so that the loop pays nothing per item for them.
        """
        if self.done_item[0] == position:
            return self.done_item[1]
        local = self._locals()
        pos = None if local is None else local.get("pos")
        if local is None or not isinstance(pos, int):
            return NOTHING
        name = "item" if position == pos + 1 else "done" if position == pos else None
        return NOTHING if name is None else self._unwrap(local.get(name, NOTHING))

    def _locals(self) -> Any:
        frame = getattr(self.gen, "gi_frame", None)
        return frame.f_locals if frame is not None and self.in_body() else None

    def _unwrap(self, item: Any) -> Any:
        return item[1] if self.numbered and item is not NOTHING else item

    def record(self, meta: dict[str, Any], position: int, item: Any, *, exact: bool) -> None:
        """Note in ``meta`` (a checkpoint's metadata) what identifies the input at ``position``.

        ``item`` is the item finished at ``position`` if the caller knows it; ``exact`` says
        that the lines read so far are exactly the finished ones (true of the loop's own
        commits, ``cp.commit()`` in a body, and a normal exit). What cannot be known is left
        as the last commit recorded it.
        """
        if position <= self.start:
            return
        if self.lines is not None:
            lines = self.lines
            offset = lines.offset_of(position, exact=exact)
            if offset is not None:  # new dicts: a checkpoint shares the old ones
                meta["lines"] = {
                    **meta.get("lines", {}),
                    str(self.start): lines.entry(position, offset),
                }
            return
        if item is NOTHING:
            item = self.item_at(position)
        digest = None if item is NOTHING else item_digest(item)
        if digest is not None:  # new dicts: a checkpoint shares the old ones
            entry = {"at": position, "digest": digest}
            meta["input"] = {**meta.get("input", {}), str(self.start): entry}

    def finish(self, meta: dict[str, Any], position: int, item: Any) -> None:
        """The loop ran out of items at ``position``: note it, for later loops' commits."""
        self.done_item = (position, item)
        self.record(meta, position, item, exact=True)
        entries, key = meta.get("lines", {}), str(self.start)
        entry = entries.get(key)
        if self.lines is not None and entry is not None and entry["at"] == position:
            # A re-run past this position skips the whole file.
            meta["lines"] = {**entries, key: {**entry, "end": True}}

    def close(self) -> None:
        """Close what the loop opened (a cp.lines file)."""
        self.gen = None
        if self.lines is not None:
            self.lines.close()


def open_loop(run: Run, iterable: Any, lines: LineFile | None, *, numbered: bool) -> Loop:
    """A loop over ``iterable`` (or the lines of ``lines``), past what earlier runs finished.

    Raises:
        InputChanged: the item before the committed position is not the one finished there.
    """
    start = run.position
    loop = Loop(start, numbered=numbered, lines=lines)
    skip = max(0, run.restored - start)
    if lines is not None:
        entries = run.restored_meta.get("lines")
        entry = entries.get(str(start)) if isinstance(entries, dict) else None
        skipped, loop.source = _skip_lines(run, lines, start, skip, entry)
    else:
        loop.source, skipped = _skip(run, iterable, start, skip)
    run.position = start + skipped
    return loop


def _changed(run: Run, what: str) -> InputChanged:
    return InputChanged(
        f"the input of {run.op_id!r} changed since an earlier run finished {run.restored:,} "
        f"item(s): {what}. Nothing ran. Give it back the input that run had, or start over "
        f"with checkpointed({run.op_id!r}, fresh=True)",
        run.op_id, run.restored,
    )  # fmt: skip


def _advance(source: Iterator[Any], n: int) -> int:
    """Consume up to ``n`` items of ``source`` at C speed; return how many there were."""
    last = deque(enumerate(islice(source, n), 1), maxlen=1)
    return last[0][0] if last else 0


def _skip(run: Run, iterable: Iterable[Any], start: int, skip: int) -> tuple[Iterator[Any], int]:
    """An iterator past the first ``skip`` items, and how many it skipped.

    A ``Sequence`` is resumed by index (O(1)); an object with ``seek(position)`` (other than
    a file, whose ``seek`` takes bytes) by seeking, unchecked; anything else is fast-forwarded
    at C speed without running the loop body. The item that the newest checkpoint's digest
    names, if it lies in what is skipped, must still be there.
    """
    if skip <= 0:
        return iter(iterable), 0
    entries = run.restored_meta.get("input")
    seen = entries.get(str(start)) if isinstance(entries, dict) else None
    at = seen.get("at") if isinstance(seen, dict) else None
    index = at - 1 - start if isinstance(at, int) and start < at <= start + skip else None
    found: Any = NOTHING
    if isinstance(iterable, Sequence):
        n = len(iterable)
        skipped = min(skip, n)
        if index is not None and index < n:
            found = iterable[index]
        source: Iterator[Any] = map(iterable.__getitem__, range(skipped, n))
    elif callable(getattr(iterable, "seek", None)) and not isinstance(iterable, io.IOBase):
        iterable.seek(skip)  # type: ignore[attr-defined]
        return iter(iterable), skip
    else:
        source = iter(iterable)
        skipped = 0
        if index is not None:
            skipped = _advance(source, index)
            found = next(source, NOTHING)
            skipped += found is not NOTHING
        skipped += _advance(source, skip - skipped)
    if index is not None:
        assert isinstance(seen, dict)  # noqa: S101 - index is set only from a dict
        if found is NOTHING:
            raise _changed(run, f"it has {skipped:,} item(s) now, fewer than that")
        if item_digest(found) != seen.get("digest"):
            raise _changed(
                run, f"item {index:,} of this loop is not the one finished there (an item was "
                "inserted or removed before it, or edited)",
            )  # fmt: skip
    if skipped < skip:
        _short_input(run, skip, skipped, "items")
    return source, skipped


def _short_input(run: Run, committed: int, found: int, what: str) -> None:
    log.warning(
        "resumable.iterate.short_input", op_id=run.op_id, committed_position=committed,
        items=found, note=f"the input has fewer {what} than an earlier run finished",
    )  # fmt: skip


def _skip_lines(
    run: Run, lines: LineFile, start: int, skip: int, entry: Any
) -> tuple[int, Iterator[str]]:
    """How many lines of ``lines`` earlier runs finished, and the lines after them.

    From the offset the newest checkpoint recorded, after checking that the line before it
    is still the one finished there; without one (a checkpoint from before the loop had
    recorded one), by counting line ends from the last known offset.
    """
    base_pos, base_off = start, 0
    if skip > 0 and isinstance(entry, dict) and isinstance(entry.get("at"), int):
        at = entry["at"]
        if start < at <= start + skip:
            if not lines.matches(entry):
                raise _changed(
                    run, f"{lines.path} is not the file it read: the line that ended at byte "
                    f"{entry.get('offset')!r} is not there any more",
                )  # fmt: skip
            base_pos, base_off = at, int(entry["offset"])
            if entry.get("end") and at < start + skip:
                lines.base_pos, lines.base_off = base_pos, base_off  # where its lines end
                return at - start, iter(())  # the loop had finished; later loops went on
    rest = start + skip - base_pos
    found, offset = lines.skip(base_off, rest) if rest > 0 else (0, base_off)
    if found < rest:
        _short_input(run, skip, base_pos - start + found, "lines")
    return base_pos + found - start, lines.lines_from(base_pos + found, offset)


def run_loop(
    run: Run, loop: Loop, total: int | None, progress: ProgressSpec
) -> Generator[Any, None, None]:
    """The items of ``loop`` that earlier runs of ``run`` did not finish."""
    pos = run.position
    run.total = None if total is None else loop.start + total
    reporter = open_progress(progress, run.op_id, skipped=pos, total=run.total)
    source = loop.source
    numbered = loop.numbered
    if numbered:
        source = zip(itertools.count(pos), source, strict=False)
    every, every_seconds = run.spec.every, run.spec.every_seconds
    check_at, check_pos, check_time = pos + 1, pos, time.monotonic()
    run.abandoned = False
    item: Any = NOTHING
    try:
        for item in source:
            try:
                yield item
            except GeneratorExit:
                run.abandoned = True  # closed mid-item: `break`, or an exception
                # After a `break` the item counts as finished, at pos + 1.
                loop.done_item = (pos + 1, item[1] if numbered else item)
                raise
            pos += 1
            run.position = pos  # one store marks the item finished (see _state.py)
            done = item  # noqa: F841 - read from the frame by Loop.item_at, never here
            if pos >= check_at:
                now = time.monotonic()
                if (every is not None and pos - run.committed >= every) or (
                    every_seconds is not None and now - run.last_commit >= every_seconds
                ):
                    run.commit(pos, item=item[1] if numbered else item, exact=True)
                check_at = pos + _next_step(run, pos - check_pos, now - check_time, pos)
                check_pos, check_time = pos, now
                if reporter is not None:
                    reporter.update(pos)
        if item is not NOTHING or pos > loop.start:
            loop.finish(run.ckpt_meta, pos, item[1] if numbered and item is not NOTHING else item)
    finally:
        if reporter is not None:
            reporter.update(run.position)
            reporter.close()


def _next_step(run: Run, items: int, elapsed: float, pos: int) -> int:
    """Items until the next look at the clock: about 10 ms of loop time."""
    step = int(items * _CHECK_INTERVAL / elapsed) if elapsed > 0 else items * 2
    step = max(1, min(step, items * 2, _MAX_CHECK_STEP))
    every = run.spec.every
    if every is not None:
        step = max(1, min(step, run.committed + every - pos))
    return step
