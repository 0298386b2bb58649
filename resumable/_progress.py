"""Progress of a loop or a map: a tqdm bar, or a callable of the user's own UI.

Both count items *done in this run* apart from items *skipped* because an earlier run
finished them, so the rate and the time left come from this run's work only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = ["Progress", "ProgressSpec", "Reporter", "check_progress", "open_progress"]


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot passed to a ``progress=`` callable.

    Attributes:
        op_id: The operation.
        done: Items finished in this run.
        skipped: Items an earlier run finished, not run again.
        total: All items, where known.
        elapsed: Seconds since this run's loop (or map) began.
    """

    op_id: str
    done: int
    skipped: int
    total: int | None
    elapsed: float

    @property
    def rate(self) -> float | None:
        """Items per second in this run (None before the first item)."""
        return self.done / self.elapsed if self.done and self.elapsed > 0 else None

    @property
    def remaining(self) -> int | None:
        """Items left, where the total is known."""
        return None if self.total is None else max(0, self.total - self.skipped - self.done)

    @property
    def eta(self) -> float | None:
        """Seconds left at this run's rate (skipped items do not count), where known."""
        rate, remaining = self.rate, self.remaining
        return None if rate is None or remaining is None else remaining / rate


#: What ``progress=`` takes: False, True (a tqdm bar), or a callable of a :class:`Progress`.
ProgressSpec: TypeAlias = bool | Callable[[Progress], object]

#: A callable hears at most this often (and once more at the end).
_CALL_INTERVAL: Final = 0.1


def check_progress(progress: object) -> None:
    """Refuse a ``progress=`` that is neither a bool nor a callable."""
    if not isinstance(progress, bool) and not callable(progress):
        raise TypeError(
            f"progress must be True, False or a callable taking a resumable.Progress, "
            f"not {progress!r}"
        )


class Reporter:
    """Reports one loop's or map's progress; see :func:`open_progress`."""

    def __init__(
        self, spec: ProgressSpec, op_id: str, skipped: int, total: int | None, unit: str
    ) -> None:
        self._op_id, self._skipped, self._total = op_id, skipped, total
        self._started = time.monotonic()
        self._last_call = 0.0
        self._done = 0
        self._call: Callable[[Progress], object] | None = None
        self._bar: Any = None
        if callable(spec):
            self._call = spec
        else:
            from tqdm.auto import tqdm

            resumed = f" (resumed at {skipped})" if skipped else ""
            # initial= puts the bar at the resumed position; tqdm's rate and ETA count only
            # the updates made after it, that is, this run's items.
            self._bar = tqdm(
                total=total, initial=skipped, desc=f"{op_id}{resumed}", unit=unit,
                dynamic_ncols=True,
            )  # fmt: skip

    def update(self, position: int) -> None:
        """The loop (or map) has accounted for ``position`` items in all, skipped included."""
        self._done = max(0, position - self._skipped)
        if self._bar is not None:
            if self._skipped:
                self._bar.set_postfix_str(
                    f"{self._done} done, {self._skipped} skipped", refresh=False
                )
            self._bar.update(position - self._bar.n)
        elif self._call is not None:
            now = time.monotonic()
            if now - self._last_call >= _CALL_INTERVAL:
                self._last_call = now
                self._call(self._snapshot(now))

    def close(self) -> None:
        """The end: a last report, and the bar closed."""
        if self._bar is not None:
            self._bar.close()
        elif self._call is not None:
            self._call(self._snapshot(time.monotonic()))

    def _snapshot(self, now: float) -> Progress:
        return Progress(self._op_id, self._done, self._skipped, self._total, now - self._started)


def open_progress(
    spec: ProgressSpec, op_id: str, *, skipped: int, total: int | None, unit: str = "item"
) -> Reporter | None:
    """A reporter for ``spec`` (None for ``progress=False``)."""
    return None if spec is False else Reporter(spec, op_id, skipped, total, unit)
