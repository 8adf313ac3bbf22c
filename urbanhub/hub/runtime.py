"""The hub's wiring: one object that owns the engine, the store and the services."""

from __future__ import annotations

from sqlalchemy import Engine

from urbanhub.config import Settings
from urbanhub.hub.entities import EntityService
from urbanhub.hub.metrics import Metrics
from urbanhub.hub.query import QueryService
from urbanhub.ingest.pipeline import IngestPipeline
from urbanhub.ngsild.context import ContextLoader, ContextResolver
from urbanhub.sdm.validate import validate_entity
from urbanhub.store.db import make_engine, upgrade
from urbanhub.store.entities import EntityStore


class Hub:
    """Everything a running hub needs, created once per process (or per test)."""

    def __init__(self, settings: Settings, engine: Engine | None = None,
                 loader: ContextLoader | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.database_url)
        self.store = EntityStore(self.engine)
        self.contexts = ContextResolver(loader or ContextLoader(settings.context_fetch_timeout_s))
        self.entities = EntityService(self.store, validator=validate_entity)
        self.queries = QueryService(self.store)
        self.metrics = Metrics()
        self.ingest = IngestPipeline(self.store, self.metrics)

    def upgrade_schema(self) -> None:
        upgrade(self.engine)
        self.store.detect_features()

    def close(self) -> None:
        self.engine.dispose()
