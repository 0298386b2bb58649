"""The default store, as a user meets it: from a subdirectory, configured, announced once.

Scripts run as real subprocesses in a project laid out under the test's directory; each test
reads back where the job's progress went.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resumable import open_store
from resumable.stores import _discover

JOB = """
from resumable import checkpointed

with checkpointed("report", state={"n": 0}) as cp:
    for i in cp.iterate(range(5)):
        cp.state.n += 1
print(cp.state.n)
"""


def run(cwd: Path, project: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the job, whose script lives in ``project``, from ``cwd``: (exit code, stderr)."""
    script = project / "job.py"
    script.write_text(textwrap.dedent(JOB))
    environ = {k: v for k, v in os.environ.items() if k not in ("RESUMABLE_LOG", "RESUMABLE_STORE")}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=60,
        env={**environ, **(env or {})}, check=False,
    )  # fmt: skip
    return proc.returncode, proc.stderr


def completed(url: str) -> bool:
    store = open_store(url)
    try:
        op = store.load_operation("report")
        return op is not None and op.state.value == "completed"
    finally:
        store.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "scripts" / "deep").mkdir(parents=True)
    return root


def test_the_first_default_store_says_where_it_is_once(project: Path) -> None:
    code, err = run(project, project)
    assert code == 0, err
    db = project / ".resumable" / "state.db"
    assert err.splitlines() == [
        f"resumable: keeping progress in sqlite:///{db} (new; RESUMABLE_STORE, or store = in "
        "[tool.resumable] of pyproject.toml, puts it elsewhere)"
    ]
    code, err = run(project, project)
    assert err.startswith("resumable: skipping 'report'")
    assert "keeping progress" not in err


def test_a_pyproject_table_is_found_from_a_subdirectory(project: Path) -> None:
    config = project / "pyproject.toml"
    config.write_text(
        '[project]\nname = "x"\n\n[tool.resumable]\nstore = "sqlite:///var/jobs.db"\n'
    )
    code, err = run(project / "scripts" / "deep", project)
    assert code == 0, err
    db = project / "var" / "jobs.db"  # relative to the pyproject.toml, not to the cwd
    assert f"keeping progress in sqlite:///{db} (new; as {config} says)" in err
    assert completed(f"sqlite:///{db}")
    assert not (project / "scripts" / "deep" / ".resumable").exists()
    code, err = run(project / "scripts", project)  # another subdirectory: the same store
    assert "skipping 'report'" in err


def test_a_resumable_toml_nearer_wins_and_relative_file_urls_are_anchored(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.resumable]\nstore = "sqlite:///far.db"\n')
    (project / "scripts" / "resumable.toml").write_text('store = "file:progress"\n')
    code, err = run(project / "scripts" / "deep", project)
    assert code == 0, err
    assert completed(f"file://{project / 'scripts' / 'progress'}")
    assert not (project / "far.db").exists()


def test_resumable_store_overrides_the_project(project: Path, tmp_path: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.resumable]\nstore = "sqlite:///far.db"\n')
    url = f"sqlite:///{tmp_path}/env.db"
    code, err = run(project, project, env={"RESUMABLE_STORE": url})
    assert code == 0, err
    assert "(new; as RESUMABLE_STORE says)" in err
    assert completed(url) and not (project / "far.db").exists()


def test_a_pyproject_without_the_table_is_passed_over(project: Path) -> None:
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n')
    (project / "scripts" / "pyproject.toml").write_text("[tool.black]\nline-length = 100\n")
    code, err = run(project / "scripts", project)
    assert code == 0, err
    assert (project / "scripts" / ".resumable" / "state.db").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tool.resumable\n", "cannot read it as TOML"),
        ("[tool.resumable]\nstore = 3\n", "[tool.resumable] store must be a store URL"),
    ],
)
def test_a_broken_configuration_is_a_clear_error(project: Path, text: str, message: str) -> None:
    config = project / "pyproject.toml"
    config.write_text(text)
    code, err = run(project / "scripts", project)
    assert code == 1
    assert f"ValueError: {config}: {message}" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_another_users_configuration_is_ignored_with_a_warning(project: Path) -> None:
    config = project / "pyproject.toml"
    config.write_text('[tool.resumable]\nstore = "sqlite:////tmp/elsewhere.db"\n')
    os.chown(config, 65534, 65534)  # nobody's: it would choose where this user's progress goes
    code, err = run(project, project)
    assert code == 0, err
    assert f"resumable: ignored {config}, which would choose where progress is kept: " in err
    assert (project / ".resumable" / "state.db").exists()


@pytest.mark.parametrize(
    ("url", "anchored"),
    [
        ("sqlite:///a/b.db?durability=full", "sqlite:////p/a/b.db?durability=full"),
        ("sqlite:////abs/b.db", "sqlite:////abs/b.db"),
        ("file:progress", "file:///p/progress"),
        ("file:///abs/dir", "file:///abs/dir"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("memory://", "memory://"),
    ],
)
def test_relative_paths_are_relative_to_the_configuration(url: str, anchored: str) -> None:
    assert _discover._anchored(url, Path("/p")) == anchored
