"""The files of a backup directory: ids, names, manifests, and what counts as a leftover.

Layout (files 0600, created directories 0700)::

    <source name>.<backup id>.bak     the copy
    <backup id>.json                  its manifest, written last: the commit point
    .lock                             flock: creators share it, stray cleanup takes it alone

A backup exists exactly when its manifest does. A backup id reads as its UTC time and a
digest of the source path, ``20261130T000512.123456Z-3f9a1c2e``: ids sort by time.

A manifest says where a restore writes and with which permissions, so it is trusted only
once checked (:func:`read`), before any of its fields is used: a regular file, not a
symlink, at most :data:`MANIFEST_LIMIT` bytes; its ``seal`` (format 2) is the checksum of
the rest, an HMAC-SHA256 tag when a secret is set (:func:`resumable.operation.
manifest_checksum`); without a secret, only a manifest of your own (or root's) is read; and
its copy must be a plain name of this backup inside the backup directory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import xxhash

from resumable import _config, _fs, _trust
from resumable._log import log
from resumable._signing import MAC_MARK, manifest_checksum, manifest_checksum_matches
from resumable.errors import BackupRefused, UnsafePath
from resumable.operation import canonical_json

from ._watch import SourceState

__all__ = [
    "ID_RE",
    "LOCK",
    "Manifest",
    "data_name",
    "new_id",
    "read",
    "scan",
    "strays",
    "write",
]

ALGORITHM = "xxh3_128"
#: The largest manifest read (one is a few hundred bytes).
MANIFEST_LIMIT = 1 << 20
#: 2: sealed (``seal``: the checksum, or with a secret the signature, of the other fields).
#: 1: written before manifests were sealed; read only without a secret.
FORMAT = 2
LOCK = ".lock"
_ID = r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}"
ID_RE = re.compile(_ID)
_DATA_RE = re.compile(rf"\.({_ID})\.bak$")
_TEMP_RE = re.compile(
    rf"(?:\.{_ID}\.bak|^{_ID}\.json){re.escape(_fs.TEMP_MARK)}[0-9a-f]{{12}}\.\d+"
    r"(?:-journal|-wal|-shm)?$"
)
_HEX128 = re.compile(r"[0-9a-f]{32}")
_TIME = "%Y%m%dT%H%M%S.%f"
_KINDS = ("file", "sqlite")
#: What to do about a manifest that is damaged or was changed by someone else.
_ANOTHER = "do not restore it; restore another backup, or back the file up again"
#: What to do about a manifest that cannot be checked under the secret in force.
_RESIGN = (
    "back the file up again with the secret set, to get a signed backup; if you made this "
    "backup yourself, you can restore it with RESUMABLE_SECRET unset"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """A committed backup as its manifest describes it."""

    backup_id: str
    source_path: str
    data_file: str  # name inside the backup directory
    timestamp: str
    size_bytes: int
    checksum: str
    kind: str  # "file" or "sqlite"
    mode: int  # the source's permission bits
    state: SourceState  # the source's state when it was read
    source_digest: str | None  # plain files: digest of the source as copied


def new_id(directory: Path, source: Path, newest: str | None) -> tuple[str, dt.datetime]:
    """A new backup id for ``source`` and its UTC time, later than its ``newest`` id."""
    tag = xxhash.xxh3_64_hexdigest(os.fsencode(source))[:8]
    when = dt.datetime.now(dt.UTC)
    if newest is not None:  # the ids of one source only grow, even if the clock steps back
        last = dt.datetime.strptime(newest[:22], _TIME).replace(tzinfo=dt.UTC)
        when = max(when, last + dt.timedelta(microseconds=1))
    while os.path.lexists(directory / f"{when:{_TIME}}Z-{tag}.json"):
        when += dt.timedelta(microseconds=1)
    return f"{when:{_TIME}}Z-{tag}", when


def data_name(source: Path, backup_id: str) -> str:
    """The name of the copy: the source's name (at most 120 bytes of it) and the id."""
    name = source.name.encode("utf-8", "surrogateescape")[:120].decode("utf-8", "ignore")
    return f"{name}.{backup_id}.bak"


