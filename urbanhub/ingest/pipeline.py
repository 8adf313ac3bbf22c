"""The ingest pipeline shared by every adapter (HTTP, MQTT, file import, demo city).

Adapters turn their messages into ``Reading`` objects (or report them as rejects); the
pipeline checks them at the gate, stores the valid ones in one transaction, and sends the
rest to the dead-letter store. A bad reading never costs a good one its place.

The gate: a reading of an entity that a device writes passes only if its sender may write
for that device (the device itself, its owner's gateway key, or a transport that
authenticated the device) and the device is active; a reading of an unknown entity never
passes. Everything refused in a batch, here or by the adapter, is summarised in one audit
entry per batch (per device and reason), in the transaction that dead-letters it: an entry
per reading would cost a chained append each, on a path that takes 100k readings a second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from urbanhub.governance.audit import AuditEvent
from urbanhub.hub.metrics import Metrics
from urbanhub.ingest.devices import DeviceRegistry, GateRefusal
from urbanhub.model.devices import Refusal, Sender
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store.audit import AuditLog
from urbanhub.store.dead_letters import DeadLetter, add_dead_letters
from urbanhub.store.entities import EntityStore, HistoryRow

if TYPE_CHECKING:
    from urbanhub.governance.quality_service import QualityService

Reading = HistoryRow
#: Longest reason text quoted in an audit summary (the dead letter keeps the whole one).
_EXAMPLE_CHARS = 200


@dataclass
class Rejected:
    """A message (or part of one) the pipeline refused, why, and which device it named."""

    reason: str
    payload: bytes
    source: str
    topic: str | None = None
    index: int | None = None  # position in the adapter's batch, when it has one
    code: Refusal = Refusal.INVALID
    device_id: str | None = None


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
    def __init__(self, store: EntityStore, metrics: Metrics, devices: DeviceRegistry,
                 audit: AuditLog, clock: Callable[[], datetime] = utcnow,
                 quality: QualityService | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.devices = devices
        self.audit = audit
        self.clock = clock
        self.quality = quality

    def ingest(self, readings: Sequence[Reading], rejected: Sequence[Rejected] = (),
               origins: Sequence[Origin] | None = None, *, sender: Sender) -> IngestReport:
        """Store the ``readings`` that pass the gate; dead-letter and audit the rest with
        ``rejected``.

        ``origins`` (parallel to ``readings``) lets a refused reading be dead-lettered as the
        message it came from, once per message.
        """
        report = IngestReport(rejected=list(rejected))
        now = self.clock()
        with self.store.write() as conn:
            ids = {r.entity_id for r in readings}
            refused = self.devices.refusals(conn, ids, sender) if ids else {}
            allowed = ids - refused.keys() if refused else ids
            refused.update((entity_id, GateRefusal(Refusal.UNKNOWN_ENTITY,
                                                   f"unknown entity {entity_id}", None))
                           for entity_id in allowed - self.store.existing(conn, allowed))
            if refused:
                good = [r for r in readings if r.entity_id not in refused]
                report.rejected.extend(_refused(readings, refused, origins))
            else:
                good = list(readings)
            report.accepted = len(good)
            report.stored = self.store.apply_readings(conn, good, now)
            if self.quality is not None:
                self.quality.flag_readings(conn, good, report.stored)
            add_dead_letters(conn, [DeadLetter(r.source, r.reason, r.payload, r.topic)
                                    for r in report.rejected], now)
            if report.rejected:
                self.audit.append([refusal_summary(sender, report.rejected)], conn)
        self.metrics.add("readings_accepted", report.accepted)
        self.metrics.add("readings_stored", report.stored)
        self.metrics.add("readings_rejected", len(report.rejected))
        return report


def refusal_summary(sender: Sender, rejected: Sequence[Rejected]) -> AuditEvent:
    """One audit event for everything refused in a batch: how often each device was
    refused for each reason, with the first reason text as an example."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for item in rejected:
        group = groups.setdefault((item.device_id or "", item.code.value),
                                  [item.device_id, 0, item.reason[:_EXAMPLE_CHARS]])
        group[1] += 1
    return AuditEvent(sender.actor, "ingest.refused", f"ingest:{rejected[0].source}", {
        "total": len(rejected),
        "refused": [{"device": device, "reason": code, "count": count, "example": example}
                    for (_, code), (device, count, example) in sorted(groups.items())]})


def _refused(readings: Sequence[Reading], refused: Mapping[str, GateRefusal],
             origins: Sequence[Origin] | None) -> list[Rejected]:
    found: list[Rejected] = []
    seen: set[tuple[int, str]] = set()
    for position, reading in enumerate(readings):
        why = refused.get(reading.entity_id)
        if why is None:
            continue
        if origins is None:
            found.append(Rejected(why.reason, _describe(reading), "pipeline", code=why.code,
                                  device_id=why.device_id))
            continue
        origin = origins[position]
        if (id(origin), reading.entity_id) not in seen:
            seen.add((id(origin), reading.entity_id))
            found.append(Rejected(why.reason, origin.raw(), origin.source, origin.topic,
                                  origin.index, why.code, why.device_id))
    return found


def _describe(reading: Reading) -> bytes:
    return orjson.dumps({"entityId": reading.entity_id, "attribute": reading.name,
                         "observedAt": reading.observed_at.isoformat(),
                         "instance": reading.instance})
