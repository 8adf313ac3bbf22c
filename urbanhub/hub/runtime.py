"""The hub's wiring: one object that owns the engine, the store and the services."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Engine

from urbanhub.config import Settings
from urbanhub.hub.entities import EntityService
from urbanhub.hub.query import QueryService
from urbanhub.ngsild.context import ContextLoader, ContextResolver
from urbanhub.store.db import make_engine, upgrade
from urbanhub.store.entities import EntityStore


@dataclass
class Metrics:
    """Process-wide counters shown by /health (thread-safe increments)."""

    counters: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counters)


class Hub:
    """Everything a running hub needs, created once per process (or per test)."""

    def __init__(self, settings: Settings, engine: Engine | None = None,
                 loader: ContextLoader | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.database_url)
        self.store = EntityStore(self.engine)
        self.contexts = ContextResolver(loader or ContextLoader(settings.context_fetch_timeout_s))
        self.entities = EntityService(self.store)
        self.queries = QueryService(self.store)
        self.metrics = Metrics()

    def upgrade_schema(self) -> None:
        upgrade(self.engine)
        self.store.detect_features()

    def close(self) -> None:
        self.engine.dispose()
