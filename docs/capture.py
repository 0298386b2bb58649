r"""Capture the terminal sessions the documentation quotes, and write them into the pages.

    python docs/capture.py                 # run every session, rewrite the marked blocks
    python docs/capture.py --check         # run them, compare; exit 1 if a block changed shape
    python docs/capture.py cli.md          # only this page (getting-started.md, cli.md)

Each quoted session sits between ``<!-- begin:capture-NAME ... -->`` and
``<!-- end:capture-NAME -->`` on its page, and nothing in it is typed by hand:

- ``getting-started.md``: the page's own ``thumbs.py`` (the ``python`` block before the
  session, taken from the page) runs three times in a pseudo-terminal, 100 columns wide, the
  first time stopped by a Ctrl-C (``\x03`` written to the terminal, as a keyboard does; the
  terminal does not echo it as ``^C``) once its bar shows about 43% done. What is shown is
  what the terminal shows at the end: the last content of each line, after tqdm's carriage
  returns. A traceback's frames are shortened to ``...``. The ``resumable list`` and ``show``
  after it run on a copy of that directory, in which the page's ``import-rows`` block has
  also run.
- ``cli.md``: a script makes what the page describes (a photo batch that finished, an ETL job
  that failed at row 731, an embedding job SIGKILLed at item 2,600, ``data/junmai.db`` and
  ``data/notes.txt``; then a ``cp.map`` over 300 images with 3 set aside and 1,200
  ``@resumable`` calls), then runs each command with stdout not a terminal, as the page says.

What varies from run to run stays as it came (times, pids, rates, backup ids), except the
working directory, shown as ``/tmp/demo``, and this machine's name, shown as ``vm``.
``--check`` compares each block with a fresh capture after :func:`shape` has removed that
noise (every number, digest and tqdm rate), so a changed message or column fails it and a
slower machine does not; ``tests/test_docs_capture.py`` runs it.
"""

from __future__ import annotations

import argparse
import codecs
import difflib
import fcntl
import os
import pty
import re
import secrets
import select
import shutil
import signal
import socket
import sqlite3
import string
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

DOCS = Path(__file__).resolve().parent
COMMAND = "python docs/capture.py"
SHOWN_DIR = "/tmp/demo"  # the working directory, as the pages show it
SHOWN_HOST = "vm"  # this machine's name, as the pages show it
COLUMNS = 100  # the pseudo-terminal's width
STOP_AT = 0.43  # the first thumbs.py run is stopped once its bar shows this share done
TIMEOUT = 120.0  # seconds, for any one command

