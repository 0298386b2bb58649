"""``import resumable`` loads nothing heavy that the first block does not need (issue 16, goal 8).

Each check runs a new interpreter, from outside the repository with the repository first on
``sys.path``, and lists the modules it loaded: a module-level import of one of these names,
added back anywhere on the import path, makes a test here fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Loaded by `import resumable` only if someone imports them at module level again: each is
#: imported by the function that needs it (or a lazily exported name's module).
HEAVY = frozenset({
    # third-party: structlog on the first event shown, tqdm with a progress bar, click with
    # the command line, dill with its serializer, numpy never by the library, psutil when
    # another process is looked at, wrapt/tenacity with @resumable, psycopg with PostgreSQL,
    # opentelemetry never by the library (an application that traces imports it)
    "structlog", "tqdm", "click", "dill", "numpy", "psutil", "wrapt", "tenacity", "psycopg",
    "opentelemetry",
    # the standard library's: logging on the first event that could be shown, the rest with
    # the functions that use them (the map executors: concurrent)
    "logging", "socket", "secrets", "uuid", "shutil", "hashlib", "hmac", "difflib", "decimal",
    "fractions", "concurrent", "multiprocessing", "subprocess", "platform", "tempfile",
    # the library's own: every store but SQLite's, the claims of shared maps, the decorator,
    # failsafe, backups, cp.map's machinery and the command line
    "resumable.stores.files", "resumable.stores.memory", "resumable.stores.postgres",
    "resumable.stores._claims", "resumable.decorator", "resumable.failsafe",
    "resumable.backup", "resumable._map", "resumable.cli", "resumable._gc", "resumable._verify",
    # the crash-safety check of users' jobs (its crash points are resumable._crashpoint's)
    "resumable.testing",
})  # fmt: skip


def _loaded(code: str, cwd: Path) -> set[str]:
    """The modules loaded after running ``code`` in a new interpreter."""
    script = f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{code}\n" + (
        "import json\nprint(json.dumps(sorted(sys.modules)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    return set(json.loads(run.stdout.splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    """The modules of :data:`HEAVY` among ``modules``, and their submodules."""
    parts = {m: m.split(".") for m in modules}
    return sorted(
        m for m, p in parts.items() if any(".".join(p[:i]) in HEAVY for i in range(1, len(p) + 1))
    )


def test_import_resumable_loads_nothing_heavy(tmp_path: Path) -> None:
    """`import resumable` (and its public names) loads none of :data:`HEAVY`."""
    modules = _loaded("import resumable\nfrom resumable import checkpointed, open_store", tmp_path)
    assert "resumable.checkpoint" in modules  # the check looks at a real import
    assert _heavy(modules) == []


@pytest.mark.skipif(sys.platform != "linux", reason="psutil and socket are read around on Linux")
def test_a_first_block_loads_nothing_heavy(tmp_path: Path) -> None:
    """A first SQLite block, committed and finished, loads none of them either on Linux.

    Whatever it loaded would be paid by the first block of every new process (the benchmark
    row "first block of a new process"): its owner record reads /proc, not psutil.
    """
    code = textwrap.dedent(f"""
        from resumable import checkpointed
        with checkpointed("job", store="sqlite:///{tmp_path}/state.db", state={{"n": 0}}) as cp:
            for i in cp.iterate(range(10)):
                cp.state["n"] += i
                cp.commit()
    """)
    modules = _loaded(code, tmp_path)
    assert "resumable.stores.sqlite" in modules
    assert _heavy(modules) == []


def test_the_lazy_names_are_still_exported(tmp_path: Path) -> None:
    """Each name of ``__all__`` resolves, as an attribute and through ``from ... import``."""
    code = textwrap.dedent("""
        import resumable
        for name in resumable.__all__:
            assert getattr(resumable, name) is not None, name
            exec(f"from resumable import {name}")
    """)
    modules = _loaded(code, tmp_path)
    assert {"resumable.decorator", "resumable.failsafe"} <= modules


def test_the_command_line_loads_the_commands_work_when_run(tmp_path: Path) -> None:
    """`resumable --help` needs click, not logging nor what gc and verify do."""
    modules = _loaded("import resumable.cli", tmp_path)
    assert "click" in modules
    late = {"logging", "shutil", "resumable._gc", "resumable._verify", "resumable.backup"}
    assert sorted(modules & late) == []


def test_events_without_logging_imported(tmp_path: Path) -> None:
    """With nothing configured, events are printed as lines on stderr at RESUMABLE_LOG's
    level (info by default): neither logging nor structlog is imported for them."""
    code = textwrap.dedent("""
        from resumable._log import log
        log.debug("resumable.test.debugged", n=1)
        log.info("resumable.test.informed", n=2)
        log.warning("resumable.test.warned", n=3)
        assert "logging" not in sys.modules and "structlog" not in sys.modules
    """)
    script = f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{code}"
    env = {k: v for k, v in os.environ.items() if k != "RESUMABLE_LOG"}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        check=False, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines() == [
        "resumable: test informed: n=2",
        "resumable: test warned: n=3",
    ]
    assert run.stdout == ""
