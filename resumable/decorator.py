"""``@resumable``: a finished call is never run twice.

A thin shell over ``checkpointed``: each call is an operation, keyed by the function's name and
a stable digest of its bound arguments. A call whose operation completed returns the stored
result (one store read, no lock). Otherwise the call runs inside a ``Checkpoint`` block — the
same lifecycle as ``with checkpointed(...)``: lock, RUNNING, retries, then the result is stored
with COMPLETED in one transaction, or the operation is marked FAILED and the error re-raised.

Single flight: a call whose operation another thread, task or process is running waits for
that lock (polling it, so an ``async def`` call never blocks its event loop), looking for the
stored result meanwhile, and returns it. If that run failed instead, the waiter runs the
function itself under the lock, with its own retries: failures are not memoized, just as a
later call after a failure runs again.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import math
import pickle
import time
from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, Literal, ParamSpec, Protocol, TypeVar, cast, overload

import wrapt

from . import serializers
from ._log import log
from .checkpoint import Checkpoint, _check_number, _current
from .errors import LeaseLost, OperationLocked, ResumableError
from .keys import CallDigester, code_fingerprint, qualified_name
from .operation import ProcessState, ResultRecord, validate_op_id
from .retry import RetrySpec, make_retrying, validate_retry
from .serializers import Serializer
from .stores import resolve_store
from .stores.base import Store

__all__ = ["ResumableFunction", "resumable"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

OnCodeChange = Literal["warn", "rerun", "error"]

#: A waiting call looks at the lock and the stored result after 1 ms, then ever less often, at
#: most every 50 ms (the locks' own polling step): a quick function's waiters return soon
#: after it, and many waiters on a slow one do not load the store.
_FIRST_PAUSE: Final = 0.001
_MAX_PAUSE: Final = 0.05


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


class _Options(Generic[P, R]):
    """Everything fixed at decoration time; one per decorated function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        op_id: str | Callable[..., str] | None,
        ignore: frozenset[str],
        store: str | Store | None,
        serializer: Serializer,
        retry: RetrySpec,
        version: str | int | None,
        on_code_change: OnCodeChange,
        max_attempts: int | None,
        wait: float | None,
    ) -> None:
        target = getattr(fn, "__func__", fn)  # a classmethod/staticmethod's function
        self.target = target
        self.name = qualified_name(target)
        self.signature = inspect.signature(target)
        unknown = ignore - set(self.signature.parameters)
        if unknown:
            raise ValueError(
                f"@resumable(ignore=...) names {sorted(unknown)}, which {self.name} does not "
                f"take; its parameters are {list(self.signature.parameters)}"
            )
        self.asynchronous = inspect.iscoroutinefunction(target)
        self.digester = CallDigester(target, self.signature, ignore)
        self.op_id = op_id
        self.ignore = ignore
        self.store = store
        self.serializer = serializer
        self.retry = retry
        self.version = version
        self.on_code_change = on_code_change
        self.max_attempts = max_attempts
        self.wait = wait  # seconds a call waits for its operation's lock; None: no bound

    @functools.cached_property
    def fingerprint(self) -> str:
        """What identifies this code: ``version=`` if given, else a digest of the code."""
        if self.version is not None:
            return f"v:{self.version}"
        return code_fingerprint(self.target)

    def op_id_of(self, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The operation id of a call."""
        full = args if instance is None else (instance, *args)
        if self.op_id is None:
            return self.digester.op_id(full, kwargs)
        if callable(self.op_id):
            made = self.op_id(*full, **kwargs)
        else:
            arguments = self.digester.bind(full, kwargs)
            try:
                made = self.op_id.format(**arguments)
            except (KeyError, IndexError, AttributeError) as exc:
                raise ValueError(
                    f"@resumable(op_id={self.op_id!r}) could not be filled in from the "
                    f"arguments {list(arguments)}: {exc!r}"
                ) from None
        return validate_op_id(made)


class _Call:
    """One call's way through the lifecycle; shared by the sync and async paths."""

    def __init__(self, opts: _Options[Any, Any], instance: object, args: Any, kwargs: Any) -> None:
        self.opts = opts
        self.op_id = opts.op_id_of(instance, args, kwargs)
        self.store = resolve_store(opts.store)
        self.key = f"return:{opts.fingerprint}"

    def stored(self, key: str | None = None) -> tuple[bool, Any]:
        """(True, result) if a result is stored under ``key`` (default: this code's)."""
        rec = self.store.load_result(self.op_id, key or self.key)
        if rec is None:
            return False, None
        return True, serializers.decode(rec.serializer, rec.payload)

    def settle(self, cp: Checkpoint) -> tuple[bool, Any]:
        """Inside the lock: (True, result) if nothing needs to run.

        Applies the code-change and max_attempts rules.
        """
        op = cp._op
        if cp.completed_before:
            old_key = op.meta.get("result") if op is not None else None
            if old_key == self.key:  # another process finished it while we waited
                return self.stored()
            # A pinned version= that differs is a deliberate invalidation: always run again.
            what = "rerun" if self.key.startswith("return:v:") else self.opts.on_code_change
            log.warning(
                "resumable.call.code_changed", op_id=self.op_id, function=self.opts.name,
                stored=old_key, now=self.key, action=what,
                reason=f"code fingerprint changed since the stored result ({old_key} -> "
                f"{self.key}); on_code_change={what!r}",
            )  # fmt: skip
            if what == "error":
                raise ResumableError(
                    f"{self.opts.name} changed since it produced the stored result of "
                    f"{self.op_id!r}; reset it (.reset(...)), pass on_code_change='rerun', or "
                    "pin version= if the change does not affect results"
                )
            if what == "warn" and old_key is not None:
                found, value = self.stored(old_key)
                if found:
                    return True, value
            cp._rerun()
            return False, None
        limit = self.opts.max_attempts
        prior = op.attempts - 1 if op is not None else 0
        if limit is not None and prior >= limit:
            raise ResumableError(
                f"{self.opts.name} ({self.op_id!r}) failed for good after {prior} attempts "
                f"(max_attempts={limit}); fix the cause and call .reset(...) to try again"
            )
        return False, None

    def checkpoint(self) -> Checkpoint:
        cp = Checkpoint(
            self.op_id, store=self.store, serializer=self.opts.serializer, name=self.opts.name,
            every_seconds=None,
        )  # fmt: skip
        cp._stateless = True
        cp._lazy = self.opts.max_attempts is None
        return cp

    def attempts(self, cp: Checkpoint) -> Callable[[], None]:
        """A hook run before every attempt.

        The first attempt was counted on entering the block; each later one is counted in
        the store, and refused at max_attempts.
        """
        limit = self.opts.max_attempts
        first = True

        def before_attempt() -> None:
            nonlocal first
            if first:
                first = False
                return
            done = cp._op.attempts if cp._op is not None else 0
            if limit is not None and done >= limit:
                raise _Exhausted(done)
            cp._count_attempt()

        return before_attempt

    def exhausted(self, exc: _Exhausted) -> ResumableError:
        """The error for a call that used up max_attempts within this run."""
        return ResumableError(
            f"{self.opts.name} ({self.op_id!r}) reached max_attempts={self.opts.max_attempts} "
            f"after {exc.attempts} attempts; call .reset(...) to try again"
        )

    def enclosed(self) -> bool:
        """True if a block of this very operation encloses this call (same thread or task)."""
        cp = _current.get()
        while cp is not None:
            if cp.op_id == self.op_id and cp.store is self.store:
                return True
            cp = cp._parent
        return False

    def finish(self, cp: Checkpoint, value: Any) -> None:
        ser, payload = serializers.encode(self.opts.serializer, value, f"result of {self.op_id}")
        cp._results.append(ResultRecord.create(self.op_id, self.key, ser, payload))
        cp._meta.update(result=self.key, function=self.opts.name)


class _Exhausted(Exception):  # internal signal, never escapes
    def __init__(self, attempts: int) -> None:
        self.attempts = attempts


class _Waiting:
    """A call's wait for whoever holds its operation's lock (single flight)."""

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.started = time.monotonic()
        self.step = _FIRST_PAUSE

    def pause(self, exc: OperationLocked) -> float:
        """Seconds to sleep before trying the lock again.

        Raises:
            OperationLocked: ``lock=`` allows no (more) waiting, or the holder is a call that
                encloses this one, so waiting would never end; the message names ``lock=``.
        """
        call, limit = self.call, self.call.opts.wait
        if call.enclosed():
            raise OperationLocked(
                call.op_id, f"a call that encloses this one ({call.opts.name} calls itself "
                "with the same arguments)", advice="it would wait for itself forever, so it "
                "does not wait; call it with other arguments",
            ) from None  # fmt: skip
        waited = time.monotonic() - self.started
        if limit is not None and waited >= limit:
            if limit == 0:
                advice = (
                    "let it finish, stop it, or pass lock=True (the default) or "
                    "lock=<seconds> to @resumable to wait for it and return its result"
                )
            else:
                advice = (
                    "let it finish, stop it, or pass lock=<seconds> to @resumable to wait "
                    "longer (lock=True, the default, waits until it finishes)"
                )
            raise OperationLocked(
                call.op_id, exc.where, waited if limit else 0, advice=advice
            ) from None
        if self.step == _FIRST_PAUSE:  # the first pause of this call
            log.info(
                "resumable.call.waiting", op_id=call.op_id, function=call.opts.name,
                holder=exc.where, limit=limit,
            )  # fmt: skip
        step, self.step = self.step, min(2 * self.step, _MAX_PAUSE)
        return step if limit is None else min(step, limit - waited)


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
    _check_number("lock", lock, allow_zero=True)
    seconds = float(cast("float", lock))
    if math.isnan(seconds):
        raise ValueError(f"lock must be >= 0, not {lock!r}")
    return None if math.isinf(seconds) else seconds


def _run_sync(opts: _Options[Any, Any], wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = _Call(opts, instance, args, kwargs)
    found, value = call.stored()
    if found:
        return value
    cp = call.checkpoint()
    waiting = _Waiting(call)
    while True:
        entered = False
        try:
            with cp:
                entered = True
                return _attempt_sync(call, cp, wrapped, args, kwargs)
        except OperationLocked as exc:
            if entered or isinstance(exc, LeaseLost):
                raise  # raised by the function, or its run was taken over: not our wait
            locked = exc
        found, value = call.stored()  # the running call may have finished meanwhile
        if found:
            return value
        time.sleep(waiting.pause(locked))


def _attempt_sync(call: _Call, cp: Checkpoint, wrapped: Any, args: Any, kwargs: Any) -> Any:
    """Inside the lock: the stored result, or run the function (with retries) and store it."""
    found, value = call.settle(cp)
    if found:
        return value
    before_attempt = call.attempts(cp)

    def attempt() -> Any:
        before_attempt()
        return wrapped(*args, **kwargs)

    try:
        if call.opts.retry is None:
            value = attempt()
        else:
            value = make_retrying(call.opts.retry, never=(_Exhausted,))(attempt)
    except _Exhausted as exc:
        raise call.exhausted(exc) from None
    call.finish(cp, value)
    return value


async def _run_async(
    opts: _Options[Any, Any], wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    call = _Call(opts, instance, args, kwargs)
    found, value = call.stored()
    if found:
        return value
    cp = call.checkpoint()
    waiting = _Waiting(call)
    while True:  # as in _run_sync; entering tries the lock once, so the loop never blocks
        entered = False
        try:
            async with cp:
                entered = True
                return await _attempt_async(call, cp, wrapped, args, kwargs)
        except OperationLocked as exc:
            if entered or isinstance(exc, LeaseLost):
                raise
            locked = exc
        found, value = call.stored()
        if found:
            return value
        await asyncio.sleep(waiting.pause(locked))


async def _attempt_async(call: _Call, cp: Checkpoint, wrapped: Any, args: Any, kwargs: Any) -> Any:
    """The async twin of :func:`_attempt_sync`."""
    found, value = call.settle(cp)
    if found:
        return value
    before_attempt = call.attempts(cp)

    async def attempt() -> Any:
        before_attempt()
        return await wrapped(*args, **kwargs)

    try:
        if call.opts.retry is None:
            value = await attempt()
        else:
            retrying = make_retrying(call.opts.retry, asynchronous=True, never=(_Exhausted,))
            value = await retrying(attempt)
    except _Exhausted as exc:
        raise call.exhausted(exc) from None
    call.finish(cp, value)
    return value


# --- the wrapper objects ------------------------------------------------------------------


class _Helpers:
    """op_id_for / is_done / reset, for plain and bound wrappers alike."""

    _self_opts: _Options[Any, Any]

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
        log.info("resumable.call.reset", op_id=op_id, existed=existed)
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

    def __init__(self, wrapped: Callable[..., Any], opts: _Options[Any, Any]) -> None:
        runner = _run_async if opts.asynchronous else _run_sync

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
        opts: _Options[Any, Any] = _Options(
            target, op_id=op_id, ignore=ignore_set, store=store, serializer=chosen, retry=retry,
            version=version, on_code_change=on_code_change, max_attempts=max_attempts,
            wait=wait,
        )  # fmt: skip
        return _Resumable(target, opts)

    if func is not None:
        return decorate(func)
    return decorate
