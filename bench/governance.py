"""Governance benchmark: the cost of the policy decision point on reads, decisions/s, audit.

Prints, per backend, in one run:
- the same read workload (GET one entity, a query by type, a q-query, a temporal lastN
  read) through the query service as a city analyst (every read decided by the policy
  decision point, obligations applied, the decision recorded in the audit trail) and
  through the unrestricted internal read path the hub's own jobs use, as a ratio
  (target: governed at most 1.15 times the ungoverned time);
- policy decisions per second, single and batched over the whole catalog, uncached;
- audit appends per second, one entry per transaction and in batches of 100.

Usage: .venv/bin/python bench/governance.py [--backend sqlite|postgres|both] [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest import postgres_database, run_from_command_line  # bench/ is the script's directory

from urbanhub.config import Settings
from urbanhub.governance.audit import AuditEvent
from urbanhub.governance.policy import PolicyDecisionPoint
from urbanhub.hub.query import EntityQuery
from urbanhub.hub.runtime import Hub
from urbanhub.hub.temporal import TemporalQuery
from urbanhub.model.caller import Caller
from urbanhub.model.governance import (
    Action,
    AssignmentRule,
    Classification,
    Dataset,
    LegalBasis,
    OrganisationKind,
    Purpose,
    PurposeKind,
)
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.q import parse_q

VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
SYSTEM = Caller.system("bench")
PLANNING = "urban-planning"
CLASSES = [Classification.OPEN, Classification.INTERNAL, Classification.PERSONAL,
           Classification.INTERNAL, Classification.OPEN, Classification.SENSITIVE]
ANALYST = Caller("analyst", frozenset({"analyst"}), "planning", PLANNING,
                 OrganisationKind.DEPARTMENT)


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "postgres":
        with postgres_database() as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{Path(tmp) / 'hub.db'}"


def catalog(sensors: int) -> tuple[list[Dataset], list[dict[str, object]]]:
    """Six datasets of mixed classification (one with a stricter plate) and their sensors."""
    datasets, entities = [], []
    for number, classification in enumerate(CLASSES):
        kind = f"{VOCAB}Sensor{number}"
        datasets.append(Dataset(
            id=f"ds-{number}", owner="planning" if number % 2 else "mobility",
            steward="steward", classification=classification,
            licence="CC-BY-4.0", purposes=frozenset({PLANNING}),
            legal_basis=LegalBasis.PUBLIC_TASK, retention=timedelta(days=365),
            entity_types=frozenset({kind}), rules=(AssignmentRule(entity_type=kind),),
            attribute_classes={f"{VOCAB}plate": Classification.SENSITIVE}
            if classification is Classification.INTERNAL else {}))
        for index in range(sensors // len(CLASSES)):
            observed = (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=index)).isoformat()
            entities.append({"id": f"urn:ngsi-ld:Sensor{number}:{index:05d}", "type": [kind],
                             "attrs": {
                                 f"{VOCAB}level": {"": {"type": "Property", "value": index % 50,
                                                        "observedAt": observed}},
                                 f"{VOCAB}plate": {"": {"type": "Property",
                                                        "value": f"AB-{index}"}}}})
    return datasets, entities


def workload(hub: Hub, caller: Caller) -> Callable[[], None]:
    """Reads of an analyst's day: one entity, a page by type, a q filter, recent history."""
    kind = f"{VOCAB}Sensor1"  # internal: the analyst's department may read it
    q = parse_q("level>=25", TermMap())  # the default vocabulary: VOCAB

    def run() -> None:
        for index in range(20):
            hub.queries.get_entity(caller, f"urn:ngsi-ld:Sensor1:{index:05d}")
        hub.queries.query(caller, EntityQuery(types=[kind], limit=100, count=True))
        hub.queries.query(caller, EntityQuery(types=[kind], predicates=[q], limit=100,
                                              count=True))
        hub.temporal.get_entity(caller, "urn:ngsi-ld:Sensor1:00001", TemporalQuery(last_n=5))

    return run


