"""Every SQLite connection the library opens has an owner that closes it.

Python 3.13 reports a connection that is garbage-collected while open (``ResourceWarning:
unclosed database``); older versions close it silently, so a leak would pass there. The
detector here works on every version: ``sqlite3.connect`` makes connections of a subclass
that records each one collected while still open, and at exit no descriptor of a database
file may be open any more (a connection that is never closed nor collected, such as one of a
store cached for the process).
"""

from __future__ import annotations

import dis
import gc
import os
import sqlite3
import subprocess
import sys
import weakref
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from test_interrupts import InterruptAt

from resumable import stores
from resumable.stores.sqlite import SQLiteStore

SRC = str(Path(__file__).resolve().parent.parent)

#: The detector's connection class: defined in the child below, and in this process.
DETECTOR = """
import sqlite3

class Tracked(sqlite3.Connection):
    '''A connection that records itself in LEAKED if it is collected while open.'''

    closed = False

    def close(self):
        self.closed = True
        super().close()

    def __del__(self):
        if not self.closed:
            LEAKED.append(repr(self))

LEAKED = []
"""

CHILD = """
import atexit, gc, os, sys, time
sys.path.insert(0, {src!r})
exec({detector!r})
_connect = sqlite3.connect
sqlite3.connect = lambda *args, **kwargs: _connect(*args, factory=Tracked, **kwargs)
root = os.getcwd()

def check():  # registered first, so it runs after every other exit handler
    gc.collect()
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{{fd}}")
        except OSError:
            continue
        if target.startswith(root) and target.endswith((".db", "-wal", "-shm", "-journal")):
            paths.append(os.path.relpath(target, root))
    if LEAKED or paths:
        print("LEAK collected:", LEAKED, "open at exit:", sorted(paths), file=sys.stderr)
        os._exit(3)

atexit.register(check)

from click.testing import CliRunner
from resumable import FailsafeManager, ProcessState, checkpointed, open_store, resumable
from resumable.backup import Backups
from resumable.cli import cli

# A store opened and closed by the program.
store = open_store("sqlite:///own.db")
with checkpointed("own", store=store, state={{"n": 0}}) as cp:
    for x in cp.iterate(range(5)):
        cp.state.n += x
store.close()

# One opened per task and dropped without close().
for i in range(3):
    with checkpointed(f"task{{i}}", store=open_store("sqlite:///tasks.db")):
        pass

# A block and a @resumable call on the default store, which lives as long as the process.
with checkpointed("job", state={{"n": 0}}) as cp:
    for x in cp.iterate(range(5)):
        cp.state.n += x

@resumable
def square(x):
    return x * x

assert square(3) == 9 and square(3) == 9

# A backup of a database, verified and restored elsewhere.
backups = Backups("backups", durable=False)
info = backups.create("own.db")
assert backups.verify(info.backup_id)
backups.restore(info.backup_id, "restored.db")

# The FailsafeManager, with its automatic backups (a thread) of a database.
manager = FailsafeManager("checkpoints", "auto", auto_backup_interval=0.01)
manager.save_checkpoint("fs", "fs", ProcessState.RUNNING, 0.5, {{"n": 1}})
manager.start_auto_backup(["tasks.db"])
for _ in range(2000):
    if manager.list_backups():
        break
    time.sleep(0.01)
manager.stop_auto_backup()
assert manager.list_backups(), "the automatic backup never ran"

# The CLI, on the default store and on another.
for args in (["list"], ["show", "job"], ["--store", "sqlite:///own.db", "verify"],
             ["--backup-dir", "backups", "backup", "own.db"], ["stats"]):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
print("ran", flush=True)
"""


def test_main_paths_close_every_connection_they_open(tmp_path: Path) -> None:
    """Stores, blocks, @resumable, backups and the CLI leave no SQLite connection to the GC."""
    script = CHILD.format(src=SRC, detector=DETECTOR)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESUMABLE_")}
    proc = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", script],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "ran" in proc.stdout, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr


@pytest.fixture
def tracked(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], weakref.WeakSet[Any]]:
    """The detector in this process: (connections collected while open, those alive)."""
    space: dict[str, Any] = {}
    exec(DETECTOR, space)  # the one source of the detector, shared with the child
    alive: weakref.WeakSet[Any] = weakref.WeakSet()
    real = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        conn = real(*args, factory=space["Tracked"], **kwargs)
        alive.add(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)
    return space["LEAKED"], alive


class AtSignalPoints(InterruptAt):
    """:class:`InterruptAt`, skipping the lines a real signal cannot interrupt: ``try:``.

    Such a line is a NOP, where CPython never runs signal handlers, and an exception a trace
    function raises there bypasses the handlers of the enclosing ``try`` statements (3.11 to
    3.13): no code could close anything then.
    """

    def __call__(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and frame.f_code.co_code[frame.f_lasti] == _NOP:
            return self
        return super().__call__(frame, event, arg)


_NOP = dis.opmap["NOP"]


def test_ctrl_c_while_an_sqlite_store_opens_leaves_no_connection_open(
    tmp_path: Path, tracked: tuple[list[str], weakref.WeakSet[Any]]
) -> None:
    """Ctrl-C at any line of opening a new SQLite store: the connection it made is closed."""
    leaked, alive = tracked
    k = 0
    while True:
        k += 1
        assert k < 2_000, "the sweep did not end"
        tracer, store = AtSignalPoints(k), None
        sys.settrace(tracer)
        try:
            store = SQLiteStore(tmp_path / f"k{k}.db")
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        if store is not None:
            store.close()
        gc.collect()
        open_now = [c for c in alive if not c.closed]
        assert not leaked and not open_now, (k, tracer.where, leaked, open_now)
        if not tracer.fired:
            break
    assert k > 20  # the sweep really walked the lines of the open


def test_two_threads_opening_one_url_leave_one_store_open(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tracked: tuple[list[str], weakref.WeakSet[Any]],
) -> None:
    """When two threads open the same URL at once, the store that loses the race is closed."""
    url = f"sqlite:///{tmp_path}/race.db"
    key = (url, os.getcwd(), os.getpid())
    real_open = stores.open_store

    def open_store(spec: str) -> stores.Store:
        store = real_open(spec)
        # Meanwhile the other thread finishes its own open and caches its store.
        stores._cache.setdefault(key, real_open(spec))
        return store

    monkeypatch.setattr(stores, "open_store", open_store)
    winner = stores.resolve_store(url)
    assert winner is stores._cache[key]
    leaked, alive = tracked
    gc.collect()
    open_now = [c for c in alive if not c.closed]
    assert len(open_now) == 1 and not leaked, (open_now, leaked)
