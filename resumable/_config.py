"""The process-wide defaults that ``configure()`` sets."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serializers import Serializer
    from .stores.base import Store

__all__ = ["SECRET_ENV", "Config", "configure", "current", "secret"]

#: The environment variable that holds the secret records are signed with.
SECRET_ENV = "RESUMABLE_SECRET"  # noqa: S105 - the name of the variable, not a secret


@dataclass(frozen=True, slots=True)
class Config:
    """Defaults used where a call does not say otherwise."""

    store: str | Store | None = None
    serializer: str | Serializer | None = None
    secret: bytes | None = field(default=None, repr=False)  # never shown in logs or tracebacks


_config = Config()
_guard = threading.Lock()
_UNSET: Any = object()


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


def configure(
    *,
    store: str | Store | None = _UNSET,
    serializer: Any = _UNSET,
    secret: str | bytes | None = _UNSET,
) -> Config:
    """Set process-wide defaults; return the previous ones (pass them back to restore).

    Every call also makes the library read ``RESUMABLE_SECRET`` again (it is read once, when
    first needed, and kept): call ``configure()`` after changing it in a running process.

    Args:
        store: the default store, as a URL or a Store (None: ``RESUMABLE_STORE`` or
            ``sqlite:///.resumable/state.db``).
        serializer: the default serializer, by name or object (None: ``"auto"``).
        secret: the key that signs every record written and must have signed every record
            loaded (str, taken as UTF-8, or bytes; None: ``RESUMABLE_SECRET``, else no
            signing). See docs/security.md.

    Raises:
        TypeError, ValueError: an argument that could not be used.
    """
    global _config  # noqa: PLW0603 - the one process-wide setting, guarded by a lock
    from .operation import forget_secret
    from .serializers import get_serializer
    from .stores.base import Store

    changes: dict[str, Any] = {}
    if store is not _UNSET:
        if store is not None and not isinstance(store, str | Store):
            raise TypeError(f"store must be a URL or a Store, not {type(store).__name__}")
        changes["store"] = store
    if serializer is not _UNSET:
        if serializer is not None:
            get_serializer(serializer)  # validates
        changes["serializer"] = serializer
    if secret is not _UNSET:
        changes["secret"] = _secret_bytes(secret)
    with _guard:
        previous = _config
        _config = replace(_config, **changes)
    forget_secret()
    return previous


def _secret_bytes(value: object) -> bytes | None:
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
