"""The ``resumable`` command line: see, explain, reset, recover, verify and back up.

Every command takes ``--store URL`` (default: ``RESUMABLE_STORE``, else
``sqlite:///.resumable/state.db``) and ``--json`` (one JSON document on stdout, shapes in
docs/cli.md); the backup commands take ``--backup-dir`` (default ``data/backups``, as the
FailsafeManager). A user mistake prints one line on stderr, ``resumable: error: ...``, and
exits 1; click's usage errors exit 2. The work itself is in :mod:`resumable._admin`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from . import _admin
from ._owner import Owner
from ._time import iso_time
from .errors import OperationLocked, ResumableError
from .operation import ProcessState

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])
STATES = [s.value for s in ProcessState]
_COLOURS = {
    "completed": "green", "failed": "red", "running": "cyan", "paused": "yellow",
    "recovering": "magenta", "initialized": "blue",
}  # fmt: skip


class UserError(click.ClickException):
    """A mistake of the user's: one line on stderr, exit code 1, no traceback."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print ``resumable: error: <message>`` on one line."""
        del file
        click.echo(f"resumable: error: {' '.join(self.format_message().split())}", err=True)


@dataclasses.dataclass
class Settings:
    """The options every command shares, set on the group or on the command."""

    store: str | None = None
    backup_dir: str = "data/backups"
    json: bool = False


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None and value is not False and param.name is not None:
        setattr(ctx.ensure_object(Settings), param.name, value)


def _store_option(f: F) -> F:
    return click.option(
        "--store", metavar="URL", expose_value=False, callback=_remember,
        help="Store URL (default: $RESUMABLE_STORE, else sqlite:///.resumable/state.db).",
    )(f)  # fmt: skip


def _json_option(f: F) -> F:
    return click.option(
        "--json", is_flag=True, default=None, expose_value=False, callback=_remember,
        help="Print one JSON document on stdout (shapes: docs/cli.md).",
    )(f)  # fmt: skip


def _backup_option(f: F) -> F:
    return click.option(
        "--backup-dir", metavar="DIR", expose_value=False, callback=_remember,
        help="Backup directory (default: data/backups).",
    )(f)  # fmt: skip


class _Group(click.Group):
    """Turns the library's own errors into one-line messages (they say what to do)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResumableError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@_store_option
@_backup_option
@_json_option
@click.option("-v", "--verbose", is_flag=True, help="Show the library's log events on stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """See, explain, reset, recover, verify and back up resumable operations."""
    ctx.ensure_object(Settings)
    logger = logging.getLogger("resumable")
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("resumable: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:  # what matters is in the command's own output; no duplicate warnings
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def main() -> None:
    """The console script."""
    cli.main(prog_name="resumable")


# --- helpers ------------------------------------------------------------------------------


def _settings() -> Settings:
    return click.get_current_context().ensure_object(Settings)


def _url() -> str:
    from .stores import default_store_url

    return _settings().store or default_store_url()


@contextmanager
def _opened(*, missing_ok: bool = False) -> Iterator[Store | None]:
    """The store ``--store`` names; one that does not exist is never created.

    Yields None for a missing store if ``missing_ok``, else it is a user error.
    """
    from .stores import open_store

    url = _url()
    try:
        why = _admin.store_missing(url)
        if why is not None and not missing_ok:
            raise UserError(why)
        store = None if why is not None else open_store(url)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    try:
        yield store
    finally:
        if store is not None:
            store.close()


@contextmanager
def _store() -> Iterator[Store]:
    with _opened() as store:
        assert store is not None  # noqa: S101 - missing_ok=False
        yield store


def _backup_dir() -> Path:
    """``--backup-dir``, its directories checked (a symlink followed only if yours or root's).

    Raises:
        UnsafePath: a directory on the way is another user's or writable by others (a
            ResumableError: one line).
    """
    from . import _trust

    try:
        return _trust.resolve_dir(Path(_settings().backup_dir))
    except NotADirectoryError:
        raise UserError(f"--backup-dir {_settings().backup_dir} is not a directory") from None


def _print_json(doc: Any) -> None:
    """One JSON document: indented on a terminal, one line otherwise (the fast encoder)."""
    click.echo(json.dumps(doc, indent=2 if sys.stdout.isatty() else None))


def _text(value: object) -> str:
    """``value`` as text that cannot garble a terminal (control characters escaped)."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _when(when: float | str) -> str:
    """A time (POSIX seconds, or an ISO string from ``_admin``) as tables show it.

    The library's one format (``_time.iso_time``), to the second.
    """
    if isinstance(when, str):
        return iso_time(dt.datetime.fromisoformat(when), timespec="seconds")
    return iso_time(when, timespec="seconds")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "age unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} old"
    return f"{seconds:.0f} s old"


