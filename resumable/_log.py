"""The library's events, and where they go.

An event has a stable dotted name (``resumable.operation.resumed``) and key-value fields. The
library never configures logging; each event goes to the first of these that applies:

1. structlog, if the application configured it: the structured event, to
   ``structlog.get_logger("resumable")`` and its processors;
2. the standard library logger ``"resumable"``, if the application gave it (or the root
   logger) a handler: one record whose message is the event's human line (see
   :mod:`resumable._messages`), with the event's name in ``record.event`` and its fields in
   ``record.fields``; the application's levels decide what is shown;
3. otherwise the library prints the human line itself, ``resumable: <line>``, on stderr (through
   ``tqdm.write`` while tqdm is loaded, so a progress bar stays whole), for events at or above
   ``RESUMABLE_LOG``'s level: ``quiet`` (warnings and errors), ``info`` (the default: also what
   a person running the job should know, e.g. that a run resumed, and where) or ``debug``
   (everything, a commit included).

Events that happen per call or per commit are at debug level, so the default shows a few
lines per run, not one per item. ``RESUMABLE_LOG`` is read at the first event. Neither
structlog nor the standard library's logging is imported for an event: until something imports
them, nothing can have configured them.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import logging

__all__ = ["DEBUG", "ERROR", "INFO", "LEVELS", "WARNING", "log"]

#: The standard library's levels (``logging.DEBUG`` ...), without importing it for them.
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40

#: ``RESUMABLE_LOG``'s values: the lowest level printed when logging is not configured.
LEVELS: Final = {"quiet": WARNING, "info": INFO, "debug": DEBUG}
_DEFAULT: Final = "info"


class _Log:
    """Routes events (see the module's docstring); one instance, :data:`log`."""

    __slots__ = ("_logger", "_threshold")

    def __init__(self) -> None:
        self._logger: logging.Logger | None = None
        self._threshold: int | None = None  # from RESUMABLE_LOG, read at the first event

    @property
    def _std(self) -> logging.Logger:
        """The standard library logger ``"resumable"`` (only once logging is imported)."""
        if self._logger is None:
            import logging

            self._logger = logging.getLogger("resumable")
        return self._logger

    def threshold(self) -> int:
        """The lowest level printed on stderr when nothing is configured (``RESUMABLE_LOG``)."""
        level = self._threshold
        if level is None:
            raw = os.environ.get("RESUMABLE_LOG", "").strip().lower() or _DEFAULT
            level = LEVELS.get(raw)
            if level is None:
                level = LEVELS[_DEFAULT]
                self._print(
                    f"RESUMABLE_LOG={raw!r} is not one of {', '.join(LEVELS)}; using {_DEFAULT!r}"
                )
            self._threshold = level
        return level

    def reread(self) -> None:
        """Read ``RESUMABLE_LOG`` again at the next event (tests change it)."""
        self._threshold = None

    def _structlog(self) -> Any:
        """The structlog module if the application configured it, else None."""
        structlog = sys.modules.get("structlog")
        if structlog is None:
            return None
        # Another thread may be importing it right now: a partly initialized module has no
        # is_configured yet, and then it cannot have been configured either.
        is_configured = getattr(structlog, "is_configured", None)
        return structlog if is_configured is not None and is_configured() else None

    def _handled(self) -> bool:
        """True if the application gave the ``resumable`` logger (or an ancestor) a handler."""
        return "logging" in sys.modules and self._std.hasHandlers()

    def wants(self, level: int) -> bool:
        """Whether an event at ``level`` could go anywhere (skip building costly fields)."""
        if self._structlog() is not None:
            return True
        if self._handled():
            return self._std.isEnabledFor(level)
        return level >= self.threshold()

    def log(self, level: int, event: str, **kw: Any) -> None:
        """Log ``event`` with fields ``kw`` at ``level`` (one of :data:`LEVELS`' values)."""
        structlog = self._structlog()
        if structlog is not None:
            structlog.get_logger("resumable").log(level, event, **kw)
            return
        if self._handled():
            std = self._std
            if std.isEnabledFor(level):
                text = _line(event, kw)
                if text is not None:
                    std.log(level, "%s", text, extra={"event": event, "fields": kw})
            return
        if level >= self.threshold():
            text = _line(event, kw)
            if text is not None:
                self._print(text)

    @staticmethod
    def _print(text: str) -> None:
        line = f"resumable: {text}"
        tqdm = sys.modules.get("tqdm")
        try:
            if tqdm is not None and hasattr(tqdm, "tqdm"):
                tqdm.tqdm.write(line, file=sys.stderr)  # clears the bars, then redraws them
            else:
                print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed or gone: an event is never worth a crash
            pass

    def debug(self, event: str, **kw: Any) -> None:
        """Log ``event`` at debug level."""
        self.log(DEBUG, event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log ``event`` at info level."""
        self.log(INFO, event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log ``event`` at warning level."""
        self.log(WARNING, event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        """Log ``event`` at error level."""
        self.log(ERROR, event, **kw)


def _line(event: str, fields: dict[str, Any]) -> str | None:
    from ._messages import line

    return line(event, fields)


log = _Log()
