"""OpenTelemetry: blocks, ``cp.map`` batches and ``@resumable`` calls are spans (issue 17, item 5).

The global tracer provider can be set once per process, so each scenario runs in a new
interpreter: it sets the SDK's provider with an in-memory exporter (as an application that
traces would, before using the library), runs the scenario and prints the finished spans as
JSON. Nothing here sets a provider in the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

REPO = Path(__file__).resolve().parent.parent

_PROVIDER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
user = trace.get_tracer("the-application")
"""

_SPANS = """
import json
print(json.dumps([
    {
        "name": s.name, "id": s.context.span_id, "parent": s.parent and s.parent.span_id,
        "attributes": dict(s.attributes), "status": s.status.status_code.name,
        "events": [{"name": e.name, **e.attributes} for e in s.events],
    }
    for s in exporter.get_finished_spans()
]))
"""


def _run(code: str, tmp_path: Path, *, provider: bool = True) -> str:
    """Run ``code`` in a new interpreter (``STORE`` is a SQLite URL); return its last line."""
    head = f"import sys\nsys.path.insert(0, {str(REPO)!r})\nSTORE = 'sqlite:///{tmp_path}/s.db'\n"
    script = head + (_PROVIDER if provider else "") + textwrap.dedent(code)
    if provider:
        script += _SPANS
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()[-1] if run.stdout else ""


