"""One ``@resumable`` call's way through the lifecycle, sync or async.

A call whose operation completed returns the stored result (one store read, no lock).
Otherwise it runs inside a run of its operation (:class:`resumable._run.Run`, the lifecycle
``checkpointed`` blocks use) in the call mode: lock, RUNNING, retries, then the result is
stored with COMPLETED in one transaction, or the operation is marked FAILED and the error
re-raised.

Single flight: a call whose operation another thread, task or process is running waits for
that lock (polling it, so an ``async def`` call never blocks its event loop), looking for the
stored result meanwhile, and returns it. If that run failed instead, the waiter runs the
function itself under the lock, with its own retries: failures are not memoized, just as a
later call after a failure runs again.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, Final, Generic, Literal, ParamSpec, TypeVar

from resumable import _trace, serializers
from resumable._log import DEBUG, WARNING, log
from resumable._run import CALL, COUNTED_CALL, Run, Spec, current
from resumable.errors import LeaseLost, OperationLocked, ResumableError
from resumable.keys import CallDigester, code_fingerprint, qualified_name
from resumable.operation import ResultRecord, validate_op_id
from resumable.retry import RetrySpec, call_retrying, call_retrying_async
from resumable.serializers import Serializer
from resumable.stores import resolve_store
from resumable.stores.base import Store

__all__ = ["OnCodeChange", "Options", "run_async", "run_sync"]

P = ParamSpec("P")
R = TypeVar("R")

OnCodeChange = Literal["warn", "rerun", "error"]

#: (function, code key) pairs whose code change was already told at warning level.
_told_code_changed: set[tuple[str, str]] = set()

#: A waiting call looks at the lock and the stored result after 1 ms, then ever less often, at
#: most every 50 ms (the locks' own polling step): a quick function's waiters return soon
#: after it, and many waiters on a slow one do not load the store.
_FIRST_PAUSE: Final = 0.001
_MAX_PAUSE: Final = 0.05


class Options(Generic[P, R]):
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
        self.mode = CALL if max_attempts is None else COUNTED_CALL

        self._key: str | None = None  # made at the first call: see result_key()

    @property
    def fingerprint(self) -> str:
        """What identifies this code: ``version=`` if given, else a digest of the code."""
        if self.version is not None:
            return f"v:{self.version}"
        return code_fingerprint(self.target)

    def result_key(self) -> str:
        """The key of this code's results, ``return:<fingerprint>`` (computed once)."""
        key = self._key
        if key is None:
            key = self._key = f"return:{self.fingerprint}"
        return key

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


