"""The one query service: every read of entity data goes through here with its caller.

Routes, exports and subscriptions never touch the store directly, so access policy can be
enforced in exactly this place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from urbanhub.model.caller import Caller
from urbanhub.model.errors import ResourceNotFound
from urbanhub.ngsild.entity import Entity
from urbanhub.store.entities import EntityFilter, EntityStore

EntityPredicate = Callable[[Entity], bool]


@dataclass
class EntityQuery:
    """A consumption query in expanded terms (types and attribute names are IRIs)."""

    types: list[str] | None = None
    ids: list[str] | None = None
    id_pattern: str | None = None
    attrs: list[str] | None = None  # entities must have at least one of these
    bbox: tuple[float, float, float, float] | None = None
    predicates: list[EntityPredicate] = field(default_factory=list)  # q, geo, scope
    limit: int = 20
    offset: int = 0
    count: bool = False
    # Attributes the caller needs in the result; None for all. Entities are still matched
    # on everything (predicates see whole entities), only loading is cut short.
    project: list[str] | None = None

    def store_filter(self) -> EntityFilter:
        return EntityFilter(types=self.types, ids=self.ids, id_pattern=self.id_pattern,
                            with_attrs=self.attrs, bbox=self.bbox)


@dataclass
class QueryResult:
    entities: list[Entity]
    total: int | None


@dataclass
class TypeSummary:
    type: str
    count: int
    attributes: dict[str, set[str]]


class QueryService:
    def __init__(self, store: EntityStore) -> None:
        self.store = store

    def get_entity(self, caller: Caller, entity_id: str) -> Entity:
        with self.store.read() as conn:
            found = self.store.load(conn, [entity_id]).get(entity_id)
        if found is None:
            raise ResourceNotFound(f"Entity {entity_id} does not exist.")
        return found

    def query(self, caller: Caller, query: EntityQuery) -> QueryResult:
        flt = query.store_filter()
        for predicate in query.predicates:
            clause = self.store.prefilter(predicate)
            if clause is not None:
                flt.extra.append(clause)
        with self.store.read() as conn:
            if not query.predicates:
                ids = self.store.select_ids(conn, flt, limit=query.limit, offset=query.offset)
                total = self.store.count(conn, flt) if query.count else None
                loaded = self.store.load(conn, ids, query.project) if ids else {}
                return QueryResult(list(loaded.values()), total)
            # Filters SQL cannot express run here over the SQL-prefiltered candidates.
            matched: list[Entity] = []
            seen = 0
            for chunk in self.store.iter_ids(conn, flt):
                for entity in self.store.load(conn, chunk).values():
                    if all(predicate(entity) for predicate in query.predicates):
                        if query.offset <= seen < query.offset + query.limit:
                            matched.append(entity)
                        seen += 1
                if seen >= query.offset + query.limit and not query.count:
                    break
            return QueryResult(matched, seen if query.count else None)

    def types(self, caller: Caller) -> list[TypeSummary]:
        with self.store.read() as conn:
            counts = self.store.type_names(conn)
            attrs = self.store.attribute_names_by_type(conn)
        return [TypeSummary(name, count, attrs.get(name, {})) for name, count in counts]

    def attributes(self, caller: Caller) -> dict[str, dict[str, object]]:
        """attribute IRI -> {"types": entity types having it, "attributeTypes": kinds}."""
        summary: dict[str, dict[str, object]] = {}
        for type_summary in self.types(caller):
            for name, kinds in type_summary.attributes.items():
                entry = summary.setdefault(name, {"types": set(), "attributeTypes": set()})
                entry["types"].add(type_summary.type)  # type: ignore[attr-defined]
                entry["attributeTypes"].update(kinds)  # type: ignore[attr-defined]
        return summary