def _spans(code: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The spans ``code`` made, in the order they ended."""
    spans: list[dict[str, Any]] = json.loads(_run(code, tmp_path))
    return spans


def _named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def test_a_block_is_a_span_and_the_body_spans_nest_in_it(tmp_path: Path) -> None:
    """A block is a `resumable.operation` span with its op id and outcome; spans the body
    makes are its children; the re-run of a completed block is a span that says so."""
    spans = _spans(
        """
        from resumable import checkpointed
        for _ in range(2):
            with checkpointed("nightly", store=STORE, state={"n": 0}) as cp:
                for i in cp.iterate(range(3)):
                    with user.start_as_current_span("item"):
                        cp.state["n"] += i
        """,
        tmp_path,
    )
    first, again = _named(spans, "resumable.operation")
    items = _named(spans, "item")
    assert len(items) == 3
    assert {s["parent"] for s in items} == {first["id"]}
    assert first["parent"] is None
    assert first["status"] == "UNSET"
    assert first["attributes"] == {
        "resumable.op_id": "nightly", "resumable.shared": False, "resumable.resumed": False,
        "resumable.completed_before": False, "resumable.position.start": 0,
        "resumable.position": 3, "resumable.state": "completed",
    }  # fmt: skip
    assert again["attributes"]["resumable.completed_before"] is True
    assert again["attributes"]["resumable.state"] == "completed"


def test_a_paused_block_is_not_an_error_and_its_resume_says_where(tmp_path: Path) -> None:
    """Ctrl-C pauses a block: its span has no ERROR status; the next run's span is resumed
    from the position the paused one committed."""
    spans = _spans(
        """
        from resumable import checkpointed
        try:
            with checkpointed("paused", store=STORE) as cp:
                for i in cp.iterate(range(10)):
                    if i == 4:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
        with checkpointed("paused", store=STORE) as cp:
            for i in cp.iterate(range(10)):
                pass
        """,
        tmp_path,
    )
    paused, resumed = _named(spans, "resumable.operation")
    assert paused["status"] == "UNSET"
    assert paused["events"] == []
    assert paused["attributes"]["resumable.state"] == "paused"
    assert paused["attributes"]["resumable.position"] == 4
    assert resumed["attributes"]["resumable.resumed"] is True
    assert resumed["attributes"]["resumable.position.start"] == 4
    assert resumed["attributes"]["resumable.position"] == 10


def test_a_failed_block_is_an_error_with_its_exception(tmp_path: Path) -> None:
    """An exception out of the body sets ERROR and records the exception on the span."""
    spans = _spans(
        """
        from resumable import checkpointed
        try:
            with checkpointed("broken", store=STORE) as cp:
                raise ValueError("the input is bad")
        except ValueError:
            pass
        """,
        tmp_path,
    )
    (span,) = _named(spans, "resumable.operation")
    assert span["status"] == "ERROR"
    assert span["attributes"]["resumable.state"] == "failed"
    (event,) = span["events"]
    assert event["name"] == "exception"
    assert event["exception.type"] == "ValueError"
    assert event["exception.message"] == "the input is bad"


def test_a_block_whose_last_commit_fails_is_an_error(tmp_path: Path) -> None:
    """A body that ends well but whose leaving fails (a before_commit function raises at the
    last commit) is an error too, with that exception."""
    spans = _spans(
        """
        from resumable import checkpointed
        try:
            with checkpointed("unflushed", store=STORE) as cp:
                @cp.before_commit
                def flush():
                    raise OSError("the disk is full")
        except OSError:
            pass
        """,
        tmp_path,
    )
    (span,) = _named(spans, "resumable.operation")
    assert span["status"] == "ERROR"
    assert [e["exception.type"] for e in span["events"]] == ["OSError"]


def test_blocks_in_threads_and_tasks_each_parent_their_own_spans(tmp_path: Path) -> None:
    """Blocks run at once in threads, and in asyncio tasks, each parent the spans of their
    own body: the span is current in its thread's or task's context only."""
    spans = _spans(
        """
        import asyncio, threading
        from resumable import checkpointed

        barrier = threading.Barrier(2)

        def job(name):
            with checkpointed(name, store=STORE):
                barrier.wait()  # both blocks are open
                with user.start_as_current_span(f"in {name}"):
                    pass

        threads = [threading.Thread(target=job, args=(f"thread-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        async def task(name, entered):
            async with checkpointed(name, store=STORE):
                entered.set()
                await asyncio.sleep(0.01)  # the other task runs meanwhile
                with user.start_as_current_span(f"in {name}"):
                    pass

        async def main():
            a, b = asyncio.Event(), asyncio.Event()
            await asyncio.gather(task("task-0", a), task("task-1", b))

        asyncio.run(main())
        """,
        tmp_path,
    )
    blocks = {s["attributes"]["resumable.op_id"]: s for s in _named(spans, "resumable.operation")}
    assert sorted(blocks) == ["task-0", "task-1", "thread-0", "thread-1"]
    for name, block in blocks.items():
        (inner,) = _named(spans, f"in {name}")
        assert inner["parent"] == block["id"], name
        assert block["parent"] is None, name


def test_map_batches_are_spans_of_the_block(tmp_path: Path) -> None:
    """Each chunk of a `cp.map` is a `resumable.map.batch` span in the block's span; together
    they hold every item; an item that failed marks its batch ERROR with the exception."""
    spans = _spans(
        """
        from resumable import checkpointed

        def work(x):
            if x == 7:
                raise ValueError("seven")
            return x * x

        with checkpointed("mapped", store=STORE) as cp:
            cp.map(work, range(40), workers=2, on_error="skip")
        """,
        tmp_path,
    )
    (block,) = _named(spans, "resumable.operation")
    batches = _named(spans, "resumable.map.batch")
    assert {s["parent"] for s in batches} == {block["id"]}
    assert sum(s["attributes"]["resumable.batch.items"] for s in batches) == 40
    firsts = sorted(s["attributes"]["resumable.batch.first"] for s in batches)
    assert firsts[0] == 0 and len(set(firsts)) == len(batches)
    assert {s["attributes"]["resumable.op_id"] for s in batches} == {"mapped"}
    assert {s["attributes"]["resumable.map"] for s in batches} == {0}
    (failed,) = [s for s in batches if s["status"] == "ERROR"]
    assert failed["attributes"]["resumable.batch.failed"] == 1
    assert [e["exception.type"] for e in failed["events"]] == ["ValueError"]
    assert block["status"] == "ERROR"  # an item set aside: the operation is FAILED
    assert block["attributes"]["resumable.state"] == "failed"


def test_calls_and_spans_of_map_items_in_threads_are_children_of_their_batch(
    tmp_path: Path,
) -> None:
    """cp.map's threads run each chunk with its batch span current: a `@resumable` call of
    an item, and a span the item makes, are in the batch, not traces of their own."""
    spans = _spans(
        """
        from resumable import checkpointed, resumable

        @resumable(store=STORE)
        def price(x):
            with user.start_as_current_span("lookup"):
                return x * 3

        with checkpointed("mapped", store=STORE) as cp:
            cp.map(price, range(20), workers=2)
        """,
        tmp_path,
    )
    (block,) = _named(spans, "resumable.operation")
    batches = {s["id"] for s in _named(spans, "resumable.map.batch")}
    calls = _named(spans, "resumable.call")
    assert len(calls) == 20
    assert {c["parent"] for c in calls} <= batches
    call_ids = {c["id"] for c in calls}
    assert {s["parent"] for s in _named(spans, "lookup")} <= call_ids
    assert not [s for s in spans if s["parent"] is None and s["id"] != block["id"]]


def test_a_process_pool_map_is_traced_without_carrying_context(tmp_path: Path) -> None:
    """A process pool's chunks are submitted as they are (pickled): their batches are still
    spans of the block."""
    spans = _spans(
        """
        from concurrent.futures import ProcessPoolExecutor
        from resumable import checkpointed

        if __name__ == "__main__":
            with checkpointed("pooled", store=STORE) as cp, ProcessPoolExecutor(2) as pool:
                done = cp.map(abs, range(-10, 10), executor=pool)
            assert done == [abs(x) for x in range(-10, 10)]
        """,
        tmp_path,
    )
    (block,) = _named(spans, "resumable.operation")
    batches = _named(spans, "resumable.map.batch")
    assert batches and {s["parent"] for s in batches} == {block["id"]}
    assert sum(s["attributes"]["resumable.batch.items"] for s in batches) == 20


def test_a_shared_map_traces_its_claimed_batches(tmp_path: Path) -> None:
    """In a shared block each claimed batch is a span that names the batch."""
    spans = _spans(
        """
        from resumable import checkpointed
        with checkpointed("together", store=STORE, shared=True) as cp:
            cp.map(abs, range(300), workers=2)
        """,
        tmp_path,
    )
    (block,) = _named(spans, "resumable.operation")
    assert block["attributes"]["resumable.shared"] is True
    batches = _named(spans, "resumable.map.batch")
    assert {s["parent"] for s in batches} == {block["id"]}
    assert sum(s["attributes"]["resumable.batch.items"] for s in batches) == 300
    numbers = sorted(s["attributes"]["resumable.batch"] for s in batches)
    assert numbers == list(range(len(batches)))


def test_a_call_miss_and_hit_are_spans(tmp_path: Path) -> None:
    """A call that runs and one answered from the store are each a `resumable.call` span
    with the call's op id; the function's own spans nest in the first."""
    spans = _spans(
        """
        from resumable import resumable

        @resumable(store=STORE)
        def square(x):
            with user.start_as_current_span("inside"):
                return x * x

        with user.start_as_current_span("caller"):
            assert square(4) == square(4) == 16
        user.start_span("op id " + square.op_id_for(4)).end()
        """,
        tmp_path,
    )
    (caller,) = _named(spans, "caller")
    (inside,) = _named(spans, "inside")
    miss, hit = _named(spans, "resumable.call")
    (op_id,) = [s["name"][6:] for s in spans if s["name"].startswith("op id ")]
    assert miss["parent"] == hit["parent"] == caller["id"]
    assert inside["parent"] == miss["id"]
    assert miss["attributes"] == {
        "resumable.op_id": op_id, "resumable.function": "__main__.square",
        "resumable.attempts": 1, "resumable.completed_before": False,
    }  # fmt: skip
    assert hit["attributes"]["resumable.attempts"] == 0
    assert hit["attributes"]["resumable.completed_before"] is True
    assert miss["status"] == hit["status"] == "UNSET"


def test_a_failing_call_is_an_error_with_its_exception(tmp_path: Path) -> None:
    """A call whose function raises (after its retries) has ERROR status, the exception
    recorded, and the number of attempts it made."""
    spans = _spans(
        """
        from resumable import resumable

        @resumable(store=STORE, retry=3)
        def fails(x):
            raise OSError("the disk is full")

        try:
            fails(1)
        except OSError:
            pass
        """,
        tmp_path,
    )
    (span,) = _named(spans, "resumable.call")
    assert span["status"] == "ERROR"
    assert span["attributes"]["resumable.attempts"] == 3
    assert "resumable.completed_before" not in span["attributes"]
    (event,) = span["events"]
    assert event["exception.type"] == "OSError"
    assert event["exception.message"] == "the disk is full"


def test_async_calls_are_spans_in_their_own_tasks(tmp_path: Path) -> None:
    """`async def` calls run at once in tasks are spans; what each awaits nests in its own."""
    spans = _spans(
        """
        import asyncio
        from resumable import resumable

        @resumable(store=STORE)
        async def fetch(x):
            await asyncio.sleep(0.01)  # the other call runs meanwhile
            with user.start_as_current_span(f"fetching {x}"):
                return x + 1

        async def main():
            with user.start_as_current_span("caller"):
                assert await asyncio.gather(fetch(1), fetch(2)) == [2, 3]
                assert await fetch(1) == 2

        asyncio.run(main())
        """,
        tmp_path,
    )
    (caller,) = _named(spans, "caller")
    calls = _named(spans, "resumable.call")
    assert len(calls) == 3
    assert {s["parent"] for s in calls} == {caller["id"]}
    for x in (1, 2):
        (inner,) = _named(spans, f"fetching {x}")
        (call,) = [s for s in calls if s["id"] == inner["parent"]]
        assert call["attributes"]["resumable.attempts"] == 1
    assert [s["attributes"]["resumable.completed_before"] for s in calls].count(True) == 1


def test_without_opentelemetry_imported_nothing_imports_it(tmp_path: Path) -> None:
    """An application that does not import OpenTelemetry never gets it imported: a block, a
    map and calls (sync and async) run without loading any opentelemetry module."""
    out = _run(
        """
        import asyncio, json
        from resumable import checkpointed, resumable

        @resumable(store=STORE)
        def f(x):
            return x

        @resumable(store=STORE)
        async def g(x):
            return x

        with checkpointed("plain", store=STORE) as cp:
            cp.map(abs, range(10), workers=2)
            f(1), f(1)
        asyncio.run(g(1))
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
        """,
        tmp_path,
        provider=False,
    )
    assert json.loads(out) == []


def test_opentelemetry_imported_without_a_provider_then_one_set(tmp_path: Path) -> None:
    """With the API imported and no provider, everything runs and nothing is traced; a
    provider set later is used (within the 0.1 s the library waits before asking again)."""
    out = _run(
        """
        import asyncio, json, time
        from opentelemetry import trace
        from resumable import checkpointed, resumable

        @resumable(store=STORE)
        def f(x):
            with trace.get_tracer("app").start_as_current_span("inside"):
                return x

        with checkpointed("untraced", store=STORE) as cp:
            cp.map(abs, range(10), workers=2)
            f(1)

        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        time.sleep(0.15)
        f(2)
        print(json.dumps([s.name for s in exporter.get_finished_spans()]))
        """,
        tmp_path,
        provider=False,
    )
    assert json.loads(out) == ["inside", "resumable.call"]