Sections = dict[str, str]  # marker name -> the text between the markers

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$", re.M | re.S)


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of section ``name``."""
    return (
        f"<!-- begin:{name} (written by `{COMMAND}`; do not edit) -->",
        f"<!-- end:{name} -->",
    )


def page_sections(text: str) -> Sections:
    """Every ``capture-`` section of a page, by name."""
    found = {}
    for match in re.finditer(
        r"<!-- begin:(capture-[\w-]+) [^\n]*-->\n(.*?)<!-- end:\1 -->", text, re.S
    ):
        found[match[1]] = match[2]
    return found


def python_block_before(text: str, name: str) -> str:
    """The code of the last ``python`` block before section ``name``."""
    at = text.index(markers(name)[0])
    blocks = [m["code"] for m in _FENCE.finditer(text, 0, at) if m["lang"] == "python"]
    return blocks[-1]


def python_block_with(text: str, needle: str) -> str:
    """The code of the one ``python`` block that contains ``needle``."""
    (code,) = [
        m["code"] for m in _FENCE.finditer(text) if m["lang"] == "python" and needle in m["code"]
    ]
    return code


# --- running commands -------------------------------------------------------------------------


class Shell:
    """Runs commands in working directories that the pages show as :data:`SHOWN_DIR`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: list[Path] = []
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RESUMABLE_", "PYTHON"))
        }
        self.env.update(
            PATH=f"{bin_dir}{os.pathsep}{self.env.get('PATH', '')}",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUNBUFFERED="1",  # stdout and stderr interleave as on a terminal
            TZ="UTC",
            LC_ALL="C.UTF-8",
            COLUMNS=str(COLUMNS),
        )

    def workdir(self, copy_of: Path | None = None) -> Path:
        """A new working directory (with ``copy_of``'s content if given), removed by close().

        Its path is as long as :data:`SHOWN_DIR`: a table's columns stay aligned when it is
        shown as that.
        """
        parent, length = Path(SHOWN_DIR).parent, len(Path(SHOWN_DIR).name)
        while True:
            path = parent / "".join(secrets.choice(string.ascii_lowercase) for _ in range(length))
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        self.dirs.append(path)
        if copy_of is not None:
            shutil.copytree(copy_of, path, dirs_exist_ok=True)
        return path

    def close(self) -> None:
        """Remove the working directories."""
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)

    def shown(self, text: str) -> str:
        """``text`` with the working directories and this host as the pages show them."""
        for path in sorted(self.dirs, key=lambda p: -len(str(p))):
            for form in {str(path), str(path.resolve())}:
                text = text.replace(form, SHOWN_DIR)
        host = re.escape(socket.gethostname())
        text = re.sub(rf"(?<= on ){host}(?=\W)", SHOWN_HOST, text)
        return re.sub(rf'(?<="host": "){host}(?=")', SHOWN_HOST, text)

    def python(self, cwd: Path, code: str, *args: str, expect: int | None = 0) -> int:
        """Run ``code`` as a script (outside ``cwd``) in ``cwd``; its output is not shown."""
        script = self.root / f"script-{len(list(self.root.glob('script-*')))}.py"
        script.write_text(textwrap.dedent(code), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(script), *args], cwd=cwd, env=self.env,
            capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip
        if expect is not None and done.returncode != expect:
            raise RuntimeError(f"{script.name} exited {done.returncode}:\n{done.stderr}")
        return done.returncode

    def console(self, cwd: Path, *commands: str, exit_code: bool = False) -> str:
        """A ``console`` block: each command after ``$``, then what it printed."""
        lines = []
        for command in commands:
            done = subprocess.run(
                ["bash", "-c", command], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, check=False,
            )  # fmt: skip
            lines += [f"$ {command}", done.stdout.rstrip("\n")]
            if exit_code:
                lines += ["$ echo $?", str(done.returncode)]
        return fenced(self.shown("\n".join(lines)))


def fenced(text: str) -> str:
    """``text`` as a ``console`` block."""
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    return "```console\n" + "\n".join(lines) + "\n```\n"


# --- a terminal -------------------------------------------------------------------------------


def in_terminal(
    argv: list[str], cwd: Path, env: dict[str, str], stop: Callable[[str], bool] | None = None
) -> str:
    """Run ``argv`` in a new pseudo-terminal, its controlling terminal; return what it shows.

    With ``stop``, Ctrl-C is typed once ``stop`` holds for the terminal's current line: the
    terminal's line discipline then sends SIGINT to the program, as a keyboard's would.
    """
    # pty.fork() with the child's own steps: the size and modes are set before the child starts.
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    # No echo of Ctrl-C as ``^C`` (stty -echoctl): tqdm's bar ends one column short of the
    # edge, so a terminal shows the ``^`` after the bar and the ``C`` under the line covering it.
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~termios.ECHOCTL
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    pid = os.fork()
    if pid == 0:  # the child: a session of its own, the terminal as its controlling one
        try:
            os.close(master)
            os.login_tty(slave)
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(slave)
    screen = Screen()
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode  # a read may split a █
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the program ended and the terminal closed
                break
            if not data:
                break
            screen.feed(decode(data))
            if stop is not None and stop(screen.current()):
                os.write(master, b"\x03")
                stop = None
        else:
            os.kill(pid, signal.SIGKILL)
            raise RuntimeError(f"{argv} did not end within {TIMEOUT:g} s")
    finally:
        os.close(master)
        os.waitpid(pid, 0)
    return screen.text()


