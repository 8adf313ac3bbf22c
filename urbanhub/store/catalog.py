"""Repository for the data catalog: purposes, datasets, the rules revision, entity datasets.

Assignment and rule changes are serialised by one catalog lock: entity creation holds it
shared while it reads the rules revision and inserts (so many creations run at once),
a rule change holds it exclusively while it rewrites rules and re-evaluates entities.
An entity is therefore either created under the old rules and then re-evaluated, or
created under the new ones; none slips between the two. PostgreSQL takes a transaction
advisory lock; SQLite takes its database write lock, which every writer needs anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from urbanhub.model.catalog import UNCATALOGUED_ID
from urbanhub.model.errors import AlreadyExists
from urbanhub.model.governance import (
    AssignmentRule,
    Classification,
    Dataset,
    DataTheme,
    LegalBasis,
    Purpose,
    PurposeKind,
    format_duration,
    parse_retention,
)
from urbanhub.store.db import id_sets, lock_sqlite_database
from urbanhub.store.tables import (
    catalog_revision,
    datasets,
    entities,
    entity_types,
    purposes,
)

#: Key of the PostgreSQL advisory lock guarding the assignment rules (ASCII "urbhcatg").
CATALOG_LOCK_KEY = 0x7572_6268_6361_7467
_REVISION_ROW = 1


@dataclass(frozen=True)
class DatasetRecord:
    dataset: Dataset
    created_at: datetime
    modified_at: datetime


def lock_catalog(conn: Connection, *, exclusive: bool) -> None:
    """Hold the catalog lock until the transaction ends (see the module docstring)."""
    if conn.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.exec_driver_sql(f"SELECT {function}({CATALOG_LOCK_KEY})")
    else:
        lock_sqlite_database(conn)


def catalog_revision_number(conn: Connection) -> int:
    """The revision of the catalog (datasets, rules, purposes); 0 before any change."""
    found = conn.scalar(select(catalog_revision.c.revision).where(
        catalog_revision.c.id == _REVISION_ROW))
    return int(found or 0)


def bump_revision(conn: Connection) -> None:
    """Tell every process its catalog and compiled rules are stale; needs the exclusive
    catalog lock."""
    bumped = conn.execute(update(catalog_revision).where(
        catalog_revision.c.id == _REVISION_ROW).values(revision=catalog_revision.c.revision + 1))
    if bumped.rowcount == 0:
        conn.execute(insert(catalog_revision).values(id=_REVISION_ROW, revision=1))


# --- purposes ---------------------------------------------------------------------------

def _purpose(row: Row[Any]) -> Purpose:
    return Purpose(row.id, row.description, PurposeKind(row.kind))


def list_purposes(conn: Connection) -> list[Purpose]:
    return [_purpose(row) for row in conn.execute(select(purposes).order_by(purposes.c.id))]


def get_purpose(conn: Connection, purpose_id: str) -> Purpose | None:
    row = conn.execute(select(purposes).where(purposes.c.id == purpose_id)).first()
    return _purpose(row) if row is not None else None


def insert_purpose(conn: Connection, purpose: Purpose, now: datetime) -> None:
    try:
        with conn.begin_nested():
            conn.execute(insert(purposes).values(
                id=purpose.id, description=purpose.description, kind=purpose.kind.value,
                created_at=now, modified_at=now))
    except IntegrityError as exc:
        raise AlreadyExists(f"Purpose {purpose.id} already exists.") from exc


def update_purpose(conn: Connection, purpose: Purpose, now: datetime) -> None:
    conn.execute(update(purposes).where(purposes.c.id == purpose.id).values(
        description=purpose.description, kind=purpose.kind.value, modified_at=now))


# --- datasets ---------------------------------------------------------------------------

def _columns(dataset: Dataset) -> dict[str, Any]:
    return {
        "title": dataset.title, "description": dataset.description, "owner": dataset.owner,
        "steward": dataset.steward, "classification": dataset.classification.value,
        "licence": dataset.licence, "theme": dataset.theme.value if dataset.theme else None,
        "legal_basis": dataset.legal_basis.value,
        "retention": format_duration(dataset.retention),
        "update_frequency": dataset.update_frequency,
        "purposes": sorted(dataset.purposes), "entity_types": sorted(dataset.entity_types),
        "attribute_classes": {name: cls.value for name, cls
                              in sorted(dataset.attribute_classes.items())},
        "identifiers": sorted(dataset.identifiers),
        "subject_attribute": dataset.subject_attribute,
        "spatial_coverage": dict(dataset.spatial_coverage) if dataset.spatial_coverage else None,
        "rules": [{"entity_type": r.entity_type, "id_pattern": r.id_pattern,
                   "priority": r.priority} for r in dataset.rules],
    }


def _record(row: Row[Any]) -> DatasetRecord:
    dataset = Dataset(
        id=row.id, owner=row.owner, steward=row.steward,
        classification=Classification(row.classification), licence=row.licence,
        purposes=frozenset(row.purposes), legal_basis=LegalBasis(row.legal_basis),
        retention=parse_retention(row.retention),
        attribute_classes=row.attribute_classes,
        identifiers=frozenset(row.identifiers), subject_attribute=row.subject_attribute,
        title=row.title,
        description=row.description, theme=DataTheme(row.theme) if row.theme else None,
        entity_types=frozenset(row.entity_types),
        update_frequency=row.update_frequency,
        spatial_coverage=row.spatial_coverage,
        rules=tuple(AssignmentRule(**rule) for rule in row.rules))
    return DatasetRecord(dataset, row.created_at, row.modified_at)


def list_datasets(conn: Connection) -> list[DatasetRecord]:
    return [_record(row) for row in conn.execute(select(datasets).order_by(datasets.c.id))]


def get_dataset(conn: Connection, dataset_id: str) -> DatasetRecord | None:
    row = conn.execute(select(datasets).where(datasets.c.id == dataset_id)).first()
    return _record(row) if row is not None else None


def insert_dataset(conn: Connection, dataset: Dataset, now: datetime) -> None:
    try:
        with conn.begin_nested():
            conn.execute(insert(datasets).values(id=dataset.id, created_at=now,
                                                 modified_at=now, **_columns(dataset)))
    except IntegrityError as exc:
        raise AlreadyExists(f"Dataset {dataset.id} already exists.") from exc


def update_dataset(conn: Connection, dataset: Dataset, now: datetime) -> None:
    conn.execute(update(datasets).where(datasets.c.id == dataset.id).values(
        modified_at=now, **_columns(dataset)))


# --- entities ---------------------------------------------------------------------------

def entity_counts(conn: Connection, dataset_id: str | None = None) -> dict[str, int]:
    """Entities per dataset (of one dataset when given); datasets without any are absent."""
    query = select(entities.c.dataset_id, func.count()).group_by(entities.c.dataset_id)
    if dataset_id is not None:
        query = query.where(entities.c.dataset_id == dataset_id)
    return {row[0]: int(row[1]) for row in conn.execute(query)}


def uncatalogued_types(conn: Connection) -> list[tuple[str, int]]:
    """Types of the entities no rule claims, most frequent first: what rules are missing."""
    count = func.count()
    query = (select(entity_types.c.type, count)
             .join(entities, entities.c.id == entity_types.c.entity_id)
             .where(entities.c.dataset_id == UNCATALOGUED_ID)
             .group_by(entity_types.c.type).order_by(count.desc(), entity_types.c.type))
    return [(row[0], int(row[1])) for row in conn.execute(query)]


def iter_entity_assignments(conn: Connection, chunk: int = 5000) -> Iterator[
        list[tuple[str, list[str], str]]]:
    """(id, expanded types, dataset id) of every entity, in id order, a chunk at a time."""
    last: str | None = None
    while True:
        query = select(entities.c.id, entities.c.types, entities.c.dataset_id)
        if last is not None:
            query = query.where(entities.c.id > last)
        rows = conn.execute(query.order_by(entities.c.id).limit(chunk)).all()
        if not rows:
            return
        yield [(row.id, orjson.loads(row.types), row.dataset_id) for row in rows]
        last = rows[-1].id


def move_entities(conn: Connection, dataset_id: str, entity_ids: Iterable[str]) -> None:
    for among in id_sets(conn.dialect.name, entities.c.id, list(entity_ids)):
        conn.execute(update(entities).where(among).values(dataset_id=dataset_id))
