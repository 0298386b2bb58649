"""Every file and directory operation of the file store, the backups and the locks.

Atomic writes are spelled once here (:mod:`.write`): a temp name (random hex + pid) in the same
directory, write, flush, fsync when durability asks for it, ``os.replace``, fsync the
directory. Stores create files owner-only (0600) in owner-only directories (0700).

Nothing here follows a symlink at the path it is given: files are opened with ``O_NOFOLLOW``
(new ones with ``O_EXCL``), checked on the opened descriptor (a regular file, one link, owned
by you or root: :mod:`resumable._trust`), and written through a descriptor of their directory,
itself opened without following links (:mod:`.checked`). The directories above were checked
once, when the store or backup directory was opened (:func:`makedirs`,
:func:`_trust.resolve_dir`). Below a file store's root, not even a directory is named by path:
each is opened relative to the one above (:class:`Dir`, in :mod:`.below`).

The modules:

- :mod:`.checked`: opening and reading files and directories, checked (``makedirs``,
  ``open_dir``, ``read_bytes``, ``read_with_status``, ``lstat_or_none``, ``same_file``);
- :mod:`.write`: atomic writes, copies, renames and removals (``atomic_write``,
  ``copy_file``, ``hash_file``, ``replace``, ``remove``, ...);
- :mod:`.lockfile`: lock files (``open_lock``, ``locked``);
- :mod:`.below`: :class:`Dir`, an open directory and everything below it by name;
- :mod:`.faults`: the tests' fault-injection hook, called with the name of each operation
  and its path just before the operation runs (``tests/workers/fault_worker.py``). Only status
  queries (``stat``) bypass it.

What the rest of resumable uses is re-exported here (``__all__``); the other names without an
underscore in those modules are for the modules of this package.
"""

from __future__ import annotations

from .below import Dir
from .checked import (
    list_names,
    lstat_or_none,
    makedirs,
    open_dir,
    read_bytes,
    read_with_status,
    same_file,
)
from .lockfile import locked, open_lock
from .write import (
    TEMP_MARK,
    atomic_write,
    copy_file,
    create_new,
    fsync_dir,
    fsync_file,
    hash_file,
    link_or_copy,
    remove,
    remove_tree,
    replace,
    temp_path,
)

__all__ = [
    "TEMP_MARK",
    "Dir",
    "atomic_write",
    "copy_file",
    "create_new",
    "fsync_dir",
    "fsync_file",
    "hash_file",
    "link_or_copy",
    "list_names",
    "locked",
    "lstat_or_none",
    "makedirs",
    "open_dir",
    "open_lock",
    "read_bytes",
    "read_with_status",
    "remove",
    "remove_tree",
    "replace",
    "same_file",
    "temp_path",
]
