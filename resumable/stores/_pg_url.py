"""A PostgreSQL store's URL: its store options, what goes to libpq, and what may be shown.

The store's own options (:data:`OPTIONS`) are taken out of the query; libpq's own parser reads
the rest (``psycopg.conninfo``), so the user, server, database and password in messages are
the ones libpq logs in with. The password never shows: the URL as shown has none, and every
message passes through :meth:`Target.scrub`. psycopg is imported only when a URL is read
(the store's module checks that it is installed first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from resumable.errors import StoreError

from ._options import check_options
from .base import DEFAULT_HISTORY, DEFAULT_LEASE, Store

__all__ = ["OPTIONS", "Target", "read_url"]

#: Store options (the rest of a URL's query goes to libpq) and how a query string parses.
OPTIONS: dict[str, Callable[[str], Any]] = {
    "durability": str,
    "history": int,
    "lease": float,
    "heartbeat": float,
    "schema": str,
    "pool_size": int,
}
_SECRET_PARAMS = ("password", "sslpassword")
#: What libpq says when the login is refused, and when the server cannot be reached.
_REFUSED = ("password authentication failed", "no pg_hba.conf entry", "authentication failed")
_UNREACHABLE = (
    "Connection refused", "timeout expired", "could not translate host name",
    "Name or service not known", "No route to host", "Network is unreachable",
    "Temporary failure in name resolution", "No such file or directory",
)  # fmt: skip
#: SQLSTATEs of a server that will not hold the tables in the schema asked for: a reserved name
#: (``pg_catalog``, any ``pg_*``), no privilege to create the schema or tables in it.
_SCHEMA_REFUSED = frozenset({"42939", "42501"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where a PostgreSQL store connects, as libpq reads its URL."""

    #: libpq's connection string (password included): never shown.
    conninfo: str
    #: The URL as shown in messages and reprs: without any password.
    url: str
    #: For messages: who logs in, to which server (``host:port``), which database.
    user: str
    server: str
    dbname: str
    #: Seconds libpq waits for the server (``connect_timeout``, default 5).
    connect_timeout: float
    #: The passwords as given and as written in the URL, longest first.
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        """``text`` with every password masked."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def open_error(self, exc: BaseException, schema: str) -> StoreError | None:
        """The StoreError saying why opening the store failed; None if no more is known."""
        text = " ".join(self.scrub(str(exc)).split())
        if any(m in text for m in _REFUSED) or ("role" in text and "does not exist" in text):
            why = (
                f"the server refused the login of user {self.user!r}: check the user and "
                "password in the URL"
            )
        elif "database" in text and "does not exist" in text:
            why = (
                f"the server at {self.server} has no database {self.dbname!r}: create it "
                f"(createdb {self.dbname}) or fix the URL"
            )
        elif any(m in text for m in _UNREACHABLE):
            why = f"could not reach the PostgreSQL server at {self.server} — is it running?"
        elif getattr(exc, "sqlstate", None) in _SCHEMA_REFUSED:
            why = (
                f"the server refused to keep the store's tables in schema {schema!r}: "
                "choose another schema (?schema=NAME), one this user may create tables in"
            )
        else:
            return None
        return StoreError(f"{self.url}: {why} ({text})")


def read_url(cls: type[Store], url: str, keywords: dict[str, Any]) -> tuple[Target, dict[str, Any]]:
    """Where ``url`` connects, and the store options it and ``keywords`` give (checked).

    Keyword options win over the query's; missing ones take their defaults.

    Raises:
        ValueError: not a PostgreSQL URL, a bad option, or a name in the query that is
            neither an option nor libpq's.
        StoreError: libpq cannot read the URL.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in cls.schemes:
        raise ValueError(f"{url!r} is not a postgresql://user@host/dbname URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    given: dict[str, Any] = {k: v for k, v in query if k in OPTIONS}
    given.update((k, v) for k, v in keywords.items() if v is not None)
    opts = _parse_options(given)

    # Shown in messages and reprs: the URL without any password.
    netloc = parts.netloc.rpartition("@")[2]
    at = f"{parts.username}@" if parts.username else ""
    shown = [(k, v) for k, v in query if k not in _SECRET_PARAMS]
    url_shown = urlunsplit((parts.scheme, at + netloc, parts.path, urlencode(shown), ""))
    # A name that is neither an option nor libpq's is a typo: say so, rather than let
    # libpq refuse the URL at connect time (a StoreError about the server).
    libpq = [(k, v) for k, v in query if k not in OPTIONS]
    check_options(
        cls, url_shown, (k for k, _ in libpq), also=_libpq_parameters(),
        also_what="libpq's connection parameters (connect_timeout, sslmode, ...)",
    )  # fmt: skip
    # (Not urlunsplit: it drops the "//" of a URL without a host, postgresql:///dbname.)
    libpq_url = f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(libpq)}"
    return _target(libpq_url, url_shown, parts.password or ""), opts


def _target(libpq_url: str, url: str, written: str) -> Target:
    """The target of ``libpq_url`` (the URL less the store's options), shown as ``url``.

    ``written`` is the password as written in the URL (percent-encoded), masked as well.
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(libpq_url)
    except psycopg.ProgrammingError as exc:
        text = " ".join(str(exc).replace(written or "\x00", "***").split())
        raise StoreError(f"{url}: libpq cannot read the URL: {text}") from None
    params.setdefault("connect_timeout", "5")
    try:
        timeout = float(params["connect_timeout"] or 5)
    except ValueError:
        raise ValueError(f"{url}: connect_timeout must be a number of seconds") from None
    port = str(params.get("port") or 5432)
    if not all(p.strip().isdigit() for p in port.split(",") if p.strip()):
        raise ValueError(f"{url}: the port must be a number, not {port!r}")
    given = [str(params.get(name) or "") for name in _SECRET_PARAMS]
    secrets = {x for p in given if p for x in (p, quote(p, safe=""))} | ({written} - {""})
    user = str(params.get("user") or _os_user())
    return Target(
        conninfo=make_conninfo("", **params),
        url=url,
        user=user,
        server=f"{params.get('host') or 'localhost'}:{port}",
        dbname=str(params.get("dbname") or user),
        connect_timeout=timeout,
        secrets=tuple(sorted(secrets, key=len, reverse=True)),
    )


def _parse_options(given: dict[str, Any]) -> dict[str, Any]:
    """Store options from the query string and keyword arguments, checked, with defaults."""
    opts: dict[str, Any] = {
        "durability": "normal", "history": DEFAULT_HISTORY, "lease": DEFAULT_LEASE,
        "heartbeat": None, "schema": "public", "pool_size": 4,
    }  # fmt: skip
    for name, value in given.items():
        kind = OPTIONS[name]
        if isinstance(value, str) and kind is not str:
            try:
                value = kind(value)  # noqa: PLW2901 - the parsed form of the same value
            except ValueError:
                raise ValueError(f"store option {name}={value!r} is not a number") from None
        opts[name] = value
    pool_size = opts["pool_size"]
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        raise ValueError(f"store option pool_size must be a whole number >= 1, not {pool_size!r}")
    schema = opts["schema"]
    if not isinstance(schema, str) or not schema or "\x00" in schema or len(schema) > 63:
        raise ValueError(
            f"store option schema must be a PostgreSQL schema name (1 to 63 characters), "
            f"not {schema!r}"
        )
    return opts


def _libpq_parameters() -> Iterable[str]:
    """The connection parameters the installed libpq knows (``sslmode``, ...)."""
    import psycopg

    return tuple(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # pragma: no cover - no user name in this environment
        return "?"
