"""Retention and disposal: what has outlived its dataset's retention period, and how it goes.

Pure: given the catalog's datasets, the time and the history partitions, this decides the
cut-offs and which partitions may be dropped whole; the store carries it out
(``urbanhub.store.retention``) and the disposal service (``urbanhub.governance.disposal``)
runs it and records it in the audit trail.

* **Cut-off.** Data of a dataset observed before ``now - retention``, rounded down to the
  hour, has expired. Rounding down keeps history and the hourly rollups consistent (an hour
  is removed from both or from neither) at the price of keeping data up to an hour longer.
* **Who owns a row.** A row belongs to the catalog dataset of its entity. Rows of entities
  in no stored dataset (the built-in uncatalogued dataset, a dataset id the catalog does
  not know) and rows whose entity was deleted follow the uncatalogued dataset's retention:
  nothing outlives the retention of some dataset.
* **Partitions.** A monthly history partition is dropped whole (instead of deleting row by
  row) when every row in it has expired: its upper bound is at or before the cut-off of
  every dataset that has rows in it. Only partitions ending at or before the latest cut-off
  can qualify, so only those are inspected.
* **Entities** of a dataset are deleted whole when nothing about them is current within the
  retention period: no attribute observed at or after the cut-off and no write since.
  Entities a registered device writes are kept (the registry is configuration, and a
  device back from a long outage must find its entity), unless the device is retired;
  their expired values still go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from urbanhub.governance.audit import AuditEntry, AuditEvent
from urbanhub.model.catalog import UNCATALOGUED, UNCATALOGUED_ID
from urbanhub.model.governance import Dataset, format_duration, parse_retention
from urbanhub.ngsild.timeutil import format_datetime, parse_datetime

#: Audit action of one dataset's disposal, and of the run that groups them.
DATASET_ACTION = "retention.dispose"
RUN_ACTION = "retention.run"
#: Target of run entries, so past runs are found through the audit trail's target index.
RUN_TARGET = "retention"


def cutoff(now: datetime, retention: timedelta) -> datetime:
    """The start of the hour in which data of this retention period expires."""
    return (now - retention).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Cutoffs:
    """The cut-off of each dataset, the uncatalogued dataset's included.

    ``catalogued`` are the datasets stored in the catalog; every other dataset id, and no
    dataset at all (a deleted entity), falls to the uncatalogued dataset.
    """

    at: dict[str, datetime]
    retention: dict[str, timedelta]

    @classmethod
    def of(cls, datasets: Iterable[Dataset], now: datetime) -> Cutoffs:
        every = {d.id: d for d in datasets} | {UNCATALOGUED_ID: UNCATALOGUED}
        return cls({i: cutoff(now, d.retention) for i, d in sorted(every.items())},
                   {i: d.retention for i, d in sorted(every.items())})

    @property
    def catalogued(self) -> list[str]:
        return [i for i in self.at if i != UNCATALOGUED_ID]

    @property
    def latest(self) -> datetime:
        return max(self.at.values())

    def owner(self, dataset_id: str | None) -> str:
        """The dataset whose retention applies to rows of an entity in ``dataset_id``."""
        return dataset_id if dataset_id in self.at and dataset_id is not None else (
            UNCATALOGUED_ID)

    def census(self, found: Mapping[str | None, RowSpan]) -> dict[str, RowSpan]:
        """Rows per entity dataset (None: no entity) gathered under their owners."""
        owners: dict[str, RowSpan] = {}
        for dataset_id, span in found.items():
            owner = self.owner(dataset_id)
            owners[owner] = owners.get(owner, RowSpan()) + span
        return owners


@dataclass(frozen=True, order=True)
class Partition:
    """One history partition: rows observed in ``[lower, upper)``."""

    lower: datetime
    upper: datetime
    name: str


def partitions_to_inspect(partitions: Iterable[Partition], cutoffs: Cutoffs) -> list[Partition]:
    """Partitions that may be wholly expired, oldest first; the others cannot be."""
    return sorted(p for p in partitions if p.upper <= cutoffs.latest)


def may_drop(partition: Partition, census: Mapping[str, RowSpan], cutoffs: Cutoffs) -> bool:
    """Whether every row of the partition has expired; ``census`` is by owning dataset.

    An empty partition (no census) holds nothing to keep.
    """
    return all(partition.upper <= cutoffs.at[owner] for owner in census)


@dataclass(frozen=True)
class RowSpan:
    """How many rows, observed from ``first`` to ``last`` (None when there are none)."""

    rows: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def __add__(self, other: RowSpan) -> RowSpan:
        if not other.rows:
            return self
        if not self.rows:
            return other
        assert self.first and self.last and other.first and other.last
        return RowSpan(self.rows + other.rows, min(self.first, other.first),
                       max(self.last, other.last))


@dataclass
class DatasetDisposal:
    """What one run removed of one dataset (or, in a dry run, would remove)."""

    dataset_id: str
    retention: timedelta
    cutoff: datetime
    history: RowSpan = RowSpan()
    rollup_hours: int = 0
    quality_flags: int = 0
    attribute_values: int = 0
    entities: int = 0
    partitions: list[str] = field(default_factory=list)

    @property
    def removed_anything(self) -> bool:
        return bool(self.history.rows or self.rollup_hours or self.quality_flags
                    or self.attribute_values or self.entities or self.partitions)

    def details(self, run_id: str) -> dict[str, Any]:
        """The audit entry's details: counts and the time range of the history removed."""
        return {"runId": run_id, "retention": format_duration(self.retention),
                "cutoff": format_datetime(self.cutoff), "historyRows": self.history.rows,
                "removedFrom": _time(self.history.first),
                "removedUntil": _time(self.history.last), "rollupHours": self.rollup_hours,
                "qualityFlags": self.quality_flags, "attributeValues": self.attribute_values,
                "entities": self.entities, "partitionsDropped": list(self.partitions)}

    @classmethod
    def from_details(cls, dataset_id: str, details: Mapping[str, Any]) -> DatasetDisposal:
        history = RowSpan(details["historyRows"], _parse_time(details["removedFrom"]),
                          _parse_time(details["removedUntil"]))
        return cls(dataset_id, parse_retention(details["retention"]),
                   parse_datetime(details["cutoff"]), history, details["rollupHours"],
                   details["qualityFlags"], details["attributeValues"], details["entities"],
                   list(details["partitionsDropped"]))


