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
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import xxhash

from resumable import _fs
from resumable._admin import iso_time
from resumable._log import log
from resumable.errors import CheckpointCorrupt
from resumable.locks import Lock, LockFile, store_lock
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    Owner,
    ProcessState,
    ResultRecord,
    op_key,
)

from . import _rows
from ._rows import DAMAGE, string, whole
from .base import DEFAULT_HISTORY, Durability, Store, Stored, Swept

__all__ = ["FileStore"]

_SEQ_WIDTH = 12
#: The largest record file read: a checkpoint of up to 4 GiB of payload, base64-encoded.
RECORD_LIMIT = 6 << 30


def _encode_payload(serializer: str, payload: bytes) -> dict[str, Any]:
    """The payload fields of a document: readable JSON under ``data``, or raw bytes.

    Raw bytes go under ``payload``; :meth:`FileStore._write` streams them out as base64.
    """
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
        self.root = Path(root).absolute()
        self.url = f"file://{self.root}"
        self._lock_file = LockFile(self.root / "locks" / "operations.lock")
        with self.errors("create the store directory"):
            _fs.makedirs(self.root / "ops")
            _fs.makedirs(self.root / "locks")

    def _dir(self, op_id: str) -> Path:
        return self.root / "ops" / op_key(op_id)

    def _write(self, path: Path, doc: dict[str, Any]) -> None:
        try:
            _fs.atomic_write(path, _json_chunks(doc), durable=self.durability == "full")
        except FileNotFoundError:  # first write into this folder
            _fs.makedirs(path.parent)
            _fs.atomic_write(path, _json_chunks(doc), durable=self.durability == "full")

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The document in ``path``; None if there is no such file.

        Raises:
            OSError: the file could not be read.
            ValueError, TypeError: it is not a JSON object (see :func:`_parse`).
        """
        try:
            data = _fs.read_bytes(path, limit=RECORD_LIMIT)
        except FileNotFoundError:
            return None
        return _parse(data)

    def record_name(self, op_id: str, seq: int | None = None) -> str:
        """As :meth:`Store.record_name`, with the record's file."""
        folder = self._dir(op_id)
        if seq is None:
            return f"the record of operation {op_id!r} ({folder / 'operation.json'})"
        path = folder / "checkpoints" / f"{seq:0{_SEQ_WIDTH}d}.json"
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

    # --- reads ----------------------------------------------------------------------------

    def get_operation(self, op_id: str) -> OperationRecord | None:
        """The stored operation record, unverified, or None.

        A file that cannot be decoded comes back as a record that fails its checksum.
        """
        try:
            doc = self._read(self._dir(op_id) / "operation.json")
            return None if doc is None else self._op_from(doc)
        except DAMAGE:
            return _rows.damaged_operation(op_id)

    def list_operations(self) -> Iterator[OperationRecord]:
        """Every readable operation record, unverified, in id order."""
        ops = []
        for name in _fs.list_names(self.root / "ops"):
            if _fs.TEMP_MARK in name:
                continue
            with contextlib.suppress(OSError, *DAMAGE):
                doc = self._read(self.root / "ops" / name / "operation.json")
                if doc is not None:
                    ops.append(self._op_from(doc))
        return iter(sorted(ops, key=lambda op: op.op_id))

    def _checkpoint_files(self, op_id: str) -> list[Path]:
        folder = self._dir(op_id) / "checkpoints"
        names = _fs.list_names(folder)
        names = [n for n in names if n.endswith(".json") and _fs.TEMP_MARK not in n]
        return [folder / n for n in sorted(names, reverse=True)]

    def last_seq(self, op_id: str) -> int:
        """The highest checkpoint seq on disk for ``op_id`` (0 if none), from file names only."""
        with self.errors(f"read checkpoints of {op_id!r}"):
            files = self._checkpoint_files(op_id)
        return int(files[0].stem) if files and files[0].stem.isdigit() else 0

    def iter_checkpoints(self, op_id: str) -> Iterator[CheckpointRecord]:
        """The operation's checkpoints, newest first, unverified.

        A file that cannot be parsed comes back as a record that fails its checksum.
        """
        for path in self._checkpoint_files(op_id):
            try:
                doc = self._read(path)
                if doc is None:
                    continue
                rec = self._ckpt_from(doc)
                del doc  # nothing else holds its payload while the caller has the record
            except DAMAGE:
                rec = _unreadable(op_id, path)
            yield rec
            del rec

    def checkpoint_by_id(self, checkpoint_id: str) -> CheckpointRecord | None:
        """The checkpoint with this id (``<op key>-<seq>``), verified; None if there is none.

        Raises:
            CheckpointCorrupt: the checkpoint exists but fails its checksum.
        """
        key, _, seq = checkpoint_id.rpartition("-")
        if len(key) != 32 or not seq.isdigit() or any(c not in "0123456789abcdef" for c in key):
            return None  # not an id this store makes: never used as a path
        path = self.root / "ops" / key / "checkpoints" / f"{int(seq):0{_SEQ_WIDTH}d}.json"
        try:
            doc = self._read(path)
            if doc is None:
                return None
            rec = self._ckpt_from(doc)
        except OSError as exc:
            raise self.store_error(f"read checkpoint {checkpoint_id!r}", exc) from exc
        except DAMAGE:  # cut short or damaged: fails below
            rec = _unreadable("?", path)
        if not (rec.verify() and rec.checkpoint_id == checkpoint_id):
            raise CheckpointCorrupt(
                f"{self.url}: checkpoint {checkpoint_id!r} failed its checksum; it was not loaded"
            )
        return rec

    def get_result(self, op_id: str, key: str) -> ResultRecord | None:
        """The stored result, unverified, or None."""
        try:
            doc = self._read(self._result_path(op_id, key))
            return None if doc is None else self._result_from(doc)
        except DAMAGE:
            # Cut short or damaged: a record that fails its checksum, so it counts as missing
            # (as in iter_results), never as a store that cannot be read.
            return _rows.damaged_result(op_id, key)

    @staticmethod
    def _result_from(doc: dict[str, Any]) -> ResultRecord:
        serializer = string(doc["serializer"])
        return ResultRecord(
            string(doc["operation_id"]), string(doc["key"]), serializer,
            _decode_payload(serializer, doc), doc["created"], doc["checksum"],
        )  # fmt: skip

    def _result_path(self, op_id: str, key: str) -> Path:
        name = xxhash.xxh3_128_hexdigest(key.encode("utf-8", "surrogatepass"))
        return self._dir(op_id) / "results" / f"{name}.json"

    # --- writes ---------------------------------------------------------------------------

    def add_checkpoint(self, checkpoint: CheckpointRecord) -> None:
        """Write the checkpoint's file, then drop the one that fell out of the history.

        Every ``history``-th write lists the folder and drops *all* files beyond the history:
        a removal that failed, or a crash between a write and its removal, keeps a file only
        until then, and the other writes cost no listing.
        """
        folder = self._dir(checkpoint.op_id) / "checkpoints"
        with self.errors(f"save a checkpoint of {checkpoint.op_id!r}"):
            self._write(
                folder / f"{checkpoint.seq:0{_SEQ_WIDTH}d}.json", self._ckpt_doc(checkpoint)
            )
            if checkpoint.seq % self.history == 0:
                for path in self._checkpoint_files(checkpoint.op_id)[self.history :]:
                    _fs.remove(path)
            elif (old := checkpoint.seq - self.history) >= 0:
                _fs.remove(folder / f"{old:0{_SEQ_WIDTH}d}.json")

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
        with self.errors(f"save operation {op.op_id!r}"):
            self._write(self._dir(op.op_id) / "operation.json", self._op_doc(op))

    def put_results(self, results: Sequence[ResultRecord]) -> None:
        """Write each result's file atomically."""
        for result in results:
            doc = {
                "operation_id": result.op_id, "key": result.key,
                "serializer": result.serializer,
                **_encode_payload(result.serializer, result.payload),
                "created": result.created, "checksum": result.checksum,
            }  # fmt: skip
            with self.errors(f"save result {result.key!r} of {result.op_id!r}"):
                self._write(self._result_path(result.op_id, result.key), doc)

    def iter_results(self, op_id: str, prefix: str) -> Iterator[ResultRecord]:
        """Every readable result file of the operation whose key starts with ``prefix``."""
        folder = self._dir(op_id) / "results"
        for name in sorted(_fs.list_names(folder)):
            if _fs.TEMP_MARK in name:
                continue
            try:
                doc = self._read(folder / name)
                if doc is None:
                    continue
                rec = self._result_from(doc)
            except DAMAGE:
                # Unreadable: as if missing (the item runs again), as a failed checksum is.
                log.warning("resumable.result.corrupt", op_id=op_id, file=str(folder / name))
                continue
            if rec.key.startswith(prefix):
                yield rec

    def delete_operation(self, op_id: str) -> bool:
        """Remove the operation's directory (its lock file stays, see the module doc)."""
        folder = self._dir(op_id)
        with self.errors(f"delete operation {op_id!r}"):
            if not folder.exists():
                return False
            # Rename first so a crash mid-delete never leaves a half-deleted operation behind.
            trash = folder.with_name(f"{folder.name}{_fs.TEMP_MARK}deleted.{os.getpid()}")
            _fs.replace(folder, trash, durable=False)
            _fs.remove_tree(trash)
            if self.durability == "full":
                _fs.fsync_dir(folder.parent)
        return True

    # --- store-wide reads and upkeep (see base.py) --------------------------------------------

    def _folders(self) -> list[Path]:
        """The operation folders (not temp names), in name order."""
        with self.errors("list operations"):
            names = _fs.list_names(self.root / "ops")
        return [self.root / "ops" / n for n in sorted(names) if _fs.TEMP_MARK not in n]

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        """The record files of one operation folder: its record, checkpoints, results."""
        found = [folder / "operation.json"] if (folder / "operation.json").exists() else []
        for sub in ("checkpoints", "results"):
            names = _fs.list_names(folder / sub)
            found += [folder / sub / n for n in sorted(names) if _fs.TEMP_MARK not in n]
        return found

    def _parse(self, path: Path) -> OperationRecord | CheckpointRecord | ResultRecord | None:
        """The record in ``path``; None if it cannot be parsed."""
        try:
            doc = self._read(path)
            if doc is None:
                return None
            if path.name == "operation.json":
                return self._op_from(doc)
            if path.parent.name == "checkpoints":
                return self._ckpt_from(doc)
            return self._result_from(doc)
        except DAMAGE:
            return None

    def _folder_id(self, folder: Path, records: list[Any]) -> str:
        """The op id whose key names ``folder``, read from its records ("" if none tells)."""
        for rec in records:
            if rec is not None and op_key(rec.op_id) == folder.name:
                return str(rec.op_id)
        return ""

    def stored_op_ids(self) -> list[str]:
        """Every op id with a folder (record or not) that one of its files names, sorted."""
        ids = []
        for folder in self._folders():
            with self.errors(f"read {folder}"):
                files = self._files(folder)
                op_id = ""
                for path in files:  # the record first; parse no more files than needed
                    op_id = self._folder_id(folder, [self._parse(path)])
                    if op_id:
                        ids.append(op_id)
                        break
        return sorted(ids)

    def newest_checkpoints(self) -> dict[str, CheckpointRecord]:
        """The newest checkpoint file of each operation folder, unverified, by op id.

        One that cannot be parsed comes back as a record that fails its checksum. (Paths are
        strings here: with 10,000 operations, pathlib's joins cost more than the reads.)
        """
        found: dict[str, CheckpointRecord] = {}
        ops = os.path.join(self.root, "ops")  # noqa: PTH118
        for folder in self._folders():
            sub = os.path.join(ops, folder.name, "checkpoints")  # noqa: PTH118
            with self.errors(f"read {folder}"):
                names = _fs.list_names(Path(sub))
                names = [n for n in names if n.endswith(".json") and _fs.TEMP_MARK not in n]
                if not names:
                    continue
                path = Path(sub, max(names))  # seqs are zero-padded: the newest sorts last
                try:
                    doc = self._read(path)
                    if doc is None:
                        continue  # dropped from the history meanwhile
                    rec = self._ckpt_from(doc)
                except DAMAGE:
                    op_id = self._folder_id(folder, [self._parse(folder / "operation.json")])
                    rec = _unreadable(op_id, path)  # fails its checksum: callers fall back
            found[rec.op_id] = rec
        return found

    def scan_records(self) -> Iterator[Stored]:
        """Every record file, parsed; an unparsable one comes back with record None."""
        for folder in self._folders():
            with self.errors(f"read {folder}"):
                files = self._files(folder)
                records = [self._parse(path) for path in files]
            op_id = self._folder_id(folder, records)
            for path, rec in zip(files, records, strict=True):
                where = path.relative_to(self.root)
                if rec is None:
                    yield Stored(op_id, f"file {where}", None)
                elif isinstance(rec, OperationRecord):
                    yield Stored(op_id, "record", rec)
                elif isinstance(rec, CheckpointRecord):
                    yield Stored(op_id, f"checkpoint seq {rec.seq} ({where})", rec)
                else:
                    yield Stored(op_id, f"result {rec.key!r} ({where})", rec)

    def record_counts(self, op_id: str | None = None) -> dict[str, int]:
        """How many record files there are (of ``op_id`` only), counted by name."""
        folders = [self._dir(op_id)] if op_id is not None else self._folders()
        counts = {"operations": 0, "checkpoints": 0, "results": 0}
        with self.errors("count records"):
            for path in (p for folder in folders for p in self._files(folder)):
                kind = "operations" if path.name == "operation.json" else path.parent.name
                counts[kind] += 1
        return counts

    def sweep(self, older_than: float, *, dry_run: bool = False) -> list[Swept]:
        """Remove temp files of interrupted writes and folders of interrupted deletes.

        Only those last changed (content or name) before ``older_than``: a live write
        renames its temp file within moments.
        """
        now, swept = time.time(), []
        ops = self.root / "ops"
        with self.errors("sweep leftovers"):
            leftovers = [ops / n for n in _fs.list_names(ops) if _fs.TEMP_MARK in n]
            for folder in self._folders():
                for sub in (folder, folder / "checkpoints", folder / "results"):
                    names = _fs.list_names(sub) if sub.is_dir() else []
                    leftovers += [sub / n for n in names if _fs.TEMP_MARK in n]
            for path in leftovers:
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue  # removed meanwhile (its write or delete finished)
                changed = max(st.st_mtime, st.st_ctime)
                if changed >= older_than:
                    continue
                if not dry_run:
                    if path.is_dir() and not path.is_symlink():
                        _fs.remove_tree(path)
                    else:
                        _fs.remove(path)
                swept.append(Swept(str(path.relative_to(self.root)), now - changed))
        return swept

    def lock(self, op_id: str) -> Lock:
        """The operation's lock, in ``locks/`` (see :mod:`resumable.locks`)."""
        return store_lock(self._lock_file, op_id, op_key(op_id))

    def close(self) -> None:
        """Close the lock file unless a block of this process holds a lock through it."""
        self._lock_file.close()


def _unreadable(op_id: str, path: Path) -> CheckpointRecord:
    """A stand-in for a checkpoint file that cannot be parsed: it never verifies."""
    return _rows.damaged_checkpoint(op_id, int(path.stem) if path.stem.isdigit() else -1)
