"""The side of ``cp.map`` that runs where the items run: in a thread, a process, a cluster.

A chunk of ``(slot, item)`` pairs goes to the executor with the map's :class:`Task` and comes
back as one :class:`Outcome` per item. Results are serialized where they are computed; a worker
in another process sends back the bytes, and its exceptions are checked to survive pickling
(else a ``RuntimeError`` with their repr comes back instead).
"""

from __future__ import annotations

import functools
import os
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from resumable._map_records import ERROR
from resumable.retry import RetrySpec, make_retrying
from resumable.serializers import Serializer, encode

__all__ = ["ERROR", "ChunkResult", "Outcome", "RemoteTraceback", "Task", "run_chunk"]

#: Identifies this process to a chunk, which tells from it whether it runs in another one.
_TOKEN: Final = os.urandom(8).hex()


class Outcome(NamedTuple):
    """What a chunk reports for one item."""

    slot: int
    #: The result where the item ran in the caller's process (else None: only the bytes
    #: travel back).
    value: Any = None
    #: The serializer and payload of the result; None for a failure.
    serializer: str | None = None
    payload: bytes | None = None
    #: The item's exception, for a failure.
    error: BaseException | None = None
    #: The formatted traceback of a failure in another process.
    remote_traceback: str | None = None

    def failure(self) -> BaseException | None:
        """The item's exception, a remote worker's traceback as its cause; None on success."""
        if self.error is not None and self.remote_traceback is not None:
            self.error.__cause__ = RemoteTraceback(self.remote_traceback)
        return self.error


#: A chunk's outcomes, the seconds it took, and whether it ran in the caller's process.
ChunkResult = tuple[list[Outcome], float, bool]


class RemoteTraceback(Exception):
    """The traceback of an exception raised in another process (set as its ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


@dataclass(frozen=True, slots=True)
class Task:
    """What every chunk of one map needs (sent along with each chunk: it must pickle)."""

    fn: Callable[[Any], Any]
    retry: RetrySpec
    serializer: Serializer
    stop_on_error: bool
    home: tuple[int, str] = field(default_factory=lambda: (os.getpid(), _TOKEN))  # the caller


def run_chunk(task: Task, chunk: list[tuple[int, Any]]) -> ChunkResult:
    """Run ``task.fn`` over a chunk of ``(slot, item)``, with retries; serialize each result.

    Returns the outcomes, the seconds the chunk took, and whether it ran in the caller's
    process (else the results travel as bytes only, and exceptions are made picklable).
    """
    started = time.perf_counter()
    local = task.home == (os.getpid(), _TOKEN)
    fn, serializer = task.fn, task.serializer
    call = fn if task.retry is None else functools.partial(make_retrying(task.retry), fn)
    out: list[Outcome] = []
    for slot, item in chunk:
        try:
            value = call(item)
            ser, payload = encode(serializer, value, f"the result of item {slot}")
        except Exception as exc:  # noqa: BLE001 - the item's failure, reported to the caller
            out.append(_failure(slot, exc, local))
            if task.stop_on_error:
                break
            continue
        out.append(Outcome(slot, value if local else None, ser, payload))
    return out, time.perf_counter() - started, local


def _failure(slot: int, exc: Exception, local: bool) -> Outcome:
    if local:
        return Outcome(slot, error=exc)
    tb = "".join(traceback.format_exception(exc))
    try:
        sendable: BaseException = pickle.loads(pickle.dumps(exc, protocol=5))
    except Exception:  # noqa: BLE001 - whatever breaks the round trip, send its repr instead
        sendable = RuntimeError(f"{exc!r} (raised in a worker; it could not be pickled back)")
    return Outcome(slot, error=sendable, remote_traceback=f'\n"""\n{tb}"""')
