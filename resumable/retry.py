"""Retries through tenacity: what ``retry=`` accepts, turned into a tenacity controller.

``retry=3`` means three attempts with exponential backoff and jitter; a dict is passed to
tenacity as keyword arguments; a ``Retrying``/``AsyncRetrying`` is used as given. In every
case the final failure re-raises the function's own exception, not ``RetryError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tenacity

__all__ = ["RetrySpec", "make_retrying", "validate_retry"]

RetrySpec = int | Mapping[str, Any] | tenacity.BaseRetrying | None

#: Backoff for ``retry=<int>``: 0.1 s, 0.2 s, 0.4 s, ... plus up to 0.1 s of jitter, at most 10 s.
_BACKOFF = {"initial": 0.1, "max": 10, "jitter": 0.1}


def validate_retry(spec: object) -> RetrySpec:
    """Check a ``retry=`` argument at the call that got it.

    Raises:
        TypeError: not an int, a dict of tenacity arguments, or a tenacity controller.
        ValueError: an int below 1, or a dict tenacity refuses.
    """
    if spec is None or isinstance(spec, tenacity.BaseRetrying):
        return spec
    if isinstance(spec, bool) or not isinstance(spec, int | Mapping):
        raise TypeError(
            "retry must be a number of attempts (retry=3), a dict of tenacity arguments "
            "(retry={'stop': tenacity.stop_after_attempt(5)}) or a tenacity.Retrying, "
            f"not {spec!r}"
        )
    if isinstance(spec, int) and spec < 1:
        raise ValueError(f"retry={spec}: the number of attempts must be at least 1")
    if isinstance(spec, Mapping):
        try:
            tenacity.Retrying(**spec)
        except TypeError as exc:
            raise ValueError(f"retry={dict(spec)!r} is not accepted by tenacity: {exc}") from None
    return spec


def make_retrying(spec: RetrySpec, *, asynchronous: bool = False) -> tenacity.BaseRetrying:
    """A tenacity controller for ``spec`` that re-raises the last exception.

    ``None`` gives a controller that makes exactly one attempt.
    """
    cls: type[tenacity.BaseRetrying] = tenacity.AsyncRetrying if asynchronous else tenacity.Retrying
    if spec is None:
        return cls(stop=tenacity.stop_after_attempt(1), reraise=True)
    if isinstance(spec, tenacity.BaseRetrying):
        if isinstance(spec, tenacity.AsyncRetrying) == asynchronous:
            return spec.copy(reraise=True)
        return cls(
            stop=spec.stop, wait=spec.wait, retry=spec.retry, before=spec.before,
            after=spec.after, before_sleep=spec.before_sleep, reraise=True,
        )  # fmt: skip
    if isinstance(spec, int):
        return cls(
            stop=tenacity.stop_after_attempt(spec),
            wait=tenacity.wait_exponential_jitter(**_BACKOFF),
            reraise=True,
        )
    return cls(**{**spec, "reraise": True})
