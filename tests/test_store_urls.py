"""Store URLs: which backend `open_store` picks, and what it refuses (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchgpt.errors import StoreError
from orchgpt.store import MemoryStore, open_store
from orchgpt.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("form", ["sqlite:///{p}", "sqlite:{p}", "{p}"])
def test_sqlite_urls_and_plain_paths(tmp_path: Path, form: str) -> None:
    db = tmp_path / "d" / "orchgpt.db"
    s = open_store(form.format(p=db))
    try:
        assert isinstance(s, SqliteStore) and s.path == db and db.exists()
    finally:
        s.close()


def test_sqlite_url_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:rel/x.db", "sqlite:///rel/x.db", "rel/x.db"):
        s = open_store(url)
        try:
            assert s.path == tmp_path / "rel" / "x.db"  # type: ignore[attr-defined]
        finally:
            s.close()


@pytest.mark.parametrize("url", ["memory", "memory:", ":memory:"])
def test_memory(url: str) -> None:
    assert isinstance(open_store(url), MemoryStore)


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "redis://localhost:6379", "http://x/y", "postgresq://u@h/db", "sqlite://host/x.db"]
)
def test_unknown_scheme_is_refused_listing_the_supported_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as e:
        open_store(url)
    msg = str(e.value)
    for scheme in ("sqlite:///PATH", "postgresql://", "memory:"):
        assert scheme in msg
    assert list(tmp_path.iterdir()) == []  # nothing created (no "mysql:" directory)


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:1/db", "postgres://nobody@127.0.0.1:1/db"])
def test_postgres_url_is_not_taken_for_a_sqlite_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """The old code made a directory named "postgresql:" and a SQLite file in it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError) as e:  # port 1: nothing listens there
        open_store(url)
    assert "127.0.0.1:1" in str(e.value)
    assert list(tmp_path.iterdir()) == []
