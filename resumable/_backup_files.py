"""The files of a backup directory: ids, names, manifests, and what counts as a leftover.

Layout (files 0600, created directories 0700)::

    <source name>.<backup id>.bak     the copy
    <backup id>.json                  its manifest, written last: the commit point
    .lock                             flock: creators share it, stray cleanup takes it alone

A backup exists exactly when its manifest does. A backup id reads as its UTC time and a
digest of the source path, ``20261130T000512.123456Z-3f9a1c2e``: ids sort by time.
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

from . import _fs
from ._backup_watch import SourceState
from ._log import log

__all__ = [
    "ID_RE",
    "LOCK",
    "Manifest",
    "data_name",
    "iso_time",
    "new_id",
    "read",
    "scan",
    "strays",
    "write",
]

ALGORITHM = "xxh3_128"
#: The largest manifest read (one is a few hundred bytes).
MANIFEST_LIMIT = 1 << 20
FORMAT = 1
LOCK = ".lock"
_ID = r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}"
ID_RE = re.compile(_ID)
_DATA_RE = re.compile(rf"\.({_ID})\.bak$")
_TEMP_RE = re.compile(
    rf"(?:\.{_ID}\.bak|^{_ID}\.json){re.escape(_fs.TEMP_MARK)}[0-9a-f]{{12}}\.\d+"
    r"(?:-journal|-wal|-shm)?$"
)
_TIME = "%Y%m%dT%H%M%S.%f"


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


def iso_time(when: float | dt.datetime, *, timespec: str = "microseconds") -> str:
    """``when`` (POSIX seconds, or an aware datetime) in the library's one time format.

    Local ISO 8601 with the UTC offset: ``2026-11-30T09:05:12.123456+09:00``. Backup
    timestamps, operation and checkpoint times (the command line, the FailsafeManager, the
    file store) all use it; the command line's tables pass ``timespec="seconds"``. It lives
    here, the lowest module that needs it, and ``_admin`` re-exports it.
    """
    if not isinstance(when, dt.datetime):
        when = dt.datetime.fromtimestamp(when, dt.UTC)
    return when.astimezone().isoformat(timespec=timespec)


def new_id(directory: Path, source: Path, newest: str | None) -> tuple[str, dt.datetime]:
    """A new backup id for ``source`` and its UTC time, later than its ``newest`` id."""
    tag = xxhash.xxh3_64_hexdigest(os.fsencode(source))[:8]
    when = dt.datetime.now(dt.UTC)
    if newest is not None:  # the ids of one source only grow, even if the clock steps back
        last = dt.datetime.strptime(newest[:22], _TIME).replace(tzinfo=dt.UTC)
        when = max(when, last + dt.timedelta(microseconds=1))
    while (directory / f"{when:{_TIME}}Z-{tag}.json").exists():
        when += dt.timedelta(microseconds=1)
    return f"{when:{_TIME}}Z-{tag}", when


def data_name(source: Path, backup_id: str) -> str:
    """The name of the copy: the source's name (at most 120 bytes of it) and the id."""
    name = source.name.encode("utf-8", "surrogateescape")[:120].decode("utf-8", "ignore")
    return f"{name}.{backup_id}.bak"


def write(directory: Path, m: Manifest, *, durable: bool) -> None:
    """Commit backup ``m`` by writing its manifest atomically."""
    doc: dict[str, Any] = {"format": FORMAT, "algorithm": ALGORITHM}
    doc.update(dataclasses.asdict(m))
    doc["state"] = {"files": m.state.files, "taken_ns": m.state.taken_ns}
    data = json.dumps(doc, indent=1).encode()
    _fs.atomic_write(directory / f"{m.backup_id}.json", data, durable=durable)


def read(directory: Path, backup_id: str) -> Manifest | None:
    """The manifest of ``backup_id``; None if there is none (or it is unreadable: logged)."""
    path = directory / f"{backup_id}.json"
    try:
        doc = json.loads(_fs.read_bytes(path, limit=MANIFEST_LIMIT))
        files = doc["state"]["files"]
        return Manifest(
            backup_id=doc["backup_id"],
            source_path=doc["source_path"],
            data_file=doc["data_file"],
            timestamp=doc["timestamp"],
            size_bytes=int(doc["size_bytes"]),
            checksum=doc["checksum"],
            kind=doc["kind"],
            mode=int(doc["mode"]),
            state=SourceState(
                tuple((int(f[0]), int(f[1])) if f else None for f in files),
                int(doc["state"]["taken_ns"]),
            ),
            source_digest=doc["source_digest"],
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("resumable.backup.manifest_unreadable", path=str(path), error=repr(exc))
        return None


def scan(directory: Path, source: str | None = None) -> list[Manifest]:
    """The committed backups in ``directory`` (of ``source`` only, if given), newest first."""
    found = []
    for name in _fs.list_names(directory):
        if name.endswith(".json") and ID_RE.fullmatch(name[:-5]):
            m = read(directory, name[:-5])
            if m is not None and (source is None or m.source_path == source):
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
