"""The disposal job: enforces every dataset's retention period and records what it removed.

A run reads the catalog, computes each dataset's cut-off (``urbanhub.governance.retention``)
and removes, in this order and each step in short transactions of its own:

1. on PostgreSQL, history partitions whose every row has expired (DETACH + DROP);
2. expired history rows, hourly rollups (on PostgreSQL also the expired hours of
   compacted rollup days) and quality flags;
3. entities with nothing current within their retention, then expired current values of
   the entities kept;
4. tombstones of deleted entities none of whose history is left. A deleted entity's
   history keeps its dataset through its tombstone, so it expires by that dataset's
   retention, like the history of the entities that remain.

Then it appends one audit entry per dataset something was removed from, with the counts
and the time range removed, and one entry for the run. The audit entries are written once
the data is gone; a run that dies half-way (a crash, not a shutdown) leaves what it removed
unrecorded, and the next run records only what it removes itself.

Who may: the CDO (a real run needs a ``govern`` credential; a dry run, which changes
nothing, any credential) and the hub itself (``urbanhub dispose``, the schedule inside
``urbanhub serve``). Past runs are read back from the audit trail by the CDO and the privacy
board.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import partial
from typing import TypeVar

from sqlalchemy import Column, Connection
from sqlalchemy.exc import OperationalError

from urbanhub.governance.retention import (
    RUN_ACTION,
    RUN_TARGET,
    Cutoffs,
    DatasetDisposal,
    DisposalRun,
    RowSpan,
    may_drop,
    partitions_to_inspect,
)
from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.errors import Conflict
from urbanhub.model.governance import Role
from urbanhub.model.identity import Scope, authorise
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.periodic import PeriodicJob
from urbanhub.store import retention as store
from urbanhub.store.audit import AuditLog
from urbanhub.store.catalog import list_datasets
from urbanhub.store.entities import EntityStore

log = logging.getLogger("urbanhub.disposal")
#: What a per-dataset expiry step returns (rows found, or hours).
Found = TypeVar("Found")
#: Rows SQLite looks at per write transaction: one range takes tens of milliseconds.
SQLITE_SCAN_ROWS = 20_000
#: Entities deleted per transaction.
ENTITY_BATCH = 500
#: Longest a partition drop waits for its locks before leaving the partition to row deletes.
PARTITION_LOCK_TIMEOUT_S = 5.0
_GOVERNORS = frozenset({Role.CDO})


def _check_may_dispose(caller: Caller, dry_run: bool) -> None:
    if SYSTEM_ROLE in caller.roles:
        return
    authorise(caller, "A dry run of disposal" if dry_run else "Running disposal",
              None if dry_run else Scope.GOVERN, _GOVERNORS)


class DisposalService:
    def __init__(self, store: EntityStore, audit: AuditLog,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.audit = audit
        self.clock = clock
        self._running = threading.Lock()

    def dispose(self, caller: Caller, *, dry_run: bool = False,
                stop: threading.Event | None = None) -> DisposalRun:
        """Run disposal now; with ``dry_run`` count what would go and change nothing.

        Setting ``stop`` ends the run after the step in progress. Conflict when another run
        is in progress (in this process, or on PostgreSQL in any).
        """
        _check_may_dispose(caller, dry_run)
        stop = stop or threading.Event()
        with self._exclusive():
            now = self.clock()
            with self.store.read() as conn:
                cutoffs = Cutoffs.of((r.dataset for r in list_datasets(conn)), now)
            tally = {owner: DatasetDisposal(owner, cutoffs.retention[owner], cut)
                     for owner, cut in cutoffs.at.items()}
            dropped: list[str] = []
            if self.store.dialect == "postgresql":
                dropped = self._drop_partitions(cutoffs, tally, dry_run, stop)
            if not stop.is_set():
                self._expire_rows(cutoffs, tally, dry_run, stop)
            if not stop.is_set():
                self._expire_entities(cutoffs, tally, dry_run, stop)
            if not (stop.is_set() or dry_run):
                with self.store.write() as conn:
                    store.forget_tombstones(conn)
            run = DisposalRun(uuid.uuid4().hex, now, caller.subject, dry_run,
                              not stop.is_set(), tuple(tally.values()), tuple(dropped))
            if not dry_run:
                self.audit.append(run.audit_events())
        return run

    def past_runs(self, caller: Caller, limit: int = 20) -> list[DisposalRun]:
        """The latest runs, newest first, as the audit trail recorded them."""
        if SYSTEM_ROLE not in caller.roles:
            authorise(caller, "Reading past disposals", None,
                      frozenset({Role.CDO, Role.PRIVACY_BOARD}))
        runs = []
        for entry in self.audit.by_target(RUN_TARGET, limit, action=RUN_ACTION):
            count = int(entry.details["datasetEntries"])
            runs.append(DisposalRun.from_audit(
                entry, self.audit.between(entry.seq - count, entry.seq)))
        return runs

    # --- steps -------------------------------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._running.acquire(blocking=False):
            raise Conflict("A disposal is already running in this process.")
        try:
            with store.disposal_lock(self.store.engine) as acquired:
                if not acquired:
                    raise Conflict("A disposal is already running in another process.")
                yield
        finally:
            self._running.release()

    def _transaction(self, dry_run: bool) -> AbstractContextManager[Connection]:
        """A read for a dry run (it must not take SQLite's write lock), else a write."""
        return self.store.read() if dry_run else self.store.write()

    def _drop_partitions(self, cutoffs: Cutoffs, tally: dict[str, DatasetDisposal],
                         dry_run: bool, stop: threading.Event) -> list[str]:
        with self.store.read() as conn:
            partitions = store.history_partitions(conn)
        dropped = []
        for partition in partitions_to_inspect(partitions, cutoffs):
            if stop.is_set():
                break
            try:
                with self._transaction(dry_run) as conn:
                    census = cutoffs.census(store.partition_census(
                        conn, partition,
                        lock_timeout_s=None if dry_run else PARTITION_LOCK_TIMEOUT_S))
                    if not may_drop(partition, census, cutoffs):
                        continue
                    if not dry_run:
                        store.drop_partition(conn, partition)
            except OperationalError as exc:
                if not store.lock_timed_out(exc):
                    raise
                log.warning("partition %s left for row deletes: %s", partition.name,
                            exc.orig or exc)
                continue
            dropped.append(partition.name)
            for owner, span in census.items():
                tally[owner].partitions.append(partition.name)
                if not dry_run:  # a dry run counts these rows with the row deletes
                    tally[owner].history += span
        if dropped and not dry_run:
            self.store.forget_partitions()
        return dropped

    def _expire_rows(self, cutoffs: Cutoffs, tally: dict[str, DatasetDisposal],
                     dry_run: bool, stop: threading.Event) -> None:
        for column in store.EXPIRING:
            found = (self._expire_rows_sqlite(column, cutoffs, dry_run, stop)
                     if self.store.dialect == "sqlite" else
                     self._per_dataset(cutoffs, dry_run, stop, partial(
                         store.expire_rows, column=column, cutoffs=cutoffs,
                         delete_rows=not dry_run)))
            for owner, span in found.items():
                figures = tally[owner]
                if column.table.name == "history":
                    figures.history += span
                elif column.table.name == "rollup_hourly":
                    figures.rollup_hours += span.rows
                else:
                    figures.quality_flags += span.rows
        if self.store.dialect == "postgresql":  # compacted rollup days (store.rollups)
            hours = self._per_dataset(cutoffs, dry_run, stop, partial(
                store.expire_rollup_days, cutoffs=cutoffs, delete_rows=not dry_run))
            for owner, count in hours.items():
                tally[owner].rollup_hours += count

    def _per_dataset(self, cutoffs: Cutoffs, dry_run: bool, stop: threading.Event,
                     expire: Callable[..., Found]) -> dict[str, Found]:
        """PostgreSQL: ``expire(conn, owner=...)`` for each dataset, a transaction each."""
        found = {}
        for owner in cutoffs.at:
            if stop.is_set():
                break
            with self._transaction(dry_run) as conn:
                found[owner] = expire(conn, owner=owner)
        return found

    def _expire_rows_sqlite(self, column: Column[datetime], cutoffs: Cutoffs,
                            dry_run: bool, stop: threading.Event) -> dict[str, RowSpan]:
        found: dict[str, RowSpan] = {}
        after: int | None = 0
        while after is not None and not stop.is_set():
            with self._transaction(dry_run) as conn:
                after, batch = store.expire_rows_in_range(
                    conn, column, cutoffs, after, SQLITE_SCAN_ROWS, delete_rows=not dry_run)
            for owner, span in batch.items():
                found[owner] = found.get(owner, RowSpan()) + span
        return found

    def _expire_entities(self, cutoffs: Cutoffs, tally: dict[str, DatasetDisposal],
                         dry_run: bool, stop: threading.Event) -> None:
        for owner, figures in tally.items():
            if dry_run:
                with self.store.read() as conn:
                    figures.entities = store.count_expired_entities(conn, owner, cutoffs)
                    figures.attribute_values = store.expire_attribute_values(
                        conn, owner, cutoffs, delete_rows=False)
                continue
            while not stop.is_set():
                with self.store.write() as conn:
                    ids = store.expired_entity_ids(conn, owner, cutoffs, ENTITY_BATCH)
                    store.delete_entities(conn, ids)
                figures.entities += len(ids)
                if len(ids) < ENTITY_BATCH:
                    break
            if stop.is_set():
                return
            with self.store.write() as conn:
                figures.attribute_values = store.expire_attribute_values(
                    conn, owner, cutoffs, delete_rows=True)


class DisposalSchedule(PeriodicJob):
    """Runs disposal every ``interval_s`` seconds inside ``urbanhub serve``."""

    name = "disposal"

    def __init__(self, service: DisposalService, interval_s: float) -> None:
        super().__init__(interval_s)
        self.service = service
        self.caller = Caller.system("disposal-schedule")

    def run_once(self) -> DisposalRun | None:
        """One run, logged; failures are logged and the schedule carries on."""
        started = time.monotonic()
        try:
            run = self.service.dispose(self.caller, stop=self.stopping)
        except Conflict as exc:
            log.info("disposal skipped: %s", exc.detail)
            return None
        except Exception:  # the schedule must outlive a failed run; the next one retries
            log.exception("disposal run failed")
            return None
        log.info("disposal run %s %s", run.run_id, "done" if run.complete else "stopped",
                 extra={"runId": run.run_id, "seconds": round(time.monotonic() - started, 3),
                        **run.totals})
        return run
