"""Repository for entities, their current attributes, history and hourly rollups.

Bulk paths differ per backend on purpose: PostgreSQL gets COPY into a staging table and
one statement that inserts new history rows and folds exactly those into the rollups
(replays change nothing); SQLite gets executemany under one writer lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Text,
    and_,
    cast,
    delete,
    event,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from urbanhub.ngsild.entity import DEFAULT_DATASET, Entity, Instance
from urbanhub.ngsild.geo import GeoPredicate
from urbanhub.ngsild.q import AttrHint, HintGroup, QPredicate
from urbanhub.ngsild.timeutil import parse_datetime
from urbanhub.store.db import id_sets, lock_sqlite_database, make_engine
from urbanhub.store.tables import (
    attributes,
    entities,
    entity_tombstones,
    entity_types,
    history,
)

LOCATION = "https://uri.etsi.org/ngsi-ld/location"
_POSTGIS_RELATIONS = {"within": "ST_Within", "contains": "ST_Contains",
                      "intersects": "ST_Intersects", "disjoint": "ST_Disjoint",
                      "equals": "ST_Equals", "overlaps": "ST_Overlaps"}
#: Widening of PostGIS distance tests so they stay a superset of the Python predicate.
_DISTANCE_SLACK = 0.01
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"

#: Gives an entity its catalog dataset from its id and expanded types, inside the write
#: transaction (``urbanhub.governance.catalog.RuleCache``).
DatasetAssigner = Callable[[Connection, str, Sequence[str]], str]


@dataclass(frozen=True)
class HistoryRow:
    """One attribute instance at one time: the unit of history and of ingest."""

    entity_id: str
    name: str
    dataset_id: str
    observed_at: datetime
    instance: Instance
    value_num: float | None = None


@dataclass(frozen=True)
class Tombstone:
    """A deleted entity whose history may remain: the dataset that history belongs to."""

    entity_id: str
    dataset_id: str
    types: list[str]
    deleted_at: datetime


@dataclass
class EntityFilter:
    """What SQL can decide about which entities match; the rest is done in Python."""

    types: list[str] | None = None
    ids: list[str] | None = None
    id_pattern: str | None = None
    with_attrs: list[str] | None = None
    bbox: tuple[float, float, float, float] | None = None  # min_lon, min_lat, max_lon, max_lat
    datasets: list[str] | None = None  # catalog datasets the caller may see; None: all
    extra: list[ColumnElement[bool]] = field(default_factory=list)


def numeric_value(instance: Instance) -> float | None:
    value = instance.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def instance_time(instance: Instance, fallback: datetime) -> datetime:
    observed = instance.get("observedAt")
    return parse_datetime(observed) if observed else fallback


def geometry_bbox(geometry: dict[str, Any]) -> tuple[float, float, float, float] | None:
    xs: list[float] = []
    ys: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, list | tuple) and node and isinstance(node[0], int | float):
            xs.append(float(node[0]))
            ys.append(float(node[1]))
        elif isinstance(node, list | tuple):
            for child in node:
                walk(child)

    walk(geometry.get("coordinates"))
    if not xs:
        return None
    return min(xs), min(ys), max(xs), max(ys)


class EntityStore:
    """``assign_dataset`` places entities in catalog datasets when they are created or their
    types change; without it they keep the column default (the uncatalogued dataset)."""

    def __init__(self, engine: Engine, assign_dataset: DatasetAssigner | None = None) -> None:
        self.engine = engine
        self.assign_dataset = assign_dataset
        self.dialect = engine.dialect.name
        self._sqlite_writer = threading.Lock()
        self._partitions: set[tuple[int, int]] = set()
        self.postgis = False
        if self.dialect == "sqlite":
            event.listen(engine, "connect", _register_regexp)
        self._entity_rows = select(
            entities.c.id, entities.c.types, entities.c.scope, entities.c.dataset_id,
            self._iso_text(entities.c.created_at).label("created_at"),
            self._iso_text(entities.c.modified_at).label("modified_at"))
        # PostgreSQL reads go through an autocommit engine (see make_engine).
        self._reads = engine if self.dialect == "sqlite" else make_engine(
            engine.url.render_as_string(hide_password=False), autocommit=True)

    def close(self) -> None:
        if self._reads is not self.engine:
            self._reads.dispose()

    def detect_features(self) -> None:
        """Find optional backend features (PostGIS) once the schema exists."""
        if self.dialect == "postgresql":
            with self.engine.connect() as connection:
                self.postgis = connection.exec_driver_sql(
                    "SELECT 1 FROM information_schema.columns WHERE table_name = 'entities' "
                    "AND column_name = 'geom'").first() is not None

    # --- transactions ----------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; on SQLite, writers queue in-process instead of busy-waiting,
        and the transaction takes the database write lock before it reads: a deferred one
        that read before another connection (the audit trail's) committed could not
        upgrade to writing and would fail at once with "database is locked"."""
        if self.dialect == "sqlite":
            with self._sqlite_writer, self.engine.begin() as connection:
                lock_sqlite_database(connection)
                yield connection
        else:
            with self.engine.begin() as connection:
                yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._reads.connect() as connection:
            yield connection

    # --- reads -----------------------------------------------------------------------

    def _where(self, flt: EntityFilter) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = []
        if flt.types is not None:
            clauses.append(entities.c.id.in_(
                select(entity_types.c.entity_id).where(entity_types.c.type.in_(flt.types))))
        if flt.ids is not None:
            clauses.append(entities.c.id.in_(flt.ids))
        if flt.id_pattern is not None:
            clauses.append(entities.c.id.regexp_match(flt.id_pattern))
        if flt.with_attrs is not None:
            clauses.append(entities.c.id.in_(
                select(attributes.c.entity_id).where(attributes.c.name.in_(flt.with_attrs))))
        if flt.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = flt.bbox
            clauses.extend([entities.c.max_lon >= min_lon, entities.c.min_lon <= max_lon,
                            entities.c.max_lat >= min_lat, entities.c.min_lat <= max_lat])
        if flt.datasets is not None:
            clauses.append(entities.c.dataset_id.in_(flt.datasets))
        clauses.extend(flt.extra)
        return clauses

    def prefilter(self, predicate: object) -> ColumnElement[bool] | None:
        """SQL that keeps at least every entity a q or geo predicate accepts, or None.

        The predicate still runs on what SQL returns, so a prefilter only has to be a
        superset; it saves loading entities that cannot match.
        """
        if isinstance(predicate, QPredicate) and predicate.hint is not None:
            return self._hint_clause(predicate.hint)
        if isinstance(predicate, GeoPredicate) and self.postgis and (
                predicate.geoproperty == LOCATION):
            return self._postgis_clause(predicate)
        return None

    def _hint_clause(self, hint: AttrHint | HintGroup) -> ColumnElement[bool]:
        if isinstance(hint, HintGroup):
            parts = [self._hint_clause(part) for part in hint.parts]
            return or_(*parts) if hint.any_of else and_(*parts)
        row: list[ColumnElement[bool]] = [attributes.c.name == hint.name]
        bounds: list[ColumnElement[bool]] = []
        if hint.low is not None:
            bounds.append(attributes.c.value_num >= hint.low)
        if hint.high is not None:
            bounds.append(attributes.c.value_num <= hint.high)
        if hint.values is not None:
            bounds.append(attributes.c.value_num.in_(hint.values))
        if bounds:
            # Rows without a number (lists, strings, JSON) are left to the Python check.
            row.append(or_(attributes.c.value_num.is_(None), and_(*bounds)))
        return entities.c.id.in_(select(attributes.c.entity_id).where(*row))

    def _postgis_clause(self, predicate: GeoPredicate) -> ColumnElement[bool]:
        geom: ColumnElement[Any] = literal_column("entities.geom")
        reference = func.ST_SetSRID(func.ST_GeomFromGeoJSON(
            cast(literal(orjson.dumps(predicate.reference).decode()), Text)), 4326)
        if predicate.relation == "near":
            metres = predicate.distance or 0.0
            # Sphere (use_spheroid false), as the Python predicate measures.
            if predicate.min_distance:
                inner = max(metres * (1 - _DISTANCE_SLACK) - 1, 0.0)
                return not_(func.ST_DWithin(func.geography(geom), func.geography(reference),
                                            inner, False, type_=Boolean))
            return func.ST_DWithin(func.geography(geom), func.geography(reference),
                                   metres * (1 + _DISTANCE_SLACK) + 1, False, type_=Boolean)
        relate = getattr(func, _POSTGIS_RELATIONS[predicate.relation])
        clause: ColumnElement[bool] = relate(geom, reference, type_=Boolean)
        return clause

    def select_ids(self, conn: Connection, flt: EntityFilter, *, limit: int | None = None,
                   offset: int = 0) -> list[str]:
        query = select(entities.c.id).where(*self._where(flt)).order_by(entities.c.id)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        return list(conn.scalars(query))

    def iter_ids(self, conn: Connection, flt: EntityFilter, chunk: int = 1000) -> Iterator[
            list[str]]:
        """Matching ids in id order, a chunk at a time (keyset pagination, no OFFSET scans)."""
        last: str | None = None
        while True:
            query = select(entities.c.id).where(*self._where(flt))
            if last is not None:
                query = query.where(entities.c.id > last)
            ids = list(conn.scalars(query.order_by(entities.c.id).limit(chunk)))
            if not ids:
                return
            yield ids
            last = ids[-1]

    def count(self, conn: Connection, flt: EntityFilter) -> int:
        return int(conn.scalar(select(func.count()).select_from(entities).where(
            *self._where(flt))) or 0)

    def dataset_of(self, conn: Connection, entity_id: str) -> str | None:
        """The catalog dataset of an entity; None when there is no such entity."""
        found: str | None = conn.scalar(select(entities.c.dataset_id).where(
            entities.c.id == entity_id))
        return found

    def exists(self, conn: Connection, entity_id: str) -> bool:
        return conn.scalar(select(entities.c.id).where(entities.c.id == entity_id)) is not None

    def existing(self, conn: Connection, ids: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for among in id_sets(self.dialect, entities.c.id, list(set(ids))):
            found.update(conn.scalars(select(entities.c.id).where(among)))
        return found

    def _iso_text(self, column: ColumnElement[Any]) -> ColumnElement[str]:
        """A UTC time column as ``format_datetime`` writes it, formatted by the database:
        a page of entities spent a fifth of its load time making and formatting datetimes.
        Both truncate to milliseconds; SQLite keeps UTC as ``YYYY-MM-DD HH:MM:SS.ffffff``."""
        if self.dialect == "postgresql":
            return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        return (func.substr(column, 1, 10, type_=Text) + "T"
                + func.substr(column, 12, 12, type_=Text) + "Z")

    def load(self, conn: Connection, ids: Sequence[str], names: Sequence[str] | None = None,
             datasets: dict[str, str] | None = None) -> dict[str, Entity]:
        """Entities by id with their current attributes (only ``names`` when given), in the
        order of ``ids``; ``datasets``, when given, is filled with each entity's dataset."""
        loaded: dict[str, Entity] = {}
        # One query, entity rows joined to their attributes: a round trip fewer than two
        # queries (a fifth of a single-entity GET's), and one snapshot.
        joined = attributes.c.entity_id == entities.c.id
        if names is not None:
            joined &= attributes.c.name.in_(list(names))
        rows = self._entity_rows.add_columns(
            attributes.c.name, attributes.c.dataset_id.label("attribute_dataset"),
            attributes.c.instance).select_from(entities.outerjoin(attributes, joined))
        # Rows as plain tuples, fetched at once: attribute access on SQLAlchemy rows and
        # fetching them one by one took half the time of a 1,000-entity page.
        for of_entity in id_sets(self.dialect, entities.c.id, ids):
            for (entity_id, types, scope, dataset_id, created_at, modified_at, name,
                 attribute_dataset, instance) in conn.execute(rows.where(of_entity)).all():
                entity = loaded.get(entity_id)
                if entity is None:
                    entity = loaded[entity_id] = {
                        "id": entity_id, "type": orjson.loads(types),
                        "createdAt": created_at, "modifiedAt": modified_at, "attrs": {}}
                    if scope:
                        entity["scope"] = orjson.loads(scope)
                    if datasets is not None:
                        datasets[entity_id] = dataset_id
                if name is not None:
                    entity["attrs"].setdefault(name, {})[attribute_dataset] = (
                        orjson.loads(instance))
        return {i: loaded[i] for i in ids if i in loaded}

    def type_counts(self, conn: Connection, datasets: Sequence[str] | None = None,
                    ) -> list[tuple[str, str, int]]:
        """(dataset, type IRI, entities) of the given datasets (None: all)."""
        query = select(entities.c.dataset_id, entity_types.c.type, func.count()).join(
            entities, entities.c.id == entity_types.c.entity_id).group_by(
            entities.c.dataset_id, entity_types.c.type)
        if datasets is not None:
            query = query.where(entities.c.dataset_id.in_(list(datasets)))
        return [(row[0], row[1], int(row[2])) for row in conn.execute(query)]

    def attribute_kinds(self, conn: Connection, datasets: Sequence[str] | None = None,
                        ) -> dict[tuple[str, str], dict[str, set[str]]]:
        """(dataset, type IRI) -> attribute IRI -> attribute types seen (Property, …)."""
        query = select(entities.c.dataset_id, entity_types.c.type, attributes.c.name,
                       attributes.c.instance).join(
            attributes, attributes.c.entity_id == entity_types.c.entity_id).join(
            entities, entities.c.id == entity_types.c.entity_id)
        if datasets is not None:
            query = query.where(entities.c.dataset_id.in_(list(datasets)))
        summary: dict[tuple[str, str], dict[str, set[str]]] = {}
        for row in conn.execute(query):
            kind = orjson.loads(row.instance).get("type", "Property")
            summary.setdefault((row.dataset_id, row.type), {}).setdefault(
                row.name, set()).add(kind)
        return summary

    # --- writes ----------------------------------------------------------------------

    def insert_entity(self, conn: Connection, entity: Entity, now: datetime) -> None:
        row = {"id": entity["id"], "types": orjson.dumps(entity["type"]).decode(),
               "scope": orjson.dumps(entity["scope"]).decode() if entity.get("scope") else None,
               "created_at": now, "modified_at": now}
        # History of an earlier entity of this id now belongs to the new one.
        conn.execute(delete(entity_tombstones).where(
            entity_tombstones.c.entity_id == entity["id"]))
        conn.execute(entities.insert().values(**row, **self._bbox_columns(entity),
                                              **self._dataset_column(conn, entity)))
        conn.execute(entity_types.insert(), [{"entity_id": entity["id"], "type": t}
                                             for t in dict.fromkeys(entity["type"])])
        self._sync_geometry(conn, entity)
        self.put_attributes(conn, entity["id"], entity["attrs"], now)

    def update_entity_header(self, conn: Connection, entity: Entity, now: datetime) -> None:
        """Store a changed type list, scope, location box and modification time."""
        conn.execute(update(entities).where(entities.c.id == entity["id"]).values(
            types=orjson.dumps(entity["type"]).decode(),
            scope=orjson.dumps(entity["scope"]).decode() if entity.get("scope") else None,
            modified_at=now, **self._bbox_columns(entity), **self._dataset_column(conn, entity)))
        conn.execute(delete(entity_types).where(entity_types.c.entity_id == entity["id"]))
        conn.execute(entity_types.insert(), [{"entity_id": entity["id"], "type": t}
                                             for t in dict.fromkeys(entity["type"])])
        self._sync_geometry(conn, entity)

    def touch(self, conn: Connection, entity_ids: Iterable[str], now: datetime) -> None:
        for among in id_sets(self.dialect, entities.c.id, list(entity_ids)):
            conn.execute(update(entities).where(among).values(modified_at=now))

    def delete_entity(self, conn: Connection, entity_id: str, now: datetime) -> bool:
        """Delete the entity's current state and leave a tombstone for its history;
        False when there is no such entity."""
        found = conn.execute(select(entities.c.dataset_id, entities.c.types).where(
            entities.c.id == entity_id)).first()
        if found is None:
            return False
        conn.execute(delete(entity_tombstones).where(entity_tombstones.c.entity_id == entity_id))
        conn.execute(entity_tombstones.insert().values(
            entity_id=entity_id, dataset_id=found.dataset_id, types=found.types, deleted_at=now))
        conn.execute(delete(attributes).where(attributes.c.entity_id == entity_id))
        conn.execute(delete(entity_types).where(entity_types.c.entity_id == entity_id))
        conn.execute(delete(entities).where(entities.c.id == entity_id))
        return True

    def tombstone(self, conn: Connection, entity_id: str) -> Tombstone | None:
        """What is known of a deleted entity whose history may remain."""
        row = conn.execute(select(entity_tombstones).where(
            entity_tombstones.c.entity_id == entity_id)).first()
        if row is None:
            return None
        return Tombstone(row.entity_id, row.dataset_id, orjson.loads(row.types), row.deleted_at)

    def put_attributes(self, conn: Connection, entity_id: str,
                       attrs: dict[str, dict[str, Instance]], now: datetime) -> None:
        """Write attribute instances as current state and append each to history."""
        rows: list[HistoryRow] = []
        for name, instances in attrs.items():
            for dataset_id, instance in instances.items():
                rows.append(HistoryRow(entity_id, name, dataset_id, instance_time(instance, now),
                                       instance, numeric_value(instance)))
        if not rows:
            return
        self._set_attributes(conn, rows)
        self.append_history(conn, rows, now)

    def delete_attribute(self, conn: Connection, entity_id: str, name: str,
                         dataset_id: str | None) -> int:
        """Delete one instance (``dataset_id``) or all instances (None) of an attribute."""
        query = delete(attributes).where(attributes.c.entity_id == entity_id,
                                         attributes.c.name == name)
        if dataset_id is not None:
            query = query.where(attributes.c.dataset_id == dataset_id)
        return conn.execute(query).rowcount

    def replace_all_attributes(self, conn: Connection, entity: Entity, now: datetime) -> None:
        conn.execute(delete(attributes).where(attributes.c.entity_id == entity["id"]))
        self.put_attributes(conn, entity["id"], entity["attrs"], now)

    def apply_readings(self, conn: Connection, rows: Sequence[HistoryRow], now: datetime) -> int:
        """Store readings: history (idempotent), rollups, current state when newer.

        Returns how many readings were new; only those can change the current state. The
        entities must exist, and every reading carries its observation time in
        ``observed_at``.
        """
        return self.append_history(conn, rows, now, update_current=True) if rows else 0

    def _set_attributes(self, conn: Connection, rows: Sequence[HistoryRow]) -> None:
        """Make these instances (one per attribute and datasetId) the current state."""
        values = [{"entity_id": r.entity_id, "name": r.name, "dataset_id": r.dataset_id,
                   "instance": orjson.dumps(r.instance).decode(),
                   "observed_at": r.observed_at if r.instance.get("observedAt") else None,
                   "value_num": r.value_num} for r in rows]
        insert = postgresql.insert(attributes) if self.dialect == "postgresql" else \
            sqlite.insert(attributes)
        excluded = insert.excluded
        statement = insert.on_conflict_do_update(
            index_elements=["entity_id", "name", "dataset_id"],
            set_={"instance": excluded.instance, "observed_at": excluded.observed_at,
                  "value_num": excluded.value_num})
        for start in range(0, len(values), 5000):
            conn.execute(statement, values[start:start + 5000])

    def append_history(self, conn: Connection, rows: Sequence[HistoryRow], now: datetime, *,
                       update_current: bool = False) -> int:
        """Append instances to history once each and fold new numeric ones into rollups.

        With ``update_current`` the new instances also replace the current state of their
        attribute when they are newer, and their entities' modifiedAt moves to ``now``.
        """
        if self.dialect == "postgresql":
            return self._append_history_postgres(conn, rows, now, update_current)
        return self._append_history_sqlite(conn, rows, now, update_current)

    def _append_history_sqlite(self, conn: Connection, rows: Sequence[HistoryRow],
                               now: datetime, update_current: bool) -> int:
        raw = conn.connection.driver_connection
        assert raw is not None
        stamp = now.astimezone(UTC).strftime(_SQLITE_TIME)
        cursor = raw.cursor()
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS stage_history (entity_id TEXT, name TEXT,"
                       " dataset_id TEXT, observed_at TEXT, value_num REAL, instance TEXT)")
        cursor.execute("DELETE FROM stage_history")
        cursor.executemany(
            "INSERT INTO stage_history VALUES (?, ?, ?, ?, ?, ?)",
            [(r.entity_id, r.name, r.dataset_id,
              r.observed_at.astimezone(UTC).strftime(_SQLITE_TIME), r.value_num,
              orjson.dumps(r.instance).decode()) for r in rows])
        # Keep only rows history has not seen (and the first of duplicates in this batch):
        # one writer at a time on SQLite makes this check-then-insert exact.
        cursor.execute(
            "DELETE FROM stage_history WHERE rowid NOT IN (SELECT min(rowid) FROM stage_history "
            "GROUP BY entity_id, name, dataset_id, observed_at) OR EXISTS (SELECT 1 FROM "
            "history h WHERE h.entity_id = stage_history.entity_id AND h.name = "
            "stage_history.name AND h.dataset_id = stage_history.dataset_id AND "
            "h.observed_at = stage_history.observed_at)")
        cursor.execute(
            "INSERT INTO history (entity_id, name, dataset_id, observed_at, value_num, instance,"
            " recorded_at) SELECT entity_id, name, dataset_id, observed_at, value_num, instance,"
            " ? FROM stage_history", (stamp,))
        inserted = cursor.rowcount
        cursor.execute(
            "INSERT INTO rollup_hourly (entity_id, name, dataset_id, hour, n, total, total_sq,"
            " minimum, maximum) SELECT entity_id, name, dataset_id, substr(observed_at, 1, 13) ||"
            " ':00:00.000000', count(*), sum(value_num), sum(value_num * value_num),"
            " min(value_num), max(value_num) FROM stage_history WHERE value_num IS NOT NULL"
            " GROUP BY 1, 2, 3, 4 ON CONFLICT (entity_id, name, dataset_id, hour) DO UPDATE SET"
            " n = n + excluded.n, total = total + excluded.total,"
            " total_sq = total_sq + excluded.total_sq,"
            " minimum = min(minimum, excluded.minimum), maximum = max(maximum, excluded.maximum)")
        if update_current and inserted:
            # SQLite's bare-column rule: with max(), the other columns come from that row.
            cursor.execute(
                "INSERT INTO attributes (entity_id, name, dataset_id, instance, observed_at,"
                " value_num) SELECT entity_id, name, dataset_id, instance, max(observed_at),"
                " value_num FROM stage_history WHERE true GROUP BY entity_id, name, dataset_id"
                " ON CONFLICT (entity_id, name, dataset_id) DO UPDATE SET"
                " instance = excluded.instance, observed_at = excluded.observed_at,"
                " value_num = excluded.value_num WHERE attributes.observed_at IS NULL OR"
                " attributes.observed_at <= excluded.observed_at")
            cursor.execute("UPDATE entities SET modified_at = ? WHERE id IN"
                           " (SELECT DISTINCT entity_id FROM stage_history)", (stamp,))
        cursor.execute("DELETE FROM stage_history")
        cursor.close()
        return inserted

    def _append_history_postgres(self, conn: Connection, rows: Sequence[HistoryRow],
                                 now: datetime, update_current: bool, *,
                                 retry: bool = True) -> int:
        """COPY straight into history when the batch is all new (the common case).

        A replayed or duplicated reading makes that COPY fail on the primary key; the
        batch then takes the exact path through a staging table (``_merge_history``).
        """
        self._ensure_partitions(conn, rows)
        raw = conn.connection.driver_connection
        assert raw is not None
        payloads = [orjson.dumps(r.instance).decode() for r in rows]
        recorded = f"\t{now.isoformat()}\n"
        with raw.cursor() as cursor:
            cursor.execute("SAVEPOINT history_copy")
            try:
                with cursor.copy("COPY history (entity_id, name, dataset_id, observed_at,"
                                 " value_num, instance, recorded_at) FROM STDIN") as copy:
                    copy.write(_copy_lines(rows, payloads, recorded))
            except psycopg.errors.UniqueViolation:
                cursor.execute("ROLLBACK TO SAVEPOINT history_copy")
                return self._merge_history(raw, rows, payloads, now, update_current)
            except psycopg.errors.CheckViolation:
                # No partition for a row: disposal in another process dropped a month this
                # process had seen. Re-create what is missing and write the batch again.
                cursor.execute("ROLLBACK TO SAVEPOINT history_copy")
                if not retry:
                    raise
                self.forget_partitions()
                return self._append_history_postgres(conn, rows, now, update_current,
                                                     retry=False)
            cursor.execute("RELEASE SAVEPOINT history_copy")
            _fold_rollups(cursor, rows)
            if update_current:
                _set_current(cursor, rows, payloads, now)
        return len(rows)

    def _merge_history(self, raw: Any, rows: Sequence[HistoryRow], payloads: list[str],
                       now: datetime, update_current: bool) -> int:
        # One statement: new history rows (ON CONFLICT skips replays and in-batch
        # duplicates), exactly those folded into the rollups, and, for readings, the newest
        # of them made current state.
        current = (
            ", current AS (INSERT INTO attributes (entity_id, name, dataset_id, instance,"
            " observed_at, value_num) SELECT DISTINCT ON (entity_id, name, dataset_id)"
            " entity_id, name, dataset_id, instance, observed_at, value_num FROM fresh"
            " ORDER BY entity_id, name, dataset_id, observed_at DESC"
            " ON CONFLICT (entity_id, name, dataset_id) DO UPDATE SET"
            " instance = excluded.instance, observed_at = excluded.observed_at,"
            " value_num = excluded.value_num WHERE attributes.observed_at IS NULL OR"
            " attributes.observed_at <= excluded.observed_at),"
            " touched AS (UPDATE entities SET modified_at = %(now)s WHERE id IN"
            " (SELECT entity_id FROM fresh))") if update_current else ""
        with raw.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS stage_history (entity_id text, name text,"
                " dataset_id text, observed_at timestamptz, value_num float8, instance text)"
                " ON COMMIT DELETE ROWS")
            with cursor.copy("COPY stage_history FROM STDIN") as copy:
                copy.write(_copy_lines(rows, payloads))
            cursor.execute(
                "WITH fresh AS (INSERT INTO history (entity_id, name, dataset_id, observed_at,"
                " value_num, instance, recorded_at) SELECT entity_id, name, dataset_id,"
                " observed_at, value_num, instance, %(now)s FROM stage_history"
                " ON CONFLICT DO NOTHING RETURNING entity_id, name, dataset_id, observed_at,"
                " value_num, instance), rolled AS (INSERT INTO rollup_hourly"
                " (entity_id, name, dataset_id, hour, n, total, total_sq, minimum, maximum)"
                " SELECT entity_id, name, dataset_id, date_trunc('hour', observed_at), count(*),"
                " sum(value_num), sum(value_num * value_num), min(value_num), max(value_num)"
                " FROM fresh WHERE value_num IS NOT NULL GROUP BY 1, 2, 3, 4"
                " ON CONFLICT (entity_id, name, dataset_id, hour) DO UPDATE SET"
                " n = rollup_hourly.n + excluded.n, total = rollup_hourly.total + excluded.total,"
                " total_sq = rollup_hourly.total_sq + excluded.total_sq,"
                " minimum = least(rollup_hourly.minimum, excluded.minimum),"
                " maximum = greatest(rollup_hourly.maximum, excluded.maximum))" + current +
                " SELECT count(*) FROM fresh", {"now": now})
            found = cursor.fetchone()
            cursor.execute("TRUNCATE stage_history")
        return int(found[0]) if found else 0

    def forget_partitions(self) -> None:
        """Stop trusting the partitions seen so far: disposal dropped some."""
        self._partitions = set()

    def _ensure_partitions(self, conn: Connection, rows: Sequence[HistoryRow]) -> None:
        months = {(r.observed_at.astimezone(UTC).year, r.observed_at.astimezone(UTC).month)
                  for r in rows} - self._partitions
        for year, month in sorted(months):
            following = (year + 1, 1) if month == 12 else (year, month + 1)
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS history_y{year:04d}m{month:02d} PARTITION OF history"
                f" FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') TO"
                f" ('{following[0]:04d}-{following[1]:02d}-01 00:00:00+00')")
            self._partitions.add((year, month))

    # --- history reads -----------------------------------------------------------------

    def history_rows(self, conn: Connection, entity_ids: Sequence[str], names: Sequence[str] | None,
                     start: datetime | None, end: datetime | None, *, last_n: int | None = None,
                     ) -> list[Any]:
        """History instances of entities, oldest first (newest ``last_n`` per attribute)."""
        clauses: list[ColumnElement[bool]] = [history.c.entity_id.in_(list(entity_ids))]
        if names is not None:
            clauses.append(history.c.name.in_(list(names)))
        if start is not None:
            clauses.append(history.c.observed_at >= start)
        if end is not None:
            clauses.append(history.c.observed_at < end)
        query = select(history.c.entity_id, history.c.name, history.c.dataset_id,
                       history.c.observed_at, history.c.instance, history.c.value_num,
                       history.c.recorded_at).where(and_(*clauses))
        if last_n is not None:
            ranked = query.add_columns(func.row_number().over(
                partition_by=(history.c.entity_id, history.c.name, history.c.dataset_id),
                order_by=history.c.observed_at.desc()).label("rank")).subquery()
            query = select(ranked).where(ranked.c.rank <= last_n)
            return sorted(conn.execute(query), key=lambda r: (r.entity_id, r.name, r.observed_at))
        return list(conn.execute(query.order_by(history.c.entity_id, history.c.name,
                                                history.c.observed_at)))

    # --- helpers -----------------------------------------------------------------------

    def _dataset_column(self, conn: Connection, entity: Entity) -> dict[str, str]:
        if self.assign_dataset is None:
            return {}
        return {"dataset_id": self.assign_dataset(conn, entity["id"], entity["type"])}

    def _bbox_columns(self, entity: Entity) -> dict[str, float | None]:
        instances = entity["attrs"].get(LOCATION) or {}
        instance = instances.get(DEFAULT_DATASET)
        box = geometry_bbox(instance["value"]) if instance and instance.get(
            "type") == "GeoProperty" else None
        if box is None:
            return {"min_lon": None, "min_lat": None, "max_lon": None, "max_lat": None}
        return dict(zip(("min_lon", "min_lat", "max_lon", "max_lat"), box, strict=True))

    def _sync_geometry(self, conn: Connection, entity: Entity) -> None:
        if not self.postgis:
            return
        instance = (entity["attrs"].get(LOCATION) or {}).get(DEFAULT_DATASET)
        geojson = orjson.dumps(instance["value"]).decode() if instance and instance.get(
            "type") == "GeoProperty" else None
        conn.exec_driver_sql(
            "UPDATE entities SET geom = CASE WHEN %(g)s::text IS NULL THEN NULL ELSE"
            " ST_SetSRID(ST_GeomFromGeoJSON(%(g)s::text), 4326) END WHERE id = %(id)s",
            {"g": geojson, "id": entity["id"]})


