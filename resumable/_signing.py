"""The checksum of every record and backup manifest: xxh3-128, or an HMAC-SHA256 tag.

Without a secret, a checksum is xxh3-128. With one (``RESUMABLE_SECRET`` or
``configure(secret=...)``), it is an HMAC-SHA256 tag marked :data:`MAC_MARK`, under a tag
naming the kind of record, so a tag made for one kind never verifies as another. A record
verifies only in the mode it was written in (see docs/security.md).

The secret is looked up once, on the first checksum after :func:`forget_secret` (which every
``configure()`` calls): the hot path of a commit never looks at it. hashlib and hmac (OpenSSL,
~3 ms to import) load with the first keyed checksum, not with ``import resumable``.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import Any, Final

import xxhash

from . import _config
from ._log import log

__all__ = [
    "CHECKPOINT",
    "KIND_TAGS",
    "MAC_MARK",
    "MANIFEST",
    "OPERATION",
    "RESULT",
    "Signer",
    "digest",
    "equal",
    "forget_secret",
    "manifest_checksum",
    "manifest_checksum_matches",
    "refused",
    "signature_hint",
]

#: The checksum of a signed record starts with this: version 1 is HMAC-SHA256 (64 hex digits)
#: over a tag naming the kind of record, the header's length, the header and the payload.
MAC_MARK: Final = "m1:"

#: The kinds of record, each signed under its own tag; a backup manifest is one more kind.
OPERATION, CHECKPOINT, RESULT, MANIFEST = 0, 1, 2, 3
KIND_TAGS: Final = (
    b"resumable:operation\0",
    b"resumable:checkpoint\0",
    b"resumable:result\0",
    b"resumable:backup-manifest\0",
)
_LENGTH = struct.Struct("<Q")
_ONE_SHOT = 1 << 16


class Signer:
    """HMAC-SHA256 (RFC 2104) under one key, its padded-key states hashed once.

    ``hmac.new(key, msg, "sha256")`` computes the same tag (the tests check it), but costs
    1.6 us for a small record; copying two prepared ``sha256`` states costs 0.7 us. The
    record's kind is absorbed into the inner state up front, so a tag made for one kind of
    record never verifies as another.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        import hashlib

        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\x00")
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._inner = tuple(_absorbed(inner, tag) for tag in KIND_TAGS)

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
    import hmac

    return type(checksum) is str and checksum.isascii() and hmac.compare_digest(checksum, computed)


def _resolve(kind: int, header: bytes, payload: bytes) -> str:
    """Look up the secret in force, install the checksum it calls for, and use it."""
    global digest, equal
    made_for = _config.current()
    secret = _config.secret()
    if secret is None:
        digest, equal = _xxh3, operator.eq
    else:
        digest, equal = Signer(secret).sign, _equal_in_constant_time
    if _config.current() is not made_for:  # configure() ran meanwhile: look again next time
        forget_secret()
    return digest(kind, header, payload)


#: The checksum of a record, ``(kind, header, payload) -> str``: xxh3-128 without a secret,
#: the HMAC tag with one. Until the secret is looked up (on the first checksum after
#: :func:`forget_secret`, which every ``configure()`` calls), :func:`_resolve`, which
#: installs the right one, so the hot path never looks at the secret. Call it as
#: ``_signing.digest(...)``: a name imported from here would keep the first one.
digest: Callable[[int, bytes, bytes], str] = _resolve
#: How a stored checksum is compared with the computed one (in constant time for a MAC).
equal: Callable[[object, str], bool] = _equal_in_constant_time


def forget_secret() -> None:
    """Make the next checksum look the secret up again."""
    global digest  # noqa: PLW0603 - the cache of the secret in force
    digest = _resolve
    _warned.clear()


def refused(checksum: object) -> bool:
    """Log why a record cannot verify if the reason is signing (once per process); False."""
    hint = signature_hint(checksum)
    if hint and hint not in _warned:
        _warned.add(hint)  # once per process and secret: a store can hold thousands of these
        log.warning("resumable.record.signature_mismatch", hint=hint)
    return False


_warned: set[str] = set()


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
    reverse (:mod:`resumable._backup_files`).
    """
    return digest(MANIFEST, b"", body)


def manifest_checksum_matches(body: bytes, checksum: object) -> bool:
    """Whether ``checksum`` is :func:`manifest_checksum` of ``body`` (a tag: in constant time)."""
    computed = manifest_checksum(body)  # first: it installs the comparison in force
    return equal(checksum, computed)
