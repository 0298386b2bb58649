"""Backups of single files: copied and checksummed in one pass, committed by a manifest.

``Backups`` is the backup half of the specification's FailsafeManager. A backup is a copy of
one file plus a small JSON manifest written last, as the commit point: a copy without a
manifest does not exist, and leftovers of a crash are ignored and later removed. An SQLite
database is copied with SQLite's online backup API, a consistent snapshot even while other
processes write to it. A restore verifies the copy before the destination changes. A database
is restored into the database through the same API, so processes that have it open see one
consistent switch; any other file is swapped in atomically, with the current file kept aside
until the swap has succeeded.

The modules behind it, each importing only those below it::

    _backups    Backups, BackupInfo: the public calls, locking, dedup, rotation
    _restore    checked destinations, the verified swap or the write through SQLite
    _check      whether a copy matches its checksum (remembered while unchanged)
    _copy       one-pass copies, SQLite snapshots and the busy deadline
    _manifest   ids, names, manifests and their seals, what counts as a leftover
    _watch      what changed since a backup (SourceState), the auto-backup thread

``docs/backups.md`` records the decisions.
"""

from resumable.errors import BackupRefused

from ._backups import BackupInfo, Backups

__all__ = ["BackupInfo", "BackupRefused", "Backups"]
