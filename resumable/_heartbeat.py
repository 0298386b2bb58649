"""A daemon thread that renews leases while their holder lives.

A holder that is paused (SIGSTOP, a long GC, a cut network) stops beating with it, so its
leases run out and another process takes its work over; that is the point.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ._log import log

__all__ = ["Heartbeat"]


class Heartbeat:
    """Call ``beat()`` every ``interval`` seconds in a daemon thread, from start() to stop().

    Errors of ``beat`` are logged and the thread goes on: a store that is down for one beat
    may answer the next one, and the lease is longer than several beats.
    """

    def __init__(self, name: str, interval: float, beat: Callable[[], None]) -> None:
        self._name = name
        self._interval = interval
        self._beat = beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        """Start beating (no-op if already started)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and wait for the thread (at most one beat)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception as exc:  # noqa: BLE001 - logged; the next beat tries again
                log.warning("resumable.lease.renew_failed", heartbeat=self._name, error=repr(exc))
