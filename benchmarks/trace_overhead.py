"""What the OpenTelemetry hook costs a ``@resumable`` hit, measured in one process.

Two functions cached in the same SQLite store take turns by blocks of calls, the order
reversed at every block: one goes through the library as it is (``resumable._call.run_sync``,
which asks ``resumable._trace`` for a tracer first), the other through the same hit path
without that question (the call's stored result looked up and returned, as ``run_sync`` did
before the hook). Three phases, in this order since each one's import cannot be undone:

1. ``opentelemetry`` not imported (an application that does not trace);
2. ``opentelemetry.trace`` imported, no provider set (the API's proxy provider: no spans);
3. the SDK's ``TracerProvider`` set, with no span processor (a span is made and dropped;
   what tracing itself costs a hit, for reference; needs ``opentelemetry-sdk``).

Prints the median microseconds per hit of each side and their ratio. Not part of
``benchmarks/run.py``: the hook's cost is below its noise.

    python benchmarks/trace_overhead.py [calls]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _util import median


def _sides(directory: Path) -> dict[str, Any]:
    from resumable import _call, decorator, resumable

    store = f"sqlite:///{directory}/calls.db"

    def hooked(x: int) -> int:
        return x + 1

    def plain(x: int) -> int:
        return x + 1

    def untraced(opts: Any, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        # run_sync without the hook: a hit as it was answered before (a miss still runs)
        call = _call.Call(opts, instance, args, kwargs)
        found, value = call.stored()
        if found:
            return value
        return _call._run_sync(call, wrapped, args, kwargs)

    sides = {"with hook": resumable(store=store)(hooked)}
    # The decorator picks its runner when decorating: swap it for the one decoration only.
    decorator.run_sync = untraced  # type: ignore[assignment]
    try:
        sides["without"] = resumable(store=store)(plain)
    finally:
        decorator.run_sync = _call.run_sync
    return sides


def measure(sides: dict[str, Any], n: int, rounds: int = 20) -> dict[str, float]:
    """Median microseconds per hit of each side (the results were stored before)."""
    for fn in sides.values():
        for i in range(n):
            fn(i)  # misses: store every result
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {name: [] for name in sides}
    block = 100
    for r in range(rounds):
        for start in range(0, n, block):
            order = list(sides.items())
            if (r * n // block + start // block) % 2:
                order.reverse()
            for name, fn in order:
                out = times[name]
                for i in range(start, min(n, start + block)):
                    t0 = clock()
                    fn(i)
                    out.append(clock() - t0)
    return {name: median(t) / 1e3 for name, t in times.items()}


def main(n: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    sides = _sides(directory)
    phases = ["opentelemetry not imported", "opentelemetry.trace imported, no provider"]
    for phase in phases:
        if phase.endswith("no provider"):
            import opentelemetry.trace  # noqa: F401 - what an application that traces imports
        report(phase, measure(sides, n))
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        print("(opentelemetry-sdk is not installed: no phase with a provider)")
        return
    trace.set_tracer_provider(TracerProvider())
    report("a provider set (SDK, no span processor)", measure(sides, n))


def report(phase: str, figures: dict[str, float]) -> None:
    ours, base = figures["with hook"], figures["without"]
    print(
        f"{phase}: hit with the hook {ours:.2f} us, without {base:.2f} us, "
        f"ratio {ours / base:.3f} ({(ours - base) * 1e3:+.0f} ns)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
