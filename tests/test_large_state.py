"""Re-entering an operation with a large state reads only the checkpoint it loads.

A fresh process re-enters an operation whose history holds three checkpoints of a 40 MiB
state, then commits once; its peak RSS growth (``VmHWM`` after, minus ``VmRSS`` before, with
the peak reset first) must stay within 2.5x the state: the payload read and the state
loaded from it, not every checkpoint of the history nor extra copies in the driver.

This file is also the worker: ``python tests/test_large_state.py write|reenter URL``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MIB = 40
HISTORY = 3
OP = "large"
LIMIT = 2.5


class Stop(Exception):
    """Leaves the writer's block as a failed run would."""


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10
    raise AssertionError(f"no {field} in /proc/self/status")


def write(url: str) -> None:
    """Commit a state of MIB MiB HISTORY times (each a different payload), then fail."""
    from resumable import checkpointed

    blob = bytearray(os.urandom(MIB << 20))
    try:
        with checkpointed(OP, store=url, state={"blob": b"", "n": 0}, every_seconds=3600) as cp:
            for n in range(HISTORY):
                blob[0] = n
                cp.state.blob = bytes(blob)
                cp.state.n = n
                cp.commit()
            raise Stop
    except Stop:
        pass


def reenter(url: str) -> None:
    """Re-enter and commit once; print the state's size and the peak RSS growth."""
    from resumable import checkpointed
    from resumable.stores import resolve_store

    resolve_store(url)  # open the store (connect, import the driver) before the baseline
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # VmHWM starts again from the current RSS
    base = _status("VmRSS")
    cp = checkpointed(OP, store=url, every_seconds=3600).__enter__()
    entered = _status("VmHWM") - base
    assert cp.resumed and cp.state.n == HISTORY - 1
    cp.commit()
    result = {"size": len(cp.state.blob), "entered": entered, "peak": _status("VmHWM") - base}
    print(json.dumps(result), flush=True)
    os._exit(0)  # measured: the exit commit is not


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("kind", ["sqlite", "file", "postgres"])
def test_reentry_with_a_large_state_holds_one_checkpoint(kind: str, tmp_path: Path) -> None:
    """Re-entry plus one commit of a 40 MiB state grows RSS by at most 2.5x the state."""
    from conftest import url_for

    url = url_for(kind, tmp_path)
    _run("write", url)
    result = json.loads(_run("reenter", url).splitlines()[-1])
    size = result["size"]
    assert size == MIB << 20
    assert result["entered"] <= LIMIT * size, f"re-entry grew {result['entered'] / size:.2f}x"
    assert result["peak"] <= LIMIT * size, f"re-entry + commit grew {result['peak'] / size:.2f}x"


if __name__ == "__main__":
    {"write": write, "reenter": reenter}[sys.argv[1]](sys.argv[2])
