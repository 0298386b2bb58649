"""SIGTERM and SIGINT of an asyncio job: every block pauses, the process exits as it would have.

A real job runs two blocks in two tasks under ``asyncio.run``, each awaiting a ``gather`` per
item; the test sends the signal once the job has printed that it is inside its loop (no
sleeping on hope), then runs the job again and compares its answer with an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resumable import ProcessState, open_store

TIMEOUT = 60
ITEMS = 60

JOB = f"""
import asyncio
from resumable import checkpointed

async def work(i):
    await asyncio.sleep(0.01)
    return i

async def job(name):
    async with checkpointed(name, state={{"total": 0}}, every=1) as cp:
        for i in cp.iterate(range({ITEMS})):
            if i == 3 and name == "a":
                print("inside", flush=True)
            a, b = await asyncio.gather(work(i), work(i * i))
            cp.state.total += a + b
    return cp.state.total

async def main():
    print(sum(await asyncio.gather(job("a"), job("b"))), flush=True)

asyncio.run(main())
"""

EXPECTED = 2 * sum(i + i * i for i in range(ITEMS))


def start(tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(JOB))
    env = {k: v for k, v in os.environ.items() if k != "RESUMABLE_LOG"}
    return subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("signum", "code", "error"),
    [
        (signal.SIGTERM, 143, "SystemExit: 143"),
        (signal.SIGINT, -signal.SIGINT, "KeyboardInterrupt"),
    ],
)
def test_a_signal_pauses_every_block_and_a_rerun_finishes_the_job(
    tmp_path: Path, signum: int, code: int, error: str
) -> None:
    proc = start(tmp_path)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "inside"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    # SIGTERM exits 143, silently; SIGINT as Ctrl-C does, with its KeyboardInterrupt.
    assert proc.returncode == code, err
    assert "never retrieved" not in err and "CancelledError" not in err
    if signum == signal.SIGTERM:
        assert "Traceback" not in err, err
    else:
        assert err.rstrip().endswith("KeyboardInterrupt"), err
    paused = [line for line in err.splitlines() if line.startswith("resumable: paused ")]
    assert len(paused) == 2 and all(f"({error}" in line for line in paused), err
    store = open_store(f"sqlite:///{tmp_path}/.resumable/state.db")
    try:
        for name in ("a", "b"):
            op = store.load_operation(name)
            assert op is not None and op.state is ProcessState.PAUSED
            assert op.error is not None and op.error.startswith(error)
    finally:
        store.close()
    again = start(tmp_path)
    out, err = again.communicate(timeout=TIMEOUT)
    assert again.returncode == 0, err
    assert out.splitlines()[-1] == str(EXPECTED)
    assert [line for line in err.splitlines() if "it was paused: Ctrl-C or SIGTERM" in line]


def test_a_plain_job_still_exits_143_on_sigterm_with_its_block_paused(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
            import time
            from resumable import checkpointed

            with checkpointed("plain", every=1) as cp:
                for i in cp.iterate(range(10_000)):
                    if i == 3:
                        print("inside", flush=True)
                    time.sleep(0.001)
        """)
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "inside"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    store = open_store(f"sqlite:///{tmp_path}/.resumable/state.db")
    try:
        op = store.load_operation("plain")
        assert op is not None and op.state is ProcessState.PAUSED
    finally:
        store.close()
