"""Who runs an operation: :class:`Owner` (host, pid, process start time), and whether it lives.

A pid alone does not name a process: once it exits, the system hands its pid to the next one.
The start time does, so an owner is recorded with it, and a live process under that pid that
started at another time is a stranger, and the owner is dead.

The start time comes from psutil, which reads it where each system keeps it (``/proc`` on
Linux, ``sysctl`` on macOS). On Linux it computes what the records written before psutil hold
(boot time in whole seconds plus the start in clock ticks), to the last bit. psutil is imported
when another process is looked at: this process's own start time on Linux is read here from
the same two files with the same sum (a test holds it equal to psutil's), so that
``import resumable`` and the first block of a process do not pay ~10 ms for psutil's import.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["Owner"]

#: How far apart two readings of one process's start time may be. Linux counts it in clock
#: ticks (10 ms) after a boot time of whole seconds, which the clock's corrections can move
#: by one between readings; macOS counts microseconds. A reused pid is taken by a process
#: started later, after the first one ran and exited: further off than this.
_SLACK = 1.0


def _hostname() -> str:
    """``socket.gethostname()``; on Linux without importing socket (glibc reads uname too)."""
    if sys.platform != "linux":
        import socket

        return socket.gethostname()
    return os.uname().nodename


def _own_start_time() -> float | None:
    """When this process started: psutil's ``create_time()``, on Linux without psutil."""
    if sys.platform != "linux":
        return _process_start_time(os.getpid())
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/stat", "rb") as f:
            boot = next(line for line in f if line.startswith(b"btime"))
        # psutil's sum, term for term: starttime (field 22, after the ")" that ends the comm
        # field) in clock ticks over SC_CLK_TCK, plus the boot time in whole seconds.
        ticks = float(stat[stat.rfind(b")") + 2 :].split()[19])
        return ticks / os.sysconf("SC_CLK_TCK") + float(boot.split()[1])
    except (OSError, ValueError, IndexError, StopIteration):
        return _process_start_time(os.getpid())


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; None where unknowable."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that runs (or ran) an operation: host, pid and process start time.

    The start time tells a live owner from a reused pid.
    """

    host: str
    pid: int
    started: float | None

    @classmethod
    def current(cls) -> Owner:
        """The owner record of this process (recomputed after a fork)."""
        pid = os.getpid()
        cached = _CURRENT_OWNER.get(pid)
        if cached is None:
            cached = cls(_hostname(), pid, _own_start_time())
            _CURRENT_OWNER.clear()
            _CURRENT_OWNER[pid] = cached
        return cached

    def is_alive(self) -> bool | None:
        """True if this owner still runs, False if it is gone, None if it is on another host."""
        if self.host != _hostname():
            return None
        import psutil

        if not psutil.pid_exists(self.pid):  # a signal-0 probe: a gone owner costs 2 us, not 20
            return False
        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False  # dead; its parent has not reaped it yet
            started = process.create_time()
        except psutil.NoSuchProcess:  # gone (a ZombieProcess is one too: dead, not reaped)
            return False
        except psutil.AccessDenied:
            return True  # it exists, owned by someone else, and tells no more
        return self.started is None or abs(started - self.started) < _SLACK

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"host": self.host, "pid": self.pid, "started": self.started}

    def token(self) -> str:
        """A new holder name for leases and claims: this owner and a random part.

        Unique per call, and :meth:`from_token` reads the owner back, so a process on the
        same host can tell that a holder has died without waiting for its lease to run out.
        """
        return f"{self.host}:{self.pid}:{self.started!r}:{os.urandom(6).hex()}"

    @classmethod
    def from_token(cls, token: str) -> Owner | None:
        """The owner named in a :meth:`token` (None if it is not one)."""
        parts = token.rsplit(":", 3)
        if len(parts) != 4:
            return None
        host, pid, started, _ = parts
        try:
            return cls(host, int(pid), None if started == "None" else float(started))
        except ValueError:
            return None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Owner | None:
        """The inverse of :meth:`to_json`."""
        if not data:
            return None
        return cls(str(data["host"]), int(data["pid"]), data.get("started"))


#: This process's owner record, by pid: a forked child computes its own (its pid differs).
_CURRENT_OWNER: dict[int, Owner] = {}
