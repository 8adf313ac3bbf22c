"""Dead-letter store: every message the hub could not take, with its raw bytes and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from urbanhub.store.tables import dead_letters


@dataclass(frozen=True)
class DeadLetter:
    source: str  # "mqtt", "http", "file"
    reason: str
    payload: bytes
    topic: str | None = None


def add_dead_letters(conn: Connection, letters: Sequence[DeadLetter], now: datetime) -> None:
    if letters:
        conn.execute(dead_letters.insert(), [
            {"received_at": now, "source": d.source, "topic": d.topic, "reason": d.reason,
             "payload": d.payload} for d in letters])


def list_dead_letters(conn: Connection, *, limit: int = 100, offset: int = 0,
                      source: str | None = None) -> list[dict[str, object]]:
    query = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit).offset(offset)
    if source is not None:
        query = query.where(dead_letters.c.source == source)
    return [dict(row._mapping) for row in conn.execute(query)]


def count_dead_letters(conn: Connection) -> int:
    return int(conn.scalar(select(func.count()).select_from(dead_letters)) or 0)