def _copy_text(value: str) -> str:
    """Escape a value for COPY's text format (backslash, tab, newline, carriage return)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r"))
    return value


def _copy_lines(rows: Sequence[HistoryRow], payloads: list[str], end: str = "\n") -> str:
    """Readings in COPY text format; written by hand because psycopg's ``write_row`` costs
    about three times as much per row on this hot path. Readings of one message share
    their time, so each distinct time is formatted once."""
    stamps: dict[datetime, str] = {}
    lines = []
    for r, payload in zip(rows, payloads, strict=True):
        stamp = stamps.get(r.observed_at)
        if stamp is None:
            stamp = stamps[r.observed_at] = r.observed_at.isoformat()
        value = "\\N" if r.value_num is None else repr(r.value_num)
        lines.append(f"{_copy_text(r.entity_id)}\t{_copy_text(r.name)}\t"
                     f"{_copy_text(r.dataset_id)}\t{stamp}\t{value}\t{_copy_text(payload)}{end}")
    return "".join(lines)


def _fold_rollups(cursor: Any, rows: Sequence[HistoryRow]) -> None:
    """Add a batch known to be new to the hourly rollups (aggregated here, one statement)."""
    hours: dict[tuple[str, str, str, datetime], list[float]] = {}
    hour_of: dict[datetime, datetime] = {}  # readings of one message share their time
    for r in rows:
        value = r.value_num
        if value is None:
            continue
        hour = hour_of.get(r.observed_at)
        if hour is None:
            hour = hour_of[r.observed_at] = r.observed_at.astimezone(UTC).replace(
                minute=0, second=0, microsecond=0)
        key = (r.entity_id, r.name, r.dataset_id, hour)
        stats = hours.get(key)
        if stats is None:
            hours[key] = [1, value, value * value, value, value]
        else:
            stats[0] += 1
            stats[1] += value
            stats[2] += value * value
            stats[3] = min(stats[3], value)
            stats[4] = max(stats[4], value)
    if not hours:
        return
    keys = list(hours)
    totals = list(hours.values())
    cursor.execute(
        "INSERT INTO rollup_hourly (entity_id, name, dataset_id, hour, n, total, total_sq,"
        " minimum, maximum) SELECT * FROM unnest(%b::text[], %b::text[], %b::text[],"
        " %b::timestamptz[], %b::int[], %b::float8[], %b::float8[], %b::float8[],"
        " %b::float8[]) ON CONFLICT (entity_id, name, dataset_id, hour) DO UPDATE SET"
        " n = rollup_hourly.n + excluded.n, total = rollup_hourly.total + excluded.total,"
        " total_sq = rollup_hourly.total_sq + excluded.total_sq,"
        " minimum = least(rollup_hourly.minimum, excluded.minimum),"
        " maximum = greatest(rollup_hourly.maximum, excluded.maximum)",
        [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
         [k[3] for k in keys], [int(v[0]) for v in totals], [v[1] for v in totals],
         [v[2] for v in totals], [v[3] for v in totals], [v[4] for v in totals]])


def _set_current(cursor: Any, rows: Sequence[HistoryRow], payloads: list[str],
                 now: datetime) -> None:
    """Make the newest reading of each attribute in a batch its current state, if newer."""
    latest: dict[tuple[str, str, str], int] = {}
    for index, r in enumerate(rows):
        key = (r.entity_id, r.name, r.dataset_id)
        seen = latest.get(key)
        if seen is None or rows[seen].observed_at <= r.observed_at:
            latest[key] = index
    picked = [rows[i] for i in latest.values()]
    cursor.execute(
        "INSERT INTO attributes (entity_id, name, dataset_id, instance, observed_at, value_num)"
        " SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[],"
        " %b::timestamptz[], %b::float8[]) ON CONFLICT (entity_id, name, dataset_id)"
        " DO UPDATE SET instance = excluded.instance, observed_at = excluded.observed_at,"
        " value_num = excluded.value_num WHERE attributes.observed_at IS NULL OR"
        " attributes.observed_at <= excluded.observed_at",
        [[r.entity_id for r in picked], [r.name for r in picked],
         [r.dataset_id for r in picked], [payloads[i] for i in latest.values()],
         [r.observed_at for r in picked], [r.value_num for r in picked]])
    cursor.execute("UPDATE entities SET modified_at = %b WHERE id = ANY(%b)",
                   [now, list({r.entity_id for r in picked})])


def _register_regexp(dbapi_connection: Any, _record: Any) -> None:
    import re

    def regexp(pattern: str, value: str | None) -> bool:
        return value is not None and re.search(pattern, value) is not None

    dbapi_connection.create_function("regexp", 2, regexp, deterministic=True)