def _state(value: str) -> str:
    return click.style(value, fg=_COLOURS.get(value), bold=value == "failed")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Print aligned columns; the second (a state) coloured when stdout is a terminal."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size().columns if tty else 0
    last = len(head) - 1
    states: dict[str, str] = {}
    lines = []
    for n, cells in enumerate([head, *rows]):
        padded = [
            c.rjust(widths[i]) if i in right else c if i == last else c.ljust(widths[i])
            for i, c in enumerate(cells)
        ]
        text = "  ".join(padded).rstrip()
        if width and len(text) > width:  # a terminal: keep one line per row
            text = text[: width - 1] + "…"
        if tty and n == 0:
            text = click.style(text, bold=True)
        elif tty:
            start = len(padded[0]) + 2
            end = start + len(padded[1])
            if (styled := states.get(padded[1])) is None:
                styled = states[padded[1]] = _state(cells[1]) + padded[1][len(cells[1]) :]
            text = text[:start] + styled + text[end:]
        lines.append(text)
    click.echo("\n".join(lines))


def _owner(owner: Owner | None) -> tuple[str, bool | None]:
    if owner is None:
        return "none", False
    alive = owner.is_alive()
    verdict = {True: "alive", False: "gone", None: "another host: cannot tell"}[alive]
    return f"pid {owner.pid} on {_text(owner.host)} ({verdict})", alive


# --- operations ---------------------------------------------------------------------------


@cli.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only these.")
@_store_option
@_json_option
def list_(states: tuple[str, ...]) -> None:
    """List operations: state, progress, position, attempts."""
    with _store() as store:
        found = _admin.summaries(store, [ProcessState(s) for s in states])
        url = store.url
    damaged = [s.op.op_id for s in found if not s.record_ok or s.corrupt]
    if _settings().json:
        ops = [s.as_json() for s in found]
        _print_json({"store": url, "count": len(ops), "operations": ops, "damaged": damaged})
        return
    if not found:
        click.echo(f"no operations in {url}" + (f" in state {', '.join(states)}" if states else ""))
        return
    rows = []
    for s in found:
        ckpt = s.checkpoint
        rows.append([
            _text(s.op.op_id), s.state.value, f"{ckpt.progress:.0%}" if ckpt else "-",
            str(ckpt.position) if ckpt else "-", str(s.op.attempts), _when(s.op.updated),
            _note(s),
        ])  # fmt: skip
    _table(
        ["OPERATION", "STATE", "PROGRESS", "POSITION", "ATTEMPTS", "UPDATED", "NOTE"],
        rows,
        (2, 3, 4),
    )
    click.echo(f"{_n(len(found), 'operation')} in {url}")
    if damaged:
        click.secho(
            f"{len(damaged)} failed a checksum: `resumable verify` names the records, "
            "`resumable show OP` says what a run does",
            fg="red", err=False,
        )  # fmt: skip


def _note(s: _admin.Summary) -> str:
    if not s.record_ok:
        return "record failed its checksum"
    if s.corrupt:
        then = f"falls back to seq {s.checkpoint.seq}" if s.checkpoint else "no good one left"
        return f"checkpoint seq {', '.join(map(str, s.corrupt))} corrupt; {then}"
    if s.op.state in (ProcessState.RUNNING, ProcessState.RECOVERING) and s.state is s.op.state:
        text, alive = _owner(s.op.owner)
        return f"owner {text}" + (": recoverable" if alive is False else "")
    return _text(s.op.error or "")


