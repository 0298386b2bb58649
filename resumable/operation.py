"""Operations: ``ProcessState``, its one transition table, and the stored records.

An *operation* is a named unit of resumable work. Its lifecycle lives in
:class:`OperationRecord`; its progress lives in immutable :class:`CheckpointRecord` snapshots.
Every state change goes through :func:`transition`, which consults :data:`TRANSITIONS` and
nothing else.

Every record carries a checksum over all of its fields and its payload, computed by
:mod:`resumable._signing`: xxh3-128, or, with a secret set, an HMAC-SHA256 tag. Who runs an
operation is an :class:`~resumable._owner.Owner`.
"""

from __future__ import annotations

import functools
import json
import struct
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Final

import xxhash

from . import _signing
from ._owner import Owner
from .errors import InvalidTransition

__all__ = [
    "TRANSITIONS",
    "CheckpointRecord",
    "OperationRecord",
    "ProcessState",
    "ResultRecord",
    "canonical_json",
    "checkpoint_id",
    "metadata_text",
    "op_key",
    "transition",
    "validate_op_id",
]

MAX_OP_ID_LENGTH: Final = 1024


class ProcessState(Enum):
    """The state of an operation, with the specification's string values."""

    INITIALIZED = "initialized"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    RECOVERING = "recovering"


_S = ProcessState

#: Allowed changes, ``from -> {to, ...}``; ``None`` is "no record yet". RUNNING -> RUNNING is a
#: new runner taking over an operation whose owner died; COMPLETED -> INITIALIZED is a
#: deliberate re-run (``fresh=True``, a changed function); COMPLETED -> RECOVERING is a
#: completed operation whose final checkpoint is corrupt or gone, resumed from its newest
#: good one (then RECOVERING -> RUNNING). COMPLETED -> RUNNING stays forbidden: nothing may
#: run a finished operation again without saying which of those two it is.
TRANSITIONS: Final[dict[ProcessState | None, frozenset[ProcessState]]] = {
    None: frozenset({_S.INITIALIZED, _S.RUNNING, _S.PAUSED, _S.COMPLETED, _S.FAILED}),
    _S.INITIALIZED: frozenset({_S.RUNNING, _S.PAUSED, _S.COMPLETED, _S.FAILED}),
    _S.RUNNING: frozenset({_S.RUNNING, _S.PAUSED, _S.COMPLETED, _S.FAILED, _S.RECOVERING}),
    _S.PAUSED: frozenset({_S.RUNNING, _S.RECOVERING, _S.COMPLETED, _S.FAILED}),
    _S.FAILED: frozenset({_S.RUNNING, _S.RECOVERING}),
    _S.RECOVERING: frozenset({_S.RUNNING, _S.PAUSED, _S.COMPLETED, _S.FAILED}),
    _S.COMPLETED: frozenset({_S.INITIALIZED, _S.RECOVERING}),
}


def transition(current: ProcessState | None, new: ProcessState, op_id: str = "") -> ProcessState:
    """Return ``new`` if the table allows ``current -> new``, else raise InvalidTransition."""
    if new not in TRANSITIONS[current]:
        was = current.value if current is not None else "(new)"
        raise InvalidTransition(
            f"operation {op_id!r} cannot go from {was} to {new.value}; allowed from {was}: "
            f"{sorted(s.value for s in TRANSITIONS[current])}. Reset the operation to start over."
        )
    return new


def validate_op_id(op_id: object) -> str:
    """Return ``op_id`` if it is a usable operation id, else raise TypeError/ValueError."""
    if not isinstance(op_id, str):
        raise TypeError(f"op_id must be a str, not {type(op_id).__name__}")
    if not op_id:
        raise ValueError("op_id must be a non-empty string, such as 'photos-2026-11'")
    if len(op_id) > MAX_OP_ID_LENGTH:
        raise ValueError(
            f"op_id is {len(op_id)} characters long; the limit is {MAX_OP_ID_LENGTH}. "
            "Use a shorter name, or a digest of the long one"
        )
    return op_id


@functools.lru_cache(maxsize=1024)
def op_key(op_id: str) -> str:
    """A fixed-length, path-safe key for ``op_id`` (the raw id is never used as a path)."""
    return xxhash.xxh3_128_hexdigest(op_id.encode("utf-8", "surrogatepass"))


