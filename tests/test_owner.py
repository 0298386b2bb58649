"""Owners: a recorded owner is alive exactly while its own process runs, not a pid's next holder.

Every test here runs real processes; nothing of psutil is replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from resumable import ProcessState
from resumable._owner import Owner
from resumable.operation import OperationRecord
from resumable.stores import open_store

REPO = Path(__file__).resolve().parent.parent

#: A child that prints the owner record the library makes for it, then waits to be killed.
_RECORD_THEN_WAIT = textwrap.dedent(f"""
    import json, sys, time
    sys.path.insert(0, {str(REPO)!r})
    from resumable._owner import Owner
    print(json.dumps(Owner.current().to_json()), flush=True)
    time.sleep(60)
""")


@pytest.fixture
def child() -> Iterator[tuple[subprocess.Popen[str], Owner]]:
    """A live process and the owner record it made of itself."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _RECORD_THEN_WAIT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        owner = Owner.from_json(json.loads(proc.stdout.readline()))
        assert owner is not None
        yield proc, owner
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def test_an_owner_is_alive_while_its_process_runs_and_dead_once_killed(
    child: tuple[subprocess.Popen[str], Owner],
) -> None:
    """Alive while it runs; dead once killed, before its parent reaps it and after."""
    proc, owner = child
    assert owner.pid == proc.pid and owner.started is not None
    assert owner.is_alive() is True
    proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # dead, still unreaped (a zombie)
    assert owner.is_alive() is False
    proc.wait()
    assert owner.is_alive() is False


def test_an_owner_whose_pid_now_names_another_process_is_dead(
    child: tuple[subprocess.Popen[str], Owner],
) -> None:
    """Same pid, another start time (an earlier holder of the pid, reused since): dead."""
    proc, owner = child
    assert owner.started is not None
    earlier = Owner(owner.host, proc.pid, owner.started - 60.0)
    assert earlier.is_alive() is False
    assert owner.is_alive() is True  # the process that does run under the pid


def test_an_owner_records_what_psutil_reads_of_its_process(
    child: tuple[subprocess.Popen[str], Owner],
) -> None:
    """Host and start time, read without psutil and socket on Linux: theirs, to the last bit."""
    proc, owner = child
    assert owner.started == psutil.Process(proc.pid).create_time()
    assert owner.host == socket.gethostname()
    me = Owner(socket.gethostname(), os.getpid(), psutil.Process(os.getpid()).create_time())
    assert Owner.current() == me


def test_an_owner_on_another_host_is_unknown() -> None:
    """Whether a process of another host lives cannot be told from here."""
    assert Owner("some-other-host", os.getpid(), None).is_alive() is None


def _start_time_as_proc_code(pid: int) -> float:
    """A process's start time as the code before psutil computed it (stored in old records)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    with open("/proc/stat", "rb") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith(b"btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the old code read Linux /proc")
def test_an_owner_stored_before_psutil_is_still_told_apart(
    child: tuple[subprocess.Popen[str], Owner], tmp_path: Path
) -> None:
    """An owner written with the /proc start time: alive while its process runs, dead after."""
    proc, owner = child
    started = _start_time_as_proc_code(proc.pid)
    assert owner.started == started  # to the last bit: records compare as they always did
    assert Owner.current().started == _start_time_as_proc_code(os.getpid())
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        old = Owner(owner.host, proc.pid, started)
        store.save(OperationRecord.new("op", "op", ProcessState.RUNNING, owner=old))
        stored = store.load_operation("op")
    finally:
        store.close()
    assert stored is not None and stored.owner == old
    assert stored.owner.is_alive() is True
    proc.kill()
    proc.wait()
    assert stored.owner.is_alive() is False


#: Run as pid 1 of a new pid namespace, where pids are handed out in order: a first child
#: records its owner and exits; the next pid handed out is set back to the first child's, so
#: a second child, started more than the allowed slack later, runs under that same pid.
_REUSE = textwrap.dedent(f"""
    import json, subprocess, sys, time
    sys.path.insert(0, {str(REPO)!r})
    from resumable._owner import Owner
    record = [sys.executable, "-c", "import sys; sys.path.insert(0, {str(REPO)!r}); "
              "import json; from resumable._owner import Owner; "
              "print(json.dumps(Owner.current().to_json()))"]
    first = subprocess.run(record, capture_output=True, text=True, check=True)
    owner = Owner.from_json(json.loads(first.stdout))
    time.sleep(1.5)
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(owner.pid - 1))
    second = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        print(json.dumps({{"pid": owner.pid, "reused_by": second.pid,
                          "first_alive": owner.is_alive(),
                          "second_alive": Owner(owner.host, second.pid, None).is_alive()}}))
    finally:
        second.kill()
        second.wait()
""")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_an_owner_whose_pid_was_reused_is_dead() -> None:
    """A real reuse: the owner's pid held by a later process; the owner is dead, that one not."""
    run = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _REUSE],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if run.returncode != 0 and "unshare failed" in run.stderr:
        pytest.skip(f"no new pid namespace here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["reused_by"] == seen["pid"]
    assert seen["first_alive"] is False
    assert seen["second_alive"] is True