@cli.command()
@click.argument("op_id", metavar="OP")
@_store_option
@_json_option
def show(op_id: str) -> None:
    """Show one operation and what its next run would do, and why."""
    with _store() as store:
        doc = _admin.describe(store, op_id)
        if doc is None:
            raise UserError(f"no operation {op_id!r} in {store.url}")
        doc = {"store": store.url, **doc}
    if _settings().json:
        _print_json(doc)
        return
    owner = doc["owner"]
    alive = {True: "alive", False: "gone", None: "another host: cannot tell"}[doc["owner_alive"]]
    checkpoints = ", ".join(
        f"seq {c['seq']}" + ("" if c["ok"] else " (CORRUPT)") for c in doc["checkpoints"]
    )
    decision = doc["decision"]
    _fields([
        ("operation", _text(doc["op_id"])), ("name", _text(doc["name"])),
        ("state", _state(doc["state"])), ("position", str(doc["position"])),
        ("progress", f"{doc['progress']:.1%}"), ("attempts", str(doc["attempts"])),
        ("owner", f"pid {owner['pid']} on {_text(owner['host'])} ({alive})" if owner else "none"),
        ("error", _text(doc["error"] or "-")), ("created", _when(doc["created"])),
        ("updated", _when(doc["updated"])), ("checkpoints", checkpoints or "none"),
        ("results", str(doc["results"])),
        ("next run", f"{decision['action']}: {_text(decision['reason'])}"), ("store", doc["store"]),
    ])  # fmt: skip


def _fields(pairs: Sequence[tuple[str, str]]) -> None:
    """Print ``key   value`` lines, keys in bold on a terminal."""
    click.echo("\n".join(f"{click.style(k.ljust(12), bold=True)}{v}" for k, v in pairs))


@cli.command()
@click.argument("op_id", metavar="[OP]", required=False)
@click.option("--all", "all_", is_flag=True, help="Reset every operation (with --state: those).")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="With --all.")
@click.option("--yes", is_flag=True, help="Do not ask before --all without --state.")
@_store_option
@_json_option
def reset(op_id: str | None, all_: bool, states: tuple[str, ...], yes: bool) -> None:
    """Forget an operation so that its next run starts over.

    Removes its record, checkpoints and results, holding the operation's lock: a running
    operation is refused.
    """
    if (op_id is None) == (not all_):
        raise click.UsageError("name one operation, or pass --all (with --state to choose)")
    if states and not all_:
        raise click.UsageError("--state goes with --all")
    as_json = _settings().json
    with _store() as store:
        if op_id is not None:
            counts = _reset_one(store, op_id)
            if counts is None:
                raise UserError(f"no operation {op_id!r} in {store.url}")
            done: list[dict[str, Any]] = [{"op_id": op_id, **counts}]
            skipped: list[dict[str, Any]] = []
        else:
            if not states and not yes:
                if as_json or not sys.stdin.isatty():
                    raise UserError("reset --all without --state resets every operation; add --yes")
                click.confirm(f"reset every operation in {store.url}?", abort=True)
            done, skipped = _reset_all(store, [ProcessState(x) for x in states])
        url = store.url
    if as_json:
        _print_json({"store": url, "reset": done, "skipped": skipped})
        return
    for d in done:
        click.echo(
            f"reset {_text(repr(d['op_id']))}: removed {_n(d['operations'], 'record')}, "
            f"{_n(d['checkpoints'], 'checkpoint')} and {_n(d['results'], 'result')}; its next "
            "run starts over"
        )
    for skip in skipped:
        click.secho(f"skipped {_text(repr(skip['op_id']))}: {skip['reason']}", fg="yellow")
    if all_ and not done and not skipped:
        click.echo(f"nothing to reset in {url}")


