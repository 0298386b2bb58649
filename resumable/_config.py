"""The process-wide defaults that ``configure()`` sets."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serializers import Serializer
    from .stores.base import Store

__all__ = ["Config", "configure", "current"]


@dataclass(frozen=True, slots=True)
class Config:
    """Defaults used where a call does not say otherwise."""

    store: str | Store | None = None
    serializer: str | Serializer | None = None


_config = Config()
_guard = threading.Lock()
_UNSET: Any = object()


def current() -> Config:
    """The defaults in force."""
    return _config


def configure(*, store: str | Store | None = _UNSET, serializer: Any = _UNSET) -> Config:
    """Set process-wide defaults; return the previous ones (pass them back to restore).

    Args:
        store: the default store, as a URL or a Store (None: ``RESUMABLE_STORE`` or
            ``sqlite:///.resumable/state.db``).
        serializer: the default serializer, by name or object (None: ``"auto"``).

    Raises:
        TypeError, ValueError: an argument that could not be used.
    """
    global _config  # noqa: PLW0603 - the one process-wide setting, guarded by a lock
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
    with _guard:
        previous = _config
        _config = replace(_config, **changes)
    return previous
