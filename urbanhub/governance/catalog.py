"""The data catalog: purposes of collection, datasets, and which dataset each entity is in.

Who may change what:

* the CDO (and the hub's own components, such as ``urbanhub catalog load``) registers
  purposes, creates and changes any dataset and sets assignment rules;
* a steward of the owning organisation creates and changes that organisation's datasets,
  but neither hands them to another organisation nor changes their assignment rules: a
  rule can take entities out of another organisation's dataset;
* everyone reads the catalog (datasets, purposes, entity counts): what the city holds and
  why is public, the data itself goes through the policy decision point;
* only the CDO sees the report of duplicates and uncatalogued entities.

Every change is written together with its audit entries, in one transaction. When a
change alters how entities are assigned, every existing entity is re-evaluated in that
same transaction, so an entity's dataset is always what the current rules say for its id
and types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection

from urbanhub.governance.audit import AuditEvent
from urbanhub.governance.catalog_documents import audit_details
from urbanhub.governance.revisions import RevisionedCache
from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.catalog import (
    UNCATALOGUED,
    UNCATALOGUED_ID,
    Duplicate,
    RuleSet,
    assign,
    find_duplicates,
)
from urbanhub.model.errors import AlreadyExists, BadRequestData, Forbidden, ResourceNotFound
from urbanhub.model.governance import AssignmentRule, Dataset, Purpose, Role
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store.audit import AuditLog
from urbanhub.store.catalog import (
    DatasetRecord,
    bump_revision,
    catalog_revision_number,
    entity_counts,
    get_dataset,
    get_purpose,
    insert_dataset,
    insert_purpose,
    iter_entity_assignments,
    list_datasets,
    list_purposes,
    lock_catalog,
    move_entities,
    uncatalogued_types,
    update_dataset,
    update_purpose,
)
from urbanhub.store.entities import EntityStore


def governs_catalog(caller: Caller) -> bool:
    return Role.CDO in caller.roles or SYSTEM_ROLE in caller.roles


def require_governor(caller: Caller, what: str) -> None:
    if not governs_catalog(caller):
        raise Forbidden(f"Only the CDO may {what}.")


def check_may_edit_datasets(caller: Caller) -> None:
    """Refuse early whoever could change no dataset at all (before reading a body)."""
    if not governs_catalog(caller) and Role.STEWARD not in caller.roles:
        raise Forbidden("Only the CDO or a steward of the owning organisation may create or "
                        "change datasets.")


def check_dataset_write(caller: Caller, before: Dataset | None, after: Dataset) -> None:
    """Refuse a dataset change the caller may not make (see the module docstring)."""
    if governs_catalog(caller):
        return
    owner = before.owner if before is not None else after.owner
    if Role.STEWARD not in caller.roles or caller.organisation != owner:
        raise Forbidden(f"Only the CDO or a steward of organisation {owner} may "
                        f"{'change' if before else 'create'} dataset {after.id}.")
    if after.owner != owner:
        raise Forbidden(f"Only the CDO may give dataset {after.id} to another organisation.")
    if after.rules != (before.rules if before is not None else ()):
        raise Forbidden("Only the CDO may set assignment rules: a rule can take entities "
                        "out of another organisation's dataset.")


class RuleCache:
    """This process's compiled assignment rules, behind the ``DatasetAssigner`` interface.

    Called inside the write that creates (or retypes) an entity: it takes the catalog lock
    shared, reads the rules revision (one primary-key read) and recompiles only when
    another transaction, in this process or another, changed the rules since. Readings
    never come here: they only update entities that already have their dataset.
    """

    def __init__(self) -> None:
        self._compiled: tuple[int, RuleSet] | None = None

    def __call__(self, conn: Connection, entity_id: str, types: Sequence[str]) -> str:
        lock_catalog(conn, exclusive=False)
        revision = catalog_revision_number(conn)
        compiled = self._compiled
        if compiled is None or compiled[0] != revision:
            compiled = (revision, RuleSet.of(r.dataset for r in list_datasets(conn)))
            self._compiled = compiled  # replaced whole: readers in other threads never lock
        return assign(entity_id, types, compiled[1])


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class CatalogEntry:
    """A dataset as the catalog lists it, with how many entities it holds."""

    dataset: Dataset
    entity_count: int
    created_at: datetime | None = None  # None for the built-in uncatalogued dataset
    modified_at: datetime | None = None

    @property
    def built_in(self) -> bool:
        return self.dataset.id == UNCATALOGUED_ID


@dataclass(frozen=True)
class DatasetChange:
    entry: CatalogEntry
    entities_moved: int  # existing entities re-assigned by the change (to any dataset)


@dataclass
class LoadReport:
    """What loading a catalog file did, item by item."""

    purposes: dict[str, Outcome] = field(default_factory=dict)
    datasets: dict[str, Outcome] = field(default_factory=dict)
    entities_moved: int = 0


@dataclass(frozen=True)
class CatalogReport:
    """What needs the CDO's attention."""

    uncatalogued_entities: int
    uncatalogued_types: list[tuple[str, int]]  # (type IRI, entities), most frequent first
    duplicates: list[Duplicate]


