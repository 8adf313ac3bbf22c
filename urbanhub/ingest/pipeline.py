"""The ingest pipeline shared by every adapter (HTTP, MQTT, file import, demo city).

Adapters turn their messages into ``Reading`` objects (or report them as rejects); the
pipeline checks them at the gate, stores the valid ones in one transaction, and sends the
rest to the dead-letter store. A bad reading never costs a good one its place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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


@dataclass(slots=True)
class Origin:
    """Where a reading came from, so a reading refused at the gate is dead-lettered whole.

    ``payload`` is the raw bytes of a message, or the parsed element of an HTTP batch
    (serialised only if it is refused, which keeps the accepted path cheap).
    """

    source: str
    payload: Any
    topic: str | None = None
    index: int | None = None

    def raw(self) -> bytes:
        if isinstance(self.payload, bytes | bytearray):
            return bytes(self.payload)
        return orjson.dumps(self.payload)


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
               origins: Sequence[Origin] | None = None) -> IngestReport:
        """Store ``readings`` whose entity exists; dead-letter the rest with ``rejected``.

        ``origins`` (parallel to ``readings``) lets a refused reading be dead-lettered as the
        message it came from, once per message.
        """
        report = IngestReport(rejected=list(rejected))
        now = self.clock()
        with self.store.write() as conn:
            ids = {r.entity_id for r in readings}
            known = self.store.existing(conn, ids)
            if len(known) == len(ids):
                good = list(readings)
            else:
                good = [r for r in readings if r.entity_id in known]
                report.rejected.extend(_unknown(readings, known, origins))
            report.accepted = len(good)
            report.stored = self.store.apply_readings(conn, good, now)
            add_dead_letters(conn, [DeadLetter(r.source, r.reason, r.payload, r.topic)
                                    for r in report.rejected], now)
        self.metrics.add("readings_accepted", report.accepted)
        self.metrics.add("readings_stored", report.stored)
        self.metrics.add("readings_rejected", len(report.rejected))
        return report


def _unknown(readings: Sequence[Reading], known: set[str],
             origins: Sequence[Origin] | None) -> list[Rejected]:
    refused: list[Rejected] = []
    seen: set[tuple[int, str]] = set()
    for position, reading in enumerate(readings):
        if reading.entity_id in known:
            continue
        reason = f"unknown entity {reading.entity_id}"
        if origins is None:
            refused.append(Rejected(reason, _describe(reading), "pipeline"))
            continue
        origin = origins[position]
        if (id(origin), reading.entity_id) not in seen:
            seen.add((id(origin), reading.entity_id))
            refused.append(Rejected(reason, origin.raw(), origin.source, origin.topic,
                                    origin.index))
    return refused


def _describe(reading: Reading) -> bytes:
    return orjson.dumps({"entityId": reading.entity_id, "attribute": reading.name,
                         "observedAt": reading.observed_at.isoformat(),
                         "instance": reading.instance})
