"""Shared fixtures: every test runs in its own working directory with no inherited store.

The store tests also run on PostgreSQL when a server answers at ``RESUMABLE_TEST_POSTGRES``
(default ``postgresql://postgres@127.0.0.1:5432/test``): each test gets its own schema, dropped
when it ends. Without a server those tests are skipped, unless ``CI`` is true or the variable
was set, where a missing server fails the run. Likewise, a test module whose optional package
(psycopg, distributed) is missing is skipped locally and fails under CI (:func:`require_package`).
"""

from __future__ import annotations

import functools
import importlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import structlog
from hypothesis import HealthCheck, settings

import resumable
from resumable import stores
from resumable.stores import Store, open_store, resolve_store

# The scripts the crash tests run as real processes live in tests/workers/. Tests that send
# their functions to other processes (Dask workers, process pools) import them by module name,
# and the other processes inherit this sys.path.
sys.path.insert(0, str(Path(__file__).parent / "workers"))

# No per-example deadline or slow-generation check: a loaded CI machine makes timing-based
# failures flaky, and the properties here are about values, not speed (benchmarks/ measures
# speed).
settings.register_profile("resumable", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("resumable")

STORE_KINDS = ["sqlite", "file", "memory", "postgres"]

POSTGRES_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"

#: Schemas url_for made during the current test; dropped when it ends.
_schemas: list[str] = []


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets a fresh working directory, default store and configuration."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    monkeypatch.delenv("RESUMABLE_SECRET", raising=False)
    monkeypatch.delenv("RESUMABLE_SHARED_DIRS", raising=False)
    previous = resumable.configure(store=None, serializer=None, secret=None)
    stores._cache.clear()  # memory:// and cached URLs start empty in every test
    yield
    stores._close_cached()  # each test's stores are closed, not left to the garbage collector
    stores._cache.clear()
    _drop_schemas()
    # structlog.testing.capture_logs leaves structlog "configured"; later tests must see the
    # unconfigured default, where events go to the standard library logger "resumable".
    structlog.reset_defaults()
    resumable.configure(
        store=previous.store, serializer=previous.serializer, secret=previous.secret
    )


@pytest.fixture
def opened() -> Iterator[list[Store]]:
    """Stores a test opens itself (e.g. through test_postgres.pg), closed at its end."""
    stores: list[Store] = []
    yield stores
    for store in stores:
        store.close()


def url_for(kind: str, tmp_path: Path, durability: str = "normal") -> str:
    """A store URL of ``kind`` under ``tmp_path`` (for Postgres: in a new schema)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/state.db?durability={durability}"
    if kind == "file":
        return f"file://{tmp_path}/store?durability={durability}"
    if kind == "postgres":
        return postgres_url_for(durability=durability)
    return "memory://"


def in_ci() -> bool:
    """Whether this run is CI (``CI`` is 1/true/yes), where nothing may be skipped for lack of
    a dependency."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_package(name: str, install: str, *, env: str = "") -> ModuleType:
    """The module ``name``, imported for a test module; without it the module is skipped.

    Under CI (:func:`in_ci`), or when the environment variable ``env`` is set, a missing
    package fails the run instead: ``pytest.importorskip`` would skip there too, and a CI run
    that skips the Postgres or Dask tests passes without having tested them.

    Args:
        name: the module to import.
        install: how to install it, for the message (e.g. ``pip install 'resumable[dask]'``).
        env: a variable whose being set also asks for these tests (``RESUMABLE_TEST_POSTGRES``).
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        problem = f"{name} is not installed ({install}): {exc}"
    if in_ci() or (env and os.environ.get(env)):
        asked = "CI" + (f" or {env}" if env else "")
        pytest.fail(f"{problem}; {asked} asks for these tests", pytrace=False)
    pytest.skip(problem, allow_module_level=True)


# --- PostgreSQL ------------------------------------------------------------------------------


def postgres_base() -> str:
    """The test server's URL (``RESUMABLE_TEST_POSTGRES``, else the local default)."""
    return os.environ.get("RESUMABLE_TEST_POSTGRES") or POSTGRES_DEFAULT


@functools.cache
def _postgres_problem() -> str | None:
    """Why the test server cannot be used (None if it answers); asked once per session."""
    url = postgres_base()
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'resumable[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except (psycopg.Error, OSError) as exc:
        return f"no PostgreSQL server answers at {url}: {str(exc).strip()}"
    return None


def require_postgres() -> str:
    """The test server's URL; skips the test if none answers (fails it where one must)."""
    problem = _postgres_problem()
    if problem is None:
        return postgres_base()
    explicit = bool(os.environ.get("RESUMABLE_TEST_POSTGRES"))
    if explicit or in_ci():
        pytest.fail(f"{problem} (RESUMABLE_TEST_POSTGRES or CI asks for it)", pytrace=False)
    pytest.skip(problem)


def with_query(url: str, **params: object) -> str:
    """``url`` with ``params`` added to (or replaced in) its query string."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in params]
    query += [(k, str(v)) for k, v in params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


def postgres_url_for(**options: object) -> str:
    """A URL of the test server in a new schema of its own, dropped when the test ends."""
    schema = f"t_{secrets.token_hex(6)}"
    url = with_query(require_postgres(), schema=schema, **options)
    _schemas.append(schema)
    return url


def _drop_schemas() -> None:
    if not _schemas:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(postgres_base(), connect_timeout=5, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '30s'")
        while _schemas:
            name = sql.Identifier(_schemas.pop())
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL (the tests that use it skip or fail without one)."""
    return require_postgres()


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for each kind of store."""
    return url_for(request.param, tmp_path)


@pytest.fixture
def store(store_url: str) -> Store:
    """The store of each kind that ``checkpointed(store=store_url)`` uses too."""
    return resolve_store(store_url)


__all__ = [
    "in_ci",
    "open_store",
    "postgres_url_for",
    "require_package",
    "require_postgres",
    "url_for",
    "with_query",
]


#: The uid and gid that play another local user in the security tests (``nobody``).
ATTACKER = 65534


class Attacker:
    """Plants files as another local user would: owned by uid 65534 (``nobody``).

    Needs root (CI runs as root) to give files away; the fixture skips the test otherwise.
    """

    uid = ATTACKER

    def own(self, path: Path) -> Path:
        """Give ``path`` (a link itself, not its target) to the attacker."""
        os.lchown(path, ATTACKER, ATTACKER)
        return path

    def symlink(self, link: Path, target: Path | str) -> Path:
        """``link`` -> ``target``, made by the attacker."""
        link.symlink_to(target)
        return self.own(link)

    def file(self, path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
        """A regular file of the attacker's holding ``data``."""
        path.write_bytes(data)
        path.chmod(mode)
        return self.own(path)

    def dir(self, path: Path, mode: int = 0o755) -> Path:
        """A directory of the attacker's."""
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return self.own(path)

    def fifo(self, path: Path) -> Path:
        """A FIFO of the attacker's (a reader that opens it without care waits forever)."""
        os.mkfifo(path, 0o666)
        return self.own(path)


def sticky_dir(path: Path) -> Path:
    """A new directory every user can add names to, with the sticky bit (1777, as /tmp)."""
    path.mkdir()
    path.chmod(0o1777)
    return path


@pytest.fixture
def attacker() -> Attacker:
    """Another local user (uid 65534), for the tests of hostile stores and backup folders."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "the hostile-user tests need root to give files to uid 65534; CI runs as root"
            )
        pytest.skip("needs root to give files to another user (uid 65534); CI runs as root")
    return Attacker()