@dataclass
class _Transaction:
    """One catalog change in progress: its connection, audit events and rules before."""

    conn: Connection
    caller: Caller
    now: datetime
    rules_before: RuleSet
    events: list[AuditEvent] = field(default_factory=list)
    entities_moved: int = 0

    def record(self, action: str, target: str, details: dict[str, Any]) -> None:
        self.events.append(AuditEvent(self.caller.subject, action, target, details))


@dataclass(frozen=True)
class GovernedCatalog:
    """The datasets (the built-in one included) and purposes decisions are taken on."""

    revision: int
    datasets: Mapping[str, Dataset]
    purposes: tuple[Purpose, ...]


class CatalogService:
    def __init__(self, store: EntityStore, audit: AuditLog,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self._governed = RevisionedCache(store.read, catalog_revision_number, _load_governed)

    def governed(self) -> GovernedCatalog:
        """The catalog as of its latest revision (see ``governance.revisions``)."""
        return self._governed.get()

    # --- reads (public) ------------------------------------------------------------------

    def purposes(self) -> list[Purpose]:
        with self.store.read() as conn:
            return list_purposes(conn)

    def datasets(self) -> list[CatalogEntry]:
        """The built-in uncatalogued dataset first, then the catalog by id."""
        with self.store.read() as conn:
            records = list_datasets(conn)
            counts = entity_counts(conn)
        return [CatalogEntry(UNCATALOGUED, counts.get(UNCATALOGUED_ID, 0))] + [
            _entry(record, counts.get(record.dataset.id, 0)) for record in records]

    def dataset(self, dataset_id: str) -> CatalogEntry:
        with self.store.read() as conn:
            counts = entity_counts(conn, dataset_id)
            if dataset_id == UNCATALOGUED_ID:
                return CatalogEntry(UNCATALOGUED, counts.get(dataset_id, 0))
            record = get_dataset(conn, dataset_id)
        if record is None:
            raise ResourceNotFound(f"Dataset {dataset_id} does not exist.")
        return _entry(record, counts.get(dataset_id, 0))

    # --- reads (CDO) ---------------------------------------------------------------------

    def duplicates(self, caller: Caller) -> list[Duplicate]:
        require_governor(caller, "see duplicate datasets")
        with self.store.read() as conn:
            return find_duplicates(r.dataset for r in list_datasets(conn))

    def report(self, caller: Caller) -> CatalogReport:
        require_governor(caller, "see the catalog report")
        with self.store.read() as conn:
            count = entity_counts(conn, UNCATALOGUED_ID).get(UNCATALOGUED_ID, 0)
            types = uncatalogued_types(conn)
            duplicates = find_duplicates(r.dataset for r in list_datasets(conn))
        return CatalogReport(count, types, duplicates)

    # --- changes -------------------------------------------------------------------------

    def create_purpose(self, caller: Caller, purpose: Purpose) -> None:
        require_governor(caller, "register purposes")
        with self._change(caller) as change:
            insert_purpose(change.conn, purpose, change.now)
            change.record("catalog.purpose.create", purpose.id, _purpose_details(purpose))

    def create_dataset(self, caller: Caller, dataset: Dataset) -> DatasetChange:
        """Add a dataset; 409 when the id is taken."""
        with self._change(caller) as change:
            self._save(change, dataset, create=True)
        return self._changed(dataset.id, change)

    def replace_dataset(self, caller: Caller, dataset: Dataset) -> DatasetChange:
        """Replace a dataset's whole description; 404 when it does not exist."""
        with self._change(caller) as change:
            self._save(change, dataset, create=False)
        return self._changed(dataset.id, change)

    def set_rules(self, caller: Caller, dataset_id: str,
                  rules: tuple[AssignmentRule, ...]) -> DatasetChange:
        """Replace a dataset's assignment rules and re-evaluate every entity."""
        require_governor(caller, "set assignment rules")
        with self._change(caller) as change:
            before = self._stored(change.conn, dataset_id)
            after = replace(before.dataset, rules=rules)
            if after != before.dataset:
                update_dataset(change.conn, after, change.now)
                change.record("catalog.rules.set", dataset_id,
                              {"rules": audit_details(after)["rules"]})
        return self._changed(dataset_id, change)

    def load(self, caller: Caller, purposes: Sequence[Purpose],
             datasets: Sequence[Dataset]) -> LoadReport:
        """Create or update purposes and datasets, all or nothing; unchanged ones are left
        alone, so loading the same file twice changes nothing the second time."""
        require_governor(caller, "load a catalog")
        report = LoadReport()
        with self._change(caller) as change:
            for purpose in purposes:
                report.purposes[purpose.id] = self._save_purpose(change, purpose)
            for dataset in datasets:
                report.datasets[dataset.id] = self._save(change, dataset, create=None)
        report.entities_moved = change.entities_moved
        return report

    # --- internals -----------------------------------------------------------------------

    @contextmanager
    def _change(self, caller: Caller) -> Iterator[_Transaction]:
        """A write transaction holding the catalog lock; on the way out it re-evaluates
        entities if the rules changed and appends the audit events, before committing."""
        with self.store.write() as conn:
            lock_catalog(conn, exclusive=True)
            change = _Transaction(conn, caller, self.clock(),
                                  RuleSet.of(r.dataset for r in list_datasets(conn)))
            yield change
            rules_after = RuleSet.of(r.dataset for r in list_datasets(conn))
            if change.events:  # any change: every process reloads its catalog
                bump_revision(conn)
            if rules_after != change.rules_before:
                moved = _reassign(conn, rules_after)
                change.entities_moved = sum(moved.values())
                change.record("catalog.entities.reassign", "catalog",
                              {"entitiesMoved": change.entities_moved, "byDataset": moved})
            self.audit.append(change.events, conn)
        self._governed.changed()

    def _save(self, change: _Transaction, dataset: Dataset, *, create: bool | None) -> Outcome:
        """Insert (create True), update (False) or either (None) one dataset."""
        if dataset.id == UNCATALOGUED_ID:
            if create:
                raise AlreadyExists(f"Dataset {dataset.id} already exists (built in).")
            raise BadRequestData(f"Dataset {dataset.id} is built in and cannot be changed.")
        stored = get_dataset(change.conn, dataset.id)
        if create and stored is not None:
            raise AlreadyExists(f"Dataset {dataset.id} already exists.")
        if create is False and stored is None:
            raise ResourceNotFound(f"Dataset {dataset.id} does not exist.")
        before = stored.dataset if stored is not None else None
        check_dataset_write(change.caller, before, dataset)
        known = {p.id for p in list_purposes(change.conn)}
        unknown = sorted(dataset.purposes - known)
        if unknown:
            raise BadRequestData(f"Dataset {dataset.id}: unknown purposes {', '.join(unknown)}; "
                                 "register them first.")
        if before == dataset:
            return Outcome.UNCHANGED
        if before is None:
            insert_dataset(change.conn, dataset, change.now)
        else:
            update_dataset(change.conn, dataset, change.now)
        outcome = Outcome.CREATED if before is None else Outcome.UPDATED
        change.record(f"catalog.dataset.{'create' if before is None else 'update'}", dataset.id,
                      audit_details(dataset))
        return outcome

    def _save_purpose(self, change: _Transaction, purpose: Purpose) -> Outcome:
        before = get_purpose(change.conn, purpose.id)
        if before == purpose:
            return Outcome.UNCHANGED
        if before is None:
            insert_purpose(change.conn, purpose, change.now)
        else:
            update_purpose(change.conn, purpose, change.now)
        change.record(f"catalog.purpose.{'create' if before is None else 'update'}", purpose.id,
                      _purpose_details(purpose))
        return Outcome.CREATED if before is None else Outcome.UPDATED

    def _stored(self, conn: Connection, dataset_id: str) -> DatasetRecord:
        if dataset_id == UNCATALOGUED_ID:
            raise BadRequestData(f"Dataset {dataset_id} is built in and cannot be changed.")
        record = get_dataset(conn, dataset_id)
        if record is None:
            raise ResourceNotFound(f"Dataset {dataset_id} does not exist.")
        return record

    def _changed(self, dataset_id: str, change: _Transaction) -> DatasetChange:
        return DatasetChange(self.dataset(dataset_id), change.entities_moved)


def _load_governed(conn: Connection, revision: int) -> GovernedCatalog:
    datasets = {UNCATALOGUED_ID: UNCATALOGUED} | {
        r.dataset.id: r.dataset for r in list_datasets(conn)}
    return GovernedCatalog(revision, datasets, tuple(list_purposes(conn)))


def _entry(record: DatasetRecord, count: int) -> CatalogEntry:
    return CatalogEntry(record.dataset, count, record.created_at, record.modified_at)


def _purpose_details(purpose: Purpose) -> dict[str, Any]:
    return {"description": purpose.description, "kind": purpose.kind.value}


def _reassign(conn: Connection, rules: RuleSet) -> dict[str, int]:
    """Put every entity where ``rules`` say; how many moved, by the dataset they moved to."""
    moved: dict[str, int] = {}
    for chunk in iter_entity_assignments(conn):
        targets: dict[str, list[str]] = {}
        for entity_id, types, current in chunk:
            target = assign(entity_id, types, rules)
            if target != current:
                targets.setdefault(target, []).append(entity_id)
        for target, ids in targets.items():
            move_entities(conn, target, ids)
            moved[target] = moved.get(target, 0) + len(ids)
    return moved