@dataclass(frozen=True)
class DisposalRun:
    """One disposal run: every dataset checked, with what was removed of each.

    ``complete`` is False when the run was stopped (the hub shutting down) before the end;
    what it removed until then is recorded all the same.
    """

    run_id: str
    at: datetime
    actor: str
    dry_run: bool
    complete: bool
    datasets: tuple[DatasetDisposal, ...]
    partitions_dropped: tuple[str, ...] = ()

    @property
    def totals(self) -> dict[str, int]:
        return {"historyRows": sum(d.history.rows for d in self.datasets),
                "rollupHours": sum(d.rollup_hours for d in self.datasets),
                "qualityFlags": sum(d.quality_flags for d in self.datasets),
                "attributeValues": sum(d.attribute_values for d in self.datasets),
                "entities": sum(d.entities for d in self.datasets),
                "partitionsDropped": len(self.partitions_dropped)}

    def audit_events(self) -> list[AuditEvent]:
        """One entry per dataset something was removed from, then the run's own entry.

        Datasets with nothing to remove get no entry of their own (hourly runs would bury
        the trail in zeros); the run entry names every dataset checked with its cut-off,
        which is the proof that it was checked. The dataset entries come right before the
        run entry, in one append, and the run entry says how many there are.
        """
        removed = [d for d in self.datasets if d.removed_anything]
        events = [AuditEvent(self.actor, DATASET_ACTION, d.dataset_id, d.details(self.run_id))
                  for d in removed]
        events.append(AuditEvent(self.actor, RUN_ACTION, RUN_TARGET, {
            "runId": self.run_id, "at": format_datetime(self.at), "complete": self.complete,
            "checked": {d.dataset_id: {"retention": format_duration(d.retention),
                                       "cutoff": format_datetime(d.cutoff)}
                        for d in self.datasets},
            "partitionsDropped": list(self.partitions_dropped), "totals": self.totals,
            "datasetEntries": len(removed)}))
        return events

    @classmethod
    def from_audit(cls, run: AuditEntry, dataset_entries: Sequence[AuditEntry]) -> DisposalRun:
        """A past run read back from its run entry and the dataset entries before it."""
        details = run.details
        removed = {e.target: DatasetDisposal.from_details(e.target, e.details)
                   for e in dataset_entries if e.action == DATASET_ACTION and e.target
                   and e.details.get("runId") == details["runId"]}
        datasets = tuple(removed.get(dataset_id) or DatasetDisposal(
            dataset_id, parse_retention(checked["retention"]),
            parse_datetime(checked["cutoff"])) for dataset_id, checked
            in sorted(details["checked"].items()))
        return cls(details["runId"], parse_datetime(details["at"]), run.actor, False,
                   details["complete"], datasets, tuple(details["partitionsDropped"]))


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment)


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else parse_datetime(text)
