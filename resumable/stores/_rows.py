"""Table rows -> records, for the SQL stores; damaged records, for every store.

A row someone (or a flipped byte) changed can hold a value of the wrong type, JSON that does
not parse, an unknown state. Building a record from it must not raise: it yields a *damaged*
record instead, one that never verifies, so the store's reader treats it as it treats a
failed checksum (a checkpoint falls back past it, an operation record is CheckpointCorrupt,
a result counts as missing). Each SQL store encodes the text it cannot hold in its own way,
so the builders take that store's decoder.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, Final

from resumable._owner import Owner
from resumable.operation import (
    CheckpointRecord,
    OperationRecord,
    ProcessState,
    ResultRecord,
    checkpoint_id,
)

#: What building a record from damaged data raises.
DAMAGE: Final = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)

#: The checksum of a damaged record: no checksum has this form, so it never verifies.
DAMAGED: Final = "damaged"

Decode = Callable[[str], str]

#: A state column's value -> its state (a KeyError, so damage, for any other value): an
#: Enum call costs a list of 10,000 operations about 4 ms more than this lookup, twice.
_STATES: Final = {s.value: s for s in ProcessState}


@functools.lru_cache(maxsize=256)
def _owner(text: str) -> Owner | None:
    """The owner stored as JSON ``text``: decoded once, as the operations of one run share it.

    (Owner is frozen, so one instance can stand in every record.)
    """
    return Owner.from_json(json.loads(text))


def damaged_operation(op_id: str) -> OperationRecord:
    """A record standing for operation ``op_id``'s record that could not be decoded."""
    return OperationRecord(
        op_id, "?", ProcessState.FAILED, None, 0.0, 0, 0.0, 0.0, None, {}, DAMAGED
    )


def damaged_checkpoint(op_id: str, seq: int) -> CheckpointRecord:
    """A record standing for checkpoint ``seq`` of ``op_id`` that could not be decoded."""
    return CheckpointRecord(
        "?", op_id, seq, 0, ProcessState.FAILED, 0.0, 0.0, "?", b"", {}, DAMAGED
    )


def damaged_result(op_id: str, key: str) -> ResultRecord:
    """A record standing for result ``key`` of ``op_id`` that could not be decoded."""
    return ResultRecord(op_id, key, "?", b"", 0.0, DAMAGED)


def blob(value: object) -> bytes:
    """A payload column's value, which must be bytes.

    (``bytes(5)`` would make five zero bytes of an INTEGER, and ``bytes(10**12)`` a terabyte.)
    """
    if type(value) is not bytes:
        raise TypeError(f"a payload must be bytes, not {type(value).__name__}")
    return value


def whole(value: object) -> int:
    """An integer column's value, which must be an int."""
    if type(value) is not int:
        raise TypeError(f"expected an integer, not {type(value).__name__}")
    return value


def string(value: object) -> str:
    """A text field's value, which must be a str."""
    if type(value) is not str:
        raise TypeError(f"expected a string, not {type(value).__name__}")
    return value


def text(value: object, dec: Decode) -> str:
    """A text column's value for a message or a damaged record: never raises."""
    try:
        return dec(value) if isinstance(value, str) else repr(value)
    except DAMAGE:
        return repr(value)


def operation(row: tuple[Any, ...], dec: Decode) -> OperationRecord:
    """The operation record of ``row`` (the operations table's columns, in order)."""
    try:
        op_id, name, state, owner, heartbeat, attempts, created, updated, error, meta, sums = row
        return OperationRecord(
            dec(op_id), dec(name), _STATES[state], _owner(owner) if owner else None,
            heartbeat, attempts,
            created, updated, None if error is None else dec(error),
            json.loads(meta) if meta else {}, sums,
        )  # fmt: skip
    except DAMAGE:
        return damaged_operation(text(row[0], dec))


def checkpoint(row: tuple[Any, ...], dec: Decode) -> CheckpointRecord:
    """The checkpoint record of ``row`` (op id, seq, position, ..., payload, meta, checksum)."""
    op_id, seq, position, state, progress, ts, ser, payload, metadata, checksum = row
    try:
        op_id = dec(op_id)
        return CheckpointRecord(
            checkpoint_id(op_id, whole(seq)), op_id, seq, whole(position),
            _STATES[state], progress, ts, ser, blob(payload),
            json.loads(metadata) if metadata else {}, checksum,
        )  # fmt: skip
    except DAMAGE:
        return damaged_checkpoint(text(op_id, dec), seq if type(seq) is int else -1)


def result(row: tuple[Any, ...], dec: Decode) -> ResultRecord:
    """The result record of ``row`` (op id, key, serializer, payload, created, checksum)."""
    try:
        return ResultRecord(dec(row[0]), dec(row[1]), row[2], blob(row[3]), row[4], row[5])
    except DAMAGE:
        return damaged_result(text(row[0], dec), text(row[1], dec))