class Screen:
    """What a terminal :data:`COLUMNS` wide shows of some output: the last content of each line.

    A line longer than the terminal wraps onto the next row, as on a terminal, and is given
    back whole, as a terminal's copy and paste does, unless the row it wrapped onto was written
    over from its start after a carriage return (tqdm's redraws, a line tqdm.write puts above
    the bar).
    """

    _ESCAPE = re.compile(r"\x1b\[(?P<n>\d*)(?:;\d*)*(?P<op>[A-Za-z])")

    def __init__(self) -> None:
        self.rows: list[list[str]] = [[]]
        self.wrapped: set[int] = set()  # rows that continue the row above
        self.row = self.col = 0
        self.returned = False  # a carriage return came last

    def feed(self, text: str) -> None:
        """Apply ``text``: characters, carriage returns, newlines, and a few ANSI sequences."""
        at = 0
        while at < len(text):
            char = text[at]
            if char == "\x1b" and (match := self._ESCAPE.match(text, at)):
                self._escape(match["op"], int(match["n"] or 1))
                at = match.end()
                continue
            if char == "\r":
                self.col, self.returned = 0, True
            elif char == "\n":
                self._down()
            elif char == "\b":
                self.col = max(0, self.col - 1)
            elif char >= " ":
                self._put(char)
            at += 1

    def _put(self, char: str) -> None:
        if self.col >= COLUMNS:
            self._down()
            self.col = 0
            self.wrapped.add(self.row)
        elif self.col == 0 and self.returned:
            self.wrapped.discard(self.row)
        self.returned = False
        row = self.rows[self.row]
        row.extend(" " * (self.col + 1 - len(row)))
        row[self.col] = char
        self.col += 1

    def _down(self) -> None:
        self.row += 1
        self.returned = False
        if self.row == len(self.rows):
            self.rows.append([])

    def _escape(self, op: str, n: int) -> None:
        if op == "A":  # cursor up
            self.row = max(0, self.row - n)
        elif op == "K":  # erase to the end of the line
            del self.rows[self.row][self.col :]

    def current(self) -> str:
        """The row the cursor is on."""
        return "".join(self.rows[self.row])

    def text(self) -> str:
        """Every line, trailing blanks removed."""
        lines: list[str] = []
        for number, row in enumerate(self.rows):
            if number in self.wrapped and lines:
                lines[-1] += "".join(row)
            else:
                lines.append("".join(row))
        return "\n".join(line.rstrip() for line in lines).strip("\n")


def short_tracebacks(text: str) -> str:
    """Each traceback's frames as one ``...`` line: its paths and lines say nothing here."""
    return re.sub(r"(Traceback \(most recent call last\):\n)(?:[ \t][^\n]*\n)+", r"\1  ...\n", text)


# --- getting-started.md -----------------------------------------------------------------------


def getting_started(shell: Shell, page: str) -> Sections:
    """The ``thumbs.py`` session, and ``resumable list`` / ``show`` after its first run."""
    demo = shell.workdir()
    (demo / "thumbs.py").write_text(python_block_before(page, "capture-thumbs"), encoding="utf-8")
    argv = [sys.executable, "thumbs.py"]

    def about_43(line: str) -> bool:
        match = re.search(r"\| *(\d+)/(\d+) \[", line)
        return match is not None and int(match[1]) >= STOP_AT * int(match[2])

    runs = [in_terminal(argv, demo, shell.env, stop=about_43)]
    after_stop = shell.workdir(copy_of=demo)
    runs += [in_terminal(argv, demo, shell.env) for _ in range(2)]
    session = "\n".join(f"$ python thumbs.py\n{short_tracebacks(run)}" for run in runs)

    shell.python(after_stop, python_block_with(page, '"import-rows"'))
    look = shell.console(after_stop, "resumable list", "resumable show thumbnails")
    return {"capture-thumbs": fenced(shell.shown(session)), "capture-thumbs-cli": look}


# --- cli.md -----------------------------------------------------------------------------------

