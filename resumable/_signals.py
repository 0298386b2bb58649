"""SIGTERM while a block runs, and SIGINT under asyncio: the block stops as on Ctrl-C, PAUSED.

Without this, SIGTERM ends the process at once: the last commit stands, but the operation is
left RUNNING by a dead owner, and the items since that commit run again. So the outermost
block of the main thread (:func:`enter`) makes SIGTERM stop the job the way Ctrl-C does:

- **in plain code**, SIGTERM raises ``SystemExit(143)`` where the main thread is, as
  KeyboardInterrupt does for SIGINT: the block records PAUSED and the process exits 143;
- **under asyncio**, raising there would raise inside whichever task runs (``Task exception
  was never retrieved ... SystemExit(143)``, and blocks in other tasks see a CancelledError
  they record as a failure). So SIGTERM and SIGINT instead cancel every task that is inside
  a block; each block records PAUSED (:func:`received` tells it why it was cancelled); and
  once such a task has finished, the process exits as it would have: ``SystemExit(143)`` for
  SIGTERM (silently, status 143), KeyboardInterrupt for SIGINT. ``asyncio.run`` then cancels
  and awaits the other tasks, so their blocks record PAUSED too.

A handler the application installed itself is left alone. After the first signal the
previous handlers are back, so a second one acts at once, as without the library.

Only the main thread receives signals, so only its blocks install anything, and everything here
is touched by the main thread alone (the handlers run there too): no lock, which a handler
could deadlock on.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the application, if it uses it: never by this module
    import asyncio

__all__ = ["Entered", "as_raised", "enter", "leave"]


@dataclass
class Entered:
    """What one block's :func:`enter` did, for its :func:`leave`."""

    #: Plain code: the SIGTERM handler replaced (None: nothing was installed).
    old_sigterm: Any = None
    #: asyncio: the task registered.
    task: asyncio.Task[Any] | None = None


@dataclass
class _Async:
    """The tasks inside blocks, under asyncio, and the handlers replaced for them."""

    tasks: dict[asyncio.Task[Any], tuple[asyncio.AbstractEventLoop, int]] = field(
        default_factory=dict
    )
    saved: dict[int, Any] = field(default_factory=dict)  # signal number -> handler replaced
    signum: int | None = None  # the signal received while tasks were registered
    exiting: bool = False  # the first stopped task has raised the exit: the others do not


_async = _Async()


def enter() -> Entered | None:
    """Make SIGTERM (and under asyncio SIGINT) stop the calling block; None if not here.

    Call from the outermost block that has a position to save; only the main thread
    receives signals, so another thread's block installs nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    task = _current_task()
    if task is None:
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            return None  # the application handles SIGTERM itself; leave its handler alone
        return Entered(old_sigterm=signal.signal(signal.SIGTERM, _on_sigterm))
    if not _async.tasks:
        _async.signum, _async.exiting = None, False
        _install_async()
    loop, count = _async.tasks.get(task, (task.get_loop(), 0))
    _async.tasks[task] = (loop, count + 1)
    return Entered(task=task)


def leave(entered: Entered | None) -> None:
    """Undo :func:`enter`."""
    if entered is None:
        return
    if entered.task is None:
        signal.signal(signal.SIGTERM, entered.old_sigterm)
        return
    loop, count = _async.tasks.pop(entered.task, (None, 1))
    if count > 1 and loop is not None:
        _async.tasks[entered.task] = (loop, count - 1)
    if not _async.tasks:
        _restore_async()


def as_raised(exc: BaseException) -> BaseException:
    """``exc``, or what the signal would have raised in plain code if it cancelled the task.

    A block under asyncio stopped by SIGTERM or SIGINT sees a CancelledError: it stands for
    ``SystemExit(143)`` or KeyboardInterrupt, and the block records PAUSED as for those.
    """
    asyncio = sys.modules.get("asyncio")
    signum = _async.signum
    if signum is None or asyncio is None or not isinstance(exc, asyncio.CancelledError):
        return exc
    return KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)


def _current_task() -> asyncio.Task[Any] | None:
    aio = sys.modules.get("asyncio")
    if aio is None:  # not imported: no event loop runs
        return None
    try:
        task: asyncio.Task[Any] | None = aio.current_task()
    except RuntimeError:  # no running event loop in this thread
        return None
    return task


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _install_async() -> None:
    """Take SIGTERM and SIGINT for the registered tasks, where nobody else has them."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        _async.saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_async_signal)
    current = signal.getsignal(signal.SIGINT)
    if current is signal.default_int_handler or _is_asyncio_runner(current):
        _async.saved[signal.SIGINT] = signal.signal(signal.SIGINT, _on_async_signal)


def _is_asyncio_runner(handler: Any) -> bool:
    """Whether ``handler`` is ``asyncio.run``'s own SIGINT handler (Python 3.11+)."""
    runner = getattr(sys.modules.get("asyncio"), "Runner", None)
    method = getattr(handler, "func", handler)  # a functools.partial of Runner._on_sigint
    return runner is not None and isinstance(getattr(method, "__self__", None), runner)


def _restore_async() -> None:
    for signum, handler in _async.saved.items():
        if signal.getsignal(signum) is _on_async_signal:
            signal.signal(signum, handler)
    _async.saved.clear()


def _on_async_signal(signum: int, frame: FrameType | None) -> None:
    """Cancel every task inside a block; exit once one has finished (see the module doc)."""
    _async.signum = signum
    _restore_async()  # a second signal acts at once
    for task, (loop, _) in list(_async.tasks.items()):
        # From a signal handler, into the loop: call_soon_threadsafe also wakes it.
        loop.call_soon_threadsafe(_stop, task, signum)


def _stop(task: asyncio.Task[Any], signum: int) -> None:
    if task.done():
        return
    task.add_done_callback(functools.partial(_exit, signum))
    task.cancel(f"resumable: signal {signum}")


def _exit(signum: int, task: asyncio.Task[Any]) -> None:
    """Raised from a done callback, it leaves the event loop, as it would have at once.

    Only once: ``asyncio.run`` then cancels and awaits the other tasks, whose callbacks must
    let it finish.
    """
    if _async.exiting:
        return
    _async.exiting = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)
