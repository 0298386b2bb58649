"""A resumable job traced with OpenTelemetry: blocks, map batches and calls are spans.

    pip install 'resumable[otel]' opentelemetry-sdk
    python examples/tracing.py

sets up OpenTelemetry as an application does (a tracer provider with an exporter; here an
in-memory one, printed at the end, where a real job would export to its collector), then runs
a block with a ``cp.map`` and a loop of ``@resumable`` calls. It prints the spans as a tree:
the block, its map's batches and its calls, each with its ``resumable.op_id``. Run it again:
the block had completed, so its loop and map run nothing, and its span says so.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resumable import checkpointed, resumable

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # the application's setup: the library only uses it


@resumable(op_id="price-{sku}")
def price(sku: str) -> int:
    """Stands in for a slow API call: its result is stored, so it runs once per sku."""
    return sum(map(ord, sku)) % 97


def weight(sku: str) -> int:
    """Stands in for CPU work on one item, run by cp.map in batches."""
    return len(sku) * 3


def main() -> None:
    skus = [f"sku-{i:03d}" for i in range(40)]
    with checkpointed("price-catalogue", state={"total": 0}) as cp:
        weights = cp.map(weight, skus)  # a span per batch, inside the block's span
        for sku in cp.iterate(skus):
            cp.state.total += price(sku)  # a span per call, inside the block's span
    print(f"{len(weights)} weights, prices total {cp.state.total}")
    show(exporter.get_finished_spans())


def show(spans: tuple[ReadableSpan, ...]) -> None:
    """Print the spans as a tree, children under their parent (the first few of a kind)."""
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent, []).append(span)

    def walk(parent: int | None, depth: int) -> None:
        kids = sorted(children.get(parent, []), key=lambda s: s.start_time or 0)
        shown: dict[str, int] = {}
        for span in kids:
            shown[span.name] = n = shown.get(span.name, 0) + 1
            if n == 3:
                rest = sum(1 for s in kids if s.name == span.name) - 2
                print(f"{'  ' * depth}... {rest} more {span.name} spans")
            if n >= 3:
                continue
            attrs = span.attributes or {}
            said = ", ".join(
                f"{key.removeprefix('resumable.')}={value}"
                for key, value in attrs.items()
                if key
                in (
                    "resumable.op_id",
                    "resumable.state",
                    "resumable.attempts",
                    "resumable.completed_before",
                )
                or key.startswith("resumable.batch.")
            )
            print(f"{'  ' * depth}{span.name} ({said})")
            walk(span.context.span_id if span.context else None, depth + 1)

    walk(None, 0)


if __name__ == "__main__":
    main()
