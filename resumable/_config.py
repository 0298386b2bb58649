"""The process-wide defaults that ``configure()`` sets."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serializers import Serializer

__all__ = ["SECRET_ENV", "Config", "current", "secret", "update"]

#: The environment variable that holds the secret records are signed with.
SECRET_ENV = "RESUMABLE_SECRET"  # noqa: S105 - the name of the variable, not a secret


@dataclass(frozen=True, slots=True)
class Config:
    """Defaults used where a call does not say otherwise."""

    #: A URL, a ``Store`` or None (checked by ``configure()``; typed loosely so that this
    #: module, which the records read the secret from, imports nothing of the stores).
    store: object = None
    serializer: str | Serializer | None = None
    secret: bytes | None = field(default=None, repr=False)  # never shown in logs or tracebacks


_config = Config()
_guard = threading.Lock()


def current() -> Config:
    """The defaults in force."""
    return _config


def secret() -> bytes | None:
    """The secret in force: ``configure(secret=...)``, else ``RESUMABLE_SECRET``, else None.

    An empty ``RESUMABLE_SECRET`` counts as unset. Callers on hot paths cache what they derive
    from it; ``configure()`` tells them to look again.
    """
    if _config.secret is not None:
        return _config.secret
    value = os.environ.get(SECRET_ENV)
    return os.fsencode(value) if value else None  # the variable's bytes, as the shell set them


def update(changes: dict[str, Any]) -> Config:
    """Apply ``changes`` (checked by ``configure()``) to the defaults; return the previous ones."""
    global _config  # noqa: PLW0603 - the one process-wide setting, guarded by a lock
    with _guard:
        previous = _config
        _config = replace(_config, **changes)
    return previous


def secret_bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if not isinstance(value, bytes):
        raise TypeError(f"secret must be a str, bytes or None, not {type(value).__name__}")
    if not value:
        raise ValueError(
            "secret must not be empty: an empty key signs nothing. Use a long random value, "
            'e.g. python -c "import secrets; print(secrets.token_hex(32))"'
        )
    return value
