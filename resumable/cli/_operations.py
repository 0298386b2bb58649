"""The commands about operations: ``list``, ``show``, ``reset``, ``recover``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from resumable._admin import recoverable_operations, reset_operation
from resumable._listing import Summary, describe, listing, summaries
from resumable._map_records import key_text
from resumable.errors import OperationLocked
from resumable.operation import ProcessState

from ._context import UserError, json_option, opened_store, settings, store_option
from ._format import (
    clip,
    display_width,
    owner_text,
    plural,
    print_fields,
    print_json,
    print_table,
    printable,
    styled_state,
    time_text,
)

if TYPE_CHECKING:
    from resumable.stores.base import Store

__all__ = ["list_", "recover", "reset", "show"]

STATES = [s.value for s in ProcessState]


#: The widest an op id is printed in a table (in terminal columns); longer ones are cut in
#: the middle (``clip``). ``--json`` and ``show`` give them whole.
ID_COLUMNS = 60


@click.command("list")
@click.argument("prefix", required=False, default="")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only these.")
@click.option("--calls", is_flag=True, help="Also list @resumable calls (hidden by default).")
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N",
    help="Only the N updated last (listed in op id order).",
)  # fmt: skip
@store_option
@json_option
def list_(prefix: str, states: tuple[str, ...], calls: bool, limit: int | None) -> None:
    """List operations: state, progress, items done, attempts.

    Only those whose op id starts with PREFIX, if given. @resumable calls are counted, not
    listed, unless --calls.
    """
    with opened_store() as store:
        found = listing(
            store, prefix=prefix, states=[ProcessState(s) for s in states], calls=calls,
            limit=limit,
        )  # fmt: skip
        url = store.url
    shown = found.shown
    if settings().json:
        ops = [s.as_json() for s in shown]
        print_json({
            "store": url, "count": len(ops), "operations": ops, "damaged": found.damaged,
            "hidden_calls": found.hidden_calls, "not_shown": found.not_shown,
        })  # fmt: skip
        return
    if shown:
        print_table(
            ["OPERATION", "STATE", "PROGRESS", "DONE", "ATTEMPTS", "UPDATED", "NOTE"],
            [_row(s) for s in shown],
            (2, 3, 4),
        )
        click.echo(f"{plural(len(shown), 'operation')} in {url}")
    else:
        where = f" matching {printable(repr(prefix))}" if prefix else ""
        click.echo(
            f"no operations{where} in {url}" + (f" in state {', '.join(states)}" if states else "")
        )
    if found.not_shown:
        click.echo(
            f"+ {found.not_shown:,} more not shown (--limit {limit} keeps the {limit} updated last)"
        )
    if found.hidden_calls:
        hidden = found.hidden_calls
        click.echo(f"+ {hidden:,} call{'s' * (hidden != 1)} hidden (--calls shows them)")
    if found.damaged:
        click.secho(
            f"{len(found.damaged)} failed a checksum: `resumable verify` names the records, "
            "`resumable show OP` says what a run does",
            fg="red", err=False,
        )  # fmt: skip


def _row(s: Summary) -> list[str]:
    """The table row of ``s``."""
    ckpt, op, state, items, progress = s.checkpoint, s.op, s.state, s.items, s.progress
    if items is not None:
        done = f"{items.done}/{items.total}"
    else:
        done = str(ckpt.position) if ckpt else "-"
    return [
        clip(printable(op.op_id), ID_COLUMNS), state._value_,
        "-" if progress is None else f"{progress:.0%}", done, str(op.attempts),
        time_text(op.updated), _note(s, state),
    ]  # fmt: skip


def _note(s: Summary, state: ProcessState) -> str:
    """The NOTE column of ``s``, whose effective state is ``state``."""
    if not s.record_ok:
        return "record failed its checksum"
    if s.corrupt:
        then = f"falls back to seq {s.checkpoint.seq}" if s.checkpoint else "no good one left"
        return f"checkpoint seq {', '.join(map(str, s.corrupt))} corrupt; {then}"
    if state is s.op.state and state in _OWNED:
        text, alive = owner_text(s.op.owner)
        return f"owner {text}" + (": recoverable" if alive is False else "")
    return printable(s.op.error) if s.op.error else ""


_OWNED = (ProcessState.RUNNING, ProcessState.RECOVERING)


@click.command()
@click.argument("op_id", metavar="OP")
@store_option
@json_option
def show(op_id: str) -> None:
    """Show one operation and what its next run would do, and why."""
    with opened_store() as store:
        doc = describe(store, op_id)
        if doc is None:
            raise UserError(f"no operation {op_id!r} in {store.url}")
        doc = {"store": store.url, **doc}
    if settings().json:
        print_json(doc)
        return
    owner = doc["owner"]
    alive = {True: "alive", False: "gone", None: "another host: cannot tell"}[doc["owner_alive"]]
    checkpoints = ", ".join(
        f"seq {c['seq']}" + ("" if c["ok"] else " (CORRUPT)") for c in doc["checkpoints"]
    )
    decision = doc["decision"]
    items = doc["items"]
    print_fields([
        ("operation", printable(doc["op_id"])), ("name", printable(doc["name"])),
        ("kind", "@resumable call" if doc["call"] else "block"),
        ("state", styled_state(doc["state"])), ("position", str(doc["position"])),
        ("progress", f"{doc['progress']:.1%}"),
        *([("items", _items_text(items))] if items else []),
        ("attempts", str(doc["attempts"])),
        ("owner", f"pid {owner['pid']} on {printable(owner['host'])} ({alive})"
         if owner else "none"),
        ("error", printable(doc["error"] or "-")), ("created", time_text(doc["created"])),
        ("updated", time_text(doc["updated"])), ("checkpoints", checkpoints or "none"),
        ("results", str(doc["results"])),
        ("next run", f"{decision['action']}: {printable(decision['reason'])}"),
        ("store", doc["store"]),
    ])  # fmt: skip
    _print_failed_items(doc["failed_items"])


def _items_text(items: dict[str, int]) -> str:
    """A map's items for ``show``: ``297 of 300 done, 3 set aside``."""
    text = f"{items['done']:,} of {items['total']:,} done"
    return text + (f", {items['failed']:,} set aside" if items["failed"] else "")