def checkpoint_id(op_id: str, seq: int) -> str:
    """The id of checkpoint ``seq`` of ``op_id``: unique in a store, and enough to find it."""
    return f"{op_key(op_id)}-{seq}"


# --- records ------------------------------------------------------------------------------


#: What computing a checksum raises when a field has the wrong type (a flipped type byte in
#: an SQLite row turns an integer column into text): such a record fails verification.
_MALFORMED = (TypeError, ValueError, AttributeError, OverflowError, struct.error)


def _checkpoint_digest(  # noqa: PLR0917 - the record's fields, in order
    checkpoint_id: str, op_id: str, seq: int, position: int, state: str, progress: float,
    timestamp: float, serializer: str, meta: str, payload: bytes,
) -> str:  # fmt: skip
    """The checksum of a checkpoint, computed on every commit, so spelled out for speed.

    ``meta`` is the metadata's :func:`canonical_json`. Strings are length-prefixed; numbers
    are packed in fixed width.
    """
    text = (
        f"{len(checkpoint_id)}:{checkpoint_id}\x1f{len(op_id)}:{op_id}\x1f{state}"
        f"\x1f{len(serializer)}:{serializer}\x1f{len(meta)}:{meta}\x00"
    )
    header = text.encode("utf-8", "surrogatepass") + _NUMBERS.pack(
        seq, position, progress, timestamp
    )
    return _signing.digest(_signing.CHECKPOINT, header, payload)


#: The metadata of the checkpoint made last in this process and its canonical JSON, which
#: its checksum covers: the store writes that text (see :func:`metadata_text`) instead of
#: encoding the metadata a second time on every commit. A tuple, swapped whole: threads
#: never see one half of one and the other half of another.
_sealed_meta: tuple[object, str] = (None, "")


def metadata_text(metadata: dict[str, Any]) -> str:
    """``canonical_json(metadata)``, reusing the text of the checkpoint made last.

    Only the very dict that :meth:`CheckpointRecord.create` sealed is answered from there:
    a record changed since (``dataclasses.replace``, a new ``metadata``) is encoded anew.
    A checkpoint's metadata is never changed in place (the checksum covers it), and if it
    were, the store would write what the checksum covers. Never used to verify a record.
    """
    sealed, text = _sealed_meta
    return text if sealed is metadata else canonical_json(metadata)


_NUMBERS = struct.Struct("<qqdd")
_FLOAT = struct.Struct("<d")
_TIMES = struct.Struct("<ddd")


def _not_json(o: object) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


#: json's C encoder, made once, with the options of json.dumps(data, sort_keys=True,
#: separators=(",", ":")), whose output it gives (tests/test_keys.py holds them equal):
#: json.dumps builds a new encoder on every call, which cost a commit about 1 us twice.
_CANONICAL: Any = getattr(json.encoder, "c_make_encoder", None)
if _CANONICAL is not None:
    _sort_keys, _skip_keys, _allow_nan = True, False, True  # json.dumps's, with sort_keys
    _CANONICAL = _CANONICAL(
        None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",",
        _sort_keys, _skip_keys, _allow_nan,
    )  # fmt: skip


def canonical_json(data: dict[str, Any] | None) -> str:
    """``data`` in the one spelling every checksum and stored meta uses ("" for none or empty)."""
    if not data:
        return ""
    if _CANONICAL is None:  # pragma: no cover - CPython has the C encoder
        return json.dumps(data, sort_keys=True, separators=(",", ":"))
    return "".join(_CANONICAL(data, 0))


class _Sealed:
    """What every record shares: a checksum over all of its fields, and its check."""

    __slots__ = ()

    checksum: str

    def _compute(self) -> str:
        raise NotImplementedError

    def verify(self) -> bool:
        """True if the checksum matches the fields and payload (signed, if a secret is set)."""
        try:
            computed = self._compute()
        except _MALFORMED:  # a damaged store handed back a field of the wrong type
            return False
        return _signing.equal(self.checksum, computed) or _signing.refused(self.checksum)


