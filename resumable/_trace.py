"""OpenTelemetry spans: operations, ``cp.map`` batches and ``@resumable`` calls.

OpenTelemetry asks a library to use the API only and to do nothing until the application
configures a tracer provider. This module goes one step further, for cost: it never imports
OpenTelemetry itself. An application that configured a provider has imported
``opentelemetry.trace`` to do it, so until that module is in ``sys.modules`` no span can be
wanted, and a hook costs one dictionary lookup. While it is imported but the global provider is
still the API's proxy (none set yet) or the no-op one, no span is made either: each would
record nothing, and cost a microsecond or more on every ``@resumable`` hit. Once a real
provider is set, the ``"resumable"`` tracer is got once and kept (the global provider can be
set only once per process).

The spans (names are few and fixed; the op id is an attribute):

- ``resumable.operation``: a ``checkpointed()`` block, from entering it (its lock wait
  included) to leaving it (its last commit included), current while the body runs, so spans
  the body makes are its children;
- ``resumable.map.batch``: a chunk of ``cp.map`` items (a claimed batch in a shared block),
  from its dispatch to the executor until its outcomes are back;
- ``resumable.call``: a ``@resumable`` call, a stored result returned included, current
  while the function runs.

An exception (an ``Exception``) is recorded on the span and sets the status to ERROR; leaving
by ``KeyboardInterrupt``, SIGTERM's ``SystemExit`` or a cancellation pauses an operation and is
not an error (the rule of OpenTelemetry's own ``use_span``). A block that ends with ``cp.map``
items set aside is FAILED, and its span's status is ERROR too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

from .operation import OperationRecord, ProcessState
from .serializers import error_text

if TYPE_CHECKING:
    from concurrent.futures import Executor, Future

    from opentelemetry.trace import Span, Tracer


__all__ = [
    "OperationSpan", "call_async", "call_sync", "end_operation", "start_operation", "submit_batch",
    "tracer",
]  # fmt: skip

_tracer: Tracer | None = None  # the tracer of a real provider, once one is set
#: While ``opentelemetry.trace`` is imported and no provider is set, the provider is asked
#: again at most this often: asking costs more than a ``@resumable`` hit's whole work (the
#: API looks in ``os.environ`` each time). A provider set is seen within this many seconds.
_RECHECK: Final = 0.1
_unset_until = 0.0  # time.monotonic() until which no provider is taken to be set


def tracer() -> Tracer | None:
    """The tracer to make spans with, or None while no span would be recorded."""
    found = _tracer
    if found is not None:
        return found
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # the application has not imported it: it configured no provider
        return None
    if _unset_until and time.monotonic() < _unset_until:
        return None
    return _configured(trace)


def _configured(trace: Any) -> Tracer | None:
    """The tracer of the global provider, if one was set (and keep it)."""
    global _tracer, _unset_until  # noqa: PLW0603 - the one cache
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        _unset_until = time.monotonic() + _RECHECK
        return None
    from importlib.metadata import version

    _tracer = provider.get_tracer("resumable", version("resumable"))
    return _tracer


def _failed(span: Span, exc: BaseException) -> None:
    """Record ``exc`` on ``span``: an error, unless it interrupts (Ctrl-C, SIGTERM, cancel)."""
    if not isinstance(exc, Exception):
        return  # a pause, not an error
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, error_text(exc)))


# --- operations ---------------------------------------------------------------------------


class RunFacts(Protocol):
    """What an operation's span reads of its run (:class:`resumable._run.Run`)."""

    op_id: str
    op: OperationRecord | None
    resumed: bool
    completed_before: bool
    restored: int

    @property
    def done(self) -> int:
        """Items finished, over all runs."""
        ...