def _reset_all(
    store: Store, states: list[ProcessState]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for summary in _admin.summaries(store, states):
        op_id = summary.op.op_id
        try:
            counts = _reset_one(store, op_id)
        except UserError as exc:
            skipped.append({"op_id": op_id, "reason": exc.message})
            continue
        if counts is not None:
            done.append({"op_id": op_id, **counts})
    return done, skipped


def _reset_one(store: Store, op_id: str) -> dict[str, int] | None:
    try:
        return _admin.reset_operation(store, op_id)
    except OperationLocked:
        raise UserError(
            f"operation {op_id!r} is running (a live process holds its lock); stop it or let "
            "it finish, then reset it"
        ) from None


@cli.command()
@_store_option
@_json_option
def recover(**_: Any) -> None:
    """List unfinished operations whose process is gone."""
    with _store() as store:
        found = _admin.recoverable_operations(store)
        url = store.url
    if _settings().json:
        _print_json({"store": url, "count": len(found), "operations": found})
        return
    if not found:
        click.echo(f"nothing to recover in {url}")
        return
    rows = [
        [
            _text(r["operation_id"]), r["state"], r["strategy"], f"{r['progress']:.0%}",
            _when(r["timestamp"]), _text(r["error"] or ""),
        ]
        for r in found
    ]  # fmt: skip
    _table(["OPERATION", "STATE", "STRATEGY", "PROGRESS", "SINCE", "ERROR"], rows, (3,))
    click.echo(f"{len(found)} to recover in {url}: run them again to resume")


# --- checks and upkeep --------------------------------------------------------------------


@cli.command()
@_store_option
@_backup_option
@_json_option
def verify(**_: Any) -> None:
    """Check every record and backup; exit 1 if one is bad.

    Every operation record, every stored checkpoint (not only the newest), every result, and
    every backup's copy against its checksum.
    """
    with _opened(missing_ok=True) as store:
        checked, bad = _admin.verify_store(store) if store is not None else ({}, [])
        url = store.url if store is not None else None
    backups, bad_backups = _admin.verify_backups(_backup_dir())
    bad += bad_backups
    checked["backups"] = backups
    if _settings().json:
        _print_json({
            "store": url, "backup_dir": str(_backup_dir()),
            "checked": checked, "bad": [b.as_json() for b in bad], "ok": not bad,
        })  # fmt: skip
    else:
        if url is None:
            click.echo(f"no store at {_url()}: no records to check")
        else:
            unreadable = checked["unreadable"]
            click.echo(
                f"checked {url}: {_n(checked['operations'], 'operation record')}, "
                f"{_n(checked['checkpoints'], 'checkpoint')}, {_n(checked['results'], 'result')}"
                + (f", {_n(unreadable, 'unreadable file')}" if unreadable else "")
            )
        click.echo(f"checked {_backup_dir()}: {_n(backups, 'backup')}")
        for b in bad:
            click.echo(f"{click.style('BAD', fg='red', bold=True)}  {_text(b)}")
        if bad:
            click.secho(
                f"{len(bad)} bad: a run falls back past a bad checkpoint; reset an operation "
                "whose record is bad; make a new backup of a bad one",
                fg="red",
            )
        else:
            click.secho("all good", fg="green")
    if bad:
        sys.exit(1)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option(
    "--min-age", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="MIN",
    help="Leftovers must be at least this many minutes old.",
)  # fmt: skip
@click.option(
    "--completed-older-than", type=click.FloatRange(min=0), metavar="DAYS",
    help="Also forget COMPLETED operations not updated for DAYS (they would run again).",
)  # fmt: skip
@_store_option
@_backup_option
@_json_option
def gc(dry_run: bool, min_age: float, completed_older_than: float | None) -> None:
    """Remove leftovers no run can need (policy: docs/cli.md)."""
    older = None if completed_older_than is None else completed_older_than * 86400
    with _opened(missing_ok=True) as store:
        removed, kept = _admin.collect_garbage(
            store, _backup_dir(), min_age=min_age * 60, completed_older_than=older,
            dry_run=dry_run,
        )  # fmt: skip
        url = store.url if store is not None else None
    if _settings().json:
        _print_json({
            "store": url, "backup_dir": str(_backup_dir()), "dry_run": dry_run,
            "min_age_minutes": min_age, "completed_older_than_days": completed_older_than,
            "removed": [r.as_json() for r in removed], "kept": [k.as_json() for k in kept],
        })  # fmt: skip
        return
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        click.echo(f"{verb}  {r.kind}  {_text(r.what)}  ({_age(r.age)}): {r.note}")
    for k in kept:
        click.echo(f"kept  {k.kind}  {_text(k.what)}  ({_age(k.age)}): {k.note}")
    where = url or f"{_url()} (no store there)"
    click.echo(f"{verb} {len(removed)}, kept {len(kept)} in {where} and {_backup_dir()}")


@cli.command()
@_store_option
@_backup_option
@_json_option
def stats(**_: Any) -> None:
    """Operations by state, records, and backups."""
    with _opened(missing_ok=True) as store:
        found = _admin.statistics(store) if store is not None else None
        url = store.url if store is not None else _url()
    backups = _admin.backup_statistics(_backup_dir())
    if _settings().json:
        _print_json({"store": url, "operations": found, "backups": backups})
        return
    rows = [("store", url + ("" if found else " (no store there)"))]
    if found is not None:
        states = ", ".join(f"{k} {v}" for k, v in found["by_state"].items() if v)
        rows += [
            ("operations", f"{found['operations']}" + (f" ({states})" if states else "")),
            ("active", str(found["active"])), ("checkpoints", str(found["checkpoints"])),
            ("results", str(found["results"])),
            ("orphaned", str(found["orphaned_operations"])),
            ("corrupt", str(found["corrupt_records"])),
        ]  # fmt: skip
    rows.append((
        "backups",
        f"{_n(backups['total'], 'backup')} of {_n(backups['sources'], 'file')}, "
        f"{backups['total_size_mb']:.2f} MiB "
        f"in {backups['backup_dir']}",
    ))  # fmt: skip
    _fields(rows)


# --- backups ------------------------------------------------------------------------------


@cli.command()
@_backup_option
@_json_option
def backups(**_: Any) -> None:
    """List the backups, newest first."""
    from .backup import Backups

    found = Backups(_backup_dir()).list()
    if _settings().json:
        infos = [dataclasses.asdict(b) for b in found]
        _print_json({"backup_dir": str(_backup_dir()), "count": len(infos), "backups": infos})
        return
    if not found:
        click.echo(f"no backups in {_backup_dir()}")
        return
    rows = [
        [b.backup_id, _text(b.source_path), f"{b.size_bytes:,}", _when(b.timestamp)] for b in found
    ]
    _table(["BACKUP", "SOURCE", "BYTES", "TIME"], rows, (2,))


@cli.command()
@click.argument("path", type=click.Path(dir_okay=True))
@_backup_option
@_json_option
def backup(path: str) -> None:
    """Back up a file (SQLite: a consistent snapshot, even in use)."""
    from .backup import Backups

    try:
        info = Backups(_backup_dir()).create(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot back up {path!r}: {exc.strerror or exc}") from None
    if _settings().json:
        _print_json({"backup": dataclasses.asdict(info)})
        return
    click.echo(
        f"backed up {_text(info.source_path)} as {info.backup_id} ({info.size_bytes:,} bytes, "
        f"xxh3-128 {info.checksum}) in {_backup_dir()}"
    )


@cli.command()
@click.argument("backup_id", metavar="ID")
@click.option("--to", "to", metavar="PATH", help="Restore there (default: the source's path).")
@_backup_option
@_json_option
def restore(backup_id: str, to: str | None) -> None:
    """Restore a backup, verified (SQLite: written in, even in use)."""
    from ._backup_copy import CorruptBackup
    from ._backup_files import ID_RE
    from .backup import Backups

    store = Backups(_backup_dir())
    if not (ID_RE.fullmatch(backup_id) and os.path.lexists(store.dir / f"{backup_id}.json")):
        raise UserError(f"no backup {backup_id!r} in {store.dir}; `resumable backups` lists them")
    try:  # a refused manifest (BackupRefused) is a ValueError that says why
        path = store.restore(backup_id, to)
    except CorruptBackup as exc:
        raise UserError(exc.advice("`resumable backups`")) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:  # an unsafe destination (UnsafePath) says which path and why
        raise UserError(f"cannot restore {backup_id}: {exc.strerror or exc}") from None
    if _settings().json:
        _print_json({"restored": {"backup_id": backup_id, "path": path}})
        return
    click.echo(f"restored {backup_id} to {_text(path)}")