class Call:
    """One call's way through the lifecycle; shared by the sync and async paths."""

    def __init__(self, opts: Options[Any, Any], instance: object, args: Any, kwargs: Any) -> None:
        self.opts = opts
        self.op_id = opts.op_id_of(instance, args, kwargs)
        self.store = resolve_store(opts.store)
        self.key = opts.result_key()

    def stored(self, key: str | None = None) -> tuple[bool, Any]:
        """(True, result) if a result is stored under ``key`` (default: this code's)."""
        rec = self.store.load_result(self.op_id, key or self.key)
        if rec is None:
            return False, None
        return True, serializers.decode(rec.serializer, rec.payload)

    def settle(self, run: Run) -> tuple[bool, Any]:
        """Inside the lock: (True, result) if nothing needs to run.

        Applies the code-change and max_attempts rules.
        """
        op = run.op
        if run.completed_before:
            old_key = op.meta.get("result") if op is not None else None
            if old_key == self.key:  # another process finished it while we waited
                return self.stored()
            # A pinned version= that differs is a deliberate invalidation: always run again.
            what = "rerun" if self.key.startswith("return:v:") else self.opts.on_code_change
            # One warning per function and process: a job of 2,000 calls of an edited
            # function would otherwise print 2,000 lines that say the same.
            first = (self.opts.name, self.key) not in _told_code_changed
            _told_code_changed.add((self.opts.name, self.key))
            log.log(
                WARNING if first else DEBUG, "resumable.call.code_changed", op_id=self.op_id,
                function=self.opts.name, stored=old_key, now=self.key, action=what,
                reason=f"code fingerprint changed since the stored result ({old_key} -> "
                f"{self.key}); on_code_change={what!r}",
                others_quiet=first,
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
            run.rerun()
            return False, None
        limit = self.opts.max_attempts
        prior = op.attempts - 1 if op is not None else 0
        if limit is not None and prior >= limit:
            raise ResumableError(
                f"{self.opts.name} ({self.op_id!r}) failed for good after {prior} attempts "
                f"(max_attempts={limit}); fix the cause and call .reset(...) to try again"
            )
        return False, None

    def spec(self) -> Spec:
        """What a run of this call is: no state, nothing committed on the way.

        The record is written at the end, and on entry too when attempts are counted: they
        must survive a crash.
        """
        opts = self.opts
        return Spec(self.op_id, self.store, opts.serializer, name=opts.name, mode=opts.mode)

    def attempts(self, run: Run) -> Callable[[], None]:
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
            if limit is not None:  # then the record was written on entry (COUNTED_CALL)
                done = run.op.attempts if run.op is not None else 0
                if done >= limit:
                    raise Exhausted(done)
            run.count_attempt()

        return before_attempt

    def exhausted(self, exc: Exhausted) -> ResumableError:
        """The error for a call that used up max_attempts within this run."""
        return ResumableError(
            f"{self.opts.name} ({self.op_id!r}) reached max_attempts={self.opts.max_attempts} "
            f"after {exc.attempts} attempts; call .reset(...) to try again"
        )

    def enclosed(self) -> bool:
        """True if a block of this very operation encloses this call (same thread or task)."""
        run = current()
        while run is not None:
            if run.op_id == self.op_id and run.store is self.store:
                return True
            run = run.parent
        return False

    def finish(self, run: Run, value: Any) -> None:
        """Keep the result, stored with the final commit of ``run``."""
        ser, payload = serializers.encode(self.opts.serializer, value, f"result of {self.op_id}")
        run.keep_result(
            ResultRecord.create(self.op_id, self.key, ser, payload),
            result=self.key, function=self.opts.name,
        )  # fmt: skip


class Exhausted(Exception):  # internal signal, never escapes
    def __init__(self, attempts: int) -> None:
        self.attempts = attempts


class Waiting:
    """A call's wait for whoever holds its operation's lock (single flight)."""

    def __init__(self, call: Call) -> None:
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


def run_sync(opts: Options[Any, Any], wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    call = Call(opts, instance, args, kwargs)
    tracer = _trace.tracer()
    if tracer is not None:
        run = functools.partial(_run_sync, call, args=args, kwargs=kwargs)
        return _trace.call_sync(tracer, call.op_id, opts.name, run, wrapped)
    return _run_sync(call, wrapped, args, kwargs)


def _run_sync(call: Call, wrapped: Any, args: Any, kwargs: Any) -> Any:
    found, value = call.stored()
    if found:
        return value
    waiting, spec = Waiting(call), call.spec()
    while True:
        inside = False
        try:
            with Run(spec) as run:
                inside = True
                return _attempt_sync(call, run, wrapped, args, kwargs)
        except OperationLocked as exc:
            if inside or isinstance(exc, LeaseLost):
                raise  # raised by the function, or its run was taken over: not our wait
            locked = exc
        found, value = call.stored()  # the running call may have finished meanwhile
        if found:
            return value
        time.sleep(waiting.pause(locked))


def _attempt_sync(call: Call, run: Run, wrapped: Any, args: Any, kwargs: Any) -> Any:
    """Inside the lock: the stored result, or run the function (with retries) and store it."""
    found, value = call.settle(run)
    if found:
        return value
    before_attempt = call.attempts(run)

    def attempt() -> Any:
        before_attempt()
        return wrapped(*args, **kwargs)

    try:
        if call.opts.retry is None:
            value = attempt()
        else:
            value = call_retrying(call.opts.retry, attempt, never=(Exhausted,))
    except Exhausted as exc:
        raise call.exhausted(exc) from None
    call.finish(run, value)
    return value


async def run_async(
    opts: Options[Any, Any], wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> Any:
    call = Call(opts, instance, args, kwargs)
    tracer = _trace.tracer()
    if tracer is not None:
        run = functools.partial(_run_async, call, args=args, kwargs=kwargs)
        return await _trace.call_async(tracer, call.op_id, opts.name, run, wrapped)
    return await _run_async(call, wrapped, args, kwargs)


async def _run_async(call: Call, wrapped: Any, args: Any, kwargs: Any) -> Any:
    found, value = call.stored()
    if found:
        return value
    waiting, spec = Waiting(call), call.spec()
    while True:  # as in run_sync; entering tries the lock once, so the loop never blocks
        inside = False
        try:
            with Run(spec) as run:
                inside = True
                return await _attempt_async(call, run, wrapped, args, kwargs)
        except OperationLocked as exc:
            if inside or isinstance(exc, LeaseLost):
                raise
            locked = exc
        found, value = call.stored()
        if found:
            return value
        await asyncio.sleep(waiting.pause(locked))


async def _attempt_async(call: Call, run: Run, wrapped: Any, args: Any, kwargs: Any) -> Any:
    """The async twin of :func:`_attempt_sync`."""
    found, value = call.settle(run)
    if found:
        return value
    before_attempt = call.attempts(run)

    async def attempt() -> Any:
        before_attempt()
        return await wrapped(*args, **kwargs)

    try:
        if call.opts.retry is None:
            value = await attempt()
        else:
            value = await call_retrying_async(call.opts.retry, attempt, never=(Exhausted,))
    except Exhausted as exc:
        raise call.exhausted(exc) from None
    call.finish(run, value)
    return value
