"""``@resumable``: a finished call is never run twice.

A thin shell over the lifecycle ``checkpointed`` blocks use: each call is an operation, keyed
by the function's name and a stable digest of its bound arguments, run as :mod:`._call`
describes (the stored result if it completed; else lock, RUNNING, retries, the result stored
with COMPLETED; single flight for concurrent calls). This module is the decorator and the
wrapper objects it returns: bare or called, functions, methods, class and static methods,
``async def``; they pickle by reference, so process pools can ship them.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pickle
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, Protocol, TypeVar, cast, overload

import wrapt

from . import serializers
from ._call import OnCodeChange, Options, run_async, run_sync
from ._checks import check_number
from ._log import log
from .errors import LeaseLost, OperationLocked
from .operation import ProcessState
from .retry import RetrySpec, validate_retry
from .serializers import Serializer
from .stores import resolve_store
from .stores.base import Store

__all__ = ["ResumableFunction", "resumable"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class ResumableFunction(Protocol[P, R_co]):
    """What ``@resumable`` returns: the function, plus helpers over its operations."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Call the function, or return the stored result of a finished call."""
        ...

    def op_id_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The operation id this call has."""
        ...

    def is_done(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """True if this call has finished (its result is stored)."""
        ...

    def reset(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Forget this call, so it runs again; True if there was something to forget."""
        ...


def _check_lock(lock: object) -> float | None:
    """The seconds ``@resumable(lock=...)`` lets a call wait for its lock (None: no bound).

    The spelling of ``checkpointed(lock=...)``: a bool, or a number of seconds.
    """
    if isinstance(lock, bool):
        return None if lock else 0.0
    if lock is None:
        raise TypeError(
            "lock must be True (wait for a running call, the default), False (raise "
            "OperationLocked at once) or a number of seconds to wait, not None"
        )
    check_number("lock", lock, allow_zero=True)
    seconds = float(cast("float", lock))
    if math.isnan(seconds):
        raise ValueError(f"lock must be >= 0, not {lock!r}")
    return None if math.isinf(seconds) else seconds


# --- the wrapper objects ------------------------------------------------------------------


class _Helpers:
    """op_id_for / is_done / reset, for plain and bound wrappers alike."""

    _self_opts: Options[Any, Any]

    def _instance(self) -> object:
        return None

    def op_id_for(self, *args: Any, **kwargs: Any) -> str:
        """The operation id this call has."""
        return self._self_opts.op_id_of(self._instance(), args, kwargs)

    def is_done(self, *args: Any, **kwargs: Any) -> bool:
        """True if this call has finished (a result is stored)."""
        op_id = self.op_id_for(*args, **kwargs)
        op = resolve_store(self._self_opts.store).load_operation(op_id)
        return op is not None and op.state is ProcessState.COMPLETED

    def reset(self, *args: Any, **kwargs: Any) -> bool:
        """Forget this call (waits up to 10 s for a running one); True if it existed."""
        op_id = self.op_id_for(*args, **kwargs)
        store = resolve_store(self._self_opts.store)
        lock = store.lock(op_id)
        try:
            lock.acquire(10.0)
        except OperationLocked as exc:
            if isinstance(exc, LeaseLost):
                raise
            raise OperationLocked(
                op_id, exc.where, 10.0, advice="let it finish or stop it, then reset it"
            ) from None
        try:
            with store.errors(f"reset {op_id!r}"):
                existed = store.delete_operation(op_id)
        finally:
            lock.release()
        log.debug("resumable.call.reset", op_id=op_id, existed=existed)
        return existed


class _BoundResumable(_Helpers, wrapt.BoundFunctionWrapper[Any, Any]):
    """A decorated method, bound to its instance or class."""

    def _instance(self) -> object:
        if self._self_binding in ("classmethod", "staticmethod"):
            return getattr(self.__wrapped__, "__self__", None)
        return self._self_instance

    def __reduce_ex__(self, protocol: object) -> Any:
        instance = self._instance()
        if instance is None:
            return self._self_parent.__reduce_ex__(protocol)
        return (getattr, (instance, self.__name__))


class _Resumable(_Helpers, wrapt.FunctionWrapper[Any, Any]):
    """A decorated function: pickles by reference, so process pools can ship it."""

    __bound_function_wrapper__ = _BoundResumable

    def __init__(self, wrapped: Callable[..., Any], opts: Options[Any, Any]) -> None:
        runner = run_async if opts.asynchronous else run_sync

        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            return runner(opts, wrapped, instance, args, kwargs)

        super().__init__(wrapped, wrapper)
        self._self_opts = opts

    def __reduce_ex__(self, protocol: object) -> Any:
        module, qualname = self.__module__, self.__qualname__
        if "<locals>" in qualname:
            raise pickle.PicklingError(
                f"{qualname} is defined inside a function, so it cannot be pickled by "
                "reference (a process pool needs that); define it at module level"
            )
        return (_import_path, (module, qualname))


