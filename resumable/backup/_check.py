"""Whether a backup's copy is whole: hashed against its manifest, remembered while unchanged.

Hashing a copy costs a read of it, so a copy found good is remembered by its status (inode,
size, mtime, ctime) and hashed again only when that status changed. A copy is read only if it
is a regular file of yours or root's with one link, as a restore reads it.
"""

from __future__ import annotations

from pathlib import Path

from resumable import _trust
from resumable._log import log
from resumable.errors import UnsafePath

from ._copy import digest
from ._manifest import Manifest

__all__ = ["CopyChecks"]


class CopyChecks:
    """The copies in one backup directory known to match their checksums.

    Args:
        directory: The backup directory (checked already).
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._good: dict[str, tuple[int, int, int, int]] = {}  # id -> copy's status when good

    def remember(self, backup_id: str, data: Path) -> None:
        """Note the copy ``data`` of ``backup_id`` as good, as it is now (written or verified)."""
        st = data.lstat()
        self._good[backup_id] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def forget(self, backup_id: str) -> None:
        """Drop what is known of ``backup_id`` (its copy is gone)."""
        self._good.pop(backup_id, None)

    def problem(self, m: Manifest) -> str | None:
        """What is wrong with the copy of ``m`` (None: it matches its checksum).

        A copy this process wrote or verified is hashed again only when its status changed.
        The copy must be a regular file of yours or root's with one link, as a restore reads it.
        """
        data = self.dir / m.data_file
        problem: str | None = None
        try:
            st = data.lstat()
            _trust.check_file(data, st)
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if self._good.get(m.backup_id) == key:
                return None
            if st.st_size != m.size_bytes or digest(data, trusted=True) != m.checksum:
                problem = "failed its checksum"
        except FileNotFoundError:
            problem = "is missing"
        except UnsafePath as exc:
            problem = f"is refused ({exc})"
        if problem is None:
            self.remember(m.backup_id, data)
        else:
            self.forget(m.backup_id)
            log.error(
                "resumable.backup.corrupt", backup_id=m.backup_id, path=str(data), problem=problem
            )
        return problem

    def is_good(self, m: Manifest) -> bool:
        """Whether the copy matches its checksum (see :meth:`problem`)."""
        return self.problem(m) is None

    def check(self, m: Manifest) -> str | None:
        """What is wrong with the copy of ``m``, hashed now (None: it is whole)."""
        self.forget(m.backup_id)
        return self.problem(m)
