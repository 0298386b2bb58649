"""``configure()``: the public way to set the process-wide defaults that ``_config`` holds."""

from __future__ import annotations

from typing import Any

from ._config import Config, secret_bytes, update
from ._signing import forget_secret
from .serializers import get_serializer
from .stores.base import Store

__all__ = ["configure"]

_UNSET: Any = object()


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
        changes["secret"] = secret_bytes(secret)
    previous = update(changes)
    forget_secret()
    return previous
