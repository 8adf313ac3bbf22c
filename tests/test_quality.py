"""Data quality: rules, the evaluator, flags stored at ingest, the report (checked against
hand-computed figures), silent entities, the API and the command, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from typer.testing import CliRunner

from tests.stakeholders import ensure_organisation
from tests.test_devices import ENV_CONTEXT, SDM, device_body
from tests.test_identity import apikey, bootstrap
from urbanhub.api.app import create_app
from urbanhub.api.security import caller_of
from urbanhub.cli import app as cli_app
from urbanhub.config import get_settings
from urbanhub.governance.quality import (
    AttributeRule,
    FailingRule,
    QualityFlag,
    QualityRules,
    Share,
    comparable,
    exact_duration,
    judge_readings,
    repeated,
    report_window,
    required_measure,
    timeliness_measure,
    validity_measure,
)
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.devices import Sender
from urbanhub.model.errors import BadRequestData
from urbanhub.model.governance import (
    AssignmentRule,
    Classification,
    Dataset,
    LegalBasis,
    OrganisationKind,
    Purpose,
    PurposeKind,
)
from urbanhub.model.identity import Member, Scope
from urbanhub.ngsild.timeutil import utcnow
from urbanhub.store.entities import HistoryRow
from urbanhub.store.tables import quality_flags

NOW = datetime(2026, 3, 15, 12, 30, tzinfo=UTC)
EX = "https://example.org/"
TEMPERATURE, HUMIDITY = EX + "temperature", EX + "humidity"
AIR, PLAIN = "urn:urbanhub:dataset:air", "urn:urbanhub:dataset:plain"
SYSTEM = Caller.system("test")
#: Readings come in as a file import does: from the hub itself, past the device gate.
FEED = Sender.component("test-feed")
GOVERN = frozenset({"read", "write", "govern"})
OPERATIONS, GOVERNANCE = "city-operations", "data-governance"
DEPARTMENT = OrganisationKind.DEPARTMENT
CDO = Caller("carol", frozenset({"cdo"}), "cdo-office", GOVERNANCE, DEPARTMENT, GOVERN)
STEWARD = Caller("alice", frozenset({"steward"}), "environment", OPERATIONS, DEPARTMENT,
                 GOVERN)
STEWARD_READ_ONLY = Caller("alice", frozenset({"steward"}), "environment", OPERATIONS,
                           DEPARTMENT)
OTHER_STEWARD = Caller("bob", frozenset({"steward"}), "mobility", OPERATIONS, DEPARTMENT,
                       GOVERN)
OPERATOR = Caller("otto", frozenset({"operator"}), "environment", OPERATIONS, DEPARTMENT)
ANALYST = Caller("ann", frozenset({"analyst"}), "uni", OPERATIONS, OrganisationKind.UNIVERSITY)
BOARD = Caller("pat", frozenset({"privacy_board"}), "board", GOVERNANCE, DEPARTMENT)
RULES = {"attributes": {
    TEMPERATURE: {"min": -30, "max": 50, "unitCode": "CEL", "required": True, "maxRepeats": 2},
    HUMIDITY: {"required": True}}, "maxStaleness": "PT2H"}
runner = CliRunner()


def at(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


# --- the pure rules ------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "problem"), [
    ({"minimum": 5, "maximum": 1}, "min 5 is greater than max 1"),
    ({"minimum": float("nan")}, "min must be a finite number"),
    ({"maximum": float("inf")}, "max must be a finite number"),
    ({"minimum": True}, "min must be a finite number"),
    ({"unit_code": "celsius"}, "not a UN/CEFACT common code"),
    ({"unit_code": "cel"}, "not a UN/CEFACT common code"),
    ({"max_repeats": 0}, "maxRepeats must be a whole number from 1 to 1000"),
    ({"max_repeats": True}, "maxRepeats must be a whole number"),
    ({"max_repeats": 1001}, "maxRepeats must be a whole number"),
    ({}, "declares no rule"),
])
def test_bad_attribute_rules_are_refused(rule: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadRequestData, match=problem):
        AttributeRule(TEMPERATURE, **rule)


@pytest.mark.parametrize(("given", "problem"), [
    ("P1M", "uses years or months"), ("soon", "not an ISO 8601 duration"),
    ("PT0S", "must be a positive duration"), ("-PT1H", "must be a positive")])
def test_bad_durations_are_refused(given: str, problem: str) -> None:
    with pytest.raises(BadRequestData, match=problem):
        exact_duration(given, "maxStaleness")


def reading(entity_id: str, moment: str, value: Any, name: str = TEMPERATURE,
            unit: str | None = "CEL") -> HistoryRow:
    when = at(moment)
    instance: dict[str, Any] = {"type": "Property", "value": value,
                                "observedAt": when.isoformat().replace("+00:00", "Z")}
    if unit is not None:
        instance["unitCode"] = unit
    number = float(value) if isinstance(value, int | float) and not isinstance(
        value, bool) else None
    return HistoryRow(entity_id, name, "", when, instance, number)


def test_readings_are_judged_by_range_and_unit() -> None:
    rules = {AIR: QualityRules.from_json(RULES)}
    readings = [reading("s", "2026-03-15 01:00", 20), reading("s", "2026-03-15 02:00", -31),
                reading("s", "2026-03-15 03:00", 51, unit="FAH"),
                reading("s", "2026-03-15 04:00", "warm"),
                reading("s", "2026-03-15 05:00", 20, unit=None),
                reading("s", "2026-03-15 06:00", 99, name=HUMIDITY),
                reading("t", "2026-03-15 06:00", 99)]
    judged = judge_readings(readings, {"s": AIR}, rules)
    assert [judged[(r.entity_id, r.name, "", r.observed_at)] for r in readings[:5]] == [
        QualityFlag(0), QualityFlag.BELOW_MIN,
        QualityFlag.ABOVE_MAX | QualityFlag.WRONG_UNIT, QualityFlag.NOT_NUMERIC,
        QualityFlag.WRONG_UNIT]
    # humidity has no range; t is in no dataset with rules
    assert len(judged) == 6 and judged[("s", HUMIDITY, "", at("2026-03-15 06:00"))] == 0


def test_a_value_repeated_more_than_n_times_in_a_row_is_flagged() -> None:
    t = [at(f"2026-03-15 {h:02d}:00") for h in range(9)]
    values = [1, 1, 1, 2, 2, 2, 2, 1, 1]
    assert repeated([], list(zip(t, values, strict=True)), 2) == {t[2], t[5], t[6]}
    assert repeated([], list(zip(t, values, strict=True)), 1) == {t[1], t[2], t[4], t[5],
                                                                  t[6], t[8]}
    # values stored before the batch continue the run; they are never flagged again
    assert repeated([5, 1, 1], list(zip(t[:2], [1, 3], strict=True)), 2) == {t[0]}
    assert repeated([1, 1, 1], [], 2) == set()
    # the number, else the content; True is not the number 1; lists compare by content
    assert comparable(1.0, {"value": 1}) == 1.0
    assert comparable(None, {"value": True}) != comparable(1.0, {"value": 1})
    assert comparable(None, {"object": "urn:x"}) == "urn:x"
    assert comparable(None, None) is None
    listed = comparable(None, {"value": [1, 2]})
    assert repeated([listed], [(t[1], comparable(None, {"value": [1, 2]}))], 1) == {t[1]}


def test_rules_round_trip_through_their_stored_form() -> None:
    rules = QualityRules.from_json(RULES)
    assert rules.to_json() == RULES
    assert rules.required == [HUMIDITY, TEMPERATURE]
    assert rules.max_staleness == timedelta(hours=2)
    assert QualityRules().empty and not rules.empty


def test_the_report_window_is_whole_update_periods_before_now() -> None:
    window = report_window(NOW, timedelta(days=1), timedelta(hours=1))
    assert (window.start, window.end, window.periods) == (
        at("2026-03-14 12:00"), at("2026-03-15 12:00"), 24)
    thirds = report_window(NOW, timedelta(hours=1), timedelta(minutes=20))
    assert (thirds.start, thirds.end, thirds.periods) == (
        at("2026-03-15 11:20"), at("2026-03-15 12:20"), 3)
    longer = report_window(NOW, timedelta(hours=1), timedelta(days=1))
    assert (longer.start, longer.end, longer.step) == (NOW - timedelta(hours=1), NOW, None)


def test_measures_count_what_failed() -> None:
    rules = QualityRules.from_json(RULES)
    required = required_measure(rules, 4, {TEMPERATURE: 2, HUMIDITY: 3})
    assert required.share == Share(5, 8)
    assert required.failing == (FailingRule("required", 1, HUMIDITY),
                                FailingRule("required", 2, TEMPERATURE))
    validity = validity_measure(rules, 40, [
        (TEMPERATURE, int(QualityFlag.ABOVE_MAX | QualityFlag.WRONG_UNIT), 2),
        (TEMPERATURE, int(QualityFlag.REPEATED), 3)])
    assert validity.share == Share(35, 40)
    assert validity.failing == (FailingRule("max", 2, TEMPERATURE, 50),
                                FailingRule("unitCode", 2, TEMPERATURE, "CEL"),
                                FailingRule("maxRepeats", 3, TEMPERATURE, 2))
    timely = timeliness_measure(rules, [NOW - timedelta(hours=1), NOW - timedelta(hours=3)], NOW)
    assert timely.share == Share(1, 2)
    assert timely.failing == (FailingRule("maxStaleness", 1, limit="PT2H"),)
    assert timeliness_measure(QualityRules(), [], NOW).share is None
    assert required_measure(QualityRules(), 3, {}).reason == "the rules require no attribute"


# --- on both backends ---------------------------------------------------------------------

def dataset(ident: str, pattern: str, classification: Classification = Classification.INTERNAL,
            frequency: str | None = "PT1H") -> Dataset:
    return Dataset(id=ident, owner="environment", steward="alice",
                   classification=classification, licence="CC-BY-4.0", purposes=frozenset(),
                   legal_basis=LegalBasis.PUBLIC_TASK, retention=timedelta(days=365),
                   update_frequency=frequency, rules=(AssignmentRule(id_pattern=pattern),))


def sensor(name: str) -> str:
    return f"urn:ngsi-ld:Sensor:{name}"


def create(hub: Hub, entity_id: str, created: str, **attrs: Any) -> None:
    hub.entities.clock = lambda: at(created)
    hub.entities.create(SYSTEM, {"id": entity_id, "type": [EX + "Sensor"], "attrs": {
        EX + name: {"": instance} for name, instance in attrs.items()}})


def ingest(hub: Hub, rows: list[HistoryRow], written: str = "2026-03-15 12:00") -> int:
    hub.ingest.clock = lambda: at(written)
    return hub.ingest.ingest(rows, sender=FEED).stored


def hour(index: int, minute: int = 10) -> str:
    moment = at("2026-03-14 12:00") + timedelta(hours=index, minutes=minute)
    return moment.strftime("%Y-%m-%d %H:%M")


@pytest.fixture
def rated(hub: Hub) -> Hub:
    """Dataset air (hourly updates, RULES) with four entities over the day before NOW.

    s1   temperature every hour of the window (24), one above max (i=5), one in FAH (i=6)
    s2   temperature 20.0 every other hour (12) in three batches: the 10 after the 2nd repeat
    s3   humidity only (static, created 03-02): misses temperature, silent
    aq-1 a device's entity (created 03-01): misses both, silent
    p1   dataset plain, no rules: its 999 is not flagged
    """
    hub.catalog.create_purpose(SYSTEM, Purpose(OPERATIONS, "Running the city's services",
                                               PurposeKind.OPERATIONS))
    hub.catalog.create_purpose(SYSTEM, Purpose(GOVERNANCE, "Oversight of the city's data",
                                               PurposeKind.GOVERNANCE))
    hub.catalog.create_dataset(SYSTEM, dataset(
        AIR, r"urn:ngsi-ld:(Sensor:air-.*|AirQualityObserved:.*)"))
    hub.catalog.create_dataset(SYSTEM, dataset(PLAIN, r"urn:ngsi-ld:Sensor:plain-.*"))
    hub.quality.set_rules(STEWARD, AIR, QualityRules.from_json(RULES))
    hub.entities.clock = lambda: at("2026-03-01 00:00")
    hub.devices.clock = hub.entities.clock
    ensure_organisation(hub)  # the device's owner
    hub.devices.provision(SYSTEM, device_body("aq-1", owner="environment"),
                          hub.contexts.resolve(ENV_CONTEXT))
    humid = {"type": "Property", "value": 40}
    create(hub, sensor("air-s1"), "2026-03-01 00:00", humidity=humid)
    create(hub, sensor("air-s2"), "2026-03-01 00:00")
    create(hub, sensor("air-s3"), "2026-03-02 00:00", humidity=humid)
    create(hub, sensor("plain-p1"), "2026-03-01 00:00")
    ingest(hub, [reading(sensor("air-s1"), "2026-03-13 11:10", 10.0)])  # before the window
    s1 = [reading(sensor("air-s1"), hour(i), 99.0 if i == 5 else 10.0 + i % 3,
                  unit="FAH" if i == 6 else "CEL") for i in range(24)]
    assert ingest(hub, s1) == 24
    for batch in range(3):
        assert ingest(hub, [reading(sensor("air-s2"), hour(i), 20.0)
                            for i in range(batch * 8, batch * 8 + 8, 2)]) == 4
    ingest(hub, [reading(sensor("plain-p1"), hour(3), 999.0)])
    hub.quality.clock = lambda: NOW
    return hub


def stored_flags(hub: Hub) -> dict[tuple[str, datetime], QualityFlag]:
    with hub.store.read() as conn:
        rows = conn.execute(select(quality_flags.c.entity_id, quality_flags.c.observed_at,
                                   quality_flags.c.flags, quality_flags.c.name)).all()
    assert {r.name for r in rows} <= {TEMPERATURE}
    return {(r.entity_id, r.observed_at): QualityFlag(r.flags) for r in rows}


def test_flags_are_stored_only_for_failing_readings(rated: Hub) -> None:
    flags = stored_flags(rated)
    s2_times = [at(hour(i)) for i in range(0, 24, 2)]
    assert flags == {(sensor("air-s1"), at(hour(5))): QualityFlag.ABOVE_MAX,
                     (sensor("air-s1"), at(hour(6))): QualityFlag.WRONG_UNIT,
                     **{(sensor("air-s2"), t): QualityFlag.REPEATED for t in s2_times[2:]}}

    # a replay, even with another value, is judged by what history kept
    replay = reading(sensor("air-s1"), hour(5), 20.0)
    assert ingest(rated, [replay, reading(sensor("air-s1"), hour(6), 10.0)]) == 0
    assert stored_flags(rated) == flags
    # a new reading breaking the run is fine, the next equal ones count from it
    assert ingest(rated, [reading(sensor("air-s2"), "2026-03-15 12:10", 21.0),
                          reading(sensor("air-s2"), "2026-03-15 12:20", 21.0),
                          reading(sensor("air-s2"), "2026-03-15 12:25", 21.0)]) == 3
    assert set(stored_flags(rated)) - set(flags) == {(sensor("air-s2"), at("2026-03-15 12:25"))}


def test_no_rules_cost_ingest_no_query(hub: Hub) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    readings = [reading(sensor("x"), "2026-03-15 01:00", 1.0)]
    with hub.store.write() as conn:
        hub.quality.flag_readings(conn, readings, 1)  # reads the (empty) rules once
        event.listen(hub.engine, "before_cursor_execute", count)
        try:
            assert hub.quality.flag_readings(conn, readings, 1) == 0
        finally:
            event.remove(hub.engine, "before_cursor_execute", count)
    assert statements == []


def test_the_report_matches_hand_computed_figures(rated: Hub) -> None:
    report = rated.quality.report(STEWARD_READ_ONLY, AIR)
    assert (report.window.start, report.window.end, report.window.periods) == (
        at("2026-03-14 12:00"), at("2026-03-15 12:00"), 24)
    assert report.entities == 4
    # required: temperature on s1, s2; humidity on s1, s3: 4 of 4 entities x 2 attributes
    assert report.required_attributes.share == Share(4, 8)
    assert report.required_attributes.failing == (FailingRule("required", 2, HUMIDITY),
                                                  FailingRule("required", 2, TEMPERATURE))
    # expected readings: 4 entities x 24 hours; s1 sent in 24 of them, s2 in 12
    assert report.expected_readings.share == Share(36, 96)
    assert report.expected_readings.failing == (
        FailingRule("updateFrequency", 60, limit="PT1H"),)
    # validity: 36 readings in the window, 12 flagged
    assert report.validity.share == Share(24, 36)
    assert report.validity.failing == (FailingRule("max", 1, TEMPERATURE, 50),
                                       FailingRule("unitCode", 1, TEMPERATURE, "CEL"),
                                       FailingRule("maxRepeats", 10, TEMPERATURE, 2))
    # timeliness (PT2H at 12:30): only s1 (11:10) is fresh; s2's last is 10:10
    assert report.timeliness.share == Share(1, 4)
    assert report.timeliness.failing == (FailingRule("maxStaleness", 3, limit="PT2H"),)


def test_silent_entities_are_listed_with_their_devices(rated: Hub) -> None:
    found = rated.quality.silent(STEWARD_READ_ONLY, AIR, limit=10)
    assert (found.threshold, found.threshold_source, found.total) == (
        timedelta(hours=2), "maxStaleness", 3)
    assert [(s.entity_id, s.last_seen, s.device_id) for s in found.entities] == [
        ("urn:ngsi-ld:AirQualityObserved:aq-1", at("2026-03-01 00:00"), "aq-1"),
        (sensor("air-s3"), at("2026-03-02 00:00"), None),
        (sensor("air-s2"), at(hour(22)), None)]
    page = rated.quality.silent(STEWARD_READ_ONLY, AIR, limit=1, offset=1)
    assert page.total == 3 and [s.entity_id for s in page.entities] == [sensor("air-s3")]
    # without maxStaleness the update frequency (PT1H) is the interval
    rated.quality.set_rules(CDO, AIR, QualityRules.from_json({"attributes": RULES[
        "attributes"]}))
    by_frequency = rated.quality.silent(CDO, AIR, limit=10)
    assert by_frequency.threshold_source == "updateFrequency"
    # s1's last reading (11:10) is more than an hour old at 12:30 too
    assert [s.entity_id for s in by_frequency.entities] == [
        "urn:ngsi-ld:AirQualityObserved:aq-1", sensor("air-s3"), sensor("air-s2"),
        sensor("air-s1")]


def test_disposal_removes_expired_flags(rated: Hub) -> None:
    rated.disposal.clock = lambda: at("2027-06-01 00:00")  # past the 365 days of them all
    run = rated.disposal.dispose(SYSTEM)
    figures = {d.dataset_id: d for d in run.datasets}
    assert figures[AIR].quality_flags == 12
    assert stored_flags(rated) == {}


# --- the API ----------------------------------------------------------------------------------

@pytest.fixture
def api(rated: Hub) -> Iterator[TestClient]:
    with TestClient(create_app(rated.settings, hub=rated)) as client:
        yield client


def act_as(client: TestClient, caller: Caller) -> None:
    cast(FastAPI, client.app).dependency_overrides[caller_of] = lambda: caller


def put_rules(client: TestClient, body: Any, dataset_id: str = AIR, **headers: str) -> Any:
    return client.put(f"/governance/v1/quality/{dataset_id}/rules", content=json.dumps(body),
                      headers={"Content-Type": "application/json", **headers})


def test_rules_are_set_by_the_cdo_or_the_owners_steward(api: TestClient, rated: Hub) -> None:
    body = {"attributes": {TEMPERATURE: {"min": -40, "max": 60}}}
    for caller, status in ((OTHER_STEWARD, 403), (OPERATOR, 403), (STEWARD_READ_ONLY, 403),
                           (Caller.public(), 401), (STEWARD, 200), (CDO, 200)):
        act_as(api, caller)
        response = put_rules(api, body)
        assert response.status_code == status, (caller.subject, response.text)
        if status != 200:
            assert response.headers["content-type"] == "application/problem+json"
    act_as(api, Caller.public())
    assert api.get(f"/governance/v1/quality/{AIR}/rules").json() == body
    with rated.engine.connect() as conn:
        trail = conn.execute(text("SELECT actor, details FROM audit_log WHERE action = "
                                  "'quality.rules.set' ORDER BY seq")).all()
    # the fixture's steward, then alice's change; carol's was no change and is not recorded
    assert [actor for actor, _ in trail] == ["alice", "alice"]
    assert json.loads(trail[-1].details)["after"] == body
    assert rated.audit.verify().ok


def test_rules_with_a_context_and_clearing_them(api: TestClient) -> None:
    act_as(api, STEWARD)
    response = api.put(f"/governance/v1/quality/{AIR}/rules", content=json.dumps({
        "@context": ENV_CONTEXT, "attributes": {"pm25": {"max": 500, "unitCode": "GQ"}}}),
        headers={"Content-Type": "application/ld+json"})
    assert response.status_code == 200, response.text
    assert response.json()["attributes"] == {"pm25": {"max": 500, "unitCode": "GQ"}}
    plain = api.get(f"/governance/v1/quality/{AIR}/rules").json()
    assert plain["attributes"] == {SDM + "pm25": {"max": 500, "unitCode": "GQ"}}
    twice = api.put(f"/governance/v1/quality/{AIR}/rules", content=json.dumps({
        "@context": ENV_CONTEXT, "attributes": {"pm25": {"max": 5}, SDM + "pm25": {"max": 6}}}),
        headers={"Content-Type": "application/ld+json"})
    assert twice.status_code == 400
    assert f"names {SDM}pm25, as another attribute does" in twice.json()["detail"]
    assert put_rules(api, {}).json() == {"attributes": {}}
    assert api.get(f"/governance/v1/quality/{AIR}/rules").json() == {"attributes": {}}


@pytest.mark.parametrize(("body", "detail"), [
    ({"attributes": {TEMPERATURE: {"min": 9, "max": 1}}}, "min 9 is greater than max 1"),
    ({"maxStaleness": "P1M"}, "uses years or months"),
    ({"maxStaleness": "soon"}, "not an ISO 8601 duration"),
    ({"attributes": {TEMPERATURE: 5}}, "attributes." + TEMPERATURE),
    ({"attributes": {TEMPERATURE: {"minimum": 1}}}, "minimum"),
    ({"attributes": {TEMPERATURE: {"min": "1"}}}, "min"),
    ({"attributes": {"bad name": {"max": 1}}}, "attributes.bad name: Invalid attribute name"),
    ({"attributes": {TEMPERATURE: {}}}, "declares no rule"),
    ({"attributes": {TEMPERATURE: {"maxRepeats": 0}}}, "maxRepeats"),
    ({"attributes": {TEMPERATURE: {"unitCode": "degrees"}}}, "UN/CEFACT"),
    ([1, 2], "body"),
])
def test_bad_rules_are_a_400_naming_the_problem(api: TestClient, body: Any, detail: str) -> None:
    act_as(api, STEWARD)
    response = put_rules(api, body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]


def test_rules_of_unknown_datasets_and_bodies_that_are_not_json(api: TestClient) -> None:
    act_as(api, CDO)
    assert put_rules(api, {}, dataset_id="urn:nope").status_code == 404
    assert api.get("/governance/v1/quality/urn:nope").status_code == 404
    broken = api.put(f"/governance/v1/quality/{AIR}/rules", content=b"{",
                     headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    as_text = api.put(f"/governance/v1/quality/{AIR}/rules", content=b"{}",
                      headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 415


def test_report_and_silent_entities_over_http(api: TestClient) -> None:
    act_as(api, OPERATOR)  # a member of the owning organisation
    response = api.get(f"/governance/v1/quality/{AIR}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window"] == {"start": "2026-03-14T12:00:00.000Z",
                              "end": "2026-03-15T12:00:00.000Z", "updatePeriods": 24}
    assert body["completeness"]["expectedReadings"] == {
        "score": 0.375, "passed": 36, "total": 96,
        "failing": [{"rule": "updateFrequency", "limit": "PT1H", "count": 60}]}
    assert body["validity"]["score"] == pytest.approx(24 / 36)
    assert body["validity"]["failing"][0] == {"rule": "max", "attribute": TEMPERATURE,
                                              "limit": 50, "count": 1}
    assert body["timeliness"]["score"] == 0.25
    week = api.get(f"/governance/v1/quality/{AIR}", params={"window": "P7D"}).json()
    assert week["window"]["updatePeriods"] == 168
    for window in ("P1M", "P400D", "x"):
        assert api.get(f"/governance/v1/quality/{AIR}",
                       params={"window": window}).status_code == 400

    silent = api.get(f"/governance/v1/quality/{AIR}/silent", params={"limit": 2})
    assert silent.status_code == 200, silent.text
    assert silent.json() == {"threshold": "PT2H", "thresholdFrom": "maxStaleness", "total": 3,
                             "entities": [
        {"entityId": "urn:ngsi-ld:AirQualityObserved:aq-1",
         "lastSeen": "2026-03-01T00:00:00.000Z", "silentFor": "P14DT12H30M",
         "deviceId": "aq-1"},
        {"entityId": sensor("air-s3"), "lastSeen": "2026-03-02T00:00:00.000Z",
         "silentFor": "P13DT12H30M", "deviceId": None}]}
    assert api.get(f"/governance/v1/quality/{AIR}/silent",
                   params={"limit": 0}).status_code == 400


def test_who_sees_the_quality_of_a_dataset(api: TestClient, rated: Hub) -> None:
    # the policy decides, as for reading the dataset: internal data is for city staff
    for caller, status in ((ANALYST, 403), (BOARD, 403), (Caller.public(), 401),
                           (replace(OPERATOR, purpose=None), 403), (CDO, 200),
                           (replace(CDO, purpose=OPERATIONS), 200), (OPERATOR, 200)):
        act_as(api, caller)
        for path in (f"/governance/v1/quality/{AIR}", f"/governance/v1/quality/{AIR}/silent"):
            response = api.get(path)
            assert response.status_code == status, (caller, path, response.text)
    with rated.engine.connect() as conn:  # the decisions are in the audit trail
        rated.decisions.flush()
        assert conn.scalar(text("SELECT count(*) FROM audit_log WHERE action = "
                                "'access.read' AND actor = 'otto'")) >= 2
    rated.catalog.create_dataset(SYSTEM, dataset("urn:urbanhub:dataset:open",
                                                 r"urn:ngsi-ld:Open:.*", Classification.OPEN,
                                                 frequency=None))
    act_as(api, Caller.public())
    opened = api.get("/governance/v1/quality/urn:urbanhub:dataset:open")
    assert opened.status_code == 200
    assert opened.json()["completeness"]["expectedReadings"]["reason"] == (
        "the dataset declares no update frequency")
    assert api.get("/governance/v1/quality/urn:urbanhub:dataset:open/silent").status_code == 409


def test_a_steward_sets_rules_with_a_real_api_key(api: TestClient, rated: Hub) -> None:
    cast(FastAPI, api.app).dependency_overrides.clear()
    cdo = Caller("carla", frozenset({"cdo"}), "city-data-office", scopes=GOVERN)
    bootstrap(rated)
    rated.identities.add_member(cdo, Member("alice", "environment", frozenset({"steward"})))
    key = rated.identities.issue_api_key(cdo, "alice", frozenset(Scope), timedelta(days=1)).key
    read_only = rated.identities.issue_api_key(cdo, "alice", frozenset({Scope.READ}),
                                               timedelta(days=1)).key
    body = {"attributes": {TEMPERATURE: {"max": 45}}}
    assert put_rules(api, body, **apikey(read_only)).status_code == 403
    assert put_rules(api, body, **apikey(key)).status_code == 200
    assert put_rules(api, body).status_code == 401


def test_quality_report_command(rated: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("URBANHUB_DATABASE_URL", rated.settings.database_url)
    monkeypatch.setenv("URBANHUB_MQTT_URL", "")
    get_settings.cache_clear()
    # the command reports up to the real time: one reading out of range an hour ago
    rated.ingest.clock = utcnow
    rated.ingest.ingest([reading(sensor("air-s1"), (utcnow() - timedelta(hours=1)).strftime(
        "%Y-%m-%d %H:%M:%S.%f"), 99.0)], sender=FEED)
    try:
        result = runner.invoke(cli_app, ["quality", "report", AIR], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "validity" in result.output and "temperature max 50: 1" in result.output
        refused = runner.invoke(cli_app, ["quality", "report", AIR, "--window", "P1M"])
        assert refused.exit_code == 1 and "years or months" in refused.output
        unknown = runner.invoke(cli_app, ["quality", "report", "urn:nope"])
        assert unknown.exit_code == 1 and "does not exist" in unknown.output
    finally:
        get_settings.cache_clear()
