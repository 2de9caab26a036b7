"""Graphs in the store (memory, SQLite, PostgreSQL): versions, owners, deletion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchgpt.store import Store, open_store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = {"memory": "memory:", "sqlite": str(tmp_path / "o.db")}.get(request.param)
    s = open_store(url or request.getfixturevalue("postgres_url"))
    yield s
    s.close()


def test_versions_owners_and_deletion(store: Store) -> None:
    a, new = store.save_graph("g1", "alice", "one", '{"v":1}')
    assert (a.version, new) == (1, True)
    same, new = store.save_graph("g1", "alice", "one", '{"v":1}')
    assert (same.version, new) == (1, False)  # unchanged: no new version
    b, new = store.save_graph("g1", "alice", "one", '{"v":2}')
    assert (b.version, new) == (2, True)
    store.save_graph("g2", "bob", "two", '{"w":1}')
    got = store.get_graph("g1")
    assert (
        got is not None and got.version == 2 and got.definition == '{"v":2}' and got.versions == 2
    )
    old = store.get_graph("g1", 1)
    assert old is not None and old.definition == '{"v":1}'
    assert [g.graph_id for g in store.list_graphs("alice")] == ["g1"]
    assert {g.graph_id for g in store.list_graphs()} == {"g1", "g2"}
    assert store.graph_owner("g2") == "bob" and store.graph_owner("nope") is None
    assert store.delete_graph("g1") == 2
    assert store.get_graph("g1") is None and store.get_graph("g1", 1) is None
    assert [g.graph_id for g in store.list_graphs("alice")] == []
    assert store.graph_owner("g1") == "alice"  # the id stays taken by its owner
    again, new = store.save_graph("g1", "alice", "one", '{"v":1}')
    assert (again.version, new) == (3, True)


def test_graphs_survive_reopening(tmp_path: Path) -> None:
    s = open_store(str(tmp_path / "o.db"))
    s.save_graph("g", "me", "n", "{}")
    s.close()
    s = open_store(str(tmp_path / "o.db"))
    rec = s.get_graph("g")
    assert rec is not None and rec.owner == "me" and rec.version == 1
    s.close()
