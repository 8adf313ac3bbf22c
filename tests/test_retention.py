"""Retention and disposal: the pure plan, then runs on SQLite and PostgreSQL proven by
querying history, rollups, entities, the temporal API and the audit trail afterwards."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from tests.conftest import operator_headers
from tests.stakeholders import ensure_organisation
from tests.test_devices import ENV_CONTEXT, SDM, device_body
from urbanhub.api.app import create_app
from urbanhub.api.security import caller_of
from urbanhub.cli import app as cli_app
from urbanhub.config import get_settings
from urbanhub.governance.audit import AuditEntry
from urbanhub.governance.retention import (
    DATASET_ACTION,
    RUN_ACTION,
    Cutoffs,
    DatasetDisposal,
    DisposalRun,
    Partition,
    RowSpan,
    cutoff,
    may_drop,
    partitions_to_inspect,
)
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.catalog import UNCATALOGUED_ID
from urbanhub.model.devices import DeviceStatus, Sender
from urbanhub.model.errors import Conflict, Forbidden, Unauthenticated
from urbanhub.model.governance import (
    AssignmentRule,
    Classification,
    Dataset,
    LegalBasis,
    OrganisationKind,
)
from urbanhub.store import history as history_reads
from urbanhub.store.entities import HistoryRow
from urbanhub.store.tables import attributes, entities, history, rollup_daily, rollup_hourly

NOW = datetime(2026, 3, 15, 12, 30, tzinfo=UTC)
SENSOR = "https://example.org/Sensor"
TEMPERATURE = "https://example.org/temperature"
NAME = "https://example.org/name"
SHORT, LONG = "urn:urbanhub:dataset:short", "urn:urbanhub:dataset:long"
SYSTEM = Caller.system("test")
#: Readings come in as a file import does: from the hub itself, past the device gate.
FEED = Sender.component("test-feed")
CDO = Caller("carol", frozenset({"cdo"}), "cdo-office", organisation_kind=OrganisationKind
             .DEPARTMENT, scopes=frozenset({"read", "write", "govern"}))
CDO_READ_ONLY = Caller("carol", frozenset({"cdo"}), "cdo-office",
                       organisation_kind=OrganisationKind.DEPARTMENT)
STEWARD = Caller("alice", frozenset({"steward"}), "environment",
                 scopes=frozenset({"read", "write", "govern"}))
BOARD = Caller("pat", frozenset({"privacy_board"}), "board", scopes=frozenset({"read"}))
runner = CliRunner()


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


def dataset(ident: str, retention: timedelta, pattern: str) -> Dataset:
    return Dataset(id=ident, owner="environment", steward="alice",
                   classification=Classification.INTERNAL, licence="", purposes=frozenset(),
                   legal_basis=LegalBasis.PUBLIC_TASK, retention=retention,
                   rules=(AssignmentRule(id_pattern=pattern),))


# --- the pure plan -----------------------------------------------------------------------------

def test_cutoffs_round_down_to_the_hour_and_cover_the_uncatalogued_dataset() -> None:
    cutoffs = Cutoffs.of([dataset(SHORT, timedelta(hours=1), "x"),
                          dataset(LONG, timedelta(days=3650), "y")], NOW)
    assert cutoffs.at[SHORT] == at("2026-03-15 11:00")
    assert cutoffs.at[UNCATALOGUED_ID] == at("2025-03-15 12:00")  # 365 days
    assert cutoffs.latest == at("2026-03-15 11:00")
    assert cutoffs.catalogued == [LONG, SHORT]
    assert cutoff(at("2026-03-15 12:00"), timedelta(minutes=30)) == at("2026-03-15 11:00")
    # unknown datasets and rows of deleted entities follow the uncatalogued retention
    assert cutoffs.owner("urn:gone") == UNCATALOGUED_ID
    assert cutoffs.owner(None) == UNCATALOGUED_ID
    assert cutoffs.owner(SHORT) == SHORT
    jan = RowSpan(2, at("2026-01-02"), at("2026-01-09"))
    merged = cutoffs.census({SHORT: jan, None: RowSpan(1, at("2026-01-01"), at("2026-01-01")),
                             "urn:gone": RowSpan(3, at("2026-01-05"), at("2026-01-30"))})
    assert merged == {SHORT: jan,
                      UNCATALOGUED_ID: RowSpan(4, at("2026-01-01"), at("2026-01-30"))}


def test_a_partition_is_dropped_only_when_every_dataset_in_it_has_expired() -> None:
    cutoffs = Cutoffs.of([dataset(SHORT, timedelta(days=1), "x"),
                          dataset(LONG, timedelta(days=3650), "y")], NOW)
    months = [Partition(at(lower), at(upper), name) for lower, upper, name in (
        ("2026-01-01", "2026-02-01", "history_y2026m01"),
        ("2026-03-01", "2026-04-01", "history_y2026m03"),
        ("2026-02-01", "2026-03-01", "history_y2026m02"),
        ("2026-03-14", "2026-03-14 12:00", "history_edge"))]
    inspected = partitions_to_inspect(months, cutoffs)
    # the current month cannot be wholly expired; the partition ending at the cut-off can
    assert [p.name for p in inspected] == ["history_y2026m01", "history_y2026m02",
                                          "history_edge"]
    january = inspected[0]
    some = RowSpan(1, at("2026-01-03"), at("2026-01-03"))
    assert may_drop(january, {SHORT: some}, cutoffs)
    assert not may_drop(january, {SHORT: some, LONG: some}, cutoffs)
    assert may_drop(january, {}, cutoffs)  # empty: nothing to keep
    assert not may_drop(january, {UNCATALOGUED_ID: some}, cutoffs)  # 365 days


def test_a_run_becomes_audit_entries_and_reads_back_from_them() -> None:
    cutoffs = Cutoffs.of([dataset(SHORT, timedelta(days=1), "x"),
                          dataset(LONG, timedelta(days=3650), "y")], NOW)
    short = DatasetDisposal(SHORT, timedelta(days=1), cutoffs.at[SHORT],
                            RowSpan(5, at("2026-01-10 10:15"), at("2026-03-14 09:00")),
                            rollup_hours=4, quality_flags=1, attribute_values=2, entities=1,
                            partitions=["history_y2026m02"])
    quiet = DatasetDisposal(LONG, timedelta(days=3650), cutoffs.at[LONG])
    run = DisposalRun("r1", NOW, "system:test", False, True, (quiet, short),
                      ("history_y2026m02",))
    events = run.audit_events()
    assert [(e.action, e.target) for e in events] == [(DATASET_ACTION, SHORT),
                                                     (RUN_ACTION, "retention")]
    assert events[0].details == {
        "runId": "r1", "retention": "P1D", "cutoff": "2026-03-14T12:00:00.000Z",
        "historyRows": 5, "removedFrom": "2026-01-10T10:15:00.000Z",
        "removedUntil": "2026-03-14T09:00:00.000Z", "rollupHours": 4, "qualityFlags": 1,
        "attributeValues": 2, "entities": 1, "partitionsDropped": ["history_y2026m02"]}
    assert events[1].details["datasetEntries"] == 1
    assert events[1].details["totals"] == {
        "historyRows": 5, "rollupHours": 4, "qualityFlags": 1, "attributeValues": 2,
        "entities": 1, "partitionsDropped": 1}
    stored = [AuditEntry(seq, NOW, e.actor, e.action, e.target, e.details, "", "")
              for seq, e in enumerate(events, 1)]
    assert DisposalRun.from_audit(stored[1], stored[:1]) == run


def test_only_the_cdo_and_the_hub_dispose() -> None:
    from urbanhub.governance.disposal import _check_may_dispose

    _check_may_dispose(SYSTEM, dry_run=False)
    _check_may_dispose(CDO, dry_run=False)
    _check_may_dispose(CDO_READ_ONLY, dry_run=True)
    with pytest.raises(Forbidden, match="govern scope"):
        _check_may_dispose(CDO_READ_ONLY, dry_run=False)
    with pytest.raises(Forbidden, match="role cdo"):
        _check_may_dispose(STEWARD, dry_run=True)
    with pytest.raises(Unauthenticated):
        _check_may_dispose(Caller.public(), dry_run=True)


# --- runs on both backends ---------------------------------------------------------------------

def reading(entity_id: str, moment: str, value: float, name: str = TEMPERATURE) -> HistoryRow:
    when = at(moment)
    instance = {"type": "Property", "value": value,
                "observedAt": when.isoformat().replace("+00:00", "Z")}
    return HistoryRow(entity_id, name, "", when, instance, value)


def write(hub: Hub, written: str, rows: list[HistoryRow]) -> None:
    """Ingest readings as if at ``written`` (the entities' modification time)."""
    hub.ingest.clock = lambda: at(written)
    report = hub.ingest.ingest(rows, sender=FEED)
    assert report.stored == len(rows), report


def create(hub: Hub, entity_id: str, created: str, **attrs: Any) -> None:
    hub.entities.clock = lambda: at(created)
    hub.entities.create(SYSTEM, {"id": entity_id, "type": [SENSOR], "attrs": {
        name: {"": instance} for name, instance in attrs.items()}})


def sensor(name: str) -> str:
    return f"urn:ngsi-ld:Sensor:{name}"


@pytest.fixture
def city(hub: Hub) -> Hub:
    """Two datasets (one day, ten years) and entities with history from 2024 to now.

    short-live   readings 2026-01-10, 02-10, 03-14 09:00 (expired), 03-15 11:00 (kept)
    short-dead   readings 2026-01-20, 02-20, last written 02-20: deleted whole
    short-device a device's entity, last reading 2026-03-01: kept, expired values removed
    long-a       readings 2026-01-15 and 03-15 in the ten-year dataset: untouched
    other        no dataset claims it (uncatalogued, 365 days): 2024 readings expire
    gone         deleted entity whose 2024 history remains: expires as uncatalogued
    """
    hub.catalog.create_dataset(SYSTEM, dataset(SHORT, timedelta(days=1),
                                               r"urn:ngsi-ld:(Sensor:short-.*|AirQuality.*)"))
    hub.catalog.create_dataset(SYSTEM, dataset(LONG, timedelta(days=3650),
                                               r"urn:ngsi-ld:Sensor:long-.*"))
    for name in ("short-live", "short-dead", "long-a", "other", "gone"):
        create(hub, sensor(name), "2024-05-01 00:00")
    hub.devices.clock = hub.entities.clock
    ensure_organisation(hub)  # the device's owner
    hub.devices.provision(SYSTEM, device_body("aq-1", owner="environment"),
                          hub.contexts.resolve(ENV_CONTEXT))
    device_entity = "urn:ngsi-ld:AirQualityObserved:aq-1"
    write(hub, "2024-05-03 00:00", [reading(sensor("other"), "2024-05-02 08:00", 1.0),
                                    reading(sensor("gone"), "2024-05-02 09:00", 2.0)])
    write(hub, "2026-02-20 00:00", [
        reading(sensor("short-live"), "2026-01-10 10:15", 10.0),
        reading(sensor("short-live"), "2026-02-10 10:15", 11.0),
        reading(sensor("short-dead"), "2026-01-20 08:00", 20.0),
        reading(sensor("short-dead"), "2026-02-20 08:00", 21.0),
        reading(sensor("long-a"), "2026-01-15 07:00", 30.0)])
    write(hub, "2026-03-01 06:00", [reading(device_entity, "2026-03-01 05:00", 7.0,
                                            SDM + "pm25")])
    write(hub, "2026-03-15 11:30", [
        reading(sensor("short-live"), "2026-03-14 09:00", 12.0),
        reading(sensor("short-live"), "2026-03-15 11:00", 13.0),
        reading(sensor("long-a"), "2026-03-15 11:00", 31.0)])
    hub.entities.delete(SYSTEM, sensor("gone"))
    hub.disposal.clock = lambda: NOW
    return hub


def history_times(hub: Hub, entity_id: str, name: str = TEMPERATURE) -> list[datetime]:
    with hub.store.read() as conn:
        return list(conn.scalars(select(history.c.observed_at).where(
            history.c.entity_id == entity_id, history.c.name == name)
            .order_by(history.c.observed_at)))


def rollup_hours(hub: Hub, entity_id: str) -> list[datetime]:
    with hub.store.read() as conn:
        return list(conn.scalars(select(rollup_hourly.c.hour).where(
            rollup_hourly.c.entity_id == entity_id).order_by(rollup_hourly.c.hour)))


def table_sizes(hub: Hub) -> dict[str, int]:
    with hub.store.read() as conn:
        return {table.name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
                for table in (history, rollup_hourly, attributes, entities)}


def pg_partitions(hub: Hub) -> set[str]:
    with hub.store.read() as conn:
        return set(conn.scalars(text(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'history_y%'")))


def act_as(app: Any, caller: Caller) -> None:
    cast(FastAPI, app).dependency_overrides[caller_of] = lambda: caller


def by_dataset(run: DisposalRun) -> dict[str, DatasetDisposal]:
    return {d.dataset_id: d for d in run.datasets}


def test_a_dry_run_reports_what_a_run_removes_and_removes_nothing(city: Hub) -> None:
    before = table_sizes(city)
    partitions = pg_partitions(city) if city.store.dialect == "postgresql" else set()
    dry = city.disposal.dispose(CDO_READ_ONLY, dry_run=True)
    assert dry.dry_run and dry.complete
    assert table_sizes(city) == before
    if partitions:
        assert pg_partitions(city) == partitions
    with city.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM audit_log WHERE action LIKE "
                                "'retention.%'")) == 0

    real = city.disposal.dispose(CDO)
    for ident, planned in by_dataset(dry).items():
        done = by_dataset(real)[ident]
        assert (planned.history, planned.rollup_hours, planned.entities,
                planned.attribute_values, planned.partitions) == (
            done.history, done.rollup_hours, done.entities, done.attribute_values,
            done.partitions), ident


def test_disposal_removes_expired_data_and_keeps_the_rest(city: Hub) -> None:
    long_before = history_times(city, sensor("long-a"))
    run = city.disposal.dispose(SYSTEM)
    assert run.complete and not run.dry_run

    # short (one day): everything before 2026-03-14 12:00 is gone, history and rollups
    assert history_times(city, sensor("short-live")) == [at("2026-03-15 11:00")]
    assert rollup_hours(city, sensor("short-live")) == [at("2026-03-15 11:00")]
    assert history_times(city, sensor("short-dead")) == []
    assert rollup_hours(city, sensor("short-dead")) == []
    with city.store.read() as conn:
        assert not city.store.exists(conn, sensor("short-dead"))  # nothing current: deleted
        live = city.store.load(conn, [sensor("short-live")])[sensor("short-live")]
        assert live["attrs"][TEMPERATURE][""]["value"] == 13.0
        device = city.store.load(conn, ["urn:ngsi-ld:AirQualityObserved:aq-1"])
        kept = device["urn:ngsi-ld:AirQualityObserved:aq-1"]["attrs"]
        # a device's entity stays; its expired reading goes, its location stays
        assert SDM + "pm25" not in kept
        assert "https://uri.etsi.org/ngsi-ld/location" in kept
    # the ten-year dataset is untouched
    assert history_times(city, sensor("long-a")) == long_before
    # 2024 data of uncatalogued and deleted entities is past the 365 days
    assert history_times(city, sensor("other")) == []
    assert history_times(city, sensor("gone")) == []

    figures = by_dataset(run)
    short = figures[SHORT]
    # short-live 3 readings, short-dead 2, the device's pm25 reading, and the creation-time
    # history of the device entity's static attributes (location) in 2024
    assert short.history.rows == 3 + 2 + 1 + 1
    assert short.history.first == at("2024-05-01 00:00")
    assert short.history.last == at("2026-03-14 09:00")
    assert short.rollup_hours == 3 + 2 + 1
    assert (short.entities, short.attribute_values) == (1, 1)
    assert figures[LONG].history.rows == 0 and not figures[LONG].removed_anything
    uncatalogued = figures[UNCATALOGUED_ID]
    # other and gone: one reading each (2024-05-02) and, for other, its creation (no attrs)
    assert (uncatalogued.history.rows, uncatalogued.rollup_hours) == (2, 2)
    assert uncatalogued.entities == 1  # other: last written 2024-05-03

    # a second run finds nothing left to remove
    again = city.disposal.dispose(SYSTEM)
    assert not any(d.removed_anything for d in again.datasets)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # day rows: PostgreSQL
def test_compacted_rollup_days_expire_as_their_hours_did(city: Hub) -> None:
    """Whole day rows before the cut-off go, and the day the cut-off falls in loses the
    hours before it; the counts are those of the hourly rows the days were made of."""
    short_live = sensor("short-live")
    write(city, "2026-03-15 11:40", [reading(short_live, "2026-03-14 13:00", 14.0)])
    city.compaction.run(city.compaction.pending_days(at("2026-03-16 00:00")))
    assert count_rows(city, rollup_hourly) == 0

    dry = city.disposal.dispose(CDO_READ_ONLY, dry_run=True)
    run = city.disposal.dispose(SYSTEM)
    figures = by_dataset(run)
    assert by_dataset(dry)[SHORT].rollup_hours == figures[SHORT].rollup_hours == 3 + 2 + 1
    assert figures[UNCATALOGUED_ID].rollup_hours == 2
    assert figures[LONG].rollup_hours == 0
    with city.store.read() as conn:
        days = {(row.entity_id, row.day): (row.hours, row.n, row.total)
                for row in conn.execute(select(rollup_daily))}
        kept = history_reads.rollup_aggregates(
            conn, [short_live], [TEMPERATURE], at("2026-03-14 00:00"), at("2026-03-16 00:00"),
            origin=at("2026-03-14 00:00"), step_us=3_600_000_000)
    assert days == {
        (short_live, at("2026-03-14 00:00")): ([13], [1], [14.0]),  # 09:00 trimmed away
        (short_live, at("2026-03-15 00:00")): ([11], [1], [13.0]),
        (sensor("long-a"), at("2026-01-15 00:00")): ([7], [1], [30.0]),
        (sensor("long-a"), at("2026-03-15 00:00")): ([11], [1], [31.0])}
    assert [(s.periods, s.total) for s in kept] == [((13, 35), (14.0, 13.0))]
    again = city.disposal.dispose(SYSTEM)
    assert not any(d.removed_anything for d in again.datasets)


def count_rows(hub: Hub, table: Any) -> int:
    with hub.store.read() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_a_retired_device_no_longer_keeps_its_entity(city: Hub) -> None:
    city.devices.set_status(SYSTEM, "aq-1", DeviceStatus.RETIRED, "replaced")
    run = city.disposal.dispose(SYSTEM)
    assert by_dataset(run)[SHORT].entities == 2  # short-dead and the device's entity
    with city.store.read() as conn:
        assert not city.store.exists(conn, "urn:ngsi-ld:AirQualityObserved:aq-1")


def test_the_temporal_api_shows_only_what_is_kept(city: Hub) -> None:
    city.disposal.dispose(SYSTEM)
    # a city operator (real API key) stating a registered operations purpose
    with TestClient(create_app(city.settings, hub=city),
                    headers=operator_headers(city)) as client:
        found = client.get(f"/ngsi-ld/v1/temporal/entities/{sensor('short-live')}",
                           params={"attrs": TEMPERATURE, "timerel": "after",
                                   "timeAt": "2020-01-01T00:00:00Z"})
        assert found.status_code == 200, found.text
        assert [i["value"] for i in found.json()[TEMPERATURE]] == [13.0]
        assert client.get(f"/ngsi-ld/v1/entities/{sensor('short-dead')}").status_code == 404
        long = client.get(f"/ngsi-ld/v1/temporal/entities/{sensor('long-a')}",
                          params={"attrs": TEMPERATURE, "timerel": "after",
                                  "timeAt": "2020-01-01T00:00:00Z"})
        assert [i["value"] for i in long.json()[TEMPERATURE]] == [30.0, 31.0]


def delete_with_history(hub: Hub, name: str) -> str:
    """A sensor of the one-day dataset with one expired and one kept reading, deleted."""
    entity_id = sensor(name)
    create(hub, entity_id, "2026-03-01 00:00")
    write(hub, "2026-03-15 11:30", [reading(entity_id, "2026-03-10 08:00", 40.0),
                                    reading(entity_id, "2026-03-15 11:00", 41.0)])
    hub.entities.clock = lambda: at("2026-03-15 12:00")
    hub.entities.delete(SYSTEM, entity_id)
    return entity_id


def test_a_deleted_entitys_history_expires_by_its_datasets_retention(city: Hub) -> None:
    """Not by the uncatalogued dataset's 365 days: the tombstone keeps its dataset."""
    removed = delete_with_history(city, "short-removed")
    with city.store.read() as conn:
        tombstone = city.store.tombstone(conn, removed)
    assert tombstone is not None
    assert (tombstone.dataset_id, tombstone.types) == (SHORT, [SENSOR])
    assert tombstone.deleted_at == at("2026-03-15 12:00")

    run = city.disposal.dispose(SYSTEM)
    assert history_times(city, removed) == [at("2026-03-15 11:00")]
    assert rollup_hours(city, removed) == [at("2026-03-15 11:00")]
    figures = by_dataset(run)
    # the fixture's seven expired rows of the short dataset, and this entity's one
    assert (figures[SHORT].history.rows, figures[SHORT].rollup_hours) == (8, 7)
    assert figures[UNCATALOGUED_ID].history.rows == 2
    with city.store.read() as conn:
        assert city.store.tombstone(conn, removed) is not None  # history is left

    # once the rest has expired too, the tombstone goes with it
    city.disposal.clock = lambda: at("2026-03-20 00:00")
    city.disposal.dispose(SYSTEM)
    assert history_times(city, removed) == []
    with city.store.read() as conn:
        assert city.store.tombstone(conn, removed) is None


def test_a_deleted_entitys_history_is_read_as_its_dataset_allows(city: Hub) -> None:
    removed = delete_with_history(city, "short-removed")
    params = {"attrs": TEMPERATURE, "timerel": "after", "timeAt": "2026-03-01T00:00:00Z"}
    app = create_app(city.settings, hub=city)
    with TestClient(app, headers=operator_headers(city)) as operator:
        found = operator.get(f"/ngsi-ld/v1/temporal/entities/{removed}", params=params)
        assert found.status_code == 200, found.text
        assert found.json()["type"] == SENSOR
        assert [i["value"] for i in found.json()[TEMPERATURE]] == [40.0, 41.0]
        assert operator.get(f"/ngsi-ld/v1/entities/{removed}").status_code == 404
    with TestClient(app) as anonymous:  # the dataset is internal: same 404 as a live entity
        for entity_id in (removed, sensor("short-live"), sensor("never-existed")):
            answer = anonymous.get(f"/ngsi-ld/v1/temporal/entities/{entity_id}",
                                   params=params)
            assert answer.status_code == 404, entity_id
            assert answer.json()["detail"] == f"Entity {entity_id} does not exist."

    # created again, the entity takes its old history over, with its own dataset
    create(city, removed, "2026-03-15 12:10")
    with city.store.read() as conn:
        assert city.store.tombstone(conn, removed) is None
    city.disposal.dispose(SYSTEM)
    assert history_times(city, removed) == [at("2026-03-15 11:00")]


def test_each_run_is_in_the_audit_trail_and_the_chain_verifies(city: Hub) -> None:
    run = city.disposal.dispose(CDO)
    with city.engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, action, target FROM audit_log WHERE action "
                                 "LIKE 'retention.%' ORDER BY seq")).all()
    assert [tuple(r) for r in rows] == [("carol", DATASET_ACTION, SHORT),
                                        ("carol", DATASET_ACTION, UNCATALOGUED_ID),
                                        ("carol", RUN_ACTION, "retention")]
    assert city.audit.verify().ok
    [past] = city.disposal.past_runs(BOARD)
    assert past.run_id == run.run_id and past.actor == "carol" and past.complete
    assert by_dataset(past)[SHORT].history == by_dataset(run)[SHORT].history
    assert by_dataset(past)[LONG].cutoff == at("2016-03-17 12:00")
    with pytest.raises(Forbidden):
        city.disposal.past_runs(STEWARD)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_drops_wholly_expired_partitions_and_prunes_the_rest(city: Hub) -> None:
    assert {"history_y2024m05", "history_y2026m01", "history_y2026m02",
            "history_y2026m03"} <= pg_partitions(city)
    run = city.disposal.dispose(SYSTEM)
    left = pg_partitions(city)
    # 2024-05 (uncatalogued, short) and 2026-02 (short) were wholly expired: dropped
    assert "history_y2024m05" not in left and "history_y2026m02" not in left
    assert {"history_y2024m05", "history_y2026m02"} <= set(run.partitions_dropped)
    # January holds the ten-year dataset's reading: kept, its short rows deleted row-wise
    assert "history_y2026m01" in left and "history_y2026m03" in left
    with city.store.read() as conn:
        january = conn.execute(text("SELECT entity_id FROM history_y2026m01")).scalars().all()
    assert january == [sensor("long-a")]
    # the device entity's location was written (history) when it was created in May 2024
    assert by_dataset(run)[SHORT].partitions == ["history_y2024m05", "history_y2026m02"]
    assert by_dataset(run)[UNCATALOGUED_ID].partitions == ["history_y2024m05"]

    # a dropped month is writable again, here and in a process that had seen it
    other_process = Hub(city.settings)
    try:
        write(city, "2026-03-15 12:00", [reading(sensor("long-a"), "2026-02-11 00:00", 32.0)])
        other_process.ingest.clock = lambda: at("2026-03-15 12:00")
        other_process.store._partitions.add((2024, 5))  # it wrote May 2024 before the drop
        stored = other_process.ingest.ingest([reading(sensor("long-a"), "2024-05-20 00:00",
                                                      33.0)], sender=FEED)
        assert stored.stored == 1
    finally:
        other_process.close()
    assert at("2024-05-20 00:00") in history_times(city, sensor("long-a"))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_leaves_a_busy_partition_to_row_deletes(city: Hub) -> None:
    from urbanhub.governance import disposal

    disposal.PARTITION_LOCK_TIMEOUT_S, saved = 0.2, disposal.PARTITION_LOCK_TIMEOUT_S
    try:
        with city.engine.connect() as reader:  # a long read of history, still open
            reader.execute(text("SELECT count(*) FROM history"))
            run = city.disposal.dispose(SYSTEM)
            reader.rollback()
    finally:
        disposal.PARTITION_LOCK_TIMEOUT_S = saved
    assert run.partitions_dropped == ()
    assert {"history_y2024m05", "history_y2026m02"} <= pg_partitions(city)
    with city.store.read() as conn:  # its rows went row by row all the same
        assert conn.scalar(text("SELECT count(*) FROM history_y2026m02")) == 0
    assert by_dataset(run)[SHORT].history.rows == 7


