"""What one run of a job left behind, and how two such outcomes differ.

An outcome is what a user of the job would look at: its exit status, the last line it printed
on stdout, and the bytes of the output files they named (a directory stands for every file
under it). Two outcomes are compared item by item, and each difference is said in a line that
names the file and its first differing line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outcome", "differences", "read_outputs"]

#: What a path held: the file's bytes, a directory's files (relative path -> bytes), or
#: None if nothing was there.
Content = bytes | dict[str, bytes] | None

#: Characters of a line quoted in a message.
_QUOTE = 80


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished run of the job, as its user sees it."""

    status: int
    last_line: str
    outputs: dict[str, Content]
    stderr: str


def read_outputs(directory: Path, paths: tuple[str, ...]) -> dict[str, Content]:
    """The content of each of ``paths``, relative to ``directory``."""
    found: dict[str, Content] = {}
    for name in paths:
        path = directory / name
        if path.is_dir():
            found[name] = {
                str(file.relative_to(path)): file.read_bytes()
                for file in sorted(path.rglob("*"))
                if file.is_file()
            }
        elif path.is_file():
            found[name] = path.read_bytes()
        else:
            found[name] = None
    return found


def differences(expected: Outcome, got: Outcome) -> list[str]:
    """What ``got`` has that ``expected`` (the uninterrupted run) has not: one line each."""
    out: list[str] = []
    if got.status != expected.status:
        out.append(f"exit status {got.status} instead of {expected.status}{_tail(got.stderr)}")
    if got.last_line != expected.last_line:
        out.append(
            f"last line of stdout {_quote(got.last_line)} instead of {_quote(expected.last_line)}"
        )
    for name, want in expected.outputs.items():
        out.extend(_content_differences(name, want, got.outputs.get(name)))
    return out


def _content_differences(name: str, want: Content, have: Content) -> list[str]:
    if want == have:
        return []
    if want is None:
        return [f"{name} exists, but the uninterrupted run left none"]
    if have is None:
        return [f"{name} is missing"]
    if isinstance(want, bytes) != isinstance(have, bytes):
        kind = "a directory" if isinstance(have, dict) else "a file"
        return [f"{name} is {kind} here, not in the uninterrupted run"]
    if isinstance(want, bytes) and isinstance(have, bytes):
        return [f"{name} differs at {first_difference(want, have)}"]
    lines: list[str] = []
    if isinstance(want, dict) and isinstance(have, dict):
        for file in sorted(want.keys() | have.keys()):
            lines.extend(_content_differences(f"{name}/{file}", want.get(file), have.get(file)))
    return lines


def first_difference(want: bytes, have: bytes) -> str:
    """Where ``have`` first differs from ``want``, line by line: ``"line 17: ..."``."""
    a, b = want.splitlines(keepends=True), have.splitlines(keepends=True)
    for number, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return f"line {number}: {_quote(y)} instead of {_quote(x)}"
    if len(b) > len(a):
        return (
            f"line {len(a) + 1}: {_quote(b[len(a)])} is one line too many ({len(b)} lines "
            f"instead of {len(a)})"
        )
    return f"line {len(b) + 1}: {_quote(a[len(b)])} is missing ({len(b)} lines instead of {len(a)})"


def _quote(line: str | bytes) -> str:
    text = line.decode("utf-8", "backslashreplace") if isinstance(line, bytes) else line
    if len(text) > _QUOTE:
        text = text[: _QUOTE - 3] + "..."
    return repr(text)


def _tail(stderr: str) -> str:
    """The last lines of stderr, indented, to follow a line that says a run failed."""
    lines = stderr.strip().splitlines()[-8:]
    return "".join(f"\n      {line}" for line in lines)