def _canonical(doc: dict[str, Any]) -> bytes:
    """The bytes a manifest's seal covers: every field but the seal, in one fixed spelling."""
    return canonical_json(doc).encode()


def write(directory: Path, m: Manifest, *, durable: bool) -> None:
    """Commit backup ``m`` by writing its manifest atomically, sealed."""
    doc: dict[str, Any] = {"format": FORMAT, "algorithm": ALGORITHM}
    doc.update(dataclasses.asdict(m))
    doc["state"] = {"files": m.state.files, "taken_ns": m.state.taken_ns}
    doc["seal"] = manifest_checksum(_canonical(doc))
    data = json.dumps(doc, indent=1).encode()
    _fs.atomic_write(directory / f"{m.backup_id}.json", data, durable=durable)


def read(directory: Path, backup_id: str) -> Manifest:
    """The manifest of ``backup_id``, checked before any of its fields is used.

    Raises:
        FileNotFoundError: there is no such manifest.
        BackupRefused: it cannot be read, or cannot be trusted: see the module's docstring.
    """
    path = directory / f"{backup_id}.json"
    keyed = _config.secret() is not None
    try:
        # never through a symlink, never a FIFO or a device, one link, yours or root's (unless
        # in a shared directory), its size checked first; its owner decides more below
        raw, st = _fs.read_with_status(path, limit=MANIFEST_LIMIT)
    except FileNotFoundError:
        raise
    except UnsafePath as exc:
        raise BackupRefused(
            backup_id, path, f"is unsafe to read ({exc})", "move it aside"
        ) from None
    except OSError as exc:
        why = f"cannot be read ({exc.strerror or exc})"
        raise BackupRefused(backup_id, path, why, "check the disk and try again") from None
    if not keyed and st.st_uid not in (0, os.geteuid()):
        raise BackupRefused(
            backup_id,
            path,
            f"is owned by {_trust.user_name(st.st_uid)}, not by you or root, and no secret is set "
            "to check its signature",
            "without RESUMABLE_SECRET only your own manifests are trusted: set the secret "
            "that signed it, or remove it if you do not know where it came from",
        )
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise BackupRefused(backup_id, path, "is damaged (not a JSON object)", _ANOTHER)
    problem = _unsealed(doc, keyed=keyed)
    if problem is not None:
        raise BackupRefused(backup_id, path, *problem)
    try:
        return _manifest(doc, backup_id)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise BackupRefused(backup_id, path, f"is damaged or forged ({exc})", _ANOTHER) from None


def _unsealed(doc: dict[str, Any], *, keyed: bool) -> tuple[str, str] | None:
    """Why manifest ``doc`` cannot be trusted under the secret in force, and what to do.

    None if its seal verifies (format 2), or if it has none (format 1) and no secret is set.
    Takes the seal out of ``doc``.
    """
    version = doc.get("format")
    legacy = version == 1 and "seal" not in doc
    if version != FORMAT and not legacy:
        return (
            f"has format {version!r}, which this version of resumable does not read",
            "restore it with the version that made it, or upgrade resumable",
        )
    seal = doc.pop("seal", None)
    signed = isinstance(seal, str) and seal.startswith(MAC_MARK)
    problem: tuple[str, str] | None = None
    if legacy:
        if keyed:
            problem = (
                "was written before manifests were signed (format 1), and a secret is set, "
                "so it cannot be checked",
                _RESIGN,
            )
    elif signed and not keyed:
        problem = (
            "is signed and no secret is set to check it",
            "set RESUMABLE_SECRET (or call configure(secret=...)) to the secret that signed it",
        )
    elif keyed and not signed:
        problem = (
            "is not signed (it was written without a secret, or by someone who does not have "
            "it), and a secret is set",
            _RESIGN,
        )
    elif not manifest_checksum_matches(_canonical(doc), seal):
        problem = (
            "does not match its signature: it was changed after it was written (forged or "
            "damaged), or signed with another secret"
            if keyed
            else "does not match its checksum (damaged)",
            _ANOTHER,
        )
    return problem


