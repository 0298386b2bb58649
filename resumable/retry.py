"""Retries through tenacity: what ``retry=`` accepts, turned into a tenacity controller.

``retry=3`` means three attempts with exponential backoff and jitter; a dict is passed to
tenacity as keyword arguments; a ``Retrying``/``AsyncRetrying`` is used as given. In every
case the final failure re-raises the function's own exception, not ``RetryError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import tenacity

__all__ = ["RetrySpec", "call_retrying", "call_retrying_async", "make_retrying", "validate_retry"]

RetrySpec = int | Mapping[str, Any] | tenacity.BaseRetrying | None

T = TypeVar("T")


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


def make_retrying(
    spec: RetrySpec,
    *,
    asynchronous: bool = False,
    never: tuple[type[BaseException], ...] = (),
) -> tenacity.BaseRetrying:
    """A tenacity controller for ``spec`` that re-raises the last exception.

    ``None`` gives a controller that makes exactly one attempt. Exceptions in ``never`` are
    not retried, whatever ``spec`` says.
    """
    retrying = _make(spec, asynchronous)
    if never:
        keep = tenacity.retry_if_not_exception_type(never)
        retrying = retrying.copy(retry=tenacity.retry_all(retrying.retry, keep))
    return retrying


def _make(spec: RetrySpec, asynchronous: bool) -> tenacity.BaseRetrying:
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
        # Backoff 0.1 s, 0.2 s, 0.4 s, ... (at most 10 s) plus up to 0.1 s of jitter.
        backoff = tenacity.wait_exponential(multiplier=0.1, max=10) + tenacity.wait_random(0, 0.1)
        return cls(stop=tenacity.stop_after_attempt(spec), wait=backoff, reraise=True)
    return cls(**{**spec, "reraise": True})


def call_retrying(
    spec: RetrySpec, fn: Callable[[], T], never: tuple[type[BaseException], ...] = ()
) -> T:
    """``make_retrying(spec, never=never)(fn)``, with no controller built if ``fn`` succeeds.

    Only for ``retry=<attempts>``, whose controller does nothing a caller can see before or
    after a first attempt that succeeds (no callbacks; waits and stops by attempt number).
    If that attempt raises, the controller is built and its first attempt re-raises the same
    exception instead of calling ``fn`` again: the same decisions, waits and attempts follow.
    Other specs always go through their controller (their callbacks see every attempt).
    """
    if not isinstance(spec, int):
        return make_retrying(spec, never=never)(fn)
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - handed to the controller, which decides
        replay = _replay(exc, fn)
    return make_retrying(spec, never=never)(replay)


async def call_retrying_async(
    spec: RetrySpec,
    fn: Callable[[], Awaitable[T]],
    never: tuple[type[BaseException], ...] = (),
) -> T:
    """The ``async`` twin of :func:`call_retrying`."""
    if not isinstance(spec, int):
        return await make_retrying(spec, asynchronous=True, never=never)(fn)
    try:
        return await fn()
    except Exception as exc:  # noqa: BLE001 - handed to the controller, which decides
        first: BaseException | None = exc

    async def replay() -> T:
        nonlocal first
        if first is not None:
            raised, first = first, None
            raise raised
        return await fn()

    retrying = make_retrying(spec, asynchronous=True, never=never)
    return await retrying(replay)


def _replay(exc: BaseException, fn: Callable[[], T]) -> Callable[[], T]:
    """``fn``, whose first call raises ``exc`` (the attempt already made) instead of running."""
    first: BaseException | None = exc

    def replay() -> T:
        nonlocal first
        if first is not None:
            raised, first = first, None
            raise raised
        return fn()

    return replay
