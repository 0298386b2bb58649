"""``file:///dir``: JSON records, one file per checkpoint, each written atomically.

Layout under the root directory (names derive from a digest of the op id, never the raw id)::

    ops/<op key>/operation.json          the operation's lifecycle record
    ops/<op key>/checkpoints/<seq>.json  one file per checkpoint (the newest ``history`` kept)
    ops/<op key>/results/<key>.json      step and call results
    locks/<op key>.lock                  flock files, never removed while an op may run

A checkpoint file holds the specification's fields (``checkpoint_id``, ``operation_id``,
``state``, ``timestamp``, ``progress``, ``data``, ``metadata``) plus ``seq``, ``position``,
``serializer`` and a ``checksum`` over all of them. JSON payloads are stored readable under
``data``; other payloads as base64 under ``payload``. Files named with the temp mark are
half-written leftovers of a crash: readers skip them.

Nothing below the root is reached through a symlink. The root is checked once, when the store
opens (every directory on the way yours or root's and not writable by others, unless shared on
purpose: :mod:`resumable._trust`); ``root`` is its real path. Each read or write then opens the
root and every folder below it relative to the one above, never following a link and checking
each (:class:`resumable._fs.Dir`), and names the file relative to its folder. Records are read
only from regular files of yours (or root's) with one link and at most :data:`RECORD_LIMIT`
bytes, all looked at before a byte is read: a FIFO, ``/dev/zero`` or a 100 GB file is refused
at once. What a planted path (a symlink, FIFO, device, hard link, another user's file or
folder) does depends on where it is:

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

import base64
import binascii
import contextlib
import json
import os
import stat
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import xxhash

from resumable import _fs
from resumable._log import log
from resumable._owner import Owner
from resumable._time import iso_time
from resumable.errors import CheckpointCorrupt, StoreError, UnsafePath
from resumable.locks import Lock, LockFile, store_lock
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ProcessState,
    ResultRecord,
    op_key,
)

from . import _rows
from ._rows import DAMAGE, string, whole
from .base import DEFAULT_HISTORY, Durability, Store, Stored, Swept

__all__ = ["FileStore"]

_SEQ_WIDTH = 12
#: The largest payload written: base64 makes it 4/3 as large, under RECORD_LIMIT.
PAYLOAD_LIMIT = 4 << 30
#: The largest record file read: a checkpoint of up to 4 GiB of payload, base64-encoded.
RECORD_LIMIT = 6 << 30


def _encode_payload(serializer: str, payload: bytes) -> dict[str, Any]:
    """The payload fields of a document: readable JSON under ``data``, or raw bytes.

    Raw bytes go under ``payload``; :meth:`FileStore._write` streams them out as base64.

    Raises:
        StoreError: the payload is over :data:`PAYLOAD_LIMIT` (it could not be read back).
    """
    if len(payload) > PAYLOAD_LIMIT:
        raise StoreError(
            f"cannot write a record of {len(payload)} bytes: the file store holds at most "
            f"{PAYLOAD_LIMIT} per record (a larger file would be refused when read back); "
            "nothing was written. Keep large data in files of its own and their paths in the "
            "state"
        )
    if serializer == "json":
        return {"data": json.loads(payload)}
    return {"data": None, "payload": payload}


#: Bytes of payload base64-encoded per chunk: a multiple of 3, so no padding mid-stream.
_B64_CHUNK = 3 << 20


def _json_chunks(doc: dict[str, Any]) -> Iterator[bytes]:
    """``doc`` as UTF-8 JSON, in chunks: a bytes ``payload`` goes last, as streamed base64.

    A large payload is never held as base64 text, JSON text and UTF-8 bytes at once.
    """
    # surrogatepass: op ids made from undecodable file names hold lone surrogates, which
    # strict UTF-8 refuses and \u-escapes would merge into other characters on reading.
    payload = doc.get("payload")
    if not isinstance(payload, bytes):
        yield json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogatepass"
        )
        return
    rest = {k: v for k, v in doc.items() if k != "payload"}
    head = json.dumps(rest, ensure_ascii=False, separators=(",", ":"))
    yield (head[:-1] + ',"payload":"').encode("utf-8", "surrogatepass")
    view = memoryview(payload)
    for at in range(0, len(view), _B64_CHUNK):
        yield base64.b64encode(view[at : at + _B64_CHUNK])
    yield b'"}'


def _decode_payload(serializer: str, doc: dict[str, Any]) -> bytes:
    if serializer == "json":
        return json.dumps(
            doc["data"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    payload = doc["payload"]
    if isinstance(payload, bytes):  # decoded by _parse already
        return payload
    if not isinstance(payload, str):
        raise TypeError(f"a payload must be base64 text, not {type(payload).__name__}")
    return base64.b64decode(payload, validate=True)


#: How a streamed payload begins (see _json_chunks); base64 holds no '"', and a '"' inside a
#: JSON string is escaped, so these bytes occur only as a key followed by its string value.
_PAYLOAD_KEY = b'"payload":"'
#: Documents larger than this have their payload decoded straight from the file's bytes.
_LARGE = 1 << 20


def _parse(data: bytes) -> dict[str, Any]:
    """A record file's JSON document.

    A large payload is base64-decoded straight from the file's bytes, so reading a state of
    size S holds the file (4/3 S) and the payload (S), never the JSON text of either.

    Raises:
        ValueError: not UTF-8, not JSON, or not a JSON object.
    """
    at = data.rfind(_PAYLOAD_KEY) if len(data) > _LARGE else -1
    if at >= 0:
        start = at + len(_PAYLOAD_KEY)
        end = data.find(b'"', start)
        if end > 0:
            # surrogatepass: see _json_chunks (lone surrogates in op ids are stored raw).
            doc = json.loads((data[:start] + data[end:]).decode("utf-8", "surrogatepass"))
            if isinstance(doc, dict) and doc.get("payload") == "":
                doc["payload"] = binascii.a2b_base64(memoryview(data)[start:end], strict_mode=True)
                return doc
    doc = json.loads(data.decode("utf-8", "surrogatepass"))
    if not isinstance(doc, dict):
        raise TypeError(f"a record is a JSON object, not {type(doc).__name__}")
    return doc


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

    @staticmethod
    def _op_names(ops: _fs.Dir) -> list[str]:
        """The names of the operation folders in ``ops`` (not temp names), in order."""
        return sorted(n for n in ops.names() if _fs.TEMP_MARK not in n)

    def _write(self, folder: _fs.Dir, name: str, doc: dict[str, Any]) -> None:
        folder.write(name, _json_chunks(doc), durable=self.durability == "full")

    @staticmethod
    def _read(folder: _fs.Dir, name: str) -> dict[str, Any] | None:
        """The document in file ``name`` of ``folder``; None if there is no such file.

        Raises:
            UnsafePath: not a regular file of yours with one link, or over RECORD_LIMIT.
            OSError: the file could not be read.
            ValueError, TypeError: it is not a JSON object (see :func:`_parse`).
        """
        try:
            data = folder.read(name, limit=RECORD_LIMIT)
        except FileNotFoundError:
            return None
        return _parse(data)

    def record_name(self, op_id: str, seq: int | None = None) -> str:
        """As :meth:`Store.record_name`, with the record's file."""
        folder = self._dir(op_id)
        if seq is None:
            return f"the record of operation {op_id!r} ({folder / 'operation.json'})"
        path = folder / "checkpoints" / _name(seq)
        return f"checkpoint seq {seq} of operation {op_id!r} ({path})"

    # --- records <-> JSON -----------------------------------------------------------------

    @staticmethod
    def _op_doc(op: OperationRecord) -> dict[str, Any]:
        return {
            "operation_id": op.op_id, "operation_name": op.name, "state": op.state.value,
            "owner": op.owner.to_json() if op.owner else None, "heartbeat": op.heartbeat,
            "attempts": op.attempts, "created": op.created, "updated": op.updated,
            "error": op.error, "meta": op.meta, "checksum": op.checksum,
        }  # fmt: skip

    @staticmethod
    def _op_from(doc: dict[str, Any]) -> OperationRecord:
        meta = doc["meta"]
        if not isinstance(meta, dict):
            raise TypeError(f"meta must be an object, not {type(meta).__name__}")
        return OperationRecord(
            string(doc["operation_id"]), string(doc["operation_name"]), ProcessState(doc["state"]),
            Owner.from_json(doc["owner"]), doc["heartbeat"], doc["attempts"], doc["created"],
            doc["updated"], doc["error"], meta, doc["checksum"],
        )  # fmt: skip

    @staticmethod
    def _ckpt_doc(c: CheckpointRecord) -> dict[str, Any]:
        return {
            "checkpoint_id": c.checkpoint_id, "operation_id": c.op_id,
            "state": c.state.value, "timestamp": iso_time(c.timestamp), "time": c.timestamp,
            "progress": c.progress, "metadata": c.metadata, "seq": c.seq,
            "position": c.position, "serializer": c.serializer,
            **_encode_payload(c.serializer, c.payload), "checksum": c.checksum,
        }  # fmt: skip

    @staticmethod
    def _ckpt_from(doc: dict[str, Any]) -> CheckpointRecord:
        metadata = doc["metadata"]
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be an object, not {type(metadata).__name__}")
        serializer = string(doc["serializer"])
        return CheckpointRecord(
            string(doc["checkpoint_id"]), string(doc["operation_id"]), whole(doc["seq"]),
            whole(doc["position"]), ProcessState(doc["state"]), doc["progress"], doc["time"],
            serializer, _decode_payload(serializer, doc), metadata, doc["checksum"],
        )  # fmt: skip

    @staticmethod
    def _result_from(doc: dict[str, Any]) -> ResultRecord:
        serializer = string(doc["serializer"])
        return ResultRecord(
            string(doc["operation_id"]), string(doc["key"]), serializer,
            _decode_payload(serializer, doc), doc["created"], doc["checksum"],
        )  # fmt: skip

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
                doc = self._read(folder, "operation.json")
                return None if doc is None else self._op_from(doc)
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
            for name in self._op_names(ops):
                with contextlib.suppress(OSError, *DAMAGE):
                    with ops.sub(name) as folder:
                        doc = self._read(folder, "operation.json")
                    if doc is not None:
                        found.append(self._op_from(doc))
        return iter(sorted(found, key=lambda op: op.op_id))

    @staticmethod
    def _checkpoint_names(folder: _fs.Dir) -> list[str]:
        """The names of the checkpoint files in ``folder``, newest first."""
        names = [n for n in folder.names() if n.endswith(".json") and _fs.TEMP_MARK not in n]
        return sorted(names, reverse=True)

    def _checkpoint_files(self, op_id: str) -> list[str]:
        """The names of the operation's checkpoint files, newest first."""
        try:
            with self._open("ops", op_key(op_id), "checkpoints") as folder:
                return self._checkpoint_names(folder)
        except FileNotFoundError:
            return []

    def last_seq(self, op_id: str) -> int:
        """The highest checkpoint seq on disk for ``op_id`` (0 if none), from file names only."""
        with self.errors(f"read checkpoints of {op_id!r}"):
            names = self._checkpoint_files(op_id)
        return max(_seq(names[0]), 0) if names else 0

    def _read_checkpoint(self, folder: _fs.Dir, name: str) -> CheckpointRecord | None:
        """The checkpoint in file ``name`` of ``folder``; None if there is no such file.

        Raises:
            UnsafePath: the file is refused.
            ValueError, TypeError, ...: it does not parse (``DAMAGE``).
        """
        doc = self._read(folder, name)
        if doc is None:
            return None
        return self._ckpt_from(doc)  # nothing else holds its payload once this returns

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
            for name in self._checkpoint_names(folder):
                try:
                    rec = self._read_checkpoint(folder, name)
                except _BAD_FILE as exc:
                    rec = _damaged(op_id, folder, name, _why(exc))
                else:
                    if rec is None:
                        continue  # dropped from the history meanwhile
                    if why := _misnamed(name, rec):
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
        name = _name(int(seq))
        try:
            with self._open("ops", key, "checkpoints") as folder:
                rec = self._read_checkpoint(folder, name)
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
                doc = self._read(folder, _result_name(key))
                return None if doc is None else self._result_from(doc)
            except _BAD_FILE as exc:
                # Cut short, damaged or refused: a record that fails its checksum, so it
                # counts as missing (as in iter_results), never as a store that cannot be read.
                _note(op_id, folder, _result_name(key), _why(exc))
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
            self._write(folder, _name(seq), self._ckpt_doc(checkpoint))
            if seq % self.history == 0:
                for name in self._checkpoint_names(folder)[self.history :]:
                    folder.remove(name)
            elif (old := seq - self.history) >= 0:
                folder.remove(_name(old))

    def save(
        self,
        op: OperationRecord,
        checkpoint: CheckpointRecord | None = None,
        results: Sequence[ResultRecord] = (),
    ) -> None:
        """Write the results, then the checkpoint, then the operation record.

        Each file is atomic; a crash between them leaves newer results or a newer checkpoint
        beside an older operation record, which readers resolve by trusting the checkpoint's
        state.
        """
        self.put_results(results)
        if checkpoint is not None:
            self.add_checkpoint(checkpoint)
        with (
            self.errors(f"save operation {op.op_id!r}"),
            self._open("ops", op_key(op.op_id), create=True) as folder,
        ):
            self._write(folder, "operation.json", self._op_doc(op))

    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Write each result's file atomically (its folder opened once per operation)."""
        folder: _fs.Dir | None = None
        of = ""
        try:
            for result in results:
                doc = {
                    "operation_id": result.op_id, "key": result.key,
                    "serializer": result.serializer,
                    **_encode_payload(result.serializer, result.payload),
                    "created": result.created, "checksum": result.checksum,
                }  # fmt: skip
                with self.errors(f"save result {result.key!r} of {result.op_id!r}"):
                    if folder is None or of != result.op_id:
                        if folder is not None:
                            folder.close()
                        folder = None
                        folder = self._open("ops", op_key(result.op_id), "results", create=True)
                        of = result.op_id
                    self._write(folder, _result_name(result.key), doc)
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
                    doc = self._read(folder, name)
                    if doc is None:
                        continue
                    rec = self._result_from(doc)
                except _BAD_FILE as exc:
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

    def _parse_file(self, folder: _fs.Dir, name: str, kind: str, where: str) -> _Found | None:
        """The record in file ``name`` of ``folder``; None if there is no such file.

        ``kind`` says which: ``operation``, ``checkpoint`` or ``result``; ``where`` is the
        file's path relative to the root.
        """
        try:
            doc = self._read(folder, name)
            if doc is None:
                return None
            if kind == "operation":
                return _Found(where, self._op_from(doc), "")
            if kind == "checkpoint":
                rec = self._ckpt_from(doc)
                return _Found(where, rec, _misnamed(name, rec))
            return _Found(where, self._result_from(doc), "")
        except DAMAGE:
            return _Found(where, None, "")
        except UnsafePath as exc:
            return _Found(where, None, _refusal(exc))

    def _records_in(self, ops: _fs.Dir, name: str) -> Generator[_Found, None, None]:
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
            found = self._parse_file(folder, "operation.json", "operation", f"{rel}/operation.json")
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
                        if (found := self._parse_file(inner, file, kind, where)) is not None:
                            yield found

    @staticmethod
    def _folder_id(name: str, records: Iterable[_Found]) -> str:
        """The op id whose key names folder ``name``, read from its records ("" if none)."""
        for found in records:
            rec = found.record
            if rec is not None and op_key(rec.op_id) == name:
                return str(rec.op_id)
        return ""

    def stored_op_ids(self) -> list[str]:
        """Every op id with a folder (record or not) that one of its files names, sorted."""
        ids = []
        with self.errors("list operations"):
            ops = self._ops()
        if ops is None:
            return []
        with ops:
            for name in self._op_names(ops):
                found = self._records_in(ops, name)
                try:
                    with self.errors(f"read {ops.path / name}"):
                        op_id = self._folder_id(name, found)  # parses no more than needed
                finally:
                    found.close()  # its folders, at once
                if op_id:
                    ids.append(op_id)
        return sorted(ids)

    def _record_in(self, ops: _fs.Dir, name: str) -> str:
        """The op id of folder ``name`` from its operation record ("" if that cannot tell)."""
        with contextlib.suppress(OSError, *DAMAGE), ops.sub(name) as folder:
            found = self._parse_file(folder, "operation.json", "operation", "")
            return self._folder_id(name, [found] if found is not None else [])
        return ""

    def _newest_in(self, ops: _fs.Dir, name: str) -> CheckpointRecord | None:
        """The newest checkpoint file of operation folder ``name``, unverified; None if none."""
        try:
            folder = ops.sub(name, "checkpoints")
        except (FileNotFoundError, UnsafePath):
            return None  # a refused folder is passed over here: runs and verify name it
        with folder:
            names = self._checkpoint_names(folder)
            if not names:
                return None
            try:
                rec = self._read_checkpoint(folder, names[0])
                if rec is None or not _misnamed(names[0], rec):
                    return rec  # None: dropped from the history meanwhile
            except _BAD_FILE:
                pass
        # Fails its checksum: callers fall back.
        return _rows.damaged_checkpoint(self._record_in(ops, name), _seq(names[0]))

    def checkpoint_heads(self) -> dict[str, CheckpointRecord]:
        """The newest checkpoint file of each operation folder, unverified, by op id.

        One that cannot be parsed, is refused or holds another seq than its name says comes
        back as a record that fails its checksum.
        """
        found: dict[str, CheckpointRecord] = {}
        with self.errors("list operations"):
            ops = self._ops()
        if ops is None:
            return found
        with ops:
            for name in self._op_names(ops):
                with self.errors(f"read {ops.path / name}"):
                    rec = self._newest_in(ops, name)
                if rec is not None:
                    found[rec.op_id] = rec
        return found

    def scan_records(self) -> Iterator[Stored]:
        """Every record file, parsed; an unparsable or refused one comes with record None."""
        with self.errors("list operations"):
            ops = self._ops()
        if ops is None:
            return
        with ops:
            for name in self._op_names(ops):
                with self.errors(f"read {ops.path / name}"):
                    files = list(self._records_in(ops, name))
                op_id = self._folder_id(name, files)
                for where, rec, problem in files:
                    if rec is None:
                        yield Stored(op_id, f"file {where}", None, problem)
                    elif isinstance(rec, OperationRecord):
                        yield Stored(op_id, "record", rec, problem)
                    elif isinstance(rec, CheckpointRecord):
                        yield Stored(op_id, f"checkpoint seq {rec.seq} ({where})", rec, problem)
                    else:
                        yield Stored(op_id, f"result {rec.key!r} ({where})", rec, problem)

    @staticmethod
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

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many record files there are (of ``op_id`` only), counted by name.

        Counting every operation passes over a refused folder; counting one raises
        UnsafePath for it.
        """
        counts = {"operations": 0, "checkpoints": 0, "results": 0}
        with self.errors("count records"):
            ops = self._ops()
            if ops is None:
                return counts
            with ops:
                if op_id is not None:
                    self._count_in(ops, op_key(op_id), counts)
                    return counts
                for name in self._op_names(ops):
                    with contextlib.suppress(UnsafePath):
                        self._count_in(ops, name, counts)
        return counts

    def sweep(self, older_than: float, *, dry_run: bool = False) -> list[Swept]:
        """Remove temp files of interrupted writes and folders of interrupted deletes.

        Only those last changed (content or name) before ``older_than``: a live write
        renames its temp file within moments. A refused folder is not looked into.
        """
        now, swept = time.time(), []
        with self.errors("sweep leftovers"):
            ops = self._ops()
            if ops is None:
                return []
            with ops:
                swept += _sweep_in(ops, self.root, older_than, now, dry_run=dry_run)
                for name in self._op_names(ops):
                    for parts in ((name,), (name, "checkpoints"), (name, "results")):
                        try:
                            folder = ops.sub(*parts)
                        except (FileNotFoundError, UnsafePath):
                            continue
                        with folder:
                            swept += _sweep_in(folder, self.root, older_than, now, dry_run=dry_run)
        return swept

    def lock(self, op_id: str) -> Lock:
        """The operation's lock, in ``locks/`` (see :mod:`resumable.locks`)."""
        return store_lock(self._lock_file, op_id, op_key(op_id))

    def close(self) -> None:
        """Close the lock file unless a block of this process holds a lock through it."""
        self._lock_file.close()


