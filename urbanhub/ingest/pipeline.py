"""The ingest pipeline shared by every adapter (HTTP, MQTT, file import, demo city).

Adapters turn their messages into ``Reading`` objects (or report them as rejects); the
pipeline checks them at the gate, stores the valid ones in one transaction, and sends the
rest to the dead-letter store. A bad reading never costs a good one its place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from urbanhub.hub.metrics import Metrics
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store.dead_letters import DeadLetter, add_dead_letters
from urbanhub.store.entities import EntityStore, HistoryRow

Reading = HistoryRow


@dataclass
class Rejected:
    """A message (or part of one) the pipeline refused, and why."""

    reason: str
    payload: bytes
    source: str
    topic: str | None = None
    index: int | None = None  # position in the adapter's batch, when it has one


@dataclass
class IngestReport:
    accepted: int = 0  # readings that passed the gate
    stored: int = 0  # of those, new to history (a replay stores nothing)
    rejected: list[Rejected] = field(default_factory=list)


class IngestPipeline:
    def __init__(self, store: EntityStore, metrics: Metrics,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock

    def ingest(self, readings: Sequence[Reading], rejected: Sequence[Rejected] = (),
               ) -> IngestReport:
        """Store ``readings`` whose entity exists; dead-letter the rest with ``rejected``."""
        report = IngestReport(rejected=list(rejected))
        now = self.clock()
        with self.store.write() as conn:
            known = self.store.existing(conn, {r.entity_id for r in readings})
            good = [r for r in readings if r.entity_id in known]
            for reading in readings:
                if reading.entity_id not in known:
                    report.rejected.append(Rejected(
                        f"unknown entity {reading.entity_id}", _describe(reading), "pipeline"))
            report.accepted = len(good)
            report.stored = self.store.apply_readings(conn, good, now)
            add_dead_letters(conn, [DeadLetter(r.source, r.reason, r.payload, r.topic)
                                    for r in report.rejected], now)
        self.metrics.add("readings_accepted", report.accepted)
        self.metrics.add("readings_stored", report.stored)
        self.metrics.add("readings_rejected", len(report.rejected))
        return report


def _describe(reading: Reading) -> bytes:
    return orjson.dumps({"entityId": reading.entity_id, "attribute": reading.name,
                         "observedAt": reading.observed_at.isoformat(),
                         "instance": reading.instance})
