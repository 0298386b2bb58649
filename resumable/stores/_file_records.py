"""The file store's record files: their names, their JSON documents, their payloads.

A checkpoint file holds the specification's fields (``checkpoint_id``, ``operation_id``,
``state``, ``timestamp``, ``progress``, ``data``, ``metadata``) plus ``seq``, ``position``,
``serializer`` and a ``checksum`` over all of them. JSON payloads are stored readable under
``data``; other payloads as base64 under ``payload``, streamed out in chunks and decoded
straight from the file's bytes, so a large state is never held as base64 text, JSON text and
UTF-8 bytes at once. Records are read only from regular files of yours (or root's) with one
link and at most :data:`RECORD_LIMIT` bytes (:meth:`resumable._fs.Dir.read`).

Names: ``<seq>.json`` (zero-padded) for checkpoint ``seq``, a digest of the key for a result,
``operation.json`` for the operation record (see :mod:`resumable.stores.files`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

import xxhash

from resumable import _fs
from resumable._owner import Owner
from resumable._time import iso_time
from resumable.errors import StoreError, UnsafePath
from resumable.operation import CheckpointRecord, OperationRecord, ProcessState, ResultRecord

from ._rows import DAMAGE, string, whole

__all__ = [
    "BAD_FILE",
    "PAYLOAD_LIMIT",
    "RECORD_LIMIT",
    "checkpoint_doc",
    "checkpoint_from",
    "checkpoint_name",
    "checkpoint_names",
    "json_chunks",
    "misnamed",
    "op_doc",
    "op_from",
    "parse",
    "read_checkpoint",
    "read_doc",
    "result_doc",
    "result_from",
    "result_name",
    "seq_of",
]

_SEQ_WIDTH = 12
#: The largest payload written: base64 makes it 4/3 as large, under RECORD_LIMIT.
PAYLOAD_LIMIT = 4 << 30
#: The largest record file read: a checkpoint of up to 4 GiB of payload, base64-encoded.
RECORD_LIMIT = 6 << 30

#: What makes a record file count as damaged where the file store's module doc says so.
BAD_FILE = (*DAMAGE, UnsafePath)


# --- names ------------------------------------------------------------------------------------


def checkpoint_name(seq: int) -> str:
    """The file name of checkpoint ``seq``."""
    return f"{seq:0{_SEQ_WIDTH}d}.json"


def seq_of(name: str) -> int:
    """The seq a checkpoint file's name says (-1 if it says none)."""
    stem = name.removesuffix(".json")
    return int(stem) if stem.isdigit() else -1


def result_name(key: str) -> str:
    """The file name of the result with this key."""
    return f"{xxhash.xxh3_128_hexdigest(key.encode('utf-8', 'surrogatepass'))}.json"


def misnamed(name: str, rec: CheckpointRecord) -> str:
    """Why checkpoint ``rec`` does not belong in file ``name`` ("" if it does)."""
    if seq_of(name) == rec.seq:
        return ""
    return (
        f"its file name says seq {seq_of(name)} but it holds seq {rec.seq}: a copy of another "
        "checkpoint (an older one copied over a newer one rolls the operation back)"
    )


def checkpoint_names(folder: _fs.Dir) -> list[str]:
    """The names of the checkpoint files in ``folder``, newest first."""
    names = [n for n in folder.names() if n.endswith(".json") and _fs.TEMP_MARK not in n]
    return sorted(names, reverse=True)


# --- payloads ---------------------------------------------------------------------------------