#: The failed items ``show`` prints (``--json`` gives every one).
SHOWN_FAILURES = 20


def _print_failed_items(failed: list[dict[str, Any]]) -> None:
    """The items a map set aside (on_error="skip"), one line each: map, item, error."""
    if not failed:
        return
    click.echo(f"{'set aside':<12}{plural(len(failed), 'item')}: the next run retries them")
    shown = failed[:SHOWN_FAILURES]
    maps = [f"map {f['map']}" for f in shown]
    items = [clip(printable(key_text(f["key"])), ID_COLUMNS) for f in shown]
    wide = max(map(len, maps)), max(map(display_width, items))
    for where, item, f in zip(maps, items, shown, strict=True):
        pad = " " * (wide[1] - display_width(item))
        click.echo(f"{'':12}{where:<{wide[0]}}  {item}{pad}  {printable(f['error'])}")
    if len(failed) > SHOWN_FAILURES:
        click.echo(f"{'':12}and {len(failed) - SHOWN_FAILURES:,} more (--json lists every one)")


@click.command()
@click.argument("op_id", metavar="[OP]", required=False)
@click.option("--all", "all_", is_flag=True, help="Reset every operation (with --state: those).")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="With --all.")
@click.option("--yes", is_flag=True, help="Do not ask before --all without --state.")
@store_option
@json_option
def reset(op_id: str | None, all_: bool, states: tuple[str, ...], yes: bool) -> None:
    """Forget an operation so that its next run starts over.

    Removes its record, checkpoints and results, holding the operation's lock: a running
    operation is refused.
    """
    if (op_id is None) == (not all_):
        raise click.UsageError("name one operation, or pass --all (with --state to choose)")
    if states and not all_:
        raise click.UsageError("--state goes with --all")
    as_json = settings().json
    with opened_store() as store:
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
        print_json({"store": url, "reset": done, "skipped": skipped})
        return
    for d in done:
        click.echo(
            f"reset {printable(repr(d['op_id']))}: removed {plural(d['operations'], 'record')}, "
            f"{plural(d['checkpoints'], 'checkpoint')} and {plural(d['results'], 'result')}; "
            "its next run starts over"
        )
    for skip in skipped:
        click.secho(f"skipped {printable(repr(skip['op_id']))}: {skip['reason']}", fg="yellow")
    if all_ and not done and not skipped:
        click.echo(f"nothing to reset in {url}")


def _reset_all(
    store: Store, states: list[ProcessState]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for summary in summaries(store, states):
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
        return reset_operation(store, op_id)
    except OperationLocked:
        raise UserError(
            f"operation {op_id!r} is running (a live process holds its lock); stop it or let "
            "it finish, then reset it"
        ) from None


@click.command()
@store_option
@json_option
def recover(**_: Any) -> None:
    """List unfinished operations whose process is gone."""
    with opened_store() as store:
        found = recoverable_operations(store)
        url = store.url
    if settings().json:
        print_json({"store": url, "count": len(found), "operations": found})
        return
    if not found:
        click.echo(f"nothing to recover in {url}")
        return
    rows = [
        [
            clip(printable(r["operation_id"]), ID_COLUMNS), r["state"], r["strategy"],
            f"{r['progress']:.0%}", time_text(r["timestamp"]), printable(r["error"] or ""),
        ]
        for r in found
    ]  # fmt: skip
    print_table(["OPERATION", "STATE", "STRATEGY", "PROGRESS", "SINCE", "ERROR"], rows, (3,))
    click.echo(f"{len(found)} to recover in {url}: run them again to resume")
