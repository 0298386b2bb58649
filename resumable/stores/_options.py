"""The options a store takes: its constructor's keyword-only parameters, and their check.

A leaf: the package's URL factory and the PostgreSQL store's URL reader both use it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from .base import Store

__all__ = ["check_options", "store_options"]


def store_options(cls: type[Store]) -> tuple[str, ...]:
    """The options a store class takes: the keyword-only parameters of its constructor.

    The constructor's signature is the one list; URLs, keywords and messages all follow it.
    """
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_options(
    cls: type[Store],
    url: str,
    names: Iterable[str],
    *,
    keywords: bool = False,
    also: Iterable[str] = (),
    also_what: str = "",
) -> None:
    """Raise ValueError for the first of ``names`` that ``cls`` does not take.

    Args:
        cls: the store class.
        url: the URL the names came in, for the message: it is shown as given when the
            names came in its query, so pass one without a password.
        names: the option names given, in the URL's query or (``keywords``) as keyword
            arguments of ``open_store``.
        keywords: whether ``names`` came as keyword arguments (the message then shows only
            the URL's scheme).
        also: other names that are valid in the query (libpq's parameters in a PostgreSQL
            URL), which ``also_what`` describes in the message.
        also_what: what ``also`` are, e.g. "libpq's connection parameters".
    """
    valid = store_options(cls)
    extra = () if keywords else tuple(also)
    for name in names:
        if name in valid or name in extra:
            continue
        if keywords:
            scheme = urlsplit(url).scheme.lower()
            where = f"open_store({scheme}://..., {name}=...)"
        else:
            where = url
        import difflib  # only for this message

        close = difflib.get_close_matches(name, [*valid, *extra], n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        rest = f", and {also_what}" if extra else ""
        raise ValueError(
            f"unknown option {name!r} in {where}; {hint}valid options for "
            f"{cls.__name__}: {', '.join(valid)}{rest}"
        )
