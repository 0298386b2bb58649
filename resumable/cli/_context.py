"""What every command shares: its options, the store and backups they name, the user error.

The options are ``--store``, ``--backup-dir`` and ``--json``, each accepted on the group and
on the command; a user error is one line on stderr and exit code 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from resumable._admin import store_missing

if TYPE_CHECKING:
    from resumable.stores.base import Store

__all__ = [
    "Settings",
    "UserError",
    "backup_dir",
    "backup_option",
    "json_option",
    "opened_store",
    "opened_store_or_none",
    "settings",
    "store_option",
    "store_url",
]

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A mistake of the user's: one line on stderr, exit code 1, no traceback."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print ``resumable: error: <message>`` on one line."""
        del file
        click.echo(f"resumable: error: {' '.join(self.format_message().split())}", err=True)


@dataclasses.dataclass
class Settings:
    """The options every command shares, set on the group or on the command."""

    store: str | None = None
    backup_dir: str = "data/backups"
    json: bool = False


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None and value is not False and param.name is not None:
        setattr(ctx.ensure_object(Settings), param.name, value)


def store_option(f: F) -> F:
    """``--store URL``, on the group and on every command that reads a store."""
    return click.option(
        "--store", metavar="URL", expose_value=False, callback=_remember,
        help="Store URL (default: $RESUMABLE_STORE, else the project's [tool.resumable] store, "
        "else sqlite:///.resumable/state.db).",
    )(f)  # fmt: skip


def json_option(f: F) -> F:
    """``--json``, on the group and on every command."""
    return click.option(
        "--json", is_flag=True, default=None, expose_value=False, callback=_remember,
        help="Print one JSON document on stdout (shapes: docs/cli.md).",
    )(f)  # fmt: skip


def backup_option(f: F) -> F:
    """``--backup-dir DIR``, on the group and on every command that reads backups."""
    return click.option(
        "--backup-dir", metavar="DIR", expose_value=False, callback=_remember,
        help="Backup directory (default: data/backups).",
    )(f)  # fmt: skip


def settings() -> Settings:
    """The shared options of the command being run."""
    return click.get_current_context().ensure_object(Settings)


def store_url() -> str:
    """``--store``, else the library's default store (``$RESUMABLE_STORE``, a project's)."""
    from resumable.stores import default_store_url

    return settings().store or default_store_url()


@contextmanager
def opened_store_or_none() -> Iterator[Store | None]:
    """The store ``--store`` names, or None if there is none: a missing store is never created."""
    with _opened(missing_ok=True) as store:
        yield store


@contextmanager
def opened_store() -> Iterator[Store]:
    """The store ``--store`` names; that there is none is a user error."""
    with _opened(missing_ok=False) as store:
        assert store is not None  # noqa: S101 - missing_ok=False
        yield store


@contextmanager
def _opened(*, missing_ok: bool) -> Iterator[Store | None]:
    """The store ``--store`` names; one that does not exist is never created.

    Yields None for a missing store if ``missing_ok``, else it is a user error.
    """
    from resumable.stores import open_store

    url = store_url()
    try:
        why = store_missing(url)
        if why is not None and not missing_ok:
            raise UserError(why)
        store = None if why is not None else open_store(url)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from None
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def backup_dir() -> Path:
    """``--backup-dir``, its directories checked (a symlink followed only if yours or root's).

    Raises:
        UnsafePath: a directory on the way is another user's or writable by others (a
            ResumableError: one line).
    """
    from resumable import _trust

    try:
        return _trust.resolve_dir(Path(settings().backup_dir))
    except NotADirectoryError:
        raise UserError(f"--backup-dir {settings().backup_dir} is not a directory") from None
