"""Erasure of a data subject's records on request (GDPR Art. 17), reported with counts.

A subject is whoever a subject attribute names: the attributes datasets declare as
holding the data subject's pseudonymous id. An attribute declared so by any dataset
identifies a subject wherever it appears, so an entity naming the subject is erased
whichever dataset it is in. In one transaction the erasure deletes:

* every entity whose current value of a subject attribute is the subject, with its
  current state, types, whole history, hourly rollups and quality flags, and the devices
  that write it
  (a device names its entity, so it cannot outlive it; the device revision is bumped, so
  the ingest gate of every process refuses their readings from its next batch on);
* the history instances of subject attributes naming the subject in other entities (and
  their quality flags): those whose subject changed since (a permit passed on), or that
  were deleted earlier, whose history outlives them.

The audit entry records the counts and a digest of the subject id, never the id itself.
Consent records stay: they are the city's proof that past uses were lawful.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from urbanhub.governance.audit import AuditEvent
from urbanhub.governance.consent import audit_target, authorise_subject_rights
from urbanhub.model.caller import Caller
from urbanhub.model.consent import check_subject_id, subject_digest
from urbanhub.model.requests import MAX_REASON, required_text
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store import erasure as store
from urbanhub.store.audit import AuditLog
from urbanhub.store.db import lock_sqlite_database
from urbanhub.store.devices import bump_revision as bump_device_revision
from urbanhub.store.entities import EntityStore


@dataclass(frozen=True)
class DatasetErasure:
    """What was erased in one catalog dataset (None: entities that no longer exist)."""

    dataset: str | None
    entities: int = 0
    history_rows: int = 0  # all history of the erased entities
    rollup_hours: int = 0  # hourly rollup rows of the erased entities, deleted
    former_values: int = 0  # subject attribute instances naming the subject, elsewhere
    quality_flags: int = 0  # flags of the history rows deleted

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "entities": self.entities,
                "historyRows": self.history_rows, "rollupHours": self.rollup_hours,
                "formerValues": self.former_values, "qualityFlags": self.quality_flags}


@dataclass(frozen=True)
class ErasureReport:
    subject_digest: str
    erased_at: datetime
    datasets: tuple[DatasetErasure, ...]
    devices_removed: tuple[str, ...]


class ErasureService:
    def __init__(self, store: EntityStore, audit: AuditLog,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock

    def erase(self, caller: Caller, subject: str, reason: str) -> ErasureReport:
        """Erase every record of ``subject`` and report what was deleted, per dataset."""
        authorise_subject_rights(caller, "Erasing a data subject's records")
        check_subject_id(subject)
        reason = required_text(reason, "The reason for an erasure", MAX_REASON)
        with self.store.write() as conn:
            if conn.dialect.name == "sqlite":
                lock_sqlite_database(conn)  # what is found is what gets deleted
            names = store.subject_attributes(conn)
            by_dataset: dict[str, list[str]] = {}
            for entity_id, dataset_id in sorted(
                    store.entities_naming(conn, names, subject).items()):
                by_dataset.setdefault(dataset_id, []).append(entity_id)
            erased = {dataset_id: store.delete_entities(conn, ids)
                      for dataset_id, ids in by_dataset.items()}
            former = store.delete_former_values(conn, names, subject)
            report = ErasureReport(subject_digest(subject), self.clock(),
                                   _per_dataset(erased, former),
                                   tuple(sorted(d for e in erased.values() for d in e.devices)))
            events = [AuditEvent(caller.subject, "governance.erasure", audit_target(subject), {
                "subjectSha256": report.subject_digest, "reason": reason,
                "datasets": [d.to_json() for d in report.datasets],
                "devicesRemoved": list(report.devices_removed)})]
            if report.devices_removed:
                # Every process's device index is stale now; the ingest gate re-reads it
                # before its next batch, so the removed devices' readings are refused.
                bump_device_revision(conn)
                events += [AuditEvent(caller.subject, "device.delete", f"device:{device_id}",
                                      {"cause": "governance.erasure",
                                       "subjectSha256": report.subject_digest})
                           for device_id in report.devices_removed]
            self.audit.append(events, conn)
        return report


def _per_dataset(erased: dict[str, store.ErasedEntities],
                 former: store.FormerValues) -> tuple[DatasetErasure, ...]:
    """One line per dataset touched, by id; entities that no longer exist last."""
    lines = []
    for dataset_id in sorted(erased.keys() | former.history_rows.keys(),
                             key=lambda d: (d is None, d or "")):
        gone = erased.get(dataset_id) if dataset_id is not None else None
        flags = former.quality_flags[dataset_id]
        if gone is None:
            lines.append(DatasetErasure(dataset_id, former_values=former.history_rows[dataset_id],
                                        quality_flags=flags))
        else:
            lines.append(DatasetErasure(dataset_id, gone.entities, gone.history_rows,
                                        gone.rollup_hours, former.history_rows[dataset_id],
                                        gone.quality_flags + flags))
    return tuple(lines)
