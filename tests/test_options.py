"""Bad arguments say what is wrong: store URL options, and an initial state that cannot be saved.

A store option that the store does not take (a typo in the URL's query or in a keyword of
``open_store``) is a ValueError naming it and the valid options, which come from the store
class's constructor. An initial ``state=`` that the serializer cannot write fails at entry
with SerializationError naming the field, whatever ``copy.deepcopy`` would have made of it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import url_for

from resumable import SerializationError, checkpointed, open_store
from resumable.stores import Store
from resumable.stores._options import store_options
from resumable.stores.files import FileStore
from resumable.stores.memory import MemoryStore
from resumable.stores.sqlite import SQLiteStore

#: A PostgreSQL URL nothing answers at: option checks must refuse before connecting.
NOWHERE = "postgresql://nobody:s3cr3t@127.0.0.1:1/none"

LOCAL: dict[str, type[Store]] = {"sqlite": SQLiteStore, "file": FileStore, "memory": MemoryStore}


# --- 4. store options ------------------------------------------------------------------------


def test_the_valid_options_are_the_constructors_keywords() -> None:
    """Each store's options are read off its constructor: one list, no copy to drift."""
    from resumable.stores._pg_url import OPTIONS as _OPTIONS
    from resumable.stores.postgres import PostgresStore

    assert store_options(SQLiteStore) == ("durability", "history", "timeout", "lease", "heartbeat")
    assert store_options(FileStore) == ("durability", "history")
    assert store_options(MemoryStore) == ("durability", "history")
    assert store_options(PostgresStore) == tuple(_OPTIONS)


@pytest.mark.parametrize("kind", sorted(LOCAL))
def test_a_misspelt_option_in_the_url_is_named_with_the_valid_ones(
    kind: str, tmp_path: Path
) -> None:
    """?durabilty=full is a ValueError naming it, suggesting durability, listing the rest."""
    url = url_for(kind, tmp_path).split("?")[0] + "?durabilty=full"
    with pytest.raises(ValueError, match="unknown option 'durabilty'") as info:
        open_store(url)
    text = str(info.value)
    assert url in text
    assert "did you mean 'durability'?" in text
    assert (
        f"valid options for {LOCAL[kind].__name__}: " + ", ".join(store_options(LOCAL[kind]))
        in text
    )


@pytest.mark.parametrize("kind", sorted(LOCAL))
def test_a_misspelt_keyword_option_is_a_value_error(kind: str, tmp_path: Path) -> None:
    """open_store(url, durabilty=...) is a ValueError too, not a TypeError from the class."""
    with pytest.raises(ValueError, match=r"unknown option 'durabilty' in open_store\(") as info:
        open_store(url_for(kind, tmp_path), durabilty="full")
    assert "did you mean 'durability'?" in str(info.value)


def test_an_option_of_another_store_is_refused_with_this_ones() -> None:
    """timeout is SQLite's: the memory store refuses it and lists its own options."""
    with pytest.raises(ValueError, match=r"valid options for MemoryStore: durability, history$"):
        open_store("memory://?timeout=3")


def test_a_misspelt_postgres_option_is_refused_before_connecting() -> None:
    """In a PostgreSQL URL, a name neither the store's nor libpq's is a typo, password hidden."""
    with pytest.raises(ValueError, match="unknown option 'durabilty'") as info:
        open_store(NOWHERE + "?durabilty=full")
    text = str(info.value)
    assert "did you mean 'durability'?" in text and "libpq" in text
    assert "s3cr3t" not in text
    with pytest.raises(ValueError, match="did you mean 'sslmode'"):
        open_store(NOWHERE + "?sslmod=disable")
    with pytest.raises(ValueError, match=r"unknown option 'pool' in open_store\(postgresql://"):
        open_store(NOWHERE, pool=2)


def test_a_libpq_parameter_in_a_postgres_url_is_still_accepted() -> None:
    """libpq's own parameters pass the check (and the unreachable server is what fails)."""
    from resumable.errors import StoreError

    with pytest.raises(StoreError, match="could not reach"):
        open_store(NOWHERE + "?sslmode=disable&application_name=x&connect_timeout=1")


