"""The file store's store-wide reads and upkeep: every operation folder in turn.

What ``list``, ``verify``, ``gc`` and ``sweep`` of :class:`resumable.stores.files.FileStore`
read (see :mod:`resumable.stores.base`). Each function is handed the store's ``ops`` folder,
open (None if it was removed since the store opened), and ``errors``: the store's
:meth:`~resumable.stores.base.Store.errors`, which names the folder that could not be read.

A planted path is passed over or reported, never followed (see the module doc of
:mod:`resumable.stores.files`): a refused folder or file comes as a found thing with no
record and the refusal in words; ``list`` and ``gc`` leave that operation out, ``verify``
reports it.
"""

from __future__ import annotations

import contextlib
import functools
import stat
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from resumable import _fs
from resumable.errors import UnsafePath
from resumable.operation import CheckpointRecord, OperationRecord, ResultRecord, op_key

from . import _file_records as records
from . import _rows
from ._rows import DAMAGE
from .base import Stored, Swept

__all__ = [
    "checkpoint_heads",
    "op_names",
    "operations_and_heads",
    "record_counts",
    "scan_records",
    "stored_op_ids",
    "sweep",
]

#: :meth:`Store.errors`: turns driver errors inside the block into a StoreError about ``doing``.
Errors = Callable[[str], AbstractContextManager[None]]


class _Found(NamedTuple):
    """A record file as the store-wide reads find it."""

    where: str  # its path relative to the root
    record: OperationRecord | CheckpointRecord | ResultRecord | None  # None: unparsable
    problem: str  # why it was refused, or why its name does not fit it ("" if neither)


def op_names(ops: _fs.Dir) -> list[str]:
    """The names of the operation folders in ``ops`` (not temp names), in order."""
    return sorted(n for n in ops.names() if _fs.TEMP_MARK not in n)


def _refusal(exc: UnsafePath) -> str:
    """A refused file's problem, in words (for verify)."""
    return f"refused: {exc.why}; {exc.fix}"


def _parse_file(folder: _fs.Dir, name: str, kind: str, where: str) -> _Found | None:
    """The record in file ``name`` of ``folder``; None if there is no such file.

    ``kind`` says which: ``operation``, ``checkpoint`` or ``result``; ``where`` is the
    file's path relative to the root.
    """
    try:
        doc = records.read_doc(folder, name)
        if doc is None:
            return None
        if kind == "operation":
            return _Found(where, records.op_from(doc), "")
        if kind == "checkpoint":
            rec = records.checkpoint_from(doc)
            return _Found(where, rec, records.misnamed(name, rec))
        return _Found(where, records.result_from(doc), "")
    except DAMAGE:
        return _Found(where, None, "")
    except UnsafePath as exc:
        return _Found(where, None, _refusal(exc))


def _records_in(ops: _fs.Dir, name: str) -> Generator[_Found, None, None]:
    """Every record file of operation folder ``name``, parsed: its record first.

    A folder on the way that is refused comes as one found thing with no record.
    """
    rel = f"ops/{name}"
    try:
        folder = ops.sub(name)
    except FileNotFoundError:
        return  # deleted meanwhile
    except UnsafePath as exc:
        yield _Found(rel, None, _refusal(exc))
        return
    with folder:
        found = _parse_file(folder, "operation.json", "operation", f"{rel}/operation.json")
        if found is not None:
            yield found
        for sub, kind in (("checkpoints", "checkpoint"), ("results", "result")):
            try:
                inner = folder.sub(sub)
            except FileNotFoundError:
                continue
            except UnsafePath as exc:
                yield _Found(f"{rel}/{sub}", None, _refusal(exc))
                continue
            with inner:
                for file in sorted(inner.names()):
                    if _fs.TEMP_MARK in file:
                        continue
                    where = f"{rel}/{sub}/{file}"
                    if (found := _parse_file(inner, file, kind, where)) is not None:
                        yield found