class OperationSpan:
    """The span of a block being run, and the token that made it current."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: object) -> None:
        self.span, self.token = span, token


def start_operation(op_id: str, *, shared: bool) -> OperationSpan | None:
    """Start the span of a block about to be entered, and make it current; None if untraced."""
    found = tracer()
    if found is None:
        return None
    from opentelemetry import context, trace

    span = found.start_span(
        "resumable.operation", attributes={"resumable.op_id": op_id, "resumable.shared": shared}
    )
    return OperationSpan(span, context.attach(trace.set_span_in_context(span)))


def end_operation(
    traced: OperationSpan | None, run: RunFacts | None, exc: BaseException | None
) -> None:
    """End the span of a block left (with ``exc``, if one was raised); no-op if untraced."""
    if traced is None:
        return
    from opentelemetry import context

    span = traced.span
    try:
        context.detach(traced.token)  # type: ignore[arg-type] # the token attach() returned
        if run is not None:
            span.set_attributes({
                "resumable.resumed": run.resumed,
                "resumable.completed_before": run.completed_before,
                "resumable.position.start": run.restored,
                "resumable.position": run.done,
            })  # fmt: skip
            if run.op is not None:
                span.set_attribute("resumable.state", run.op.state.value)
        if exc is not None:
            _failed(span, exc)
        elif run is not None and run.op is not None and run.op.state is ProcessState.FAILED:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, run.op.error or "failed"))  # items set aside
    finally:
        span.end()


# --- cp.map batches -----------------------------------------------------------------------


def submit_batch(
    pool: Executor, fn: Callable[..., Any], *args: Any, op_id: str, number: int, slots: Any,
    batch: int | None = None,
) -> Future[Any]:  # fmt: skip
    """``pool.submit(fn, *args)``, traced: a chunk of map ``number`` (its items' ``slots``).

    The span starts as a child of the current span (the block's) and ends when the future is
    done, before the map's own done callback runs (it is added first: callbacks run in
    order). In a thread pool the span is current in the thread while the chunk runs, so the
    ``@resumable`` calls and the spans of the items are its children; a process pool's
    items run where no context can follow.
    """
    found = tracer()
    if found is None:
        return pool.submit(fn, *args)
    attributes: dict[str, Any] = {
        "resumable.op_id": op_id, "resumable.map": number,
        "resumable.batch.first": slots[0], "resumable.batch.items": len(slots),
    }  # fmt: skip
    if batch is not None:
        attributes["resumable.batch"] = batch
    span = found.start_span("resumable.map.batch", attributes=attributes)
    from concurrent.futures import ThreadPoolExecutor

    if isinstance(pool, ThreadPoolExecutor):
        fn = _current_in(span, fn)
    try:
        fut = pool.submit(fn, *args)
    except BaseException as exc:
        _failed(span, exc)
        span.end()
        raise
    fut.add_done_callback(lambda done: _end_batch(span, done))
    return fut


def _current_in(span: Span, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, run with ``span`` current (in whichever thread calls it)."""
    from opentelemetry import context, trace

    made = trace.set_span_in_context(span)

    def run(*args: Any) -> Any:
        token = context.attach(made)
        try:
            return fn(*args)
        finally:
            context.detach(token)

    return run


def _end_batch(span: Span, fut: Future[Any]) -> None:
    """End a batch's span with its outcome (in whichever thread finished the future)."""
    try:
        if fut.cancelled():
            span.set_attributes({"resumable.batch.cancelled": True})
            return
        exc = fut.exception()
        if exc is not None:  # the chunk itself failed (did not pickle, the pool broke, ...)
            _failed(span, exc)
            return
        outcomes = fut.result()[0]
        errors = [out.error for out in outcomes if out.error is not None]
        span.set_attribute("resumable.batch.failed", len(errors))
        for error in errors:
            _failed(span, error)
    finally:
        span.end()


# --- @resumable calls ---------------------------------------------------------------------


@contextmanager
def _call_span(found: Tracer, op_id: str, function: str, ran: list[int]) -> Iterator[None]:
    """A call's span, current while it lasts, with its error if any.

    ``ran[0]`` is how often the function ran, counted by the caller (0: the stored result was
    returned).
    """
    with found.start_as_current_span(
        "resumable.call",
        attributes={"resumable.op_id": op_id, "resumable.function": function},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.set_attribute("resumable.attempts", ran[0])
        span.set_attribute("resumable.completed_before", not ran[0])


def call_sync(
    found: Tracer, op_id: str, function: str, run: Callable[[Callable[..., Any]], Any],
    wrapped: Callable[..., Any],
) -> Any:  # fmt: skip
    """``run(wrapped)`` (a call) in a span that counts the times ``wrapped`` ran."""
    ran = [0]

    def counted(*args: Any, **kwargs: Any) -> Any:
        ran[0] += 1
        return wrapped(*args, **kwargs)

    with _call_span(found, op_id, function, ran):
        return run(counted)


async def call_async(
    found: Tracer, op_id: str, function: str, run: Callable[[Callable[..., Any]], Awaitable[Any]],
    wrapped: Callable[..., Awaitable[Any]],
) -> Any:  # fmt: skip
    """The async twin of :func:`call_sync`."""
    ran = [0]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        ran[0] += 1
        return await wrapped(*args, **kwargs)

    with _call_span(found, op_id, function, ran):
        return await run(counted)
