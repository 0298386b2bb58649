"""See what a crashed job left behind, and what its next run will do, with `resumable`.

    python examples/inspect_with_cli.py

runs a small job that fails at row 6, then asks the command line about it, as you would in a
shell (`resumable list`, `resumable show import-rows`, `resumable recover`), runs the job
again (it resumes at row 6), and lists once more. Then a map over 20 images sets 2 aside and
a few `@resumable` calls run: `resumable list` shows the map's items done / total and hides
the calls (counting them), `resumable show resize` names the images set aside, and
`resumable list --calls` lists the calls too.
"""

from __future__ import annotations

import subprocess
import sys

from resumable import checkpointed, resumable


def import_rows(fail_at: int | None) -> None:
    with checkpointed("import-rows", state={"rows": 0}, every_seconds=0) as cp:
        for i in cp.iterate(range(10)):
            if i == fail_at:
                raise ValueError(f"row {i} is malformed")
            cp.state.rows += 1
    print(f"imported {cp.state.rows} rows (resumed: {cp.resumed})")


def resize_image(name: str) -> str:
    if name in ("img-04.jpg", "img-13.jpg"):
        raise OSError(f"cannot identify image file {name!r}")
    return name.replace(".jpg", ".webp")


@resumable
def thumbnail(name: str) -> str:
    return f"thumbs/{name}"


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

    with checkpointed("resize") as cp:
        done = cp.map(resize_image, [f"img-{i:02d}.jpg" for i in range(20)], on_error="skip")
    print(f"resized {sum(isinstance(d, str) for d in done)} of 20; set aside: {cp.failed}\n")
    for i in range(5):
        thumbnail(f"img-{i:02d}.jpg")
    cli("list")
    cli("show", "resize")
    cli("list", "--calls")


if __name__ == "__main__":
    main()