def _folder_id(name: str, found: Iterable[_Found]) -> str:
    """The op id whose key names folder ``name``, read from its records ("" if none)."""
    for each in found:
        rec = each.record
        if rec is not None and op_key(rec.op_id) == name:
            return str(rec.op_id)
    return ""


def stored_op_ids(ops: _fs.Dir | None, errors: Errors) -> list[str]:
    """Every op id with a folder (record or not) that one of its files names, sorted."""
    ids: list[str] = []
    if ops is None:
        return ids
    for name in op_names(ops):
        found = _records_in(ops, name)
        try:
            with errors(f"read {ops.path / name}"):
                op_id = _folder_id(name, found)  # parses no more than needed
        finally:
            found.close()  # its folders, at once
        if op_id:
            ids.append(op_id)
    return sorted(ids)


def _record_in(ops: _fs.Dir, name: str) -> str:
    """The op id of folder ``name`` from its operation record ("" if that cannot tell)."""
    with contextlib.suppress(OSError, *DAMAGE), ops.sub(name) as folder:
        found = _parse_file(folder, "operation.json", "operation", "")
        return _folder_id(name, [found] if found is not None else [])
    return ""


def _newest_in(ops: _fs.Dir, name: str) -> CheckpointRecord | None:
    """The newest checkpoint file of operation folder ``name``, unverified; None if none."""
    try:
        folder = ops.sub(name, "checkpoints")
    except (FileNotFoundError, UnsafePath):
        return None  # a refused folder is passed over here: runs and verify name it
    with folder:
        return _newest(folder, lambda: _record_in(ops, name))


def _newest(folder: _fs.Dir, op_id: Callable[[], str]) -> CheckpointRecord | None:
    """The newest checkpoint file in ``checkpoints`` folder ``folder``, unverified.

    None if there is none; one that cannot be parsed, is refused or holds another seq than
    its name says is a damaged record of operation ``op_id()``, which fails its checksum.
    """
    names = records.checkpoint_names(folder)
    if not names:
        return None
    try:
        rec = records.read_checkpoint(folder, names[0])
        if rec is None or not records.misnamed(names[0], rec):
            return rec  # None: dropped from the history meanwhile
    except records.BAD_FILE:
        pass
    # Fails its checksum: callers fall back.
    return _rows.damaged_checkpoint(op_id(), records.seq_of(names[0]))


def checkpoint_heads(ops: _fs.Dir | None, errors: Errors) -> dict[str, CheckpointRecord]:
    """The newest checkpoint file of each operation folder, unverified, by op id.

    One that cannot be parsed, is refused or holds another seq than its name says comes
    back as a record that fails its checksum.
    """
    found: dict[str, CheckpointRecord] = {}
    if ops is None:
        return found
    for name in op_names(ops):
        with errors(f"read {ops.path / name}"):
            rec = _newest_in(ops, name)
        if rec is not None:
            found[rec.op_id] = rec
    return found


def _named_by(name: str, op: OperationRecord | None) -> str:
    """The op id of ``op`` if its key names folder ``name``, else "" (as :func:`_record_in`)."""
    return op.op_id if op is not None and op_key(op.op_id) == name else ""


def operations_and_heads(
    ops: _fs.Dir | None, errors: Errors
) -> tuple[list[OperationRecord], dict[str, CheckpointRecord]]:
    """The operation records (in id order) and :func:`checkpoint_heads`, in one pass.

    Each operation folder is opened once, for its record and then its newest checkpoint.
    An operation record that cannot be read, or is refused, is passed over (as the store's
    ``list_operations`` does).
    """
    found: list[OperationRecord] = []
    heads: dict[str, CheckpointRecord] = {}
    if ops is None:
        return found, heads
    for name in op_names(ops):
        with errors(f"read {ops.path / name}"):
            try:
                folder = ops.sub(name)
            except (FileNotFoundError, UnsafePath):
                continue  # gone meanwhile, or refused: runs and verify name it
            with folder:
                op: OperationRecord | None = None
                with contextlib.suppress(OSError, *DAMAGE):
                    doc = records.read_doc(folder, "operation.json")
                    op = None if doc is None else records.op_from(doc)
                if op is not None:
                    found.append(op)
                try:
                    inner = folder.sub("checkpoints")
                except (FileNotFoundError, UnsafePath):
                    continue
                with inner:
                    rec = _newest(inner, functools.partial(_named_by, name, op))
        if rec is not None:
            heads[rec.op_id] = rec
    found.sort(key=lambda op: op.op_id)
    return found, heads