def _import_path(module: str, qualname: str) -> Any:
    """The object at ``module.qualname`` (how a decorated function is unpickled)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# --- the decorator ------------------------------------------------------------------------


@overload
def resumable(func: Callable[P, R], /) -> ResumableFunction[P, R]: ...


@overload
def resumable(
    func: None = None,
    /,
    *,
    op_id: str | Callable[..., str] | None = None,
    ignore: Iterable[str] = (),
    store: str | Store | None = None,
    serializer: str | Serializer | None = None,
    retry: RetrySpec = None,
    version: str | int | None = None,
    on_code_change: OnCodeChange = "warn",
    max_attempts: int | None = None,
    lock: bool | float = True,
) -> Callable[[Callable[P, R]], ResumableFunction[P, R]]: ...


def resumable(
    func: Callable[..., Any] | None = None,
    /,
    *,
    op_id: str | Callable[..., str] | None = None,
    ignore: Iterable[str] = (),
    store: str | Store | None = None,
    serializer: str | Serializer | None = None,
    retry: RetrySpec = None,
    version: str | int | None = None,
    on_code_change: OnCodeChange = "warn",
    max_attempts: int | None = None,
    lock: bool | float = True,
) -> Any:
    """Make a function's finished calls never run twice.

    Works on functions, methods, class and static methods and ``async def``, bare
    (``@resumable``) or with options (``@resumable(retry=3)``).

    Args:
        func: the function (when used bare).
        op_id: a format string over the bound arguments (``"resize-{path}"``) or a callable
            taking the call's arguments and returning the id. Default: the function's
            module-qualified name and a stable digest of its bound arguments.
        ignore: argument names left out of the default digest (a logger, a client).
        store: a store URL or Store (default as for ``checkpointed``).
        serializer: how results are stored (default ``"auto"``).
        retry: attempts (``3``: exponential backoff with jitter), a dict of tenacity keyword
            arguments, or a ``tenacity.Retrying``/``AsyncRetrying``. The final failure
            re-raises the function's own exception.
        version: identifies the code instead of its fingerprint; change it to invalidate.
        on_code_change: when the function's code differs from the code that stored a
            result: ``"warn"`` (log, reuse the result), ``"rerun"`` or ``"error"``.
        max_attempts: attempts allowed across all runs (a crash counts); then the call fails
            for good until ``.reset(...)``. Default: no limit.
        lock: what a call does while another thread, task or process runs the same call
            (single flight). True (default): wait for it and return its result (if it
            failed, run the function here, with this call's retries); a number: wait at most
            that many seconds, then raise ``OperationLocked``; False: raise it at once. A
            finished call never waits: its result is read without the lock.

    Raises:
        TypeError, ValueError: a bad option (at decoration time).
    """
    if op_id is not None and not (isinstance(op_id, str) or callable(op_id)):
        raise TypeError(f"op_id must be a format string or a callable, not {op_id!r}")
    if isinstance(ignore, str) or not isinstance(ignore, Iterable):
        raise TypeError(f"ignore must be a list of argument names, not {ignore!r}")
    ignore_set = frozenset(ignore)
    if not all(isinstance(n, str) for n in ignore_set):
        raise TypeError(
            f"ignore must hold argument names (str), not {sorted(map(repr, ignore_set))}"
        )
    if store is not None and not isinstance(store, str | Store):
        raise TypeError(f"store must be a URL or a Store, not {type(store).__name__}")
    retry = validate_retry(retry)
    if on_code_change not in ("warn", "rerun", "error"):
        raise ValueError(
            f"on_code_change must be 'warn', 'rerun' or 'error', not {on_code_change!r}"
        )
    if version is not None and (isinstance(version, bool) or not isinstance(version, str | int)):
        raise TypeError(f"version must be a str or an int, not {version!r}")
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1
    ):
        raise ValueError(f"max_attempts must be a whole number >= 1, not {max_attempts!r}")
    wait = _check_lock(lock)
    if serializer is None:
        from ._config import current

        serializer = current().serializer
    chosen = serializers.get_serializer(serializer)

    def decorate(fn: object) -> Any:
        if not (callable(fn) or isinstance(fn, classmethod | staticmethod)):
            raise TypeError(f"@resumable decorates functions, not {type(fn).__name__}")
        if inspect.isclass(fn):
            raise TypeError("@resumable decorates functions and methods, not classes")
        target = cast("Callable[..., Any]", fn)
        opts: Options[Any, Any] = Options(
            target, op_id=op_id, ignore=ignore_set, store=store, serializer=chosen, retry=retry,
            version=version, on_code_change=on_code_change, max_attempts=max_attempts,
            wait=wait,
        )  # fmt: skip
        return _Resumable(target, opts)

    if func is not None:
        return decorate(func)
    return decorate