class _Found(NamedTuple):
    """A record file as the store-wide reads find it."""

    where: str  # its path relative to the root
    record: OperationRecord | CheckpointRecord | ResultRecord | None  # None: unparsable
    problem: str  # why it was refused, or why its name does not fit it ("" if neither)


#: What makes a record file count as damaged where the module doc says so.
_BAD_FILE = (*DAMAGE, UnsafePath)


def _name(seq: int) -> str:
    """The file name of checkpoint ``seq``."""
    return f"{seq:0{_SEQ_WIDTH}d}.json"


def _seq(name: str) -> int:
    """The seq a checkpoint file's name says (-1 if it says none)."""
    stem = name.removesuffix(".json")
    return int(stem) if stem.isdigit() else -1


def _result_name(key: str) -> str:
    return f"{xxhash.xxh3_128_hexdigest(key.encode('utf-8', 'surrogatepass'))}.json"


def _misnamed(name: str, rec: CheckpointRecord) -> str:
    """Why checkpoint ``rec`` does not belong in file ``name`` ("" if it does)."""
    if _seq(name) == rec.seq:
        return ""
    return (
        f"its file name says seq {_seq(name)} but it holds seq {rec.seq}: a copy of another "
        "checkpoint (an older one copied over a newer one rolls the operation back)"
    )


def _refusal(exc: UnsafePath) -> str:
    """A refused file's problem, in words (for verify)."""
    return f"refused: {exc.why}; {exc.fix}"


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
    return _rows.damaged_checkpoint(op_id, _seq(name))


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
