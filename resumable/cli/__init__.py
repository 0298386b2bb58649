"""The ``resumable`` command line: see, explain, reset, recover, verify and back up.

Every command takes ``--store URL`` (default: ``RESUMABLE_STORE``, else
``sqlite:///.resumable/state.db``) and ``--json`` (one JSON document on stdout, shapes in
docs/cli.md); the backup commands take ``--backup-dir`` (default ``data/backups``, as the
FailsafeManager). A user mistake prints one line on stderr, ``resumable: error: ...``, and
exits 1; click's usage errors exit 2. The work itself is in :mod:`resumable._admin` and the
modules beside it; here, the group. The commands are in ``_operations`` (list, show, reset,
recover), ``_upkeep`` (verify, gc, stats) and ``_backups``; what they share in ``_context``,
how they print in ``_format``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from resumable.errors import ResumableError

from ._backups import backup, backups, restore
from ._context import Settings, UserError, backup_option, json_option, store_option
from ._operations import list_, recover, reset, show
from ._upkeep import gc, stats, verify

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns the library's own errors into one-line messages (they say what to do)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResumableError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@store_option
@backup_option
@json_option
@click.option("-v", "--verbose", is_flag=True, help="Show the library's log events on stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """See, explain, reset, recover, verify and back up resumable operations."""
    ctx.ensure_object(Settings)
    ctx.with_resource(_library_log(verbose=verbose))


for _command in (list_, show, reset, recover, verify, gc, stats, backups, backup, restore):
    cli.add_command(_command)


def main() -> None:
    """The console script."""
    cli.main(prog_name="resumable")


@contextmanager
def _library_log(*, verbose: bool) -> Iterator[None]:
    """The ``resumable`` logger for one command: its events on stderr, or none; then as it was.

    One handler, removed when the command ends (with the logger's level and propagation), so
    that a process calling the command line many times (tests do) gains nothing.
    """
    import logging  # not for --help

    logger = logging.getLogger("resumable")
    level, propagate = logger.level, logger.propagate
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("resumable: %(levelname)s: %(message)s"))
        logger.setLevel(logging.INFO)
    else:  # what matters is in the command's own output; no duplicate warnings
        handler = logging.NullHandler()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