def _field(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc[key]
    if type(value) is not kind:  # not bool for int
        raise TypeError(f"{key} is not a {kind.__name__}")
    return value


def _whole(doc: dict[str, Any], key: str) -> int:
    value: int = _field(doc, key, int)
    if value < 0:
        raise ValueError(f"{key} is negative")
    return value


def _state(doc: Any) -> SourceState:
    files = doc["files"]
    if type(files) is not list or len(files) != 2:
        raise ValueError("state.files is not two entries")
    seen: list[tuple[int, int] | None] = []
    for f in files:
        if f is not None and (type(f) is not list or [type(x) for x in f] != [int, int]):
            raise ValueError("state.files holds something other than sizes and times")
        seen.append(None if f is None else (f[0], f[1]))
    return SourceState(tuple(seen), _field(doc, "taken_ns", int))


def _manifest(doc: dict[str, Any], backup_id: str) -> Manifest:
    """The fields of the checked manifest ``doc``, each of its type and in range.

    The copy must be a plain name of this backup (``<name>.<backup id>.bak``) inside the
    backup directory: no ``/``, so never a path elsewhere.
    """
    if _field(doc, "backup_id", str) != backup_id:
        raise ValueError(f"it names backup {doc['backup_id']!r}, not its own id")
    source = _field(doc, "source_path", str)
    if not Path(source).is_absolute() or "\0" in source:
        raise ValueError("source_path is not an absolute path")
    data_file = _field(doc, "data_file", str)
    if "/" in data_file or "\0" in data_file or not data_file.endswith(f".{backup_id}.bak"):
        raise ValueError(f"data_file {data_file!r} is not a name of this backup's copy")
    timestamp = _field(doc, "timestamp", str)
    dt.datetime.fromisoformat(timestamp)
    checksum = _field(doc, "checksum", str)
    digest = doc["source_digest"]
    if not _HEX128.fullmatch(checksum) or not (digest is None or _HEX128.fullmatch(digest)):
        raise ValueError("a checksum is not an xxh3-128 digest")
    kind = _field(doc, "kind", str)
    if kind not in _KINDS:
        raise ValueError(f"kind {kind!r} is not one of {_KINDS}")
    mode = _whole(doc, "mode")
    if mode > 0o7777:
        raise ValueError("mode holds more than permission bits")
    return Manifest(
        backup_id=backup_id,
        source_path=source,
        data_file=data_file,
        timestamp=timestamp,
        size_bytes=_whole(doc, "size_bytes"),
        checksum=checksum,
        kind=kind,
        mode=mode,
        state=_state(doc["state"]),
        source_digest=digest,
    )


def scan(directory: Path, source: str | None = None) -> list[Manifest]:
    """The committed backups in ``directory`` (of ``source`` only, if given), newest first.

    A manifest that is refused (:func:`read`) is skipped with a warning.
    """
    found = []
    for name in _fs.list_names(directory):
        if name.endswith(".json") and ID_RE.fullmatch(name[:-5]):
            try:
                m = read(directory, name[:-5])
            except FileNotFoundError:
                continue  # deleted meanwhile
            except BackupRefused as exc:
                log.warning("resumable.backup.manifest_refused", path=exc.path, why=str(exc))
                continue
            if source is None or m.source_path == source:
                found.append(m)
    found.sort(key=lambda m: m.backup_id, reverse=True)
    return found


def strays(names: list[str]) -> list[str]:
    """Among a directory's ``names``: temp files, and copies that no manifest commits."""
    committed = {n[:-5] for n in names if n.endswith(".json")}
    return [
        n
        for n in names
        if _TEMP_RE.search(n)
        or ((found := _DATA_RE.search(n)) is not None and found[1] not in committed)
    ]