FIRST_BATCH = """
import sqlite3
from pathlib import Path

from resumable import checkpointed

with checkpointed("photos-2026-11", every_seconds=None) as cp:
    for photo in cp.iterate([f"photo-{i}.jpg" for i in range(300)]):
        pass

try:
    with checkpointed("nightly-etl", every=100, every_seconds=None) as cp:
        for row in cp.iterate(range(1000)):
            if row == 731:
                raise ConnectionError("db01: connection reset")
except ConnectionError:
    pass

Path("data").mkdir()
with sqlite3.connect("data/junmai.db") as db:
    db.execute("CREATE TABLE sake (name TEXT PRIMARY KEY, polish REAL)")
    db.executemany("INSERT INTO sake VALUES (?, ?)", [("dassai", 0.23), ("kubota", 0.5)])
db.close()
Path("data/notes.txt").write_text("junmai, 15.5%\\n")
"""

KILLED = """
import os, signal

from resumable import checkpointed

with checkpointed("embed-corpus", every=500, every_seconds=None) as cp:
    for doc in cp.iterate(range(10_000)):
        if doc == 2600:
            os.kill(os.getpid(), signal.SIGKILL)
"""

MAP_AND_CALLS = """
from resumable import checkpointed, resumable

def resize(name):
    if name in ("img-7.jpg", "img-107.jpg", "img-207.jpg"):
        raise OSError(f"cannot identify image file {name!r}")
    return name

with checkpointed("resize-2026-11") as cp:
    cp.map(resize, [f"img-{i}.jpg" for i in range(300)], key=lambda name: name, on_error="skip")

@resumable
def thumbnail(i):
    return i

for i in range(1200):
    thumbnail(i)
"""

RUNNING = """
import sys

from resumable import checkpointed

with checkpointed("import-2026-11") as cp:
    print("ready", flush=True)
    sys.stdin.read()
"""

ORPHAN = """
from resumable.operation import ResultRecord
from resumable.stores import resolve_store

resolve_store(None).put_results([ResultRecord.create("ghost", "step:x", "pickle", b"x")])
"""


def corrupt_checkpoint(demo: Path, op_id: str, seq: int) -> None:
    """Flip one byte of a stored checkpoint, as a bad disk would."""
    with closing(sqlite3.connect(demo / ".resumable" / "state.db")) as db, db:
        sql = "SELECT payload FROM checkpoints WHERE op_id = ? AND seq = ?"
        (payload,) = db.execute(sql, (op_id, seq)).fetchone()
        db.execute(
            "UPDATE checkpoints SET payload = ? WHERE op_id = ? AND seq = ?",
            (bytes([payload[0] ^ 1]) + payload[1:], op_id, seq),
        )


def flip_byte(path: Path) -> None:
    """Flip the first byte of a file."""
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])


