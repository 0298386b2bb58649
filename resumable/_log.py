"""The library's structlog logger.

Events have stable dotted names (``resumable.checkpoint.saved``) and key-value fields. The
library never configures logging. Where the application has configured structlog, events go
to ``structlog.get_logger("resumable")`` and its processors. Where it has not, structlog's
default would print every event, debug ones included, to stdout; so events go instead to the
standard library logger ``"resumable"`` rendered as ``key=value`` text, and follow its level
(warnings and errors only, unless the application asks for more). structlog is imported on
the first event, not at ``import resumable``; the standard library's logging on the first
event that could be shown. Until anything imports logging, nothing can have configured it:
its root logger stands at WARNING with no handler, so a debug or info event goes nowhere and
is dropped without importing it (a warning goes to its last-resort handler, on stderr).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["log"]

#: The standard library's levels (``logging.DEBUG`` ...), without importing it for them.
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40


class _LazyLogger:
    """Forwards to structlog, importing it on first use."""

    __slots__ = ("_fallback", "_logger")

    def __init__(self) -> None:
        self._logger: logging.Logger | None = None
        self._fallback: Any = None

    @property
    def _std(self) -> logging.Logger:
        """The standard library logger ``"resumable"`` (imports logging on first use)."""
        if self._logger is None:
            import logging

            self._logger = logging.getLogger("resumable")
        return self._logger

    def _enabled(self, level: int) -> bool:
        """Whether the standard library logger would show ``level``."""
        if self._logger is None and "logging" not in sys.modules:
            return level >= WARNING  # an unconfigured root logger's level (see above)
        return self._std.isEnabledFor(level)

    def wants(self, level: int) -> bool:
        """Whether an event at ``level`` could go anywhere (skip building costly fields)."""
        structlog = sys.modules.get("structlog")
        if structlog is not None:
            # Another thread may be importing it right now: a partly initialized module has
            # no is_configured yet, and then it cannot have been configured either.
            is_configured = getattr(structlog, "is_configured", None)
            if is_configured is not None and is_configured():
                return True
        return self._enabled(level)

    def _emit(self, level: int, event: str, kw: dict[str, Any]) -> None:
        if "structlog" not in sys.modules and not self._enabled(level):
            return  # not even imported, so not configured: nothing would be shown
        import structlog

        if structlog.is_configured():
            structlog.get_logger("resumable").log(level, event, **kw)
            return
        if not self._std.isEnabledFor(level):
            return
        if self._fallback is None:
            self._fallback = structlog.wrap_logger(
                self._std,
                processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        self._fallback.log(level, event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        """Log ``event`` at debug level."""
        self._emit(DEBUG, event, kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log ``event`` at info level."""
        self._emit(INFO, event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log ``event`` at warning level."""
        self._emit(WARNING, event, kw)

    def error(self, event: str, **kw: Any) -> None:
        """Log ``event`` at error level."""
        self._emit(ERROR, event, kw)


log = _LazyLogger()
