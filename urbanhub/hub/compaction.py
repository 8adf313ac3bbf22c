"""Rollup compaction: the hourly rollups of past days become one row per sensor and day.

PostgreSQL only (``urbanhub.store.rollups`` says why and how). A day is compacted once it
ended more than ``COMPACTION_LAG`` ago, so the readings of a sensor that reports late
usually arrive first; those that come later still count (reads add them up, and the next
run merges them). Each day is one transaction; two runs at once (two hub processes) are
safe, as the second finds the hours gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from urbanhub.ngsild.timeutil import utcnow
from urbanhub.periodic import PeriodicJob
from urbanhub.store import rollups
from urbanhub.store.entities import EntityStore
from urbanhub.store.rollups import CompactedDay

log = logging.getLogger(__name__)

#: How long after its end a day is compacted.
COMPACTION_LAG = timedelta(days=1)


class RollupCompaction:
    def __init__(self, store: EntityStore, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    @property
    def supported(self) -> bool:
        return self.store.dialect == "postgresql"

    def pending_days(self, before: datetime | None = None) -> list[datetime]:
        """The days a run would compact: those with hourly rows that ended by ``before``
        (default: ``COMPACTION_LAG`` ago)."""
        if not self.supported:
            return []
        with self.store.read() as conn:
            return rollups.days_to_compact(conn, before or self.clock() - COMPACTION_LAG)

    def run(self, days: list[datetime] | None = None, *, stop: threading.Event | None = None,
            done: Callable[[CompactedDay], None] | None = None) -> list[CompactedDay]:
        """Compact ``days`` (default: ``pending_days()``), oldest first, each in its own
        transaction; ``stop`` ends the run after the day in progress, ``done`` hears of
        each day compacted."""
        compacted = []
        for day in self.pending_days() if days is None else days:
            if stop is not None and stop.is_set():
                break
            with self.store.write() as conn:
                result = rollups.compact_day(conn, day)
            compacted.append(result)
            if done is not None:
                done(result)
        return compacted


class CompactionSchedule(PeriodicJob):
    """Runs compaction every ``interval_s`` seconds inside ``urbanhub serve``."""

    name = "compaction"

    def __init__(self, compaction: RollupCompaction, interval_s: float) -> None:
        super().__init__(interval_s)
        self.compaction = compaction

    def run_once(self) -> list[CompactedDay]:
        started = time.monotonic()
        try:
            days = self.compaction.run(stop=self.stopping)
        except Exception:  # the schedule must outlive a failed run; the next one retries
            log.exception("rollup compaction failed")
            return []
        if days:
            log.info("rollup compaction: %d days", len(days), extra={
                "days": len(days), "hours": sum(d.hours for d in days),
                "seconds": round(time.monotonic() - started, 3)})
        return days