def test_an_unknown_scheme_lists_every_scheme() -> None:
    """The unknown-scheme message names postgresql:// (and its postgres:// alias) too."""
    with pytest.raises(ValueError, match="unknown store URL") as info:
        open_store("mysql://db/jobs")
    for scheme in ("sqlite:///", "file:///", "memory://", "postgresql://", "postgres://"):
        assert scheme in str(info.value)


def test_a_block_with_a_misspelt_store_option_fails_at_entry(tmp_path: Path) -> None:
    """checkpointed(store=...) with a typo in the URL raises the same ValueError at entry."""
    block = checkpointed("x", store=f"sqlite:///{tmp_path}/jobs.db?histroy=5")
    with pytest.raises(ValueError, match="did you mean 'history'"):
        block.__enter__()
    assert not (tmp_path / "jobs.db").exists()


# --- 5. an initial state that cannot be saved ------------------------------------------------


@pytest.mark.parametrize("serializer", ["auto", "pickle", "dill", "json"])
def test_a_generator_in_the_initial_state_is_named_at_entry(
    serializer: str, tmp_path: Path
) -> None:
    """state={"g": <generator>} raises SerializationError naming state.g when entered."""
    url = url_for("sqlite", tmp_path)
    block = checkpointed("gen", store=url, serializer=serializer, state={"n": 1, "g": iter_gen()})
    with pytest.raises(SerializationError) as info:
        block.__enter__()
    assert info.value.field == "state.g"
    assert "state.g" in str(info.value)
    store = open_store(url)
    try:
        assert store.load_operation("gen") is None  # refused before anything was written
    finally:
        store.close()
    with checkpointed("gen", store=url, state={"n": 1}) as cp:  # and the lock was given back
        assert cp.state.n == 1


def iter_gen() -> Any:
    return (i for i in range(3))


def test_a_nested_field_is_named_down_to_its_key() -> None:
    """A lock nested in a dict, under pickle: the error names state.a['b'], as commits do."""
    block = checkpointed(
        "lock", store="memory://", serializer="pickle", state={"a": {"b": threading.Lock()}}
    )
    with pytest.raises(SerializationError) as info:
        block.__enter__()
    assert info.value.field == "state.a['b']"


@pytest.mark.parametrize(
    ("value", "shown"), [({1, 2}, "set"), (lambda x: x, "function")], ids=["set", "lambda"]
)
def test_what_copies_but_does_not_serialize_fails_at_entry_too(value: Any, shown: str) -> None:
    """Under json, a set or a lambda (which deepcopy copies) fails at entry, not at a commit."""
    block = checkpointed("json", store="memory://", serializer="json", state={"ok": 1, "x": value})
    with pytest.raises(SerializationError, match=rf"state\.x = .* \({shown}\)") as info:
        block.__enter__()
    assert info.value.field == "state.x"


def test_auto_accepts_what_dill_can_save() -> None:
    """Under auto, a lock or a lambda in the state is saved by dill: entry and commits work."""
    state = {"lock": threading.Lock(), "f": lambda x: x + 1}
    with checkpointed("dill", store="memory://", state=state) as cp:
        assert cp.state.f(1) == 2
        assert cp.state.lock is not state["lock"]  # a copy, like every first run's state
        cp.commit()


def test_the_first_run_sees_what_a_resumed_run_would() -> None:
    """The initial state is copied through the serializer: under json a tuple is a list."""
    with checkpointed("tuple", store="memory://", serializer="json", state={"t": (1, 2)}) as cp:
        assert cp.state.t == [1, 2]


def test_a_stored_checkpoint_makes_the_initial_state_unused(tmp_path: Path) -> None:
    """Only the first run copies state=: once a checkpoint exists, it is not looked at."""
    url = url_for("sqlite", tmp_path)
    with checkpointed("later", store=url, state={"n": 0}) as cp:
        cp.state.n = 5
    with checkpointed("later", store=url, state={"g": iter_gen()}) as cp:
        assert cp.state.n == 5
