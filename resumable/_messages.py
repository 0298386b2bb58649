"""The one human line of each event, as ``resumable: <line>`` shows it to people.

:mod:`resumable._log` routes an event (a dotted name and its fields) to structlog, where the
application configured it, and otherwise renders it here: ``resuming 'nightly-report' at 210
of 400: its last run, process 28426, died without finishing``. A line says what happened and,
where the user may act, what to do; it states only what the fields say. An event with no
line here is shown as its name and fields, plainly (:func:`plain`).

A renderer may return ``None``: the event adds nothing a person needs to what another line
already said (a resume that followed a recovery's line), and no line is shown for it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = ["line", "plain"]

#: An op id longer than this many characters is cut, with an ellipsis, in a line.
MAX_ID: Final = 80
#: An error text longer than this is cut: a line is one line.
MAX_TEXT: Final = 300

Fields = Mapping[str, Any]


def line(event: str, fields: Fields) -> str | None:
    """The human line of ``event`` (without the ``resumable:`` prefix), or None for none."""
    render = _LINES.get(event)
    if render is None:
        return plain(event, fields)
    try:
        return render(fields)
    except (KeyError, TypeError, ValueError):  # a field missing or odd: never lose the event
        return plain(event, fields)


def plain(event: str, fields: Fields) -> str:
    """``event`` as its short name and ``key=value`` fields, each value cut to one line."""
    name = event.removeprefix("resumable.").replace("_", " ").replace(".", " ")
    if not fields:
        return name
    return f"{name}: " + ", ".join(f"{k}={_text(v)}" for k, v in fields.items())


# --- pieces -----------------------------------------------------------------------------------


def _cut(text: str, most: int) -> str:
    text = " ".join(str(text).split())  # one line
    return text if len(text) <= most else text[: most - 1] + "…"


def _text(value: Any) -> str:
    return _cut(str(value), MAX_TEXT)


def _op(fields: Fields) -> str:
    """The op id, quoted, cut if long."""
    return repr(_cut(str(fields["op_id"]), MAX_ID))


def _error(fields: Fields) -> str:
    """The error text without the empty message of e.g. ``KeyboardInterrupt: ``."""
    return _text(fields["error"]).removesuffix(":")


def _at(fields: Fields) -> str:
    """``at 210 (52%)``: the position, and the share done if the checkpoint recorded one."""
    progress = fields.get("progress")
    share = f" ({progress:.0%})" if isinstance(progress, float) and 0 < progress < 1 else ""
    return f"at {fields['position']}{share}"


def _owner(owner: Any) -> str:
    """An owner record as ``process 28426`` (``on host`` if another host's)."""
    if owner is None:
        return "an unknown process"
    pid, host = getattr(owner, "pid", None), getattr(owner, "host", None)
    if pid is None:
        return _text(owner)
    from ._owner import Owner

    here = Owner.current().host
    return f"process {pid}" + (f" on {host}" if host and host != here else "")


def _is_call(fields: Fields) -> bool:
    return fields.get("kind") == "call"


def _reset_hint(fields: Fields) -> str:
    return f"`resumable reset {shlex.quote(_cut(str(fields['op_id']), MAX_ID))}` runs it again"


# --- operations -------------------------------------------------------------------------------


def _resumed(f: Fields) -> str | None:
    if f.get("recovered"):
        return None  # the recovery's line said it all
    why = f"; {f['why']}" if f.get("why") else ""
    if _is_call(f):
        return f"running {_op(f)} again (attempt {f['attempt']}){why}"
    if not f["position"]:
        return f"resuming {_op(f)} from the start, reusing what its last run stored{why}"
    return f"resuming {_op(f)} {_at(f)}{why}"


def _recovered(f: Fields) -> str:
    died = f"its last run, {_owner(f['dead_owner'])}, died without finishing"
    if _is_call(f):
        return f"running {_op(f)} again: {died}"
    return f"resuming {_op(f)} {_at(f)}: {died}"


def _block_code_changed(f: Fields) -> str:
    if f["action"] == "skipped":
        return (
            f"skipping {_op(f)}: it completed in an earlier run, and the code of its block has "
            "changed since; its loops and steps do not run again, and cp.state is what the old "
            f"code left. fresh=True runs it with the new code, and so does "
            f"{_reset_hint(f).removesuffix(' runs it again')}"
        )
    return (
        f"resuming {_op(f)} at {f['position']} with the code of its block changed since the "
        "run that committed there: the new code goes on from the state the old code saved"
    )


def _stopped(verb: str) -> Callable[[Fields], str]:
    def render(f: Fields) -> str:
        return f"{verb} {_op(f)} at {f['position']} ({_error(f)}); run it again to resume there"

    return render


def _failed(f: Fields) -> str:
    if "position" not in f:  # items were set aside (on_error="skip")
        return f"{_op(f)} finished with failures: {_error(f)}; the next run tries them again"
    return _stopped("stopped")(f)


_OPERATIONS: dict[str, Callable[[Fields], str | None]] = {
    "resumable.operation.started": lambda f: f"starting {_op(f)}",
    "resumable.operation.resumed": _resumed,
    "resumable.operation.recovered": _recovered,
    "resumable.operation.reopened": lambda f: (
        f"resuming {_op(f)} at {f['position']}: it completed, but its final checkpoint failed "
        f"its checksum, so the run goes on from checkpoint seq {f['using_seq']}"
    ),
    "resumable.operation.skipped": lambda f: (
        f"skipping {_op(f)}: it completed in an earlier run; {_reset_hint(f)}"
    ),
    "resumable.operation.code_changed": _block_code_changed,
    "resumable.operation.skipped_more": lambda f: (
        f"more operations that completed in earlier runs are skipped, without a line each "
        f"after the first {f['shown']} (RESUMABLE_LOG=debug shows each)"
    ),
    "resumable.operation.completed": lambda f: f"finished {_op(f)} at {f['position']}",
    "resumable.operation.discarded": lambda f: (
        f"starting {_op(f)} afresh: fresh=True deleted what its earlier runs stored"
    ),
    "resumable.operation.repaired": lambda f: (
        f"{_op(f)} had its final checkpoint but not its record of completion (its process "
        f"ended in between); the record now says {f['state']}"
    ),
    "resumable.operation.rerun": lambda f: f"running {_op(f)} again: its code changed",
    "resumable.operation.paused": _stopped("paused"),
    "resumable.operation.failed": _failed,
    "resumable.operation.lease_lost": lambda f: (
        f"{_op(f)} lost its lease ({_error(f)}): another process may run it now, and this "
        "run wrote nothing more"
    ),
    "resumable.operation.unrecorded": lambda f: f"could not record how {_op(f)} ended: {_error(f)}",
    "resumable.operation.reset": lambda f: f"reset {_op(f)}",
    "resumable.state.unrestored": lambda f: (
        f"could not restore the committed state of {_op(f)}: {_error(f)}"
    ),
    "resumable.checkpoint.saved": lambda f: (
        f"committed {_op(f)} at {f['position']} (seq {f['seq']}, {f['bytes']} bytes, "
        f"{f['seconds'] * 1e3:.2f} ms)"
    ),
    "resumable.checkpoint.failed": lambda f: (
        f"could not write the checkpoint of {_op(f)}: {_error(f)}"
    ),
    "resumable.checkpoint.fallback": lambda f: (
        f"{_op(f)}: checkpoint seq {', '.join(map(str, f['corrupt_seqs']))} failed its checksum "
        f"and was passed over; using seq {f['using_seq']}"
    ),
    "resumable.iterate.short_input": lambda f: (
        f"{_op(f)}: {_text(f['note'])} (it committed position {f['committed_position']}; the "
        f"input now has {f['items']})"
    ),
}


# --- calls, steps and maps --------------------------------------------------------------------


def _code_changed(f: Fields) -> str:
    what = {
        "warn": "returning the stored result (on_code_change='warn'; 'rerun' runs the new "
        "code, version= pins one)",
        "rerun": "running it again",
        "error": "raising an error (on_code_change='error')",
    }.get(f["action"], f"on_code_change={f['action']!r}")
    others = "; its other calls in this process do the same without a line each"
    return (
        f"{f['function']} changed since it stored the result of {_op(f)}: {what}"
        f"{others if f.get('others_quiet') else ''}"
    )


def _store_created(f: Fields) -> str:
    source = f["source"]
    if not source:
        why = "RESUMABLE_STORE, or store = in [tool.resumable] of pyproject.toml, puts it elsewhere"
    elif source == "RESUMABLE_STORE":
        why = "as RESUMABLE_STORE says"
    else:
        why = f"as {_text(source)} says"
    return f"keeping progress in {_text(f['url'])} (new; {why})"


def _map_started(f: Fields) -> str:
    done, items = f["done_before"], f["items"]
    if not done:
        return f"map {f['map']} of {_op(f)}: {items} items"
    return (
        f"resuming map {f['map']} of {_op(f)}: {done} of {items} items done in earlier runs, "
        f"{items - done} to run"
    )


_WORK: dict[str, Callable[[Fields], str | None]] = {
    "resumable.call.code_changed": _code_changed,
    "resumable.call.waiting": lambda f: (
        f"waiting for {f['holder']}, which runs {_op(f)}, to finish it"
    ),
    "resumable.call.reset": lambda f: f"reset {_op(f)}",
    "resumable.step.done": lambda f: f"step {f['step']!r} of {_op(f)} done",
    "resumable.step.skipped": lambda f: (
        f"step {f['step']!r} of {_op(f)}: returning the result an earlier run stored"
    ),
    "resumable.map.started": _map_started,
    "resumable.map.done": lambda f: (
        f"map {f['map']} of {_op(f)}: {f['ran']} of {f['items']} items ran, {f['failed']} "
        f"failed, in {f['seconds']:.3f} s"
    ),
    "resumable.map.item_failed": lambda f: (
        f"map {f['map']} of {_op(f)}: item {_text(f['key'])} failed: {_error(f)}"
    ),
    "resumable.map.unrecorded": lambda f: (
        f"map {f['map']} of {_op(f)}: could not record {f['results']} results: {_error(f)}"
    ),
    "resumable.claims.taken_from_dead": lambda f: (
        f"{_op(f)}: taking over the unfinished items of {_text(f['dead'])}, which died"
    ),
    "resumable.lease.taken_from_dead": lambda f: (
        f"{_op(f)}: taking it over from {_text(f['dead'])}, whose lease expired"
    ),
    "resumable.lease.lost": lambda f: (
        f"{_op(f)} lost its lease (epoch {f['epoch']}) on {f['store']}: another process may run "
        "it now"
    ),
    "resumable.failsafe.resuming": lambda f: (
        f"resuming {_op(f)} from its checkpoint ({f['progress']:.0%})"
    ),
    "resumable.failsafe.checkpoint_saved": lambda f: (
        f"saved checkpoint {f['checkpoint_id']} of {_op(f)} ({f['progress']:.0%})"
    ),
    "resumable.failsafe.recoverable": lambda f: (
        f"{f['count']} operation(s) can be resumed: "
        f"{_cut(', '.join(map(repr, f['operations'])), MAX_TEXT)} "
        "(get_recoverable_operations() lists them)"
    ),
    "resumable.failsafe.corrupt_operation": lambda f: (
        f"{_op(f)}: its record failed its checksum, so it is not listed as recoverable"
    ),
    "resumable.result.corrupt": lambda f: (
        f"a stored result of {_op(f)} failed its checksum and was ignored "
        f"({_text(f.get('key', f.get('file', '')))})"
    ),
    "resumable.record.refused": lambda f: (
        f"refused the record {_text(f['file'])} of {_op(f)}: {_text(f['why'])}"
    ),
    "resumable.record.signature_mismatch": lambda f: _text(f["hint"]),
    "resumable.store.created": _store_created,
    "resumable.store.config_refused": lambda f: (
        f"ignored {_text(f['path'])}, which would choose where progress is kept: {_text(f['why'])}"
    ),
    "resumable.gc.done": lambda f: (
        f"gc {'would remove' if f['dry_run'] else 'removed'} {f['removed']} records and kept "
        f"{f['kept']}"
    ),
}


# --- backups ----------------------------------------------------------------------------------


_BACKUPS: dict[str, Callable[[Fields], str | None]] = {
    "resumable.backup.created": lambda f: (
        f"backed up {_text(f['source'])} as {f['backup_id']} ({f['size_bytes']} bytes)"
    ),
    "resumable.backup.restored": lambda f: (
        f"restored {_text(f['path'])} from backup {f['backup_id']}"
    ),
    "resumable.backup.unchanged": lambda f: (
        f"not backed up again: unchanged since backup {f['backup_id']}"
    ),
    "resumable.backup.restore_failed": lambda f: (
        f"could not restore {_text(f['path'])}; its earlier content is kept at {_text(f['kept'])}"
    ),
    "resumable.backup.restore_rolled_back": lambda f: (
        f"the restore of {_text(f['path'])} failed and was rolled back"
    ),
    "resumable.backup.corrupt": lambda f: (
        f"backup {f['backup_id']} failed its check ({_text(f.get('problem', 'checksum'))}): "
        f"{_text(f['path'])}"
    ),
    "resumable.backup.auto_missing": lambda f: (
        f"auto-backup: {_text(f['path'])} is missing ({_error(f)}); trying again next round"
    ),
    "resumable.backup.auto_failed": lambda f: (
        f"auto-backup of {_text(f['path'])} failed: {_error(f)}"
    ),
    "resumable.backup.auto_recovered": lambda f: f"auto-backup of {_text(f['path'])} works again",
    "resumable.backup.source_changing": lambda f: (
        f"{_text(f['source'])} changed while it was copied ({f['attempts']} attempts): "
        f"{_text(f['hint'])}"
    ),
}

_LINES: Final[dict[str, Callable[[Fields], str | None]]] = {**_OPERATIONS, **_WORK, **_BACKUPS}
