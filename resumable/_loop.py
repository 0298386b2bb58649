"""``cp.iterate``'s loop: where a resumed loop starts, and when it commits.

:func:`open_source` skips the items that earlier runs finished; :func:`run_loop` yields the
rest, marks each finished with one store of the run's position, and commits at item
boundaries as ``every=`` and ``every_seconds=`` ask, looking at the clock about every 10 ms of
loop time whatever the item rate.
"""

from __future__ import annotations

import io
import itertools
import time
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

from ._log import log
from ._progress import ProgressSpec, open_progress

if TYPE_CHECKING:
    from ._run import Run

__all__ = ["open_source", "run_loop"]

#: How often (seconds of loop time) a loop looks at the clock, whatever its item rate.
_CHECK_INTERVAL: Final = 0.01
_MAX_CHECK_STEP: Final = 1 << 16


def open_source(iterable: Iterable[Any], skip: int, op_id: str | None) -> tuple[Iterator[Any], int]:
    """An iterator over ``iterable`` past its first ``skip`` items, and how many it skipped.

    A ``Sequence`` is resumed by index (O(1)); an object with ``seek(position)`` (other than a
    file, whose ``seek`` takes bytes) by seeking; anything else is fast-forwarded at C speed
    without running the loop body.
    """
    if skip <= 0:
        return iter(iterable), 0
    if isinstance(iterable, Sequence):
        n = len(iterable)
        skipped = min(skip, n)
        source: Iterator[Any] = map(iterable.__getitem__, range(skipped, n))
    elif callable(getattr(iterable, "seek", None)) and not isinstance(iterable, io.IOBase):
        iterable.seek(skip)  # type: ignore[attr-defined]
        return iter(iterable), skip
    else:
        source = iter(iterable)
        last = deque(enumerate(islice(source, skip), 1), maxlen=1)
        skipped = last[0][0] if last else 0
    if skipped < skip:
        log.warning(
            "resumable.iterate.short_input", op_id=op_id, committed_position=skip,
            items=skipped, note="the input has fewer items than an earlier run finished",
        )  # fmt: skip
    return source, skipped


def run_loop(
    run: Run, iterable: Any, total: int | None, progress: ProgressSpec, numbered: bool
) -> Generator[Any, None, None]:
    """The items of ``iterable`` that earlier runs of ``run`` did not finish."""
    start = run.position
    skip = max(0, run.restored - start)
    source, skipped = open_source(iterable, skip, run.op_id)
    pos = run.position = start + skipped
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    run.total = None if total is None else start + total
    reporter = open_progress(progress, run.op_id, skipped=pos, total=run.total)
    if numbered:
        source = zip(itertools.count(pos), source, strict=False)
    every, every_seconds = run.spec.every, run.spec.every_seconds
    check_at, check_pos, check_time = pos + 1, pos, time.monotonic()
    run.abandoned = False
    try:
        for item in source:
            try:
                yield item
            except GeneratorExit:
                run.abandoned = True  # closed mid-item: `break`, or an exception
                raise
            pos += 1
            run.position = pos  # one store marks the item finished (see _state.py)
            if pos >= check_at:
                now = time.monotonic()
                if (every is not None and pos - run.committed >= every) or (
                    every_seconds is not None and now - run.last_commit >= every_seconds
                ):
                    run.commit(pos)
                check_at = pos + _next_step(run, pos - check_pos, now - check_time, pos)
                check_pos, check_time = pos, now
                if reporter is not None:
                    reporter.update(pos)
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