def _encode_payload(serializer: str, payload: bytes) -> dict[str, Any]:
    """The payload fields of a document: readable JSON under ``data``, or raw bytes.

    Raw bytes go under ``payload``; :func:`json_chunks` streams them out as base64.

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


def json_chunks(doc: dict[str, Any]) -> Iterator[bytes]:
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
    if isinstance(payload, bytes):  # decoded by parse already
        return payload
    if not isinstance(payload, str):
        raise TypeError(f"a payload must be base64 text, not {type(payload).__name__}")
    return base64.b64decode(payload, validate=True)


#: How a streamed payload begins (see json_chunks); base64 holds no '"', and a '"' inside a
#: JSON string is escaped, so these bytes occur only as a key followed by its string value.
_PAYLOAD_KEY = b'"payload":"'
#: Documents larger than this have their payload decoded straight from the file's bytes.
_LARGE = 1 << 20


def parse(data: bytes) -> dict[str, Any]:
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
            # surrogatepass: see json_chunks (lone surrogates in op ids are stored raw).
            doc = json.loads((data[:start] + data[end:]).decode("utf-8", "surrogatepass"))
            if isinstance(doc, dict) and doc.get("payload") == "":
                doc["payload"] = binascii.a2b_base64(memoryview(data)[start:end], strict_mode=True)
                return doc
    doc = json.loads(data.decode("utf-8", "surrogatepass"))
    if not isinstance(doc, dict):
        raise TypeError(f"a record is a JSON object, not {type(doc).__name__}")
    return doc


def read_doc(folder: _fs.Dir, name: str) -> dict[str, Any] | None:
    """The document in file ``name`` of ``folder``; None if there is no such file.

    Raises:
        UnsafePath: not a regular file of yours with one link, or over RECORD_LIMIT.
        OSError: the file could not be read.
        ValueError, TypeError: it is not a JSON object (see :func:`parse`).
    """
    try:
        data = folder.read(name, limit=RECORD_LIMIT)
    except FileNotFoundError:
        return None
    return parse(data)


# --- records -> JSON --------------------------------------------------------------------------


def op_doc(op: OperationRecord) -> dict[str, Any]:
    """The document of an operation record."""
    return {
        "operation_id": op.op_id, "operation_name": op.name, "state": op.state.value,
        "owner": op.owner.to_json() if op.owner else None, "heartbeat": op.heartbeat,
        "attempts": op.attempts, "created": op.created, "updated": op.updated,
        "error": op.error, "meta": op.meta, "checksum": op.checksum,
    }  # fmt: skip


def checkpoint_doc(c: CheckpointRecord) -> dict[str, Any]:
    """The document of a checkpoint (its payload as in :func:`_encode_payload`)."""
    return {
        "checkpoint_id": c.checkpoint_id, "operation_id": c.op_id,
        "state": c.state.value, "timestamp": iso_time(c.timestamp), "time": c.timestamp,
        "progress": c.progress, "metadata": c.metadata, "seq": c.seq,
        "position": c.position, "serializer": c.serializer,
        **_encode_payload(c.serializer, c.payload), "checksum": c.checksum,
    }  # fmt: skip


def result_doc(result: ResultRecord) -> dict[str, Any]:
    """The document of a result (its payload as in :func:`_encode_payload`)."""
    return {
        "operation_id": result.op_id, "key": result.key, "serializer": result.serializer,
        **_encode_payload(result.serializer, result.payload),
        "created": result.created, "checksum": result.checksum,
    }  # fmt: skip


# --- JSON -> records --------------------------------------------------------------------------


def _object(doc: dict[str, Any], field: str) -> dict[str, Any]:
    """Field ``field`` of ``doc``, which must be a JSON object."""
    value = doc[field]
    if not isinstance(value, dict):
        raise TypeError(f"{field} must be an object, not {type(value).__name__}")
    return value


def op_from(doc: dict[str, Any]) -> OperationRecord:
    """The operation record in ``doc`` (raises one of ``DAMAGE`` if it holds none)."""
    return OperationRecord(
        string(doc["operation_id"]), string(doc["operation_name"]), ProcessState(doc["state"]),
        Owner.from_json(doc["owner"]), doc["heartbeat"], doc["attempts"], doc["created"],
        doc["updated"], doc["error"], _object(doc, "meta"), doc["checksum"],
    )  # fmt: skip


def checkpoint_from(doc: dict[str, Any]) -> CheckpointRecord:
    """The checkpoint in ``doc`` (raises one of ``DAMAGE`` if it holds none)."""
    serializer = string(doc["serializer"])
    return CheckpointRecord(
        string(doc["checkpoint_id"]), string(doc["operation_id"]), whole(doc["seq"]),
        whole(doc["position"]), ProcessState(doc["state"]), doc["progress"], doc["time"],
        serializer, _decode_payload(serializer, doc), _object(doc, "metadata"), doc["checksum"],
    )  # fmt: skip


def result_from(doc: dict[str, Any]) -> ResultRecord:
    """The result in ``doc`` (raises one of ``DAMAGE`` if it holds none)."""
    serializer = string(doc["serializer"])
    return ResultRecord(
        string(doc["operation_id"]), string(doc["key"]), serializer,
        _decode_payload(serializer, doc), doc["created"], doc["checksum"],
    )  # fmt: skip


def read_checkpoint(folder: _fs.Dir, name: str) -> CheckpointRecord | None:
    """The checkpoint in file ``name`` of ``folder``; None if there is no such file.

    Raises:
        UnsafePath: the file is refused.
        ValueError, TypeError, ...: it does not parse (``DAMAGE``).
    """
    doc = read_doc(folder, name)
    if doc is None:
        return None
    return checkpoint_from(doc)  # nothing else holds its payload once this returns
