"""What changed since a backup, and the thread that backs up what changed on a timer.

A source's state is the size and modification time of the file and of the ``-wal`` file
beside it (where an SQLite database in WAL mode keeps its newest commits). Only ``stat`` is
called: opening and closing a database file would drop the locks that SQLite connections of
this process hold on it (POSIX locks belong to the process, not the descriptor).

A state is *racy* when it was taken less than :data:`RACY_NS` after the file's last
modification: a write in the same clock tick could follow unseen with an equal size and
mtime (git treats its index the same way). A racy state is never trusted to mean
"unchanged".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resumable._log import log

__all__ = ["RACY_NS", "AutoBackup", "SourceState", "source_state"]

#: How long after its last modification a file's size and mtime are trusted to tell whether
#: it changed: well above the file system's timestamp tick, with room for a network file
#: system's clock skew.
RACY_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class SourceState:
    """The size and mtime of a file and of its ``-wal`` (None when absent or empty)."""

    files: tuple[tuple[int, int] | None, ...]
    #: ``time.time_ns()`` just before the files were looked at.
    taken_ns: int

    @property
    def racy(self) -> bool:
        """Whether a later write could leave the same size and mtime behind."""
        newest = max((f[1] for f in self.files if f is not None), default=0)
        return self.taken_ns - newest < RACY_NS


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def source_state(path: Path) -> SourceState:
    """The state of ``path`` now.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    taken = time.time_ns()
    main = _stat(path)
    try:
        wal: tuple[int, int] | None = _stat(path.with_name(path.name + "-wal"))
    except FileNotFoundError:
        wal = None
    if wal is not None and wal[0] == 0:
        wal = None  # an empty WAL holds nothing: the same database as no WAL at all
    return SourceState((main, wal), taken)


class AutoBackup:
    """A daemon thread calling ``create(path)`` for each path that changed, every interval.

    The first pass backs up every path (``create`` itself skips an unchanged file); later
    passes skip a path whose state equals the one seen before its last backup, unless that
    state was racy. An error is logged (a missing file as a warning, once until it changes)
    and the loop goes on with the next path.
    """

    def __init__(
        self, create: Callable[[Path], object], paths: tuple[Path, ...], interval: float
    ) -> None:
        self.paths = paths
        self.interval = interval
        #: ``"<path>: <error>"`` of the newest failure; cleared by a pass without one.
        self.last_error: str | None = None
        self._create = create
        self._stop = threading.Event()
        self._seen: dict[Path, SourceState] = {}
        self._reported: dict[Path, str] = {}
        self._thread = threading.Thread(target=self._run, name="resumable-auto-backup", daemon=True)

    @property
    def running(self) -> bool:
        """Whether the thread runs and has not been asked to stop."""
        return self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Start the thread; its first pass begins at once."""
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Ask the thread to stop and wait up to ``timeout`` seconds; whether it has ended.

        A backup in progress is not interrupted: it finishes (committed whole or not at all)
        and the thread ends right after it, without starting another.
        """
        self._stop.set()
        if self._thread is not threading.current_thread() and self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            failed = False
            for path in self.paths:
                if self._stop.is_set():
                    return
                failed |= not self._one(path)
            if not failed:
                self.last_error = None
            if self._stop.wait(self.interval):
                return

    def _one(self, path: Path) -> bool:
        """Back up ``path`` if it changed; False if that failed (logged)."""
        try:
            state = source_state(path)
            seen = self._seen.get(path)
            if seen is not None and seen.files == state.files and not seen.racy:
                return True
            self._create(path)
        except FileNotFoundError as exc:
            self._seen.pop(path, None)
            self._failed(path, exc, missing=True)
            return False
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure; logged
            self._failed(path, exc, missing=False)
            return False
        self._seen[path] = state
        if self._reported.pop(path, None) is not None:
            log.info("resumable.backup.auto_recovered", path=str(path))
        return True

    def _failed(self, path: Path, exc: Exception, *, missing: bool) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.last_error = f"{path}: {text}"
        if self._reported.get(path) == text:
            log.debug("resumable.backup.auto_failed", path=str(path), error=text, repeated=True)
            return
        self._reported[path] = text
        if missing:
            log.warning("resumable.backup.auto_missing", path=str(path), error=text)
        else:
            log.error("resumable.backup.auto_failed", path=str(path), error=text)