def scan_records(ops: _fs.Dir | None, errors: Errors) -> Iterator[Stored]:
    """Every record file, parsed; an unparsable or refused one comes with record None."""
    if ops is None:
        return
    for name in op_names(ops):
        with errors(f"read {ops.path / name}"):
            files = list(_records_in(ops, name))
        op_id = _folder_id(name, files)
        for where, rec, problem in files:
            if rec is None:
                yield Stored(op_id, f"file {where}", None, problem)
            elif isinstance(rec, OperationRecord):
                yield Stored(op_id, "record", rec, problem)
            elif isinstance(rec, CheckpointRecord):
                yield Stored(op_id, f"checkpoint seq {rec.seq} ({where})", rec, problem)
            else:
                yield Stored(op_id, f"result {rec.key!r} ({where})", rec, problem)


def _count_in(ops: _fs.Dir, name: str, counts: dict[str, int]) -> None:
    """Add the record files of operation folder ``name`` to ``counts``, by name."""
    try:
        folder = ops.sub(name)
    except FileNotFoundError:
        return
    with folder:
        with contextlib.suppress(FileNotFoundError):
            folder.lstat("operation.json")
            counts["operations"] += 1
        for sub in ("checkpoints", "results"):
            try:
                with folder.sub(sub) as inner:
                    counts[sub] += sum(_fs.TEMP_MARK not in n for n in inner.names())
            except FileNotFoundError:
                continue


def record_counts(ops: _fs.Dir | None, op_id: str | None = None) -> dict[str, int]:
    """How many record files there are (of ``op_id`` only), counted by name.

    Counting every operation passes over a refused folder; counting one raises
    UnsafePath for it.
    """
    counts = {"operations": 0, "checkpoints": 0, "results": 0}
    if ops is None:
        return counts
    if op_id is not None:
        _count_in(ops, op_key(op_id), counts)
        return counts
    for name in op_names(ops):
        with contextlib.suppress(UnsafePath):
            _count_in(ops, name, counts)
    return counts


def sweep(ops: _fs.Dir | None, root: Path, older_than: float, *, dry_run: bool) -> list[Swept]:
    """Remove temp files of interrupted writes and folders of interrupted deletes.

    Only those last changed (content or name) before ``older_than``: a live write
    renames its temp file within moments. A refused folder is not looked into.
    """
    if ops is None:
        return []
    now = time.time()
    swept = _sweep_in(ops, root, older_than, now, dry_run=dry_run)
    for name in op_names(ops):
        for parts in ((name,), (name, "checkpoints"), (name, "results")):
            try:
                folder = ops.sub(*parts)
            except (FileNotFoundError, UnsafePath):
                continue
            with folder:
                swept += _sweep_in(folder, root, older_than, now, dry_run=dry_run)
    return swept


def _sweep_in(
    folder: _fs.Dir, root: Path, older_than: float, now: float, *, dry_run: bool
) -> list[Swept]:
    """Remove the leftovers (temp names) in ``folder`` last changed before ``older_than``."""
    swept = []
    for name in folder.names():
        if _fs.TEMP_MARK not in name:
            continue
        try:
            st = folder.lstat(name)
        except FileNotFoundError:
            continue  # removed meanwhile (its write or delete finished)
        changed = max(st.st_mtime, st.st_ctime)
        if changed >= older_than:
            continue
        if not dry_run:
            if stat.S_ISDIR(st.st_mode):
                folder.remove_tree(name)
            else:
                folder.remove(name)
        swept.append(Swept(str((folder.path / name).relative_to(root)), now - changed))
    return swept