@contextmanager
def running(shell: Shell, cwd: Path, code: str) -> Iterator[None]:
    """A live process running ``code`` (until its stdin closes) in ``cwd``."""
    script = shell.root / "running.py"
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    with subprocess.Popen(
        [sys.executable, str(script)], cwd=cwd, env=shell.env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as proc:  # fmt: skip
        if proc.stdin is None or proc.stdout is None:
            raise RuntimeError("no pipes to the running job")
        if proc.stdout.readline() != "ready\n":
            raise RuntimeError("the running job did not start")
        try:
            yield
        finally:
            proc.stdin.close()
            proc.wait(timeout=TIMEOUT)


def cli(shell: Shell, page: str) -> Sections:  # noqa: PLR0915 - one story, told in order
    """Every session of cli.md, each from the state the page describes."""
    del page
    out: Sections = {}
    demo = shell.workdir()
    shell.python(demo, FIRST_BATCH)
    shell.python(demo, KILLED, expect=-signal.SIGKILL)
    run = shell.console

    # Errors (exit codes), on the first three operations.
    (demo / "garbage.db").write_bytes(b"this is not a database, " * 200)
    out["capture-help"] = run(demo, "resumable --help")
    out["capture-error-show"] = run(demo, "resumable show nope", exit_code=True)
    out["capture-error-scheme"] = run(demo, "resumable list --store foo://x", exit_code=True)
    out["capture-error-missing"] = run(
        demo, "resumable list --store sqlite:///nowhere.db", exit_code=True
    )
    out["capture-error-damaged"] = run(
        demo, "resumable list --store sqlite:///garbage.db", exit_code=True
    )
    (demo / "garbage.db").unlink()
    out["capture-error-postgres"] = run(
        demo, "resumable list --store postgresql://postgres@127.0.0.1:1/test", exit_code=True
    )
    out["capture-error-backup"] = run(demo, "resumable backup missing.txt", exit_code=True)
    out["capture-error-restore"] = run(
        demo, "resumable restore 20990101T000000.000000Z-00000000", exit_code=True
    )
    busy = shell.workdir()
    with running(shell, busy, RUNNING):
        out["capture-error-running"] = run(busy, "resumable reset import-2026-11", exit_code=True)
    out["capture-error-usage"] = run(demo, "resumable show", exit_code=True)
    out["capture-recover"] = run(demo, "resumable recover")
    out["capture-recover-json"] = run(demo, "resumable recover --json | python -m json.tool")

    # list and show, with a map that set items aside and 1,200 calls as well.
    more = shell.workdir(copy_of=demo)
    shell.python(more, MAP_AND_CALLS)
    out["capture-list"] = run(more, "resumable list")
    out["capture-list-calls"] = run(more, "resumable list --calls --limit 3")
    out["capture-list-prefix"] = run(more, "resumable list nightly-")
    out["capture-list-json"] = run(more, "resumable list resize --json | python -m json.tool")
    out["capture-show"] = run(more, "resumable show nightly-etl")
    out["capture-show-completed"] = run(more, "resumable show photos-2026-11")
    out["capture-show-map"] = run(more, "resumable show resize-2026-11")
    out["capture-show-json"] = run(more, "resumable show nightly-etl --json | python -m json.tool")
    corrupt_checkpoint(more, "nightly-etl", 8)
    out["capture-list-corrupt"] = run(more, "resumable list")
    out["capture-show-corrupt"] = run(more, "resumable show nightly-etl")

    # Resets, on a copy.
    again = shell.workdir(copy_of=demo)
    out["capture-reset"] = run(again, "resumable reset photos-2026-11")
    out["capture-reset-all-json"] = run(
        again, "resumable reset --all --state failed --json | python -m json.tool"
    )

    # Backups, verify and stats.
    out["capture-backup"] = run(demo, "resumable backup data/junmai.db")
    out["capture-backup-json"] = run(
        demo, "resumable backup data/notes.txt --json | python -m json.tool"
    )
    out["capture-backups"] = run(demo, "resumable backups")
    out["capture-backups-json"] = run(demo, "resumable backups --json | python -m json.tool")
    (junmai,) = (demo / "data" / "backups").glob("junmai.db.*.bak")
    backup_id = junmai.name.removeprefix("junmai.db.").removesuffix(".bak")
    out["capture-restore-to"] = run(demo, f"resumable restore {backup_id} --to restored.db")
    out["capture-restore-json"] = run(demo, f"resumable restore {backup_id} --json")
    out["capture-verify"] = run(demo, "resumable verify")
    out["capture-stats"] = run(demo, "resumable stats")
    out["capture-stats-json"] = run(demo, "resumable stats --json | python -m json.tool")
    corrupt_checkpoint(demo, "nightly-etl", 8)
    flip_byte(junmai)
    out["capture-verify-bad"] = run(demo, "resumable verify", exit_code=True)
    out["capture-verify-json"] = run(demo, "resumable verify --json | python -m json.tool")
    out["capture-restore-corrupt"] = run(demo, f"resumable restore {backup_id}", exit_code=True)

    # gc: a copy no manifest commits, and the results of an operation without a record.
    stray = junmai.with_name(re.sub(r"\.\d{8}T[\d.]+Z-", ".20261130T010203.000000Z-", junmai.name))
    stray.write_bytes(b"a copy whose backup was never committed")
    shell.python(demo, ORPHAN)
    out["capture-gc"] = run(demo, "resumable gc")
    out["capture-gc-dry-run"] = run(demo, "resumable gc --dry-run --min-age 0")
    out["capture-gc-json"] = run(demo, "resumable gc --min-age 0 --json | python -m json.tool")
    return out


PAGES: dict[str, Callable[[Shell, str], Sections]] = {
    "getting-started.md": getting_started,
    "cli.md": cli,
}


# --- comparing and writing --------------------------------------------------------------------


def shape(text: str) -> str:
    """``text`` without what differs between two honest captures.

    Removed: tqdm's bar, counters, times and rates; the driver's own words after a failed
    PostgreSQL connection; every run of digits and hex digits (a number, a time, a pid, an id,
    a digest) with the separators between them; runs of spaces (tables align to their widths).
    Where the library's lines and a progress bar's meet, the lines come first and the bar once:
    a line written while the bar shows goes above it, and one written after the bar closed
    (Ctrl-C landed inside ``cp.iterate`` rather than in the loop's body) below it.
    """
    text = re.sub(r"\|[█▏▎▍▌▋▊▉ ]*\|", "|BAR|", text)
    text = re.sub(r"\[[^\]\n]*(?:it|item)/s[^\]\n]*\]", "[STATS]", text)
    text = re.sub(
        r"\(connection failed: [^\n]*\)$", "(connection failed: DRIVER)", text, flags=re.M
    )
    text = re.sub(r"[0-9a-f]*[0-9][0-9a-f]*", "#", text)
    text = re.sub(r"#(?:[.,:]#)+", "#", text)
    lines: list[str] = []
    said: list[str] = []
    bars: list[str] = []
    for line in [" ".join(line.split()) for line in text.splitlines()] + [""]:
        if "|BAR|" in line:
            bars += [] if line in bars else [line]
        elif line.startswith("resumable: ") and bars:
            said.append(line)
        else:
            lines += said + bars + [line]
            said, bars = [], []
    return "\n".join(lines[:-1])


def replace(text: str, name: str, body: str) -> str:
    """``text`` with section ``name``'s body replaced (its markers must be there)."""
    begin, end = markers(name)
    if begin not in text or end not in text:
        raise SystemExit(f"no {begin} ... {end} on the page")
    start, stop = text.index(begin) + len(begin) + 1, text.index(end)
    return text[:start] + body + text[stop:]


def differences(page: str, old: Sections, new: Sections) -> list[str]:
    """What differs in shape between a page's sections and a fresh capture's."""
    problems = [
        f"{page}: {name} is on the page but not captured" for name in old.keys() - new.keys()
    ]
    for name, body in new.items():
        if name not in old:
            problems.append(f"{page}: {name} is captured but has no markers on the page")
        elif shape(old[name]) != shape(body):
            diff = difflib.unified_diff(
                shape(old[name]).splitlines(), shape(body).splitlines(),
                f"{page} ({name})", "a fresh capture (shapes)", lineterm="", n=1,
            )  # fmt: skip
            problems.append("\n".join(diff))
    return problems


def main(argv: list[str] | None = None) -> int:
    """Capture the pages' sessions, then write them (or, with --check, compare)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("pages", nargs="*", metavar="PAGE", help=f"of {', '.join(PAGES)}")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    if unknown := set(args.pages) - PAGES.keys():
        parser.error(f"no sessions to capture on {', '.join(sorted(unknown))}")
    problems = []
    for name in args.pages or PAGES:
        path = DOCS / name
        text = path.read_text(encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="capture-") as root:
            shell = Shell(Path(root))
            try:
                fresh = PAGES[name](shell, text)
            finally:
                shell.close()
        if args.check:
            problems += differences(name, page_sections(text), fresh)
            continue
        for section, body in fresh.items():
            text = replace(text, section, body)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {len(fresh)} sessions into docs/{name}")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"the pages no longer show what the library prints: run `{COMMAND}`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
