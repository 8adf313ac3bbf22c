"""Repository for the audit trail: chained appends under one writer, streamed verification.

Reading the head and inserting after it must happen under one lock, or two writers chain
onto the same head and fork the trail. PostgreSQL takes a transaction-level advisory lock;
SQLite takes its database write lock up front with ``BEGIN IMMEDIATE`` (which also holds
across processes) and, inside a process, queues writers on a mutex instead of letting them
spin in the busy handler. The primary key on ``seq`` rejects a fork should the lock ever
be bypassed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.engine import Row

from urbanhub.governance.audit import (
    AuditEntry,
    AuditEvent,
    ChainHead,
    VerifyReport,
    canonical_json,
    chain,
    verify_chain,
)
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store.db import lock_sqlite_database
from urbanhub.store.tables import audit_log

#: Key of the PostgreSQL advisory lock serialising audit writers (ASCII "urbhaudt").
ADVISORY_LOCK_KEY = 0x7572_6268_6175_6474


def _entry(row: Row[Any]) -> AuditEntry:
    return AuditEntry(row.seq, row.at, row.actor, row.action, row.target,
                      json.loads(row.details), row.prev_hash, row.hash)


class AuditLog:
    """The append-only, hash-chained audit trail of one database."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = utcnow,
                 chunk_size: int = 5000) -> None:
        self.engine = engine
        self.clock = clock
        self.chunk_size = chunk_size
        self._sqlite = engine.dialect.name == "sqlite"
        self._sqlite_writer = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction holding the chain's lock until it commits or rolls back.

        Governance code writes its own rows (a grant, a disposal) and their audit entries
        (``append(events, conn)``) in one of these, so both are kept or neither is. Other
        audit writers wait for it, so keep it short.
        """
        if self._sqlite:
            with self._sqlite_writer, self.engine.begin() as connection:
                self._lock(connection)
                yield connection
        else:
            with self.engine.begin() as connection:
                self._lock(connection)
                yield connection

    def append(self, events: Sequence[AuditEvent],
               connection: Connection | None = None) -> list[AuditEntry]:
        """Chain ``events`` in order after the head and store them in one transaction.

        With ``connection`` the entries join that transaction instead: one from
        ``transaction()``, or on SQLite one that has already written (and so holds the
        database write lock).
        """
        if not events:
            return []
        if connection is None:
            with self.transaction() as own:
                return self._append(own, events)
        self._lock(connection)
        return self._append(connection, events)

    def head(self) -> AuditEntry | None:
        """The last entry, or None while the trail is empty."""
        with self.engine.connect() as connection:
            return self._head(connection)

    def by_target(self, target: str, limit: int, action: str | None = None) -> list[AuditEntry]:
        """The latest entries about ``target`` (of one ``action`` when given), newest first."""
        query = select(audit_log).where(audit_log.c.target == target)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        with self.engine.connect() as connection:
            return [_entry(row) for row in connection.execute(
                query.order_by(audit_log.c.seq.desc()).limit(limit))]

    def between(self, first: int, end: int) -> list[AuditEntry]:
        """Entries ``first <= seq < end``, in order."""
        with self.engine.connect() as connection:
            return [_entry(row) for row in connection.execute(
                select(audit_log).where(audit_log.c.seq >= first, audit_log.c.seq < end)
                .order_by(audit_log.c.seq))]

    def export_head(self) -> dict[str, Any]:
        """Sequence number, hash and time of the head, to anchor outside the hub."""
        return ChainHead.of(self.head()).to_json()

    def verify(self, anchor: ChainHead | None = None,
               progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Stream the whole chain in sequence order and check every link.

        ``progress`` is called with the number of entries read, a chunk at a time.
        """
        with self.engine.connect() as connection:
            return verify_chain(self._stream(connection, progress), anchor)

    # --- internals -------------------------------------------------------------------

    def _lock(self, connection: Connection) -> None:
        if not self._sqlite:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        else:  # the head must be read under the lock
            lock_sqlite_database(connection)

    def _head(self, connection: Connection) -> AuditEntry | None:
        row = connection.execute(
            select(audit_log).order_by(audit_log.c.seq.desc()).limit(1)).first()
        return None if row is None else _entry(row)

    def _append(self, connection: Connection,
                events: Sequence[AuditEvent]) -> list[AuditEntry]:
        entries = chain(ChainHead.of(self._head(connection)), events, self.clock())
        connection.execute(insert(audit_log), [
            {"seq": e.seq, "at": e.at, "actor": e.actor, "action": e.action, "target": e.target,
             "details": canonical_json(e.details), "prev_hash": e.prev_hash, "hash": e.hash}
            for e in entries])
        return entries

    def _stream(self, connection: Connection,
                progress: Callable[[int], None] | None) -> Iterator[AuditEntry]:
        # One query (a server-side cursor on PostgreSQL), not keyset pages: a duplicated
        # sequence number must show up rather than be skipped by "seq > last".
        result = connection.execution_options(yield_per=self.chunk_size).execute(
            select(audit_log).order_by(audit_log.c.seq))
        for rows in result.partitions():
            if progress is not None:
                progress(len(rows))
            for row in rows:
                yield _entry(row)
