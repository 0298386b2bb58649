"""Where the default store is, for a block or a call that names none.

In order: ``configure(store=...)``; ``RESUMABLE_STORE``; the ``store`` of the nearest
``resumable.toml``, or ``[tool.resumable]`` table of a ``pyproject.toml``, found by walking up
from the working directory (so a script run from a subdirectory finds its project's store);
else ``.resumable/state.db`` under the working directory.

A relative path in a configuration file is relative to that file's directory. A configuration
file that is not yours or root's (another user may have put it in a parent directory, e.g.
``/tmp``), or is a symlink, is passed over with a warning: it would choose where your progress
goes. Files are read once per process and working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CONFIG_FILES", "FALLBACK", "Default", "default_store", "local_path"]

#: The files looked for in each directory, nearest first: the first that names a store wins.
CONFIG_FILES: Final = ("resumable.toml", "pyproject.toml")
#: The store of a project that configures none.
FALLBACK: Final = "sqlite:///.resumable/state.db"
#: A configuration file larger than this is not read.
_MAX_BYTES: Final = 1 << 20

_found: dict[tuple[str | None, str], Default] = {}


@dataclass(frozen=True, slots=True)
class Default:
    """The default store's URL, and what chose it (for the line that says where it is)."""

    url: str
    #: ``RESUMABLE_STORE``, a configuration file's path, or "" for the fallback.
    source: str


def default_store(cwd: str) -> Default:
    """The default store for working directory ``cwd`` (see the module's docstring)."""
    env = os.environ.get("RESUMABLE_STORE") or None
    key = (env, cwd)
    found = _found.get(key)
    if found is None:
        if env is not None:
            found = Default(env, "RESUMABLE_STORE")
        else:
            found = _configured(Path(cwd)) or Default(FALLBACK, "")
        _found[key] = found
    return found


def _configured(start: Path) -> Default | None:
    for directory in (start, *start.parents):
        for name in CONFIG_FILES:
            path = directory / name
            store = _read_store(path, table=name == "pyproject.toml")
            if store is not None:
                return Default(_anchored(store, directory), str(path))
    return None


def _read_store(path: Path, *, table: bool) -> str | None:
    """The ``store`` that ``path`` names (in ``[tool.resumable]`` if ``table``), or None."""
    if not os.path.lexists(path):
        return None
    import tomllib

    from resumable._fs.checked import read_bytes
    from resumable._log import log
    from resumable._trust import UnsafePath

    try:
        data = tomllib.loads(read_bytes(path, limit=_MAX_BYTES).decode())
    except UnsafePath as exc:
        log.warning("resumable.store.config_refused", path=str(path), why=exc.why)
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as TOML ({exc}); fix or remove it") from exc
    section: object = data
    if table:
        tool = data.get("tool")
        section = tool.get("resumable") if isinstance(tool, dict) else None
    if not isinstance(section, dict):
        return None
    store = section.get("store")
    if store is None:
        return None
    if not isinstance(store, str) or not store:
        where = "[tool.resumable] store" if table else "store"
        raise ValueError(
            f'{path}: {where} must be a store URL such as "sqlite:///.resumable/state.db", '
            f"not {store!r}"
        )
    return store


def _anchored(url: str, directory: Path) -> str:
    """``url`` with a relative SQLite or file path made relative to ``directory``.

    ``sqlite:///rel.db`` and ``file:rel/dir`` are relative; ``sqlite:////abs.db``,
    ``file:///abs/dir`` and other schemes are left as they are.
    """
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{directory}/{url.removeprefix('sqlite:///')}"
    if url.startswith("file:") and not url.startswith("file:/"):
        return f"file://{directory}/{url.removeprefix('file:')}"
    return url


def local_path(url: str) -> str | None:
    """The database file or directory of a ``sqlite:`` or ``file:`` URL, else None."""
    head = url.split("?", 1)[0]
    if head.startswith("sqlite:///"):
        return head.removeprefix("sqlite:///")
    if head.startswith("file://"):
        return head.removeprefix("file://")
    if head.startswith("file:"):
        return head.removeprefix("file:")
    return None
