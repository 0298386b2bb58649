"""Operations: ``ProcessState``, its one transition table, and the stored records.

An *operation* is a named unit of resumable work. Its lifecycle lives in
:class:`OperationRecord`; its progress lives in immutable :class:`CheckpointRecord` snapshots.
Every state change goes through :func:`transition`, which consults :data:`TRANSITIONS` and
nothing else.

Every record carries a checksum over all of its fields and its payload: xxh3-128, or, with a
secret set (``RESUMABLE_SECRET`` or ``configure(secret=...)``), an HMAC-SHA256 tag marked
:data:`MAC_MARK`. A record verifies only in the mode it was written in (see docs/security.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import operator
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Final

import xxhash

from . import _config
from ._log import log
from .errors import InvalidTransition

__all__ = [
    "MAC_MARK",
    "TRANSITIONS",
    "CheckpointRecord",
    "OperationRecord",
    "Owner",
    "ProcessState",
    "ResultRecord",
    "checkpoint_id",
    "manifest_checksum",
    "manifest_checksum_matches",
    "op_key",
    "signature_hint",
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


# --- owners -------------------------------------------------------------------------------


def _process_start_time(pid: int) -> float | None:
    """When process ``pid`` started, in seconds since the epoch; None where unknowable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # Field 22 (starttime, clock ticks since boot) follows the ")" that ends the comm field.
        ticks = int(stat.rsplit(b")", 1)[1].split()[19])
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` is dead but not yet reaped by its parent (state Z)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


_BOOT_TIME: float | None = None


def _boot_time() -> float:
    global _BOOT_TIME  # noqa: PLW0603 - read once per process, never changes
    if _BOOT_TIME is None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    _BOOT_TIME = float(line.split()[1])
                    break
            else:
                _BOOT_TIME = 0.0
    return _BOOT_TIME


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that runs (or ran) an operation: host, pid and process start time.

    The start time tells a live owner from a reused pid.
    """

    host: str
    pid: int
    started: float | None

    @classmethod
    def current(cls) -> Owner:
        """The owner record of this process (recomputed after a fork)."""
        pid = os.getpid()
        cached = _CURRENT_OWNER.get(pid)
        if cached is None:
            cached = cls(socket.gethostname(), pid, _process_start_time(pid))
            _CURRENT_OWNER.clear()
            _CURRENT_OWNER[pid] = cached
        return cached

    def is_alive(self) -> bool | None:
        """True if this owner still runs, False if it is gone, None if it is on another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, owned by someone else
        if _is_zombie(self.pid):
            return False  # dead; its parent has not reaped it yet
        if self.started is None:
            return True
        started = _process_start_time(self.pid)
        # Clock-tick resolution is 10 ms; boot time is whole seconds. Allow a little slack.
        return started is None or abs(started - self.started) < 1.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"host": self.host, "pid": self.pid, "started": self.started}

    def token(self) -> str:
        """A new holder name for leases and claims: this owner and a random part.

        Unique per call, and :meth:`from_token` reads the owner back, so a process on the
        same host can tell that a holder has died without waiting for its lease to run out.
        """
        return f"{self.host}:{self.pid}:{self.started!r}:{secrets.token_hex(6)}"

    @classmethod
    def from_token(cls, token: str) -> Owner | None:
        """The owner named in a :meth:`token` (None if it is not one)."""
        parts = token.rsplit(":", 3)
        if len(parts) != 4:
            return None
        host, pid, started, _ = parts
        try:
            return cls(host, int(pid), None if started == "None" else float(started))
        except ValueError:
            return None

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Owner | None:
        """The inverse of :meth:`to_json`."""
        if not data:
            return None
        return cls(str(data["host"]), int(data["pid"]), data.get("started"))


_CURRENT_OWNER: dict[int, Owner] = {}


# --- records ------------------------------------------------------------------------------


#: The checksum of a signed record starts with this: version 1 is HMAC-SHA256 (64 hex digits)
#: over a tag naming the kind of record, the header's length, the header and the payload.
MAC_MARK: Final = "m1:"

#: The kinds of record, each signed under its own tag; a backup manifest is one more kind.
_OP, _CHECKPOINT, _RESULT, _MANIFEST = 0, 1, 2, 3
_KIND_TAGS: Final = (
    b"resumable:operation\0",
    b"resumable:checkpoint\0",
    b"resumable:result\0",
    b"resumable:backup-manifest\0",
)
_LENGTH = struct.Struct("<Q")


class _Signer:
    """HMAC-SHA256 (RFC 2104) under one key, its padded-key states hashed once.

    ``hmac.new(key, msg, "sha256")`` computes the same tag (the tests check it), but costs
    1.6 us for a small record; copying two prepared ``sha256`` states costs 0.7 us. The
    record's kind is absorbed into the inner state up front, so a tag made for one kind of
    record never verifies as another.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\x00")
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._inner = tuple(_absorbed(inner, tag) for tag in _KIND_TAGS)

    def sign(self, kind: int, header: bytes, payload: bytes) -> str:
        """The tag of a record of ``kind`` (a large payload is streamed, never copied)."""
        h = self._inner[kind].copy()
        h.update(_LENGTH.pack(len(header)) + header)
        h.update(payload)
        outer = self._outer.copy()
        outer.update(h.digest())
        return MAC_MARK + outer.hexdigest()


_BLOCK = 64  # SHA-256's block size, which HMAC pads the key to


def _absorbed(state: Any, data: bytes) -> Any:
    state = state.copy()
    state.update(data)
    return state


def _xxh3(kind: int, header: bytes, payload: bytes) -> str:
    """xxh3-128 of ``header + payload``; a large payload is streamed, never copied."""
    if len(payload) <= _ONE_SHOT:
        return xxhash.xxh3_128_hexdigest(header + payload)
    h = xxhash.xxh3_128(header)
    h.update(payload)
    return h.hexdigest()


def _equal_in_constant_time(checksum: object, computed: str) -> bool:
    return type(checksum) is str and checksum.isascii() and hmac.compare_digest(checksum, computed)


def _resolve(kind: int, header: bytes, payload: bytes) -> str:
    """Look up the secret in force, install the checksum it calls for, and use it."""
    global _hash, _equal
    made_for = _config.current()
    secret = _config.secret()
    if secret is None:
        _hash, _equal = _xxh3, operator.eq
    else:
        _hash, _equal = _Signer(secret).sign, _equal_in_constant_time
    if _config.current() is not made_for:  # configure() ran meanwhile: look again next time
        forget_secret()
    return _hash(kind, header, payload)


#: The checksum of a record, ``(kind, header, payload) -> str``: xxh3-128 without a secret,
#: the HMAC tag with one. Until the secret is looked up (on the first checksum after
#: :func:`forget_secret`, which every ``configure()`` calls), :func:`_resolve`, which
#: installs the right one, so the hot path never looks at the secret.
_hash: Callable[[int, bytes, bytes], str] = _resolve
#: How a stored checksum is compared with the computed one (in constant time for a MAC).
_equal: Callable[[object, str], bool] = _equal_in_constant_time


def forget_secret() -> None:
    """Make the next checksum look the secret up again."""
    global _hash  # noqa: PLW0603 - the cache of the secret in force
    _hash = _resolve
    _warned.clear()


def _refused(checksum: object) -> bool:
    """Log why a record cannot verify if the reason is signing (once per process); False."""
    hint = signature_hint(checksum)
    if hint and hint not in _warned:
        _warned.add(hint)  # once per process and secret: a store can hold thousands of these
        log.warning("resumable.record.signature_mismatch", hint=hint)
    return False


_warned: set[str] = set()

#: What computing a checksum raises when a field has the wrong type (a flipped type byte in
#: an SQLite row turns an integer column into text): such a record fails verification.
_MALFORMED = (TypeError, ValueError, AttributeError, OverflowError, struct.error)


def signature_hint(checksum: object) -> str:
    """Why a record with ``checksum`` cannot verify under the secret in force ("" if not that).

    For the messages of records refused because they are signed and no secret is set, or
    unsigned while one is.
    """
    if not isinstance(checksum, str):
        return ""
    signed = checksum.startswith(MAC_MARK)
    keyed = _config.secret() is not None
    if signed and not keyed:
        return (
            "the store's records are signed and no secret is set: set RESUMABLE_SECRET (or "
            "call configure(secret=...)) to the secret that signed them; until then nothing "
            "signed is loaded"
        )
    if keyed and not signed:
        return (
            "a secret is set and this record is unsigned: it was written before signing was "
            "turned on, or by someone without the secret, and is never loaded; reset the "
            "operation (resumable reset OP) to start it over"
        )
    return ""


def manifest_checksum(body: bytes) -> str:
    """The checksum of a backup manifest, over ``body``: its canonical JSON without it.

    As a record's: xxh3-128 without a secret; with one, the HMAC-SHA256 tag (:data:`MAC_MARK`)
    under the manifests' own kind tag, so no record's tag verifies as a manifest's, nor the
    reverse (:mod:`resumable.backup._manifest`).
    """
    return _hash(_MANIFEST, b"", body)


def manifest_checksum_matches(body: bytes, checksum: object) -> bool:
    """Whether ``checksum`` is :func:`manifest_checksum` of ``body`` (a tag: in constant time)."""
    computed = _hash(_MANIFEST, b"", body)  # first: it installs the comparison in force
    return _equal(checksum, computed)


def _checkpoint_digest(  # noqa: PLR0917 - the record's fields, in order
    checkpoint_id: str, op_id: str, seq: int, position: int, state: str, progress: float,
    timestamp: float, serializer: str, metadata: dict[str, Any], payload: bytes,
) -> str:  # fmt: skip
    """The checksum of a checkpoint, computed on every commit, so spelled out for speed.

    Strings are length-prefixed; numbers are packed in fixed width.
    """
    meta = canonical_json(metadata)
    text = (
        f"{len(checkpoint_id)}:{checkpoint_id}\x1f{len(op_id)}:{op_id}\x1f{state}"
        f"\x1f{len(serializer)}:{serializer}\x1f{len(meta)}:{meta}\x00"
    )
    header = text.encode("utf-8", "surrogatepass") + _NUMBERS.pack(
        seq, position, progress, timestamp
    )
    return _hash(_CHECKPOINT, header, payload)


_NUMBERS = struct.Struct("<qqdd")
_FLOAT = struct.Struct("<d")
_TIMES = struct.Struct("<ddd")
_ONE_SHOT = 1 << 16


def canonical_json(data: dict[str, Any] | None) -> str:
    """``data`` in the one spelling every checksum and stored meta uses ("" for none or empty)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":")) if data else ""


@dataclass(frozen=True, slots=True)
class OperationRecord:
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
        """A fresh record (not yet stored)."""
        transition(None, state, op_id)
        now = time.time()
        return cls(op_id, name, state, created=now, updated=now, **fields)._sealed()

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
            f"{self.state.value}\x1f{len(owner)}:{owner}\x1f{self.attempts}\x1f"
            f"{len(error)}:{error}\x1f{len(meta)}:{meta}\x00"
        )
        numbers = _TIMES.pack(self.heartbeat, self.created, self.updated)
        return _hash(_OP, text.encode("utf-8", "surrogatepass") + numbers, b"")

    def verify(self) -> bool:
        """True if the checksum matches the fields (and is signed by the secret, if one is set)."""
        try:
            computed = self._compute()
        except _MALFORMED:  # a damaged store handed back a field of the wrong type
            return False
        return _equal(self.checksum, computed) or _refused(self.checksum)


@dataclass(slots=True)  # not frozen: built on every commit, where frozen costs 10% (1.2 us)
class CheckpointRecord:
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
        cid, now, metadata = checkpoint_id(op_id, seq), time.time(), metadata or {}
        checksum = _checkpoint_digest(
            cid, op_id, seq, position, state.value, progress, now, serializer,
            metadata, payload,
        )  # fmt: skip
        return cls(
            cid, op_id, seq, position, state, progress, now, serializer, payload, metadata,
            checksum,
        )  # fmt: skip

    def _compute(self) -> str:
        return _checkpoint_digest(
            self.checkpoint_id, self.op_id, self.seq, self.position, self.state.value,
            self.progress, self.timestamp, self.serializer, self.metadata, self.payload,
        )  # fmt: skip

    def verify(self) -> bool:
        """True if the checksum matches the fields and payload (signed, if a secret is set)."""
        try:
            computed = self._compute()
        except _MALFORMED:  # a damaged store handed back a field of the wrong type
            return False
        return _equal(self.checksum, computed) or _refused(self.checksum)


@dataclass(slots=True)  # not frozen, like CheckpointRecord: read on every @resumable hit
class ResultRecord:
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
        return _hash(_RESULT, header, self.payload)

    def verify(self) -> bool:
        """True if the checksum matches the fields and payload (signed, if a secret is set)."""
        try:
            computed = self._compute()
        except _MALFORMED:  # a damaged store handed back a field of the wrong type
            return False
        return _equal(self.checksum, computed) or _refused(self.checksum)