def test_one_run_at_a_time(city: Hub) -> None:
    with city.disposal._exclusive(), pytest.raises(Conflict, match="already running"):
        city.disposal.dispose(SYSTEM)


def test_a_stopped_run_says_so_and_records_what_it_did(city: Hub) -> None:
    import threading

    stop = threading.Event()
    stop.set()
    run = city.disposal.dispose(SYSTEM, stop=stop)
    assert not run.complete
    [past] = city.disposal.past_runs(SYSTEM)
    assert not past.complete


# --- the schedule, the API and the command -----------------------------------------------------

def test_the_schedule_runs_inside_serve_and_stops_with_it(
        hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    hub.settings = hub.settings.model_copy(update={"disposal_interval_s": 0.1})
    app = create_app(hub.settings, hub=hub)
    caplog.set_level(logging.INFO, logger="urbanhub.disposal")
    with TestClient(app):
        deadline = time.monotonic() + 20
        while not hub.disposal.past_runs(SYSTEM) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.disposal.past_runs(SYSTEM), "no run within 20 s"
    threads = [t.name for t in __import__("threading").enumerate()]
    assert "urbanhub-disposal" not in threads
    assert any("disposal run" in r.getMessage() for r in caplog.records)
    assert hub.disposal.past_runs(SYSTEM)[0].actor == "system:disposal-schedule"


def test_the_schedule_is_off_at_zero(hub: Hub) -> None:
    assert hub.disposal_schedule() is not None
    off = Hub(hub.settings.model_copy(update={"disposal_interval_s": 0}))
    try:
        assert off.disposal_schedule() is None
    finally:
        off.close()


@pytest.fixture
def api(city: Hub) -> Iterator[TestClient]:
    app = create_app(city.settings, hub=city)
    with TestClient(app) as client:
        yield client


def test_disposal_api(api: TestClient, city: Hub) -> None:
    act_as(api.app, STEWARD)
    refused = api.post("/governance/v1/disposals")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    act_as(api.app, CDO)
    bad = api.post("/governance/v1/disposals", params={"dryRun": "perhaps"})
    assert bad.status_code == 400
    dry = api.post("/governance/v1/disposals", params={"dryRun": "true"})
    assert dry.status_code == 200, dry.text
    assert dry.json()["dryRun"] is True
    assert api.get("/governance/v1/disposals").json() == []
    done = api.post("/governance/v1/disposals")
    assert done.status_code == 200, done.text
    body = done.json()
    short = next(d for d in body["datasets"] if d["dataset"] == SHORT)
    assert short["historyRows"] == 7 and short["entities"] == 1
    assert short["removedUntil"] == "2026-03-14T09:00:00.000Z"
    assert body["totals"]["historyRows"] == 7 + 2
    act_as(api.app, BOARD)
    [past] = api.get("/governance/v1/disposals").json()
    assert past["runId"] == body["runId"] and past["actor"] == "carol"
    assert next(d for d in past["datasets"] if d["dataset"] == SHORT) == short
    assert api.get("/governance/v1/disposals", params={"limit": 0}).status_code == 400
    act_as(api.app, Caller.public())
    assert api.get("/governance/v1/disposals").status_code == 401


def test_dispose_command(city: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URBANHUB_DATABASE_URL", city.settings.database_url)
    monkeypatch.setenv("URBANHUB_MQTT_URL", "")
    get_settings.cache_clear()
    try:
        dry = runner.invoke(cli_app, ["dispose", "--dry-run"], env={"COLUMNS": "250"})
        assert dry.exit_code == 0, dry.output
        assert "dry run" in dry.output and SHORT in dry.output
        assert history_times(city, sensor("short-dead")) != []
        done = runner.invoke(cli_app, ["dispose"], env={"COLUMNS": "250"})
        assert done.exit_code == 0, done.output
        assert history_times(city, sensor("short-dead")) == []
        assert "history rows" in done.output
    finally:
        get_settings.cache_clear()
