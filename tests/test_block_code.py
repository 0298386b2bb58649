"""An edited ``checkpointed`` block is reported when it is entered again.

A completed block re-entered skips its loops and steps; a resumed one goes on from the state
the earlier run saved. With the block's code edited in between (a notebook cell fixed and
run again, a script fixed after a crash) that is still what happens, but it is said.

Jobs run as real subprocesses, edited on disk between runs; the notebook runs its cells in a
real IPython shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resumable import open_store

TIMEOUT = 60

JOB = """
import os, signal, sys
from resumable import checkpointed

kill_at = int(sys.argv[1]) if len(sys.argv) > 1 else -1
with checkpointed("report", every=1, state={"total": 0}) as cp:
    for i in cp.iterate(range(10)):
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        cp.state.total += i
print(cp.state.total)
"""


def run(tmp_path: Path, code: str, *args: str) -> tuple[int, str, list[str]]:
    """Run ``code`` as tmp_path/job.py: (exit code, stdout, the library's stderr lines)."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if k != "RESUMABLE_LOG"}
    done = subprocess.run(
        [sys.executable, str(script), *args], check=False, cwd=tmp_path, capture_output=True,
        text=True, timeout=TIMEOUT, env=env,
    )  # fmt: skip
    lines = [
        line
        for line in done.stderr.splitlines()
        if line.startswith("resumable: ") and not line.startswith("resumable: keeping progress")
    ]
    return done.returncode, done.stdout, lines


SKIPPED = (
    "resumable: skipping 'report': it completed in an earlier run; `resumable reset report` "
    "runs it again"
)
EDITED = (
    "resumable: skipping 'report': it completed in an earlier run, and the code of its block "
    "has changed since; its loops and steps do not run again, and cp.state is what the old "
    "code left. fresh=True runs it with the new code, and so does `resumable reset report`"
)


def test_a_completed_block_whose_code_changed_says_so_on_entry(tmp_path: Path) -> None:
    assert run(tmp_path, JOB)[:2] == (0, "45\n")
    assert run(tmp_path, JOB) == (0, "45\n", [SKIPPED])
    edited = JOB.replace("cp.state.total += i", "cp.state.total += 2 * i")
    # The stored state stands (the loop does not run again), and the line says why.
    assert run(tmp_path, edited) == (0, "45\n", [EDITED])
    assert run(tmp_path, edited) == (0, "45\n", [EDITED])  # each entry, until it runs anew
    fresh = edited.replace('"total": 0})', '"total": 0}, fresh=True)')
    assert run(tmp_path, fresh)[:2] == (0, "90\n")
    assert run(tmp_path, edited) == (0, "90\n", [SKIPPED])  # the code that ran is stored


def test_edits_that_change_no_statement_are_not_reported(tmp_path: Path) -> None:
    run(tmp_path, JOB)
    moved = "\n\n# a comment, and blank lines that move the block down\n" + JOB.replace(
        "cp.state.total += i", "cp.state.total += i  # the sum"
    )
    assert run(tmp_path, moved) == (0, "45\n", [SKIPPED])


def test_code_outside_the_block_is_not_the_blocks_code(tmp_path: Path) -> None:
    run(tmp_path, JOB)
    after = JOB + "print('done')\n"
    assert run(tmp_path, after) == (0, "45\ndone\n", [SKIPPED])


def test_a_resumed_block_whose_code_changed_says_so(tmp_path: Path) -> None:
    code, _, _ = run(tmp_path, JOB, "6")
    assert code == -9
    edited = JOB.replace("cp.state.total += i", "cp.state.total += 2 * i")
    code, out, lines = run(tmp_path, edited)
    assert code == 0
    assert out == f"{sum(range(6)) + 2 * sum(range(6, 10))}\n"  # old code to 6, new after
    assert lines[-1] == (
        "resumable: resuming 'report' at 6 with the code of its block changed since the run "
        "that committed there: the new code goes on from the state the old code saved"
    )
    # Killed again, and resumed by the same (new) code: nothing more to say about the code.
    store = open_store(f"sqlite:///{tmp_path / '.resumable' / 'state.db'}")
    try:
        op = store.load_operation("report")
        assert op is not None and "code" in op.meta
    finally:
        store.close()


def test_the_resumed_line_is_absent_when_only_the_kill_happened(tmp_path: Path) -> None:
    run(tmp_path, JOB, "6")
    _, _, lines = run(tmp_path, JOB)
    assert not any("code of its block" in line for line in lines), lines


def test_nested_blocks_each_have_their_own_code(tmp_path: Path) -> None:
    nested = """
    from resumable import checkpointed
    with checkpointed("outer") as outer:
        with checkpointed("inner", state={"n": 0}) as inner:
            for i in inner.iterate(range(3)):
                inner.state.n += i
        print(inner.state.n)
    """
    run(tmp_path, nested)
    _, out, lines = run(tmp_path, nested.replace("+= i", "+= i * 10"))
    assert out == "3\n"
    edited = [line for line in lines if "code of its block" in line]
    # The inner block changed. The outer one holds it, but runs no loop of its own: all its
    # code runs on every entry, so no edit of it can be stale.
    assert len(edited) == 1 and "'inner'" in edited[0], lines
    _, _, lines = run(tmp_path, nested.replace("print(inner.state.n)", "print(inner.state.n)\n"))
    # The first code again, which is what the store holds: the skips stored no code.
    assert not any("code of its block" in line for line in lines)


def test_a_block_that_only_reads_a_completed_operation_says_nothing_of_code(
    tmp_path: Path,
) -> None:
    run(tmp_path, JOB)
    read = """
    from resumable import checkpointed
    with checkpointed("report") as cp:
        print(cp.state.total)
    """
    assert run(tmp_path, read) == (0, "45\n", [SKIPPED])


def test_an_async_block_is_reported_too(tmp_path: Path) -> None:
    job = """
    import asyncio
    from resumable import checkpointed

    async def main():
        async with checkpointed("report", state={"total": 0}) as cp:
            for i in cp.iterate(range(10)):
                cp.state.total += i
        print(cp.state.total)

    asyncio.run(main())
    """
    run(tmp_path, job)
    _, out, lines = run(tmp_path, job.replace("+= i", "+= 2 * i"))
    assert out == "45\n" and lines == [EDITED]


def test_without_source_there_is_nothing_to_compare(tmp_path: Path) -> None:
    """Code compiled from a string that linecache does not hold: no digest, no line, no error.

    (``python -c`` is not such code on Python 3.13, which keeps its source for tracebacks.)
    """
    runner = """
    from pathlib import Path
    exec(compile(Path("body.txt").read_text(), "<generated job>", "exec"))
    """
    body = tmp_path / "body.txt"
    body.write_text(textwrap.dedent(JOB))
    assert run(tmp_path, runner)[:2] == (0, "45\n")
    body.write_text(textwrap.dedent(JOB).replace("+= i", "+= 2 * i"))
    assert run(tmp_path, runner) == (0, "45\n", [SKIPPED])


NOTEBOOK = """
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
cell = '''
from resumable import checkpointed
with checkpointed("report", state={"total": 0}) as cp:
    for i in cp.iterate(range(10)):
        cp.state.total += i
print(cp.state.total)
'''
for source in (cell, cell, cell.replace("+= i", "+= 2 * i")):
    assert shell.run_cell(source).success
"""


def test_a_notebook_cell_run_again_after_an_edit_is_reported(tmp_path: Path) -> None:
    pytest.importorskip("IPython", reason="the notebook test runs cells in IPython")
    code, out, lines = run(tmp_path, NOTEBOOK)
    assert code == 0
    assert out.split() == ["45", "45", "45"]
    assert lines == [SKIPPED, EDITED]