@dataclass(frozen=True, slots=True)
class OperationRecord(_Sealed):
    """The lifecycle of one operation. Progress lives in its checkpoints."""

    op_id: str
    name: str
    state: ProcessState
    owner: Owner | None = None
    heartbeat: float = 0.0
    attempts: int = 0
    created: float = 0.0
    updated: float = 0.0
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    checksum: str = ""

    @classmethod
    def new(cls, op_id: str, name: str, state: ProcessState, **fields: Any) -> OperationRecord:
        """A fresh record (not yet stored); ``created`` and ``updated`` default to now."""
        transition(None, state, op_id)
        now = time.time()
        return cls(op_id, name, state, **{"created": now, "updated": now, **fields})._sealed()

    def to(self, state: ProcessState, **changes: Any) -> OperationRecord:
        """A copy in ``state`` (checked against the table) with ``changes``, newly sealed."""
        transition(self.state, state, self.op_id)
        return replace(self, state=state, updated=time.time(), **changes)._sealed()

    def with_changes(self, **changes: Any) -> OperationRecord:
        """A copy with ``changes`` that keeps the state, newly sealed."""
        return replace(self, updated=time.time(), **changes)._sealed()

    def _sealed(self) -> OperationRecord:
        # Sealing a copy being built: the one place a frozen record is written to.
        object.__setattr__(self, "checksum", self._compute())
        return self

    def _compute(self) -> str:
        o = self.owner
        owner = "" if o is None else f"{o.host}|{o.pid}|{o.started!r}"
        error = "\x00" if self.error is None else self.error  # None and "" differ
        meta = canonical_json(self.meta)
        text = (
            f"{len(self.op_id)}:{self.op_id}\x1f{len(self.name)}:{self.name}\x1f"
            f"{self.state._value_}\x1f{len(owner)}:{owner}\x1f{self.attempts}\x1f"
            f"{len(error)}:{error}\x1f{len(meta)}:{meta}\x00"
        )
        numbers = _TIMES.pack(self.heartbeat, self.created, self.updated)
        return _signing.digest(
            _signing.OPERATION, text.encode("utf-8", "surrogatepass") + numbers, b""
        )


@dataclass(slots=True)  # not frozen: built on every commit, where frozen costs 10% (1.2 us)
class CheckpointRecord(_Sealed):
    """A snapshot of an operation: position, state payload and progress.

    Treat it as immutable: its checksum covers every field.
    """

    checkpoint_id: str
    op_id: str
    seq: int
    position: int
    state: ProcessState
    progress: float
    timestamp: float
    serializer: str
    payload: bytes
    metadata: dict[str, Any] = field(default_factory=dict)
    checksum: str = ""

    @classmethod
    def create(  # noqa: PLR0917 - mirrors the record's fields, in order
        cls,
        op_id: str,
        seq: int,
        position: int,
        state: ProcessState,
        progress: float,
        serializer: str,
        payload: bytes,
        metadata: dict[str, Any] | None = None,
    ) -> CheckpointRecord:
        """A new, sealed checkpoint with a fresh timestamp."""
        global _sealed_meta  # noqa: PLW0603 - the cache of metadata_text
        cid, now, metadata = checkpoint_id(op_id, seq), time.time(), metadata or {}
        meta = canonical_json(metadata)
        # state._value_: .value is a property, which costs a commit 0.1 us (twice: the row too)
        checksum = _checkpoint_digest(
            cid, op_id, seq, position, state._value_, progress, now, serializer, meta, payload
        )
        _sealed_meta = (metadata, meta)
        return cls(
            cid, op_id, seq, position, state, progress, now, serializer, payload, metadata,
            checksum,
        )  # fmt: skip

    def _compute(self) -> str:
        return _checkpoint_digest(
            self.checkpoint_id, self.op_id, self.seq, self.position, self.state._value_,
            self.progress, self.timestamp, self.serializer, canonical_json(self.metadata),
            self.payload,
        )  # fmt: skip


@dataclass(slots=True)  # not frozen, like CheckpointRecord: read on every @resumable hit
class ResultRecord(_Sealed):
    """A stored result (of a step, a decorated call, a map item)."""

    op_id: str
    key: str
    serializer: str
    payload: bytes
    created: float = 0.0
    checksum: str = ""

    @classmethod
    def create(cls, op_id: str, key: str, serializer: str, payload: bytes) -> ResultRecord:
        """A new, sealed result record."""
        rec = cls(op_id, key, serializer, payload, time.time())
        rec.checksum = rec._compute()
        return rec

    def _compute(self) -> str:
        text = f"{len(self.op_id)}:{self.op_id}\x1f{len(self.key)}:{self.key}\x1f{self.serializer}"
        header = text.encode("utf-8", "surrogatepass") + _FLOAT.pack(self.created)
        return _signing.digest(_signing.RESULT, header, self.payload)