def timed_rounds(governed: Callable[[], None], internal: Callable[[], None],
                 rounds: int) -> tuple[float, float]:
    """Median seconds per round of each, alternating so drift hits both alike."""
    times: dict[str, list[float]] = {"governed": [], "internal": []}
    for _ in range(rounds):
        for label, run in (("governed", governed), ("internal", internal)):
            started = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - started)
    return statistics.median(times["governed"]), statistics.median(times["internal"])


def decisions_per_second(datasets: list[Dataset], callers: int,
                         seconds: float = 2.0) -> tuple[float, float]:
    """PDP decisions (Cedar evaluations; the access guard's cache is not involved) for
    ``callers`` distinct callers in turn: one dataset a call, then the whole catalog."""
    pdp = PolicyDecisionPoint([Purpose(PLANNING, "Planning", PurposeKind.ANALYSIS)])
    now = datetime.now(UTC)
    who = [Caller(f"analyst-{n}", ANALYST.roles, ANALYST.organisation, PLANNING,
                  ANALYST.organisation_kind) for n in range(callers)]
    rates = []
    for batch in ([datasets[1]], datasets):
        done, calls, started = 0, 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            pdp.decide_many(who[calls % callers], Action.READ, [(d, None) for d in batch],
                            PLANNING, now=now)
            done += len(batch)
            calls += 1
        rates.append(done / (time.perf_counter() - started))
    return rates[0], rates[1]


def audit_rates(hub: Hub, count: int) -> tuple[float, float]:
    single_started = time.perf_counter()
    for number in range(count):
        hub.audit.append([AuditEvent("bench", "bench.single", f"n{number}", {"n": number})])
    single = count / (time.perf_counter() - single_started)
    batch_started = time.perf_counter()
    for start in range(0, count * 10, 100):
        hub.audit.append([AuditEvent("bench", "bench.batch", f"n{n}", {"n": n})
                          for n in range(start, start + 100)])
    return single, count * 10 / (time.perf_counter() - batch_started)


def run_backend(backend: str, quick: bool) -> None:
    sensors, rounds, appends = (600, 5, 200) if quick else (6000, 21, 1000)
    with database(backend) as url, tempfile.TemporaryDirectory() as keys:
        hub = Hub(Settings(database_url=url, mqtt_url=None,
                           pseudonym_key_file=str(Path(keys) / "key")))
        try:
            hub.upgrade_schema()
            datasets, entities = catalog(sensors)
            hub.catalog.load(SYSTEM, [Purpose(PLANNING, "Planning", PurposeKind.ANALYSIS)],
                             datasets)
            for entity in entities:
                hub.entities.create(SYSTEM, entity)
            print(f"\n== {backend} ({len(entities):,} entities in {len(datasets)} datasets) ==",
                  flush=True)
            governed, internal = workload(hub, ANALYST), workload(hub, SYSTEM)
            governed()
            internal()  # warm both paths (decision cache, statement caches)
            with_pdp, without = timed_rounds(governed, internal, rounds)
            print(f"read workload (20 GET, 2 queries of 100 with count, 1 temporal), median of "
                  f"{rounds}: governed {with_pdp * 1000:.1f} ms, internal path "
                  f"{without * 1000:.1f} ms, ratio {with_pdp / without:.3f} (target <= 1.15)",
                  flush=True)
            hub.decisions.flush()
            for callers in (10, 100_000):
                single, whole = decisions_per_second(datasets, callers)
                print(f"PDP decisions/s, {callers:,} callers in turn: {single:,.0f} one dataset"
                      f" a call, {whole:,.0f} over the {len(datasets)}-dataset catalog a call",
                      flush=True)
            one, hundred = audit_rates(hub, appends)
            print(f"audit appends/s: {one:,.0f} one entry a transaction, {hundred:,.0f} in "
                  f"batches of 100", flush=True)
            report = hub.audit.verify()
            print(f"audit chain: {report.message()}", flush=True)
        finally:
            hub.close()


if __name__ == "__main__":
    run_from_command_line(run_backend, __doc__ or "")
