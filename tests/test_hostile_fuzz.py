"""Every kind of planted file at every path a job, a backup, a restore, gc, reset and verify touch.

``hostile_worker.py`` builds an SQLite store, a file store and a backup directory, plants one
thing at one path (a symlink to a victim file or folder, a dangling symlink, a FIFO, a
device, a hard link to a root file, the path given to another user, a folder opened to all),
runs every step, and starts again for the next path and kind. Whatever a step answers (done,
or refused with the library's error), nothing outside the stores may change or appear, no
setuid file may appear, no step may hang, and no step may fail with an error the library does
not name.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).parent / "workers" / "hostile_worker.py"


def _last_step(stderr: str) -> str:
    running = [line for line in stderr.splitlines() if line.startswith("running ")]
    return running[-1] if running else "(before the first step)"


def test_no_planted_path_changes_anything_outside_the_stores(
    tmp_path: Path, attacker: object
) -> None:
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, (
        f"the worker hung or died at {_last_step(proc.stderr)}:\n{proc.stderr[-3000:]}"
    )
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    pristine, planted = reports[0], reports[1:]
    assert pristine["case"] == "pristine"
    assert set(pristine["steps"].values()) == {"ok"}, pristine  # every step works untouched
    assert len(planted) > 150  # every path the steps touch, each kind that fits there

    problems = []
    for r in planted:
        if r["outside"]:
            problems.append(f"{r['case']}: changed outside the stores: {r['outside']}")
        if r["setuid"]:
            problems.append(f"{r['case']}: setuid files: {r['setuid']}")
        problems += [
            f"{r['case']}: {step}: {outcome}"
            for step, outcome in r["steps"].items()
            if outcome.startswith("crash")
        ]
        assert r["seconds"] < 60, r  # each step is bounded at 10 s by the worker
    assert not problems, "\n".join(problems)
    # The plants were seen: many steps refused them with the library's error.
    refused = sum(o.startswith("refused") for r in planted for o in r["steps"].values())
    assert refused > 100
