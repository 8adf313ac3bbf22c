"""The data quality service: rules per dataset, flags at ingest, the report, silent entities.

Who may:

* everyone reads a dataset's rules (like the catalog, they say what the city promises);
* the CDO, or a steward of the owning organisation, sets them, with a ``govern``
  credential; every change is in the audit trail;
* the report and the silent entities describe the dataset's entities (the silent list
  names them), so they are shown to whoever the policy decision point lets read the
  dataset for the stated purpose (the access guard, whose decision is audited): anyone
  for open data, the CDO with a governance purpose, the owner's staff for operations.

Ingest calls ``flag_readings`` inside its write transaction, after storing the readings.
It must cost nothing when no dataset has rules and little when some have: the rules are
cached for a few seconds (a change made in this process applies at once, one made by
another process within ``RULES_TTL_S``), entities are looked up only while some dataset
has rules, and history is read back only for ``maxRepeats`` rules and for replays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from urbanhub.governance.audit import AuditEvent
from urbanhub.governance.catalog import CatalogService
from urbanhub.governance.enforcement import AccessGuard
from urbanhub.governance.quality import (
    Observation,
    QualityFlag,
    QualityReport,
    QualityRules,
    ReadingKey,
    comparable,
    frequency_length,
    judge_readings,
    reading_key,
    readings_measure,
    repeated,
    report_window,
    required_measure,
    timeliness_measure,
    validity_measure,
)
from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.errors import BadRequestData, Conflict, Forbidden, Unauthenticated
from urbanhub.model.governance import Dataset, Role
from urbanhub.model.identity import Scope, authorise
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store import quality as store
from urbanhub.store.audit import AuditLog
from urbanhub.store.entities import EntityStore

#: Seconds a process keeps the rules it read before reading them again.
RULES_TTL_S = 5.0
#: Longest window a report may cover: it counts every reading in it.
MAX_WINDOW = timedelta(days=366)
_REPEATED = int(QualityFlag.REPEATED)


@dataclass(frozen=True)
class SilentEntity:
    entity_id: str
    last_seen: datetime
    device_id: str | None


@dataclass(frozen=True)
class SilentEntities:
    """Entities not heard of for longer than ``threshold``, longest silent first."""

    as_of: datetime
    threshold: timedelta
    threshold_source: str  # "maxStaleness" or "updateFrequency"
    total: int
    entities: list[SilentEntity]


def check_may_set_rules(caller: Caller, dataset: Dataset) -> None:
    if SYSTEM_ROLE in caller.roles:
        return
    what = f"Setting the quality rules of {dataset.id}"
    authorise(caller, what, Scope.GOVERN, frozenset({Role.CDO, Role.STEWARD}))
    if Role.CDO not in caller.roles and caller.organisation != dataset.owner:
        raise Forbidden(f"{what} needs the CDO or a steward of {dataset.owner}; "
                        f"{caller.subject} is of {caller.organisation or 'no organisation'}.")


class QualityService:
    def __init__(self, store: EntityStore, audit: AuditLog, catalog: CatalogService,
                 guard: AccessGuard, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.audit = audit
        self.catalog = catalog
        self.guard = guard
        self.clock = clock
        self._cached: tuple[float, dict[str, QualityRules]] | None = None

    # --- rules -------------------------------------------------------------------------------

    def rules(self, dataset_id: str) -> QualityRules:
        """A dataset's rules (empty when it has none); 404 for an unknown dataset."""
        self.catalog.dataset(dataset_id)
        with self.store.read() as conn:
            stored = store.get_rules(conn, dataset_id)
        return QualityRules.from_json(stored) if stored is not None else QualityRules()

    def set_rules(self, caller: Caller, dataset_id: str, rules: QualityRules) -> QualityRules:
        """Replace a dataset's rules (empty rules remove them), audited in the same
        transaction. Readings stored before keep the flags they got."""
        dataset = self.catalog.dataset(dataset_id).dataset
        check_may_set_rules(caller, dataset)
        with self.audit.transaction() as conn:
            before = store.get_rules(conn, dataset_id)
            after = None if rules.empty else rules.to_json()
            if before != after:
                store.put_rules(conn, dataset_id, after, self.clock())
                self.audit.append([AuditEvent(caller.subject, "quality.rules.set", dataset_id,
                                              {"before": before, "after": after})], conn)
        self._cached = None
        return rules

    def _current_rules(self, conn: Connection) -> dict[str, QualityRules]:
        cached = self._cached
        now = time.monotonic()
        if cached is None or now - cached[0] > RULES_TTL_S:
            cached = (now, {dataset_id: QualityRules.from_json(stored)
                            for dataset_id, stored in store.all_rules(conn).items()})
            self._cached = cached  # replaced whole: ingest threads never lock
        return cached[1]

    # --- the ingest hook ---------------------------------------------------------------------

    def flag_readings(self, conn: Connection, readings: Sequence[Observation],
                      stored: int) -> int:
        """Judge readings just stored (``stored`` of them were new) and keep the flags of
        those that fail a rule; returns how many failed."""
        rules = self._current_rules(conn) if readings else {}
        if not rules:
            return 0
        dataset_of = store.entity_datasets(conn, {r.entity_id for r in readings}, list(rules))
        ruled = [r for r in readings if r.entity_id in dataset_of
                 and r.name in rules[dataset_of[r.entity_id]].attributes]
        if not ruled:
            return 0
        if stored < len(readings):  # replays: the stored reading counts, not the resent one
            ruled = list(store.stored_readings(conn, [reading_key(r) for r in ruled]))
        flags = judge_readings(ruled, dataset_of, rules)
        for key in self._repeated(conn, ruled, dataset_of, rules):
            flags[key] |= _REPEATED
        failing = {key: mask for key, mask in flags.items() if mask}
        store.put_flags(conn, failing)
        return len(failing)

    def _repeated(self, conn: Connection, readings: Sequence[Observation],
                  dataset_of: dict[str, str], rules: dict[str, QualityRules]
                  ) -> list[ReadingKey]:
        """Keys of the readings that repeat their attribute's value too often.

        Each series (entity, attribute, datasetId) is judged in time order after the
        ``maxRepeats`` values history holds before its oldest reading in the batch: exact
        for readings that arrive in time order, which is how sensors send them; readings
        that arrive late, older than ones stored, are judged against what came before them
        in the batch and in history.
        """
        series: dict[tuple[str, str, str], dict[datetime, Any]] = {}
        limits: dict[tuple[str, str, str], int] = {}
        for reading in sorted(readings, key=lambda r: r.observed_at):
            rule = rules[dataset_of[reading.entity_id]].attributes[reading.name]
            if rule.max_repeats is not None:
                key = (reading.entity_id, reading.name, reading.dataset_id)
                series.setdefault(key, {}).setdefault(
                    reading.observed_at, comparable(reading.value_num, reading.instance))
                limits[key] = rule.max_repeats
        by_limit: dict[int, list[tuple[str, str, str, datetime]]] = {}
        for key, batch in series.items():
            by_limit.setdefault(limits[key], []).append((*key, min(batch)))
        found: list[ReadingKey] = []
        for limit, wanted in by_limit.items():
            stored = store.previous_values(conn, wanted, limit)
            for entity_id, name, dataset_id, _ in wanted:
                key = (entity_id, name, dataset_id)
                before = [comparable(number, instance) for number, instance
                          in stored.get(key, [])]
                found.extend((*key, moment) for moment
                             in repeated(before, list(series[key].items()), limit))
        return found

    def _readable(self, caller: Caller, dataset_id: str) -> Dataset:
        """The dataset, if the policy decision point lets the caller read it."""
        dataset = self.catalog.dataset(dataset_id).dataset
        scope = self.guard.scope(caller)
        if scope.unrestricted or dataset_id in scope.views:
            return dataset
        what = f"The quality of {dataset_id} ({dataset.classification.value} data)"
        if not caller.authenticated:
            raise Unauthenticated(f"{what} is shown to those who may read the dataset: send "
                                  "credentials and the purpose (Urbanhub-Purpose).")
        raise Forbidden(f"{what} is shown to those who may read the dataset; the policy "
                        f"does not let {caller.subject} read it for the purpose "
                        f"{caller.purpose or '(none stated)'}.")

    # --- the report --------------------------------------------------------------------------

    def report(self, caller: Caller, dataset_id: str,
               window: timedelta = timedelta(days=1)) -> QualityReport:
        if not timedelta(0) < window <= MAX_WINDOW:
            raise BadRequestData(f"The report window must be positive and at most "
                                 f"{MAX_WINDOW.days} days.")
        dataset = self._readable(caller, dataset_id)
        rules = self.rules(dataset_id)
        now = self.clock()
        frequency = (frequency_length(dataset.update_frequency, now)
                     if dataset.update_frequency else None)
        span = report_window(now, window, frequency)
        with self.store.read() as conn:
            entities = store.entity_count(conn, dataset_id)
            present = store.entities_having(conn, dataset_id, rules.required)
            received = store.received_periods(
                conn, dataset_id, span.start, span.end,
                int(span.step.total_seconds())) if span.step is not None else 0
            readings = store.readings_between(conn, dataset_id, span.start, span.end)
            flagged = store.flag_counts(conn, dataset_id, span.start, span.end)
            seen = [s.at for s in store.last_seen(conn, dataset_id)] if (
                rules.max_staleness is not None) else []
        return QualityReport(
            dataset_id, now, span, entities, required_measure(rules, entities, present),
            readings_measure(span, dataset.update_frequency, entities, received),
            validity_measure(rules, readings, flagged),
            timeliness_measure(rules, seen, now))

    def silent(self, caller: Caller, dataset_id: str, *, limit: int,
               offset: int = 0) -> SilentEntities:
        """Entities of the dataset silent beyond their expected interval: the rules'
        maxStaleness, else the dataset's update frequency."""
        dataset = self._readable(caller, dataset_id)
        rules = self.rules(dataset_id)
        now = self.clock()
        if rules.max_staleness is not None:
            threshold, source = rules.max_staleness, "maxStaleness"
        elif dataset.update_frequency is not None:
            threshold = frequency_length(dataset.update_frequency, now)
            source = "updateFrequency"
        else:
            raise Conflict(f"Dataset {dataset_id} declares neither maxStaleness nor an update "
                           "frequency, so no interval says when an entity is silent.")
        with self.store.read() as conn:
            seen = store.last_seen(conn, dataset_id)
        silent = sorted((s for s in seen if now - s.at > threshold),
                        key=lambda s: (s.at, s.entity_id))
        return SilentEntities(now, threshold, source, len(silent), [
            SilentEntity(s.entity_id, s.at, s.device_id) for s in silent[offset:offset + limit]])
