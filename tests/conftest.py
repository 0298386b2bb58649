"""Shared fixtures: every test runs in its own working directory with no inherited store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import HealthCheck, settings

import resumable
from resumable import stores
from resumable.stores import Store, open_store, resolve_store

# No per-example deadline or slow-generation check: a loaded CI machine makes timing-based
# failures flaky, and the properties here are about values, not speed (benchmarks/ measures
# speed).
settings.register_profile("resumable", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("resumable")

STORE_KINDS = ["sqlite", "file", "memory"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets a fresh working directory, default store and configuration."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RESUMABLE_STORE", raising=False)
    monkeypatch.delenv("RESUMABLE_SECRET", raising=False)
    previous = resumable.configure(store=None, serializer=None)
    stores._cache.clear()  # memory:// and cached URLs start empty in every test
    yield
    stores._cache.clear()
    # structlog.testing.capture_logs leaves structlog "configured"; later tests must see the
    # unconfigured default, where events go to the standard library logger "resumable".
    structlog.reset_defaults()
    resumable.configure(store=previous.store, serializer=previous.serializer)


def url_for(kind: str, tmp_path: Path, durability: str = "normal") -> str:
    """A store URL of ``kind`` under ``tmp_path``."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/state.db?durability={durability}"
    if kind == "file":
        return f"file://{tmp_path}/store?durability={durability}"
    return "memory://"


@pytest.fixture(params=STORE_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for each kind of store."""
    return url_for(request.param, tmp_path)


@pytest.fixture
def store(store_url: str) -> Store:
    """The store of each kind that ``checkpointed(store=store_url)`` uses too."""
    return resolve_store(store_url)


__all__ = ["open_store", "url_for"]
