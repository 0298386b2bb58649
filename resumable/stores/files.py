"""``file:///dir``: JSON records, one file per checkpoint, each written atomically.

Layout under the root directory (names derive from a digest of the op id, never the raw id)::

    ops/<op key>/operation.json          the operation's lifecycle record
    ops/<op key>/checkpoints/<seq>.json  one file per checkpoint (the newest ``history`` kept)
    ops/<op key>/results/<key>.json      step and call results
    locks/<op key>.lock                  flock files, never removed while an op may run

What a record file holds, and how its payload is encoded: :mod:`._file_records`. Files named
with the temp mark are half-written leftovers of a crash: readers skip them. The store-wide
reads and upkeep (``list``, ``verify``, ``gc``, ``sweep``): :mod:`._file_scan`.

Nothing below the root is reached through a symlink. The root is checked once, when the store
opens (every directory on the way yours or root's and not writable by others, unless shared on
purpose: :mod:`resumable._trust`); ``root`` is its real path. Each read or write then opens the
root and every folder below it relative to the one above, never following a link and checking
each (:class:`resumable._fs.Dir`), and names the file relative to its folder. Records are read
only from regular files of yours (or root's) with one link and at most
:data:`._file_records.RECORD_LIMIT` bytes, all looked at before a byte is read: a FIFO,
``/dev/zero`` or a 100 GB file is refused at once. What a planted path (a symlink, FIFO,
device, hard link, another user's file or folder) does depends on where it is:

- a folder on the way to a record (``ops/<key>``, its ``checkpoints`` or ``results``):
  UnsafePath (a StoreError naming it and what to do) for everything done to that operation, a
  run and ``reset`` included: nothing is read from it or written into it. The store-wide reads
  of the command line pass over it: ``list`` and ``gc`` leave that operation out, ``verify``
  reports it.
- an operation record: UnsafePath when the operation is read (a run, ``show``). ``list``
  leaves it out, ``verify`` reports it, ``gc`` keeps the operation (its record is there, not
  gone), ``reset`` removes it.
- a checkpoint or result file: damaged, as a file that does not parse: a run falls back to
  the checkpoint before it (CheckpointCorrupt if none is good), a result counts as missing
  (the step runs again; its new file replaces the planted one, never written through it), and
  ``verify`` reports why. Whoever could plant it could as well have deleted the file, which
  has the same effect. A checkpoint asked for by id (:meth:`FileStore.checkpoint_by_id`)
  raises UnsafePath instead. A folder planted at a record's name cannot be replaced: the
  write raises UnsafePath.
- a checkpoint file whose name says another seq than the record in it (an older signed file
  copied over a newer name: a rollback no signature can see) is damaged as well, and
  ``verify`` says so.
- removals (the history, ``reset``, ``gc``) unlink a planted link itself, never its target,
  and remove a folder without following any link inside it.

The ``locks`` folder is checked when the store opens; its lock file is opened by
:mod:`resumable.locks` (never through a final symlink: :func:`resumable._fs.open_lock`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from resumable import _fs
from resumable._log import log
from resumable.errors import CheckpointCorrupt, StoreError, UnsafePath
from resumable.locks import Lock, LockFile, store_lock
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ResultRecord,
    op_key,
)

from . import _file_records as records
from . import _file_scan, _rows
from ._rows import DAMAGE
from .base import DEFAULT_HISTORY, Durability, Store, Stored, Swept

__all__ = ["FileStore"]


class FileStore(Store):
    """A store of JSON files under one directory.

    Args:
        root: the directory; created (owner-only) if missing.
        durability: ``"normal"`` or ``"full"`` (fsync of file and directory on every write).
        history: checkpoints kept per operation.

    Raises:
        UnsafePath: the directory, or one on the way to it, or its ``ops`` or ``locks``
            folder, is another user's or writable by others (see :mod:`resumable._trust`).
    """

    schemes: ClassVar[tuple[str, ...]] = ("file",)
    # OSError only: a file that reads but does not decode is a damaged record (corrupt, and
    # named as such), never a store that cannot be read.
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = (OSError,)

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        history: int = DEFAULT_HISTORY,
    ) -> None:
        super().__init__(durability=durability, history=history)
        given = Path(root).absolute()
        self.url = f"file://{given}"
        with self.errors("create the store directory"):
            # Checked once, here, every directory on the way: below the real path, nothing
            # is reached by path again (see the module doc).
            self.root = _fs.makedirs(given)
            with _fs.Dir.open(self.root) as top:
                top.sub("ops", create=True).close()
                top.sub("locks", create=True).close()
        self._lock_file = LockFile(self.root / "locks" / "operations.lock")

    def _dir(self, op_id: str) -> Path:
        """The operation's folder, for messages (it is never opened by this path)."""
        return self.root / "ops" / op_key(op_id)

    def _open(self, *parts: str, create: bool = False) -> _fs.Dir:
        """Folder ``parts`` below the root, each opened relative to the one above.

        Raises:
            FileNotFoundError: it does not exist (and not ``create``).
            UnsafePath: a folder on the way is a symlink, not a folder, or another user's.
        """
        with _fs.Dir.open(self.root) as top:
            return top.sub(*parts, create=create)

    def _ops(self) -> _fs.Dir | None:
        """The ``ops`` folder, open; None if it was removed since the store opened."""
        try:
            return self._open("ops")
        except FileNotFoundError:
            return None

    def _write(self, folder: _fs.Dir, name: str, doc: dict[str, Any]) -> None:
        folder.write(name, records.json_chunks(doc), durable=self.durability == "full")

    def record_name(self, op_id: str, seq: int | None = None) -> str:
        """As :meth:`Store.record_name`, with the record's file."""
        folder = self._dir(op_id)
        if seq is None:
            return f"the record of operation {op_id!r} ({folder / 'operation.json'})"
        path = folder / "checkpoints" / records.checkpoint_name(seq)
        return f"checkpoint seq {seq} of operation {op_id!r} ({path})"

    # --- reads ----------------------------------------------------------------------------

    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The stored operation record, unverified, or None.

        A file that cannot be decoded comes back as a record that fails its checksum; one
        that is refused raises UnsafePath (see the module doc).
        """
        try:
            folder = self._open("ops", op_key(op_id))
        except FileNotFoundError:
            return None
        with folder:
            try:
                doc = records.read_doc(folder, "operation.json")
                return None if doc is None else records.op_from(doc)
            except DAMAGE:
                return _rows.damaged_operation(op_id)

    def list_operations(self) -> Iterator[OperationRecord]:
        """Every readable operation record, unverified, in id order.

        One that cannot be read, or is refused, is passed over (``verify`` names it).
        """
        found = []
        ops = self._ops()
        if ops is None:
            return iter(())
        with ops:
            for name in _file_scan.op_names(ops):
                with contextlib.suppress(OSError, *DAMAGE):
                    with ops.sub(name) as folder:
                        doc = records.read_doc(folder, "operation.json")
                    if doc is not None:
                        found.append(records.op_from(doc))
        return iter(sorted(found, key=lambda op: op.op_id))

    def checkpoint_files(self, op_id: str) -> list[str]:
        """The names of the operation's checkpoint files, newest first."""
        try:
            with self._open("ops", op_key(op_id), "checkpoints") as folder:
                return records.checkpoint_names(folder)
        except FileNotFoundError:
            return []

    def last_seq(self, op_id: str) -> int:
        """The highest checkpoint seq on disk for ``op_id`` (0 if none), from file names only."""
        with self.errors(f"read checkpoints of {op_id!r}"):
            names = self.checkpoint_files(op_id)
        return max(records.seq_of(names[0]), 0) if names else 0

    def iter_checkpoints(self, op_id: str) -> Iterator[CheckpointRecord]:
        """The operation's checkpoints, newest first, unverified.

        A file that cannot be parsed, is refused, or holds another seq than its name says,
        comes back as a record that fails its checksum.
        """
        try:
            folder = self._open("ops", op_key(op_id), "checkpoints")
        except FileNotFoundError:
            return
        with folder:
            for name in records.checkpoint_names(folder):
                try:
                    rec = records.read_checkpoint(folder, name)
                except records.BAD_FILE as exc:
                    rec = _damaged(op_id, folder, name, _why(exc))
                else:
                    if rec is None:
                        continue  # dropped from the history meanwhile
                    if why := records.misnamed(name, rec):
                        rec = _damaged(op_id, folder, name, why)
                yield rec
                del rec

    def checkpoint_by_id(self, checkpoint_id: str) -> CheckpointRecord | None:
        """The checkpoint with this id (``<op key>-<seq>``), verified; None if there is none.

        Raises:
            CheckpointCorrupt: the checkpoint exists but fails its checksum.
            UnsafePath: its file, or a folder on the way to it, is refused.
        """
        key, _, seq = checkpoint_id.rpartition("-")
        if len(key) != 32 or not seq.isdigit() or any(c not in "0123456789abcdef" for c in key):
            return None  # not an id this store makes: never used as a path
        name = records.checkpoint_name(int(seq))
        try:
            with self._open("ops", key, "checkpoints") as folder:
                rec = records.read_checkpoint(folder, name)
        except FileNotFoundError:
            return None
        except StoreError:
            raise
        except OSError as exc:
            raise self.store_error(f"read checkpoint {checkpoint_id!r}", exc) from exc
        except DAMAGE:  # cut short or damaged: fails below
            rec = _rows.damaged_checkpoint("?", int(seq))
        if rec is None:
            return None
        # The id holds the seq: a copy of another checkpoint under this name fails here too.
        if not (rec.verify() and rec.checkpoint_id == checkpoint_id):
            raise CheckpointCorrupt(
                f"{self.url}: checkpoint {checkpoint_id!r} failed its checksum; it was not loaded"
            )
        return rec

    def get_result(self, op_id: str, key: str) -> ResultRecord | None:
        """The stored result, unverified, or None."""
        try:
            folder = self._open("ops", op_key(op_id), "results")
        except FileNotFoundError:
            return None
        with folder:
            try:
                doc = records.read_doc(folder, records.result_name(key))
                return None if doc is None else records.result_from(doc)
            except records.BAD_FILE as exc:
                # Cut short, damaged or refused: a record that fails its checksum, so it
                # counts as missing (as in iter_results), never as a store that cannot be read.
                _note(op_id, folder, records.result_name(key), _why(exc))
                return _rows.damaged_result(op_id, key)

    # --- writes ---------------------------------------------------------------------------

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Write the checkpoint's file, then drop the one that fell out of the history.

        Every ``history``-th write lists the folder and drops *all* files beyond the history:
        a removal that failed, or a crash between a write and its removal, keeps a file only
        until then, and the other writes cost no listing.
        """
        key, seq = op_key(checkpoint.op_id), checkpoint.seq
        with (
            self.errors(f"save a checkpoint of {checkpoint.op_id!r}"),
            self._open("ops", key, "checkpoints", create=True) as folder,
        ):
            self._write(folder, records.checkpoint_name(seq), records.checkpoint_doc(checkpoint))
            if seq % self.history == 0:
                for name in records.checkpoint_names(folder)[self.history :]:
                    folder.remove(name)
            elif (old := seq - self.history) >= 0:
                folder.remove(records.checkpoint_name(old))

    def put_operation(self, op: OperationRecord) -> None:
        """Write the operation record's file atomically (last: see Store.save)."""
        with (
            self.errors(f"save operation {op.op_id!r}"),
            self._open("ops", op_key(op.op_id), create=True) as folder,
        ):
            self._write(folder, "operation.json", records.op_doc(op))

    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Write each result's file atomically (its folder opened once per operation)."""
        folder: _fs.Dir | None = None
        of = ""
        try:
            for result in results:
                doc = records.result_doc(result)
                with self.errors(f"save result {result.key!r} of {result.op_id!r}"):
                    if folder is None or of != result.op_id:
                        if folder is not None:
                            folder.close()
                        folder = None
                        folder = self._open("ops", op_key(result.op_id), "results", create=True)
                        of = result.op_id
                    self._write(folder, records.result_name(result.key), doc)
        finally:
            if folder is not None:
                folder.close()

    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """Every readable result file of the operation whose key starts with ``prefix``."""
        try:
            folder = self._open("ops", op_key(op_id), "results")
        except FileNotFoundError:
            return
        with folder:
            for name in sorted(folder.names()):
                if _fs.TEMP_MARK in name:
                    continue
                try:
                    doc = records.read_doc(folder, name)
                    if doc is None:
                        continue
                    rec = records.result_from(doc)
                except records.BAD_FILE as exc:
                    # Unreadable: as if missing (the item runs again), as a failed checksum is.
                    _note(op_id, folder, name, _why(exc))
                    log.warning(
                        "resumable.result.corrupt", op_id=op_id, file=str(folder.path / name)
                    )
                    continue
                if rec.key.startswith(prefix):
                    yield rec

    def delete_operation(self, op_id: str) -> bool:
        """Remove the operation's folder (its lock file stays, see the module doc).

        A symlink planted in its place is removed itself; nothing it points to is touched.
        """
        key = op_key(op_id)
        with self.errors(f"delete operation {op_id!r}"):
            ops = self._ops()
            if ops is None:
                return False
            with ops:
                try:
                    ops.lstat(key)
                except FileNotFoundError:
                    return False
                # Rename first so a crash mid-delete never leaves a half-deleted operation.
                trash = f"{key}{_fs.TEMP_MARK}deleted.{os.getpid()}"
                ops.replace(key, trash, durable=False)
                ops.remove_tree(trash)
                if self.durability == "full":
                    ops.fsync()
        return True

    # --- store-wide reads and upkeep (see base.py) --------------------------------------------

    @contextlib.contextmanager
    def _each_op(self, doing: str) -> Iterator[_fs.Dir | None]:
        """The ``ops`` folder, open for the block; None if it was removed since the store opened.

        Only opening it raises a StoreError about ``doing``; each folder read names its own.
        """
        with self.errors(doing):
            ops = self._ops()
        if ops is None:
            yield None
            return
        with ops:
            yield ops

    def stored_op_ids(self) -> list[str]:
        """Every op id with a folder (record or not) that one of its files names, sorted."""
        with self._each_op("list operations") as ops:
            return _file_scan.stored_op_ids(ops, self.errors)

    def checkpoint_heads(self) -> dict[str, CheckpointRecord]:
        """The newest checkpoint file of each operation folder, unverified, by op id.

        One that cannot be parsed, is refused or holds another seq than its name says comes
        back as a record that fails its checksum.
        """
        with self._each_op("list operations") as ops:
            return _file_scan.checkpoint_heads(ops, self.errors)

    def operations_and_heads(self) -> tuple[list[OperationRecord], dict[str, CheckpointRecord]]:
        """:meth:`list_operations` and :meth:`checkpoint_heads` in one pass over the folders."""
        with self._each_op("list operations") as ops:
            return _file_scan.operations_and_heads(ops, self.errors)

    def scan_records(self) -> Iterator[Stored]:
        """Every record file, parsed; an unparsable or refused one comes with record None."""
        with self._each_op("list operations") as ops:
            yield from _file_scan.scan_records(ops, self.errors)

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many record files there are (of ``op_id`` only), counted by name.

        Counting every operation passes over a refused folder; counting one raises
        UnsafePath for it.
        """
        with self.errors("count records"), self._each_op("count records") as ops:
            return _file_scan.record_counts(ops, op_id)

    def sweep(self, older_than: float, *, dry_run: bool = False) -> list[Swept]:
        """Remove temp files of interrupted writes and folders of interrupted deletes.

        Only those last changed (content or name) before ``older_than``: a live write
        renames its temp file within moments. A refused folder is not looked into.
        """
        with self.errors("sweep leftovers"), self._each_op("sweep leftovers") as ops:
            return _file_scan.sweep(ops, self.root, older_than, dry_run=dry_run)

    def lock(self, op_id: str) -> Lock:
        """The operation's lock, in ``locks/`` (see :mod:`resumable.locks`)."""
        return store_lock(self._lock_file, op_id, op_key(op_id))

    def close(self) -> None:
        """Close the lock file unless a block of this process holds a lock through it."""
        self._lock_file.close()


def _why(exc: BaseException) -> str:
    """Why a record file was refused ("" if it merely does not parse: nothing to add)."""
    return str(exc) if isinstance(exc, UnsafePath) else ""


def _note(op_id: str, folder: _fs.Dir, name: str, why: str) -> None:
    """Log why file ``name`` counts as damaged, if there is more to say than that."""
    if why:
        log.warning("resumable.record.refused", op_id=op_id, file=f"{folder.where}/{name}", why=why)


def _damaged(op_id: str, folder: _fs.Dir, name: str, why: str) -> CheckpointRecord:
    """A stand-in for checkpoint file ``name`` that cannot be used: it never verifies."""
    _note(op_id, folder, name, why)
    return _rows.damaged_checkpoint(op_id, records.seq_of(name))
