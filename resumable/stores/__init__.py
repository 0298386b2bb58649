"""Stores, chosen by URL: ``sqlite:///path.db``, ``file:///dir``, ``memory://``, ``postgresql:``.

``open_store(url)`` builds a store; the driver of each is imported only when asked for.
URLs follow the conventions their users know: ``sqlite:`` like SQLAlchemy (three slashes
then a relative path, four for an absolute one), ``file:`` like RFC 8089 (``file:///abs/dir``,
or ``file:relative/dir``), ``postgresql:`` like libpq (``postgresql://user@host/dbname``;
libpq's own query parameters go to libpq). Options go in the query string or as
keyword arguments:
``?durability=full``, ``?history=10``, and for SQLite ``?timeout=30``; for the stores that
processes can share (SQLite, PostgreSQL), ``?lease=10&heartbeat=2`` (seconds). Each store's
options are its constructor's keyword-only parameters (:func:`store_options`); any other name
is a ValueError that lists them.
"""

from __future__ import annotations

import atexit
import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from resumable import _config
from resumable._log import log

from ._discover import FALLBACK, Default, default_store, local_path
from ._options import check_options
from .base import DEFAULT_HISTORY, Durability, Store
from .sqlite import SQLiteStore  # the default store: loaded with the package, others on demand

__all__ = ["DEFAULT_HISTORY", "DEFAULT_STORE_URL", "Durability", "Store", "open_store"]

#: Where operations live unless ``store=``, ``configure(store=...)``, ``RESUMABLE_STORE`` or a
#: project's configuration says otherwise: relative to the working directory.
DEFAULT_STORE_URL = FALLBACK


def open_store(url: str, **options: Any) -> Store:
    """Open the store that ``url`` names.

    Args:
        url: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``, ``file:///abs/dir``,
            ``file:relative/dir``, ``memory://`` or ``postgresql://user@host/dbname`` (with
            the ``postgres`` extra: ``pip install 'resumable[postgres]'``).
        **options: ``durability`` (``"normal"`` or ``"full"``) and ``history`` (checkpoints
            kept per operation) for every store; SQLite also takes ``timeout``, the stores
            that processes share (SQLite, PostgreSQL) ``lease`` and ``heartbeat``, and
            PostgreSQL ``schema`` and ``pool_size``. They override the query string. An
            option the store does not take, in either place, is a ValueError that names the
            valid ones (a PostgreSQL URL's query may also hold libpq's parameters).

    Raises:
        TypeError: ``url`` is not a string.
        ValueError: unknown scheme, an option the store does not take (in the query or as a
            keyword), or a bad value.
        StoreError: the store could not be opened.
    """
    if not isinstance(url, str):
        raise TypeError(f"a store URL must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query: dict[str, Any] = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "sqlite":
        path = sqlite_path(url, parts.netloc, parts.path)
        return SQLiteStore(path, **_options(SQLiteStore, url, query, options))
    if scheme == "file":
        from .files import FileStore

        return FileStore(
            file_path(url, parts.netloc, parts.path), **_options(FileStore, url, query, options)
        )
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(**_options(MemoryStore, url, query, options))
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        # It parses its own query, where libpq's parameters may stand too.
        check_options(PostgresStore, url, options, keywords=True)
        return PostgresStore(url, **options)
    raise ValueError(
        f"unknown store URL {url!r}; use one of sqlite:///path.db, file:///abs/dir, "
        "memory://, or postgresql://user@host/dbname (also written postgres://)"
    )


def _options(
    cls: type[Store], url: str, query: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """The query's options overridden by the keyword ones, checked and with numbers parsed."""
    check_options(cls, url, query)
    check_options(cls, url, options, keywords=True)
    given = {**query, **options}
    _coerce(given)
    return given


def _coerce(query: dict[str, Any]) -> None:
    numbers = (("history", int), ("timeout", float), ("lease", float), ("heartbeat", float))
    for name, kind in numbers:
        if isinstance(query.get(name), str):
            try:
                query[name] = kind(query[name])
            except ValueError:
                raise ValueError(f"store option {name}={query[name]!r} is not a number") from None


def sqlite_path(url: str, netloc: str, path: str) -> str:
    if netloc or not path.startswith("/") or len(path) < 2:
        raise ValueError(
            f"{url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return unquote(path[1:])


def file_path(url: str, netloc: str, path: str) -> str:
    if netloc not in ("", "localhost") or not path:
        raise ValueError(f"{url!r}: write file:///absolute/dir or file:relative/dir")
    return unquote(path)


_cache: dict[tuple[str, str, int], Store] = {}


def default_store_url() -> str:
    """The default store's URL here (see :mod:`._discover`).

    ``RESUMABLE_STORE``, else a project's configuration, else :data:`DEFAULT_STORE_URL`.
    """
    return default_store(os.getcwd()).url  # noqa: PTH109


def resolve_store(spec: str | Store | None) -> Store:
    """The store for a ``store=`` argument: a Store as is, or a URL opened once per process.

    Relative paths are resolved against the working directory at the first use of the URL.
    """
    if isinstance(spec, Store):
        return spec
    cwd = os.getcwd()  # noqa: PTH109
    default: Default | None = None
    if spec is None:
        configured = _config.current().store
        if isinstance(configured, Store):
            return configured
        if isinstance(configured, str) and configured:
            spec = configured
        else:
            default = default_store(cwd)
            spec = default.url
    if not isinstance(spec, str):
        raise TypeError(
            f"store must be a URL such as 'sqlite:///jobs.db' or a Store, not {type(spec).__name__}"
        )
    key = (spec, "" if spec.startswith("memory:") else cwd, os.getpid())
    store = _cache.get(key)
    if store is None:
        # No lock held across the open: a Ctrl-C landing as a `with lock:` block ends can
        # leave the lock taken, and every later call would hang. setdefault is atomic, so two
        # threads racing here agree on one store.
        where = local_path(spec) if default is not None else None
        new = where is not None and not os.path.lexists(where)
        opened = open_store(spec)
        store = _cache.setdefault(key, opened)
        if store is not opened:
            opened.close()  # another thread won the race: its store is the one used
        elif new and default is not None:
            log.info("resumable.store.created", url=store.url, source=default.source)
    return store


def _close_cached() -> None:
    """Close the stores this process opened by URL, and forget them (at exit).

    Stores a forked child inherited stay: their connections belong to the parent.
    """
    pid = os.getpid()
    for key in [key for key in _cache if key[2] == pid]:
        store = _cache.pop(key, None)
        if store is not None:
            store.close()


# A cached store lives as long as the process; without this its connections would be left to
# the garbage collector at shutdown (Python 3.13 reports that as an unclosed database).
atexit.register(_close_cached)
