"""The backup commands: ``backups``, ``backup``, ``restore``."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import click

from ._context import UserError, backup_dir, backup_option, json_option, settings
from ._format import print_json, print_table, printable, time_text

__all__ = ["backup", "backups", "restore"]


@click.command()
@backup_option
@json_option
def backups(**_: Any) -> None:
    """List the backups, newest first."""
    from resumable.backup import Backups

    found = Backups(backup_dir()).list()
    if settings().json:
        infos = [dataclasses.asdict(b) for b in found]
        print_json({"backup_dir": str(backup_dir()), "count": len(infos), "backups": infos})
        return
    if not found:
        click.echo(f"no backups in {backup_dir()}")
        return
    rows = [
        [b.backup_id, printable(b.source_path), f"{b.size_bytes:,}", time_text(b.timestamp)]
        for b in found
    ]
    print_table(["BACKUP", "SOURCE", "BYTES", "TIME"], rows, (2,))


@click.command()
@click.argument("path", type=click.Path(dir_okay=True))
@backup_option
@json_option
def backup(path: str) -> None:
    """Back up a file (SQLite: a consistent snapshot, even in use)."""
    from resumable.backup import Backups

    try:
        info = Backups(backup_dir()).create(path)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot back up {path!r}: {exc.strerror or exc}") from None
    if settings().json:
        print_json({"backup": dataclasses.asdict(info)})
        return
    click.echo(
        f"backed up {printable(info.source_path)} as {info.backup_id} ({info.size_bytes:,} bytes, "
        f"xxh3-128 {info.checksum}) in {backup_dir()}"
    )


@click.command()
@click.argument("backup_id", metavar="ID")
@click.option("--to", "to", metavar="PATH", help="Restore there (default: the source's path).")
@backup_option
@json_option
def restore(backup_id: str, to: str | None) -> None:
    """Restore a backup, verified (SQLite: written in, even in use)."""
    from resumable.backup import Backups
    from resumable.backup._manifest import ID_RE
    from resumable.backup._restore import CorruptBackup

    store = Backups(backup_dir())
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
    if settings().json:
        print_json({"restored": {"backup_id": backup_id, "path": path}})
        return
    click.echo(f"restored {backup_id} to {printable(path)}")
