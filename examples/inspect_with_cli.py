"""See what a crashed job left behind, and what its next run will do, with `resumable`.

    python examples/inspect_with_cli.py

runs a small job that fails at row 6, then asks the command line about it, as you would in a
shell (`resumable list`, `resumable show import-rows`, `resumable recover`), runs the job
again (it resumes at row 6), and lists once more.
"""

from __future__ import annotations

import subprocess
import sys

from resumable import checkpointed


def import_rows(fail_at: int | None) -> None:
    with checkpointed("import-rows", state={"rows": 0}, every_seconds=0) as cp:
        for i in cp.iterate(range(10)):
            if i == fail_at:
                raise ValueError(f"row {i} is malformed")
            cp.state.rows += 1
    print(f"imported {cp.state.rows} rows (resumed: {cp.resumed})")


def cli(*args: str) -> None:
    print(f"$ resumable {' '.join(args)}")
    subprocess.run([sys.executable, "-m", "resumable", *args], check=False)
    print()


def main() -> None:
    try:
        import_rows(fail_at=6)
    except ValueError as exc:
        print(f"the job failed: {exc}\n")
    cli("list")
    cli("show", "import-rows")
    cli("recover")
    import_rows(fail_at=None)
    cli("list")


if __name__ == "__main__":
    main()
