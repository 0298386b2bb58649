"""The commands that check and tidy a store and its backups: ``verify``, ``gc``, ``stats``."""

from __future__ import annotations

import sys
from typing import Any

import click

from resumable._admin import backup_statistics, statistics

from ._context import (
    backup_dir,
    backup_option,
    json_option,
    opened_store_or_none,
    settings,
    store_option,
    store_url,
)
from ._format import age_text, plural, print_fields, print_json, printable

__all__ = ["gc", "stats", "verify"]


@click.command()
@store_option
@backup_option
@json_option
def verify(**_: Any) -> None:
    """Check every record and backup; exit 1 if one is bad.

    Every operation record, every stored checkpoint (not only the newest), every result, and
    every backup's copy against its checksum.
    """
    from resumable._verify import verify_backups, verify_store  # loaded for this command only

    with opened_store_or_none() as store:
        checked, bad = verify_store(store) if store is not None else ({}, [])
        url = store.url if store is not None else None
    backups, bad_backups = verify_backups(backup_dir())
    bad += bad_backups
    checked["backups"] = backups
    if settings().json:
        print_json({
            "store": url, "backup_dir": str(backup_dir()),
            "checked": checked, "bad": [b.as_json() for b in bad], "ok": not bad,
        })  # fmt: skip
    else:
        if url is None:
            click.echo(f"no store at {store_url()}: no records to check")
        else:
            unreadable = checked["unreadable"]
            click.echo(
                f"checked {url}: {plural(checked['operations'], 'operation record')}, "
                f"{plural(checked['checkpoints'], 'checkpoint')}, "
                f"{plural(checked['results'], 'result')}"
                + (f", {plural(unreadable, 'unreadable file')}" if unreadable else "")
            )
        click.echo(f"checked {backup_dir()}: {plural(backups, 'backup')}")
        for b in bad:
            click.echo(f"{click.style('BAD', fg='red', bold=True)}  {printable(b)}")
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


@click.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.option(
    "--min-age", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="MIN",
    help="Leftovers must be at least this many minutes old.",
)  # fmt: skip
@click.option(
    "--completed-older-than", type=click.FloatRange(min=0), metavar="DAYS",
    help="Also forget COMPLETED operations not updated for DAYS (they would run again).",
)  # fmt: skip
@store_option
@backup_option
@json_option
def gc(dry_run: bool, min_age: float, completed_older_than: float | None) -> None:
    """Remove leftovers no run can need (policy: docs/cli.md)."""
    from resumable._gc import collect_garbage  # loaded for this command only

    older = None if completed_older_than is None else completed_older_than * 86400
    with opened_store_or_none() as store:
        removed, kept = collect_garbage(
            store, backup_dir(), min_age=min_age * 60, completed_older_than=older,
            dry_run=dry_run,
        )  # fmt: skip
        url = store.url if store is not None else None
    if settings().json:
        print_json({
            "store": url, "backup_dir": str(backup_dir()), "dry_run": dry_run,
            "min_age_minutes": min_age, "completed_older_than_days": completed_older_than,
            "removed": [r.as_json() for r in removed], "kept": [k.as_json() for k in kept],
        })  # fmt: skip
        return
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        click.echo(f"{verb}  {r.kind}  {printable(r.what)}  ({age_text(r.age)}): {r.note}")
    for k in kept:
        click.echo(f"kept  {k.kind}  {printable(k.what)}  ({age_text(k.age)}): {k.note}")
    where = url or f"{store_url()} (no store there)"
    click.echo(f"{verb} {len(removed)}, kept {len(kept)} in {where} and {backup_dir()}")


@click.command()
@store_option
@backup_option
@json_option
def stats(**_: Any) -> None:
    """Operations by state, records, and backups."""
    with opened_store_or_none() as store:
        found = statistics(store) if store is not None else None
        url = store.url if store is not None else store_url()
    backups = backup_statistics(backup_dir())
    if settings().json:
        print_json({"store": url, "operations": found, "backups": backups})
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
        f"{plural(backups['total'], 'backup')} of {plural(backups['sources'], 'file')}, "
        f"{backups['total_size_mb']:.2f} MiB "
        f"in {backups['backup_dir']}",
    ))  # fmt: skip
    print_fields(rows)
