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
    assert got is not None and got.version == 2 and got.definition == '{"v":2}' and got.versions == 2
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


def test_a_graph_run_gets_its_stored_version_in_its_options() -> None:
    from orchgpt.errors import RoutingError
    from orchgpt.graphs.submit import graph_options
    from orchgpt.models import Action, Command

    s = open_store("memory:")
    s.save_graph("g", "client:me", "n", '{"v":1}')
    s.save_graph("g", "client:me", "n", '{"v":2}')

    def run(owner: str = "client:me", given: str = "{}", **opts: str) -> dict[str, str]:
        return graph_options(s, Command("graph", Action.RUN, given, options=opts), owner)

    assert run(graph_id="g") == {
        "graph_id": "g",
        "graph": '{"v":2}',
        "graph_version": "2",
        "graph_name": "n",
    }
    assert run(graph_id="g", graph_version="1")["graph"] == '{"v":1}'
    for kwargs, code, words in (
        ({}, "INVALID_ARGUMENT", "needs option graph_id"),
        ({"graph_id": "g", "graph_version": "x"}, "INVALID_ARGUMENT", "option graph_version"),
        ({"graph_id": "g", "owner": "client:other"}, "NOT_FOUND", "graph 'g' not found"),
        ({"graph_id": "g", "given": '"text"'}, "INVALID_ARGUMENT", "must be a JSON object"),
    ):
        with pytest.raises(RoutingError) as e:
            run(**kwargs)
        assert e.value.code == code and words in str(e.value), (kwargs, e.value)
    # other agent types pass through untouched
    other = graph_options(s, Command("echo", Action.RUN, "x", options={"graph_id": "g"}), "client:me")
    assert other == {"graph_id": "g"}
