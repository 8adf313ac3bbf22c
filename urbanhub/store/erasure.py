"""Repository side of erasure: finding a data subject's records and deleting them.

Called inside one write transaction by the erasure service. Subjects are found through the
attributes the catalog declares as subject attributes (``datasets.subject_attribute``),
read with the same ``subject_value`` expression consent filtering uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Table, delete, func, select, tuple_

from urbanhub.store import rollups
from urbanhub.store.consents import subject_value
from urbanhub.store.db import id_sets
from urbanhub.store.tables import (
    attributes,
    datasets,
    devices,
    entities,
    entity_tombstones,
    entity_types,
    history,
    quality_flags,
    rollup_daily,
    rollup_hourly,
)

#: History keys per statement (four parameters each).
_KEY_CHUNK = 200


@dataclass(frozen=True)
class ErasedEntities:
    """What deleting some entities removed: history rows, rollup hours, quality flags,
    devices."""

    entities: int
    history_rows: int
    rollup_hours: int
    quality_flags: int
    devices: tuple[str, ...]


@dataclass
class FormerValues:
    """History instances (and their quality flags) deleted, per entity's catalog dataset."""

    history_rows: Counter[str | None] = field(default_factory=Counter)
    quality_flags: Counter[str | None] = field(default_factory=Counter)


def subject_attributes(conn: Connection) -> list[str]:
    """Every attribute the catalog declares as holding a data subject's id."""
    return list(conn.scalars(select(datasets.c.subject_attribute).distinct()
                             .where(datasets.c.subject_attribute.is_not(None))
                             .order_by(datasets.c.subject_attribute)))


def entities_naming(conn: Connection, names: Sequence[str], subject: str) -> dict[str, str]:
    """Entities whose current value of one of ``names`` is ``subject``: id -> catalog
    dataset id."""
    naming = select(attributes.c.entity_id).where(
        attributes.c.name.in_(list(names)), subject_value(attributes.c.instance) == subject)
    query = select(entities.c.id, entities.c.dataset_id).where(entities.c.id.in_(naming))
    return {row.id: row.dataset_id for row in conn.execute(query)}


def delete_entities(conn: Connection, ids: Sequence[str]) -> ErasedEntities:
    """Delete entities with everything kept about them: current state, types, history,
    rollups (hourly and compacted days), quality flags, and the devices that write them (a
    device row names its entity, so it cannot outlive it)."""
    dialect = conn.dialect.name

    def gone(column: Column[str]) -> int:
        return sum(conn.execute(delete(column.table).where(among)).rowcount
                   for among in id_sets(dialect, column, ids))

    history_rows = gone(history.c.entity_id)
    rollup_hours = gone(rollup_hourly.c.entity_id)
    if dialect == "postgresql":
        rollup_hours += sum(rollups.delete_days_of(conn, among)
                            for among in id_sets(dialect, rollup_daily.c.entity_id, ids))
    flags = gone(quality_flags.c.entity_id)
    removed = [device for among in id_sets(dialect, devices.c.entity_id, ids)
               for device in conn.scalars(select(devices.c.id).where(among))]
    for column in (devices.c.entity_id, attributes.c.entity_id, entity_types.c.entity_id):
        gone(column)
    return ErasedEntities(gone(entities.c.id), history_rows, rollup_hours, flags,
                          tuple(sorted(removed)))


def delete_former_values(conn: Connection, names: Sequence[str], subject: str) -> FormerValues:
    """Delete the history instances of ``names`` that name ``subject`` (entities whose value
    changed since, or that no longer exist), with their quality flags; counted per entity's
    catalog dataset (a deleted entity's from its tombstone; None when neither is known).

    Rollups need no change: they sum numbers, and an instance naming a subject holds a
    string, so none of these rows was ever counted in one.
    """
    found = conn.execute(
        select(history.c.entity_id, history.c.name, history.c.dataset_id,
               history.c.observed_at, func.coalesce(
                   entities.c.dataset_id, entity_tombstones.c.dataset_id).label(
                   "catalog_dataset"))
        .outerjoin(entities, entities.c.id == history.c.entity_id)
        .outerjoin(entity_tombstones, entity_tombstones.c.entity_id == history.c.entity_id)
        .where(history.c.name.in_(list(names)),
               subject_value(history.c.instance) == subject)).all()
    removed = FormerValues()
    for start in range(0, len(found), _KEY_CHUNK):
        rows = found[start:start + _KEY_CHUNK]
        keys = [(r.entity_id, r.name, r.dataset_id, r.observed_at) for r in rows]
        conn.execute(delete(history).where(_key(history).in_(keys)))
        flagged = conn.execute(delete(quality_flags).where(_key(quality_flags).in_(keys))
                               .returning(quality_flags.c.entity_id)).scalars().all()
        catalog_dataset = {r.entity_id: r.catalog_dataset for r in rows}
        removed.history_rows.update(r.catalog_dataset for r in rows)
        removed.quality_flags.update(catalog_dataset[entity_id] for entity_id in flagged)
    return removed


def _key(table: Table) -> ColumnElement[Any]:
    """The (entity, attribute, datasetId, observedAt) key history and quality flags share."""
    return tuple_(table.c.entity_id, table.c.name, table.c.dataset_id, table.c.observed_at)
