"""Where a resumed loop starts: skipping the items that earlier runs finished."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from ._log import log

__all__ = ["open_source"]


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
