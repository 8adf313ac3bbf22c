"""The one query service: every read of entity data goes through here with its caller.

Routes, exports and subscriptions never touch the store directly, so access policy can be
enforced in exactly this place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, and_, or_
from sqlalchemy.sql.elements import ColumnElement

from urbanhub.governance.enforcement import (
    AccessGuard,
    ConsentSource,
    DatasetView,
    NoConsents,
    ReadScope,
    reshape,
)
from urbanhub.model.caller import Caller
from urbanhub.ngsild.entity import Entity
from urbanhub.store.entities import EntityFilter, EntityStore
from urbanhub.store.tables import entities

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
    """Entities as the caller may see them; ``views`` holds, per entity whose dataset's
    view drops or pseudonymises attributes, that view (the temporal API applies it to
    history too)."""

    entities: list[Entity]
    total: int | None
    views: dict[str, DatasetView] = field(default_factory=dict)


@dataclass
class TypeSummary:
    type: str
    count: int
    attributes: dict[str, set[str]]


class QueryService:
    """Reads of current state; each asks the access guard first, so what the caller may
    not see never leaves: not in results, counts, type or attribute listings."""

    def __init__(self, store: EntityStore, guard: AccessGuard,
                 consents: ConsentSource | None = None) -> None:
        self.store = store
        self.guard = guard
        self.consents = consents or NoConsents()

    def get_entity(self, caller: Caller, entity_id: str) -> Entity:
        found = self.lookup(caller, [entity_id])
        if not found.entities:
            raise self.guard.entity_not_found(entity_id)
        return found.entities[0]

    def lookup(self, caller: Caller, ids: Sequence[str]) -> QueryResult:
        """The entities of ``ids`` the caller may see (others are simply absent)."""
        return self.lookup_in(self.guard.scope(caller), ids)

    def lookup_in(self, scope: ReadScope, ids: Sequence[str]) -> QueryResult:
        """``lookup`` within a scope the caller already has: one decision (and one audit
        entry) for a read that also needs the scope itself."""
        return self._load(scope, ids)

    def query(self, caller: Caller, query: EntityQuery, *,
              selected: Callable[[list[str]], object] | None = None) -> QueryResult:
        """The page of entities ``query`` selects, as the caller may see them.

        ``selected`` hears the page's ids (when SQL alone selects them) before they are
        loaded, so a caller can start reading more about them meanwhile.
        """
        scope = self.guard.scope(caller)
        flt = query.store_filter()
        flt.datasets = scope.dataset_ids
        if flt.datasets == []:
            return QueryResult([], 0 if query.count else None)
        flt.extra.extend(self._consent_clauses(scope))
        predicates = list(query.predicates)
        if query.attrs is not None and scope.reshapes:
            # A dropped attribute must not make its entity match: check on what is shown.
            predicates.append(_has_any(query.attrs))
        for predicate in predicates:
            clause = self.store.prefilter(predicate)
            if clause is not None:
                flt.extra.append(clause)
        with self.store.read() as conn:
            if not predicates:
                ids = self.store.select_ids(conn, flt, limit=query.limit, offset=query.offset)
                if selected is not None and ids:
                    selected(ids)
                total = self.store.count(conn, flt) if query.count else None
                loaded = self._load(scope, ids, query.project, conn) if ids else QueryResult(
                    [], None)
                return QueryResult(loaded.entities, total, loaded.views)
            # Filters SQL cannot express run here over the SQL-prefiltered candidates, on
            # the entities as the caller sees them (dropped and pseudonymised attributes).
            matched: list[Entity] = []
            views: dict[str, DatasetView] = {}
            seen = 0
            for chunk in self.store.iter_ids(conn, flt):
                loaded = self._load(scope, chunk, None, conn)
                for entity in loaded.entities:
                    if all(predicate(entity) for predicate in predicates):
                        if query.offset <= seen < query.offset + query.limit:
                            matched.append(entity)
                            if entity["id"] in loaded.views:
                                views[entity["id"]] = loaded.views[entity["id"]]
                        seen += 1
                if seen >= query.offset + query.limit and not query.count:
                    break
            return QueryResult(matched, seen if query.count else None, views)

    def types(self, caller: Caller) -> list[TypeSummary]:
        scope = self.guard.scope(caller)
        datasets = scope.dataset_ids
        if datasets == []:
            return []
        with self.store.read() as conn:
            counts = self.store.type_counts(conn, datasets)
            kinds = self.store.attribute_kinds(conn, datasets)
        totals: dict[str, int] = {}
        for _, name, count in counts:
            totals[name] = totals.get(name, 0) + count
        attrs: dict[str, dict[str, set[str]]] = {name: {} for name in totals}
        for (dataset_id, name), seen in kinds.items():
            hidden = scope.hidden(dataset_id)
            for attribute, found in seen.items():
                if attribute not in hidden:
                    attrs[name].setdefault(attribute, set()).update(found)
        return [TypeSummary(name, totals[name], attrs[name]) for name in sorted(totals)]

    def attributes(self, caller: Caller) -> dict[str, dict[str, object]]:
        """attribute IRI -> {"types": entity types having it, "attributeTypes": kinds}."""
        summary: dict[str, dict[str, object]] = {}
        for type_summary in self.types(caller):
            for name, kinds in type_summary.attributes.items():
                entry = summary.setdefault(name, {"types": set(), "attributeTypes": set()})
                entry["types"].add(type_summary.type)  # type: ignore[attr-defined]
                entry["attributeTypes"].update(kinds)  # type: ignore[attr-defined]
        return summary

    def _load(self, scope: ReadScope, ids: Sequence[str], names: Sequence[str] | None = None,
              conn: Connection | None = None) -> QueryResult:
        """Entities of ``ids`` the scope lets the caller see, reshaped by their views."""
        if conn is None:
            with self.store.read() as own:
                return self._load(scope, ids, names, own)
        datasets: dict[str, str] = {}
        loaded = self.store.load(conn, ids, names, datasets)
        if scope.unrestricted:
            return QueryResult(list(loaded.values()), None)
        allowed = self._consenting(conn, scope, loaded)
        shown: list[Entity] = []
        views: dict[str, DatasetView] = {}
        for entity_id, entity in loaded.items():
            view = scope.views.get(datasets[entity_id])
            if view is None or (allowed is not None and entity_id not in allowed
                                and view.consent_purpose is not None):
                continue
            shown.append(reshape(entity, view, self.guard.pseudonymiser))
            if view.reshapes:
                views[entity_id] = view
        return QueryResult(shown, None, views)

    def _consent_clauses(self, scope: ReadScope) -> list[ColumnElement[bool]]:
        """Entities of consent-based datasets only where their subject consented."""
        filters = scope.consent_filters()
        if not filters:
            return []
        clauses = []
        for dataset_id, subject_attribute, purpose in filters:
            clauses.append(or_(entities.c.dataset_id != dataset_id, entities.c.id.in_(
                self.consents.consenting_entities(purpose, subject_attribute,
                                                  self.guard.clock()))))
        return [and_(*clauses)]

    def _consenting(self, conn: Connection, scope: ReadScope,
                    loaded: dict[str, Entity]) -> set[str] | None:
        """Of ``loaded``, the entities whose subject consented (None: no dataset needs it)."""
        if not scope.consent_filters() or not loaded:
            return None
        flt = EntityFilter(ids=list(loaded), extra=self._consent_clauses(scope))
        return set(self.store.select_ids(conn, flt))


def _has_any(names: Sequence[str]) -> EntityPredicate:
    wanted = frozenset(names)
    return lambda entity: not wanted.isdisjoint(entity["attrs"])
