"""Governance state that every read consults, cached per process against a revision number.

The catalog and the grants register are asked on every read, yet change a few times a day.
Each keeps a revision number in the database, bumped by every change; a process rebuilds
its copy when the number moves and reads the number at most every ``REVISION_CHECK_S``.
A change made through this process applies from the next read (``changed``); one made by
another process applies there within ``REVISION_CHECK_S``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import Connection

#: How often a process checks whether another one changed the catalog or the grants, in s.
REVISION_CHECK_S = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    revision: int
    value: T
    checked_at: float


class RevisionedCache(Generic[T]):
    """One value rebuilt by ``load`` whenever ``revision`` reads a new number.

    The entry is replaced whole, never changed in place, so threads read it without a lock.
    An entry is trusted only if its check started after the last in-process change: a read
    that raced a change (it saw the old revision just before the change committed) is not
    kept for a whole interval.
    """

    def __init__(self, connect: Callable[[], AbstractContextManager[Connection]],
                 revision: Callable[[Connection], int],
                 load: Callable[[Connection, int], T]) -> None:
        self._connect = connect
        self._revision = revision
        self._load = load
        self._entry: _Entry[T] | None = None
        self._changed_at = float("-inf")

    def get(self) -> T:
        entry = self._entry
        if entry is not None and entry.checked_at > self._changed_at and (
                time.monotonic() - entry.checked_at < REVISION_CHECK_S):
            return entry.value
        started = time.monotonic()
        with self._connect() as conn:
            revision = self._revision(conn)
            if entry is None or entry.revision != revision:
                # Revision first, value second: the value is at least as new as the number,
                # so a change committed in between is re-read at the next check, never missed.
                entry = _Entry(revision, self._load(conn, revision), started)
            else:
                entry = _Entry(revision, entry.value, started)
        self._entry = entry
        return entry.value

    def changed(self) -> None:
        """This process committed a change: the next ``get`` checks the revision."""
        self._changed_at = time.monotonic()
