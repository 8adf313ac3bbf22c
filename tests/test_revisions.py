"""The per-process cache of governance state kept against a database revision number."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection

from urbanhub.governance import revisions
from urbanhub.governance.revisions import RevisionedCache


class Database:
    """A revision number and a value, with a count of what was read."""

    def __init__(self) -> None:
        self.revision, self.value = 1, "first"
        self.revision_reads = self.loads = 0
        self.during_load: list[RevisionedCache[str]] = []

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        yield None  # type: ignore[misc]  # the callbacks below ignore the connection

    def read_revision(self, conn: Connection) -> int:
        self.revision_reads += 1
        return self.revision

    def load(self, conn: Connection, revision: int) -> str:
        self.loads += 1
        for cache in self.during_load:  # another thread commits a change meanwhile
            self.revision, self.value = self.revision + 1, "changed meanwhile"
            cache.changed()
        self.during_load.clear()
        return f"{self.value}@{revision}"

    def change(self, value: str) -> None:
        self.revision, self.value = self.revision + 1, value


@pytest.fixture
def database() -> Database:
    return Database()


@pytest.fixture
def cache(database: Database) -> RevisionedCache[str]:
    return RevisionedCache(database.connect, database.read_revision, database.load)


def test_the_value_is_loaded_once_and_trusted_for_the_check_interval(
        database: Database, cache: RevisionedCache[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 3600.0)
    assert [cache.get() for _ in range(3)] == ["first@1"] * 3
    assert (database.revision_reads, database.loads) == (1, 1)
    database.change("by another process")
    assert cache.get() == "first@1"  # not checked again yet


def test_after_the_interval_the_revision_is_read_and_the_value_reloaded_only_if_it_moved(
        database: Database, cache: RevisionedCache[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 0.0)
    assert [cache.get() for _ in range(3)] == ["first@1"] * 3
    assert (database.revision_reads, database.loads) == (3, 1)
    database.change("by another process")
    assert cache.get() == "by another process@2"
    assert (database.revision_reads, database.loads) == (4, 2)


def test_a_change_in_this_process_applies_from_the_next_read(
        database: Database, cache: RevisionedCache[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 3600.0)
    cache.get()
    database.change("here")
    cache.changed()
    assert cache.get() == "here@2"


def test_a_read_that_raced_a_change_is_checked_again_at_the_next_read(
        database: Database, cache: RevisionedCache[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revisions, "REVISION_CHECK_S", 3600.0)
    database.during_load.append(cache)
    assert cache.get() == "changed meanwhile@1"  # loaded across the change: stale number
    assert cache.get() == "changed meanwhile@2"
    assert cache.get() == "changed meanwhile@2"
    assert (database.revision_reads, database.loads) == (2, 2)
