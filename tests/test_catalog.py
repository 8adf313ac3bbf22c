"""The data catalog: assignment rules, duplicates, the HTTP API, every ingest path, the CLI
and the demo city's catalog, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, select, text
from typer.testing import CliRunner

from tests.conftest import OPERATIONS
from tests.stakeholders import apikey, city_people, device_key
from tests.test_devices import ENV_CONTEXT, ENV_LINK, SDM, device_body
from urbanhub.api.security import caller_of
from urbanhub.cli import app as cli_app
from urbanhub.config import Settings, get_settings
from urbanhub.governance.catalog import Outcome
from urbanhub.governance.catalog_documents import DatasetDocument, to_dataset
from urbanhub.hub.runtime import Hub
from urbanhub.ingest.importer import CsvMapping, import_csv, import_ngsild, parse_attr_option
from urbanhub.model.caller import Caller
from urbanhub.model.catalog import (
    UNCATALOGUED,
    UNCATALOGUED_ID,
    RuleSet,
    assign,
    find_duplicates,
)
from urbanhub.model.errors import BadRequestData
from urbanhub.model.governance import (
    AssignmentRule,
    Classification,
    Dataset,
    LegalBasis,
    Purpose,
    PurposeKind,
    parse_coverage,
    parse_duration,
    parse_retention,
)
from urbanhub.sim.catalog import dataset_id as demo_dataset
from urbanhub.sim.city import KINDS, build_city
from urbanhub.sim.demo import load_demo_catalog, operator_keys
from urbanhub.sim.devices import CityFeeder
from urbanhub.sim.patterns import NO_FAULTS
from urbanhub.store.catalog import entity_counts
from urbanhub.store.db import alembic_config, make_engine, upgrade
from urbanhub.store.tables import audit_log, entities

PARKING_CONTEXT = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/"
                   "master/context.jsonld")
PARKING = "https://smartdatamodels.org/dataModel.Parking/"
AQ = SDM + "AirQualityObserved"
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
EVERY_SCOPE = frozenset({"read", "write", "govern"})
CDO = Caller("urn:ngsi-ld:Person:carol", frozenset({"cdo"}), "cdo-office", scopes=EVERY_SCOPE)
ENV_STEWARD = Caller("urn:ngsi-ld:Person:alice", frozenset({"steward"}), "environment",
                     scopes=EVERY_SCOPE)
MOBILITY_STEWARD = Caller("urn:ngsi-ld:Person:bob", frozenset({"steward"}), "mobility",
                          scopes=EVERY_SCOPE)
ANALYST = Caller("urn:ngsi-ld:Person:dan", frozenset({"analyst"}), "environment")
SYSTEM = Caller.system("test")
LD = {"Content-Type": "application/ld+json"}
CITY_BOX = [5.0, 52.0, 5.3, 52.2]


# --- helpers ----------------------------------------------------------------------------

def act_as(client: TestClient, caller: Caller | None) -> None:
    """Make the API see ``caller`` (None: the anonymous public again)."""
    overrides = cast(FastAPI, client.app).dependency_overrides
    if caller is None:
        overrides.pop(caller_of, None)
    else:
        overrides[caller_of] = lambda: caller


def dataset_body(ident: str = "air", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "@context": ENV_CONTEXT, "id": ident, "title": "Air quality", "owner": "environment",
        "steward": "urn:ngsi-ld:Person:alice", "classification": "open",
        "licence": "CC-BY-4.0", "theme": "ENVI", "entityTypes": ["AirQualityObserved"],
        "purposes": ["monitoring"], "legalBasis": "public_task", "retention": "P365D",
        "updateFrequency": "PT1H", "spatialCoverage": CITY_BOX,
        "rules": [{"entityType": "AirQualityObserved"}]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def parking_body(ident: str = "parking", **changes: Any) -> dict[str, Any]:
    return dataset_body(ident, **{
        "@context": PARKING_CONTEXT, "title": "Parking", "owner": "mobility",
        "steward": "urn:ngsi-ld:Person:bob", "classification": "internal", "licence": "",
        "theme": "TRAN", "entityTypes": ["ParkingSpot"], "purposes": ["mobility"],
        "rules": [{"entityType": "ParkingSpot"}], **changes})


def send(client: TestClient, method: str, url: str, body: Any) -> Any:
    """A JSON-LD body (its @context inside) sent as application/ld+json."""
    return client.request(method, url, content=json.dumps(body), headers=LD)


def create(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = send(client, "POST", "/catalog/v1/datasets", body)
    assert response.status_code == 201, response.text
    return cast(dict[str, Any], response.json())


def set_rules(client: TestClient, ident: str, rules: list[dict[str, Any]],
              context: str = ENV_CONTEXT) -> Any:
    return send(client, "PUT", f"/catalog/v1/datasets/{ident}/rules",
                {"@context": context, "rules": rules})


def counts(hub: Hub) -> dict[str, int]:
    with hub.store.read() as conn:
        return entity_counts(conn)


def dataset_of(hub: Hub, entity_id: str) -> str:
    with hub.store.read() as conn:
        return cast(str, conn.scalar(select(entities.c.dataset_id).where(
            entities.c.id == entity_id)))


def aq_entity(name: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:AirQualityObserved:{name}", "type": "AirQualityObserved",
            "pm25": {"type": "Property", "value": 3}, **extra}


def post_entity(client: TestClient, entity: dict[str, Any], link: dict[str, str]) -> None:
    response = client.post("/ngsi-ld/v1/entities", json=entity, headers=link)
    assert response.status_code == 201, response.text


def link(context: str) -> dict[str, str]:
    return {"Link": f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; '
                    'type="application/ld+json"'}


def domain_dataset(hub: Hub, body: dict[str, Any]) -> Dataset:
    """The domain dataset an API body describes (for tests that use the service)."""
    return to_dataset(DatasetDocument.model_validate(body), hub.contexts.resolve(body["@context"]))


@pytest.fixture
def cdo(client: TestClient) -> TestClient:
    """The API as the CDO, with the purposes the test datasets declare."""
    act_as(client, CDO)
    for ident, kind in (("monitoring", "operations"), ("mobility", "operations")):
        response = client.post("/catalog/v1/purposes", json={
            "id": ident, "description": f"{ident} of the city", "kind": kind})
        assert response.status_code == 201, response.text
    return client


def purposes_in(hub: Hub) -> None:
    hub.catalog.load(SYSTEM, [Purpose("monitoring", "Monitoring", PurposeKind.OPERATIONS),
                              Purpose("mobility", "Mobility", PurposeKind.OPERATIONS)], [])


# --- assignment rules (pure) ------------------------------------------------------------

def pure(ident: str, classification: Classification, *rules: AssignmentRule,
         owner: str = "environment", coverage: Any = None,
         types: Sequence[str] = (AQ,)) -> Dataset:
    return Dataset(ident, owner, "alice", classification, "CC-BY-4.0", frozenset(),
                   LegalBasis.PUBLIC_TASK, timedelta(days=30), entity_types=frozenset(types),
                   spatial_coverage=coverage, rules=rules)


OPEN, INTERNAL, PERSONAL = Classification.OPEN, Classification.INTERNAL, Classification.PERSONAL


def test_highest_priority_wins_then_the_stricter_dataset_then_the_id() -> None:
    by_type = AssignmentRule(AQ)
    north = AssignmentRule(AQ, r"urn:ngsi-ld:AirQualityObserved:north-\d+", priority=10)
    rules = RuleSet.of([pure("b-open", OPEN, by_type), pure("z-north", OPEN, north),
                        pure("a-open", OPEN, by_type), pure("c-personal", PERSONAL, by_type)])
    assert assign("urn:ngsi-ld:AirQualityObserved:north-7", [AQ], rules) == "z-north"
    # Same priority: the stricter classification, so an ambiguity never opens data up.
    assert assign("urn:ngsi-ld:AirQualityObserved:south-1", [AQ], rules) == "c-personal"
    ties = RuleSet.of([pure("b-open", OPEN, by_type), pure("a-open", OPEN, by_type)])
    assert assign("urn:x:1", [AQ], ties) == "a-open"  # then the dataset id
    # Loading order does not matter.
    assert ties == RuleSet.of([pure("a-open", OPEN, by_type), pure("b-open", OPEN, by_type)])


def test_unmatched_entities_go_to_the_internal_uncatalogued_dataset() -> None:
    rules = RuleSet.of([pure("air", OPEN, AssignmentRule(AQ))])
    assert assign("urn:ngsi-ld:Building:1", [VOCAB + "Building"], rules) == UNCATALOGUED_ID
    assert assign("urn:x", [], RuleSet()) == UNCATALOGUED_ID
    assert UNCATALOGUED.classification is Classification.INTERNAL


def test_id_patterns_match_the_whole_id_and_combine_with_the_type() -> None:
    rule = AssignmentRule(AQ, "urn:ngsi-ld:AirQualityObserved:riverton-.+")
    assert rule.matches("urn:ngsi-ld:AirQualityObserved:riverton-1", [AQ])
    assert not rule.matches("urn:ngsi-ld:AirQualityObserved:riverton-1", [VOCAB + "Other"])
    assert not rule.matches("urn:ngsi-ld:AirQualityObserved:riverton", [AQ])
    only_pattern = AssignmentRule(id_pattern="urn:ngsi-ld:[A-Za-z]+:riverton-.+")
    assert only_pattern.matches("urn:ngsi-ld:Streetlight:riverton-3", [])
    assert not only_pattern.matches("xurn:ngsi-ld:Streetlight:riverton-3", [])


@pytest.mark.parametrize(("make", "message"), [
    (lambda: AssignmentRule(), "entity type, an id pattern or both"),
    (lambda: AssignmentRule(AQ, "urn:(open"), "not a valid regular expression"),
    (lambda: AssignmentRule("AirQualityObserved"), "not an expanded IRI"),
    (lambda: AssignmentRule(AQ, priority=cast(int, "high")), "not an integer"),
    (lambda: AssignmentRule(AQ, "x" * 501), "longer than 500"),
    (lambda: pure("air", OPEN, AssignmentRule(PARKING + "ParkingSpot")), "does not declare"),
    (lambda: pure("air", OPEN, types=["AirQualityObserved"]), "expanded IRIs"),
])
def test_bad_rules_are_refused_naming_the_problem(make: Callable[[], object],
                                                  message: str) -> None:
    with pytest.raises(BadRequestData, match=message):
        make()


def test_coverage_accepts_geojson_areas_and_bboxes_only() -> None:
    assert parse_coverage([0, 1, 2, 3]) == {"type": "Polygon", "coordinates": [
        [[2.0, 1.0], [2.0, 3.0], [0.0, 3.0], [0.0, 1.0], [2.0, 1.0]]]}
    square = [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]
    assert parse_coverage({"type": "MultiPolygon", "coordinates": [square]})["type"] == \
        "MultiPolygon"
    for bad, message in [
            ({"type": "Point", "coordinates": [1, 2]}, "Polygon or MultiPolygon"),
            ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "Too few points"),
            ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
             "Self-intersection"),
            ({"type": "Polygon"}, "not valid GeoJSON"),
            ([0, 0, 200, 1], "longitudes within"),
            ([1, 0, 0, 1], "min_lon < max_lon"),
            ([0, 0, 1], "four numbers"),
            ("everywhere", "GeoJSON Polygon")]:
        with pytest.raises(BadRequestData, match=message):
            parse_coverage(bad)


def test_durations_are_iso_8601_and_retention_is_exact() -> None:
    assert parse_duration("PT15M", "x") == timedelta(minutes=15)
    assert parse_duration("P1Y", "x")  # update frequencies may be yearly
    assert parse_retention("P2W") == timedelta(days=14)
    for bad in ("15 minutes", "P", "PT0S", "-P1D", ""):
        with pytest.raises(BadRequestData, match="duration"):
            parse_duration(bad, "Update frequency")
    with pytest.raises(BadRequestData, match="years or months"):
        parse_retention("P5Y")


def test_duplicates_need_two_owners_a_shared_type_and_overlapping_coverage() -> None:
    west, east = [5.0, 52.0, 5.2, 52.2], [5.1, 52.0, 5.3, 52.2]
    far, touching = [6.0, 53.0, 6.1, 53.1], [5.2, 52.0, 5.4, 52.2]
    datasets = [
        pure("env-air", OPEN, coverage=west),
        pure("uni-air", OPEN, owner="university", coverage=east),  # overlaps env-air
        pure("uni-far", OPEN, owner="university", coverage=far),  # disjoint
        pure("env-east", OPEN, coverage=east),  # same owner as env-air
        pure("uni-neighbour", OPEN, owner="uni2", coverage=touching, types=[AQ, VOCAB + "X"]),
        pure("uni-parking", OPEN, owner="uni3", coverage=west, types=[PARKING + "ParkingSpot"]),
        pure("ngo-air", OPEN, owner="ngo", coverage=None, types=[VOCAB + "X"]),
    ]
    found = {(d.first, d.second): d for d in find_duplicates(datasets)}
    assert set(found) == {("env-air", "uni-air"), ("env-east", "uni-air"),
                          ("env-east", "uni-neighbour"), ("ngo-air", "uni-neighbour"),
                          ("uni-air", "uni-neighbour")}
    assert found[("env-air", "uni-air")].shared_types == (AQ,)
    assert found[("env-air", "uni-air")].reason == "coverages overlap (50% of the smaller one)"
    assert found[("ngo-air", "uni-neighbour")].reason == "coverage not declared by ngo-air"
    # env-air and uni-neighbour only touch along lon 5.2: neighbours, not duplicates.
    assert ("env-air", "uni-neighbour") not in found


# --- the HTTP API -----------------------------------------------------------------------

def test_datasets_are_created_by_the_cdo_and_readable_by_everyone(cdo: TestClient) -> None:
    created = send(cdo, "POST", "/catalog/v1/datasets", dataset_body())
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/catalog/v1/datasets/air"
    body = created.json()
    assert body["entityTypes"] == ["AirQualityObserved"]  # in the body's context
    assert body["spatialCoverage"]["type"] == "Polygon"
    assert (body["entityCount"], body["entitiesMoved"], body["builtIn"]) == (0, 0, False)

    act_as(cdo, None)
    listed = cdo.get("/catalog/v1/datasets").json()
    assert [d["id"] for d in listed] == [UNCATALOGUED_ID, "air"]
    assert listed[0]["builtIn"] and listed[0]["classification"] == "internal"
    assert listed[1]["entityTypes"] == [AQ]  # no context given: full IRIs
    one = cdo.get("/catalog/v1/datasets/air", headers=ENV_LINK).json()
    assert one["entityTypes"] == ["AirQualityObserved"]
    assert one["rules"] == [{"entityType": "AirQualityObserved", "priority": 0}]
    assert (one["retention"], one["updateFrequency"], one["theme"]) == ("P365D", "PT1H", "ENVI")
    assert [p["id"] for p in cdo.get("/catalog/v1/purposes").json()] == [
        OPERATIONS, "mobility", "monitoring"]

    act_as(cdo, CDO)
    again = send(cdo, "POST", "/catalog/v1/datasets", dataset_body())
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert cdo.post("/catalog/v1/purposes", json={
        "id": "monitoring", "description": "again"}).status_code == 409
    missing = cdo.get("/catalog/v1/datasets/nothing-here")
    assert missing.status_code == 404 and "nothing-here" in missing.json()["detail"]


def test_a_dataset_read_can_be_edited_and_put_back(cdo: TestClient) -> None:
    create(cdo, dataset_body())
    shown = cdo.get("/catalog/v1/datasets/air", headers=ENV_LINK).json()
    shown["title"] = "Air quality (hourly)"
    replaced = cdo.put("/catalog/v1/datasets/air", json=shown, headers=ENV_LINK)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["title"] == "Air quality (hourly)"
    assert replaced.json()["entitiesMoved"] == 0
    body = dataset_body()
    del body["id"]  # taken from the URL
    assert send(cdo, "PUT", "/catalog/v1/datasets/air", body).status_code == 200
    other = send(cdo, "PUT", "/catalog/v1/datasets/air", dataset_body("else"))
    assert other.status_code == 400 and "differs" in other.json()["detail"]
    assert send(cdo, "PUT", "/catalog/v1/datasets/else", dataset_body("else")).status_code == 404


def test_the_uncatalogued_dataset_is_built_in(cdo: TestClient) -> None:
    shown = cdo.get(f"/catalog/v1/datasets/{UNCATALOGUED_ID}")
    assert shown.status_code == 200 and shown.json()["builtIn"]
    body = dataset_body(UNCATALOGUED_ID)
    assert send(cdo, "POST", "/catalog/v1/datasets", body).status_code == 409
    changed = send(cdo, "PUT", f"/catalog/v1/datasets/{UNCATALOGUED_ID}", body)
    assert changed.status_code == 400 and "built in" in changed.json()["detail"]
    assert set_rules(cdo, UNCATALOGUED_ID, []).status_code == 400


BAD_DATASETS: list[tuple[dict[str, Any], str]] = [
    ({"classification": "secret"}, "classification: Input should be 'open'"),
    ({"rules": [{"entityType": "AirQualityObserved", "idPattern": "urn:(unclosed"}]},
     "Dataset air.rules[0]: Assignment rule id pattern 'urn:(unclosed' is not a valid"),
    ({"rules": [{}]}, "an entity type, an id pattern or both"),
    ({"rules": [{"entityType": "ParkingSpot"}]}, "does not declare"),
    ({"rules": [{"entityType": "AirQualityObserved", "priority": "high"}]},
     "rules[0].priority: Input should be a valid integer"),
    ({"updateFrequency": "hourly"}, "update frequency 'hourly' is not an ISO 8601 duration"),
    ({"retention": "P5Y"}, "Retention 'P5Y' uses years or months"),
    ({"retention": "-P1D"}, "Retention '-P1D' must be a positive duration"),
    ({"spatialCoverage": {"type": "Point", "coordinates": [5, 52]}},
     "Spatial coverage must be a GeoJSON Polygon or MultiPolygon"),
    ({"spatialCoverage": {"type": "Polygon", "coordinates": [[[5, 52], [5.1, 52.1], [5, 52]]]}},
     "Spatial coverage is not a valid area: Too few points"),
    ({"spatialCoverage": [5.3, 52, 5.0, 52.2]}, "min_lon < max_lon"),
    ({"purposes": ["astrology", "monitoring"]}, "unknown purposes astrology"),
    ({"owner": None}, "owner: Field required"),
    ({"owner": ""}, "owner: String should have at least 1 character"),
    ({"theme": "Air"}, "theme: Input should be 'AGRI'"),
    ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
    ({"licence": ""}, "open data needs a licence"),
    ({"legalBasis": "consent"}, "consent-based data cannot be open"),
    ({"id": "air/quality"}, "id: String should match pattern"),
    ({"entityTypes": ["Air Quality"]}, "Invalid entity type 'Air Quality'"),
]


def test_bad_datasets_are_400_problems_naming_what_is_wrong(cdo: TestClient) -> None:
    for changes, message in BAD_DATASETS:
        response = send(cdo, "POST", "/catalog/v1/datasets", dataset_body(**changes))
        assert response.status_code == 400, (changes, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert message in response.json()["detail"], (changes, response.json())
    assert [d["id"] for d in cdo.get("/catalog/v1/datasets").json()] == [UNCATALOGUED_ID]
    not_json = cdo.post("/catalog/v1/datasets", content=b"{", headers=LD)
    assert not_json.status_code == 400
    assert cdo.post("/catalog/v1/purposes", json={"id": "x", "kind": "fun"}).status_code == 400


def test_attributes_may_be_stricter_than_their_dataset_not_looser(cdo: TestClient,
                                                                  hub: Hub) -> None:
    stricter = create(cdo, parking_body(attributeClassifications={"plateNumber": "personal"},
                                        identifiers=["plateNumber"]))
    assert stricter["attributeClassifications"] == {"plateNumber": "personal"}
    dataset = hub.catalog.dataset("parking").dataset
    assert dataset.classification_of(VOCAB + "plateNumber") is Classification.PERSONAL
    assert dataset.classification_of(PARKING + "occupancy") is Classification.INTERNAL
    for looser in ("open", "internal"):
        refused = send(cdo, "PUT", "/catalog/v1/datasets/parking", parking_body(
            attributeClassifications={"occupancy": looser, "plateNumber": "personal"}))
        assert refused.status_code == 400
        assert f"not so for: {PARKING}occupancy." in refused.json()["detail"]


def test_only_the_cdo_or_the_owners_steward_changes_datasets(cdo: TestClient) -> None:
    body = dataset_body(rules=None)
    for caller in (None, ANALYST, MOBILITY_STEWARD):
        act_as(cdo, caller)
        refused = send(cdo, "POST", "/catalog/v1/datasets", body)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert cdo.post("/catalog/v1/purposes", json={
            "id": "p", "description": "d"}).status_code == 403
        assert cdo.get("/catalog/v1/duplicates").status_code == 403
        assert cdo.get("/catalog/v1/report").status_code == 403
    act_as(cdo, ENV_STEWARD)
    assert send(cdo, "POST", "/catalog/v1/datasets", body).status_code == 201
    assert send(cdo, "PUT", "/catalog/v1/datasets/air",
                dataset_body(rules=None, title="Renamed")).status_code == 200
    with_rules = send(cdo, "PUT", "/catalog/v1/datasets/air", dataset_body())
    assert with_rules.status_code == 403 and "assignment rules" in with_rules.json()["detail"]
    given_away = send(cdo, "PUT", "/catalog/v1/datasets/air",
                      dataset_body(rules=None, owner="mobility"))
    assert given_away.status_code == 403 and "another organisation" in given_away.json()[
        "detail"]
    assert set_rules(cdo, "air", [{"entityType": "AirQualityObserved"}]).status_code == 403
    assert send(cdo, "POST", "/catalog/v1/datasets", parking_body(rules=None)).status_code == 403
    act_as(cdo, CDO)
    assert set_rules(cdo, "air", [{"entityType": "AirQualityObserved"}]).status_code == 200


# --- assignment on every ingest path ----------------------------------------------------

def test_entities_created_through_ngsi_ld_land_in_their_dataset(cdo: TestClient,
                                                                hub: Hub) -> None:
    create(cdo, dataset_body())
    create(cdo, parking_body())
    post_entity(cdo, aq_entity("a1"), ENV_LINK)
    post_entity(cdo, {"id": "urn:ngsi-ld:Building:b1", "type": "Building"}, {})
    batch = [{"id": f"urn:ngsi-ld:ParkingSpot:{name}", "type": "ParkingSpot",
              "status": {"type": "Property", "value": "free"},
              "category": {"type": "Property", "value": ["onStreet"]},
              "refParkingSite": {"type": "Relationship", "object": "urn:ngsi-ld:X:site"},
              "location": {"type": "GeoProperty",
                           "value": {"type": "Point", "coordinates": [5.1, 52.1]}}}
             for name in ("p1", "p2")]
    upserted = cdo.post("/ngsi-ld/v1/entityOperations/upsert", json=batch,
                        headers=link(PARKING_CONTEXT))
    assert upserted.status_code == 201, upserted.text
    assert counts(hub) == {"air": 1, "parking": 2, UNCATALOGUED_ID: 1}
    # An upsert that updates keeps the dataset; the catalog shows the counts to everyone.
    again = cdo.post("/ngsi-ld/v1/entityOperations/upsert", json=batch[:1],
                     headers=link(PARKING_CONTEXT))
    assert again.status_code == 204, again.text
    act_as(cdo, None)
    shown = {d["id"]: d["entityCount"] for d in cdo.get("/catalog/v1/datasets").json()}
    assert shown == {UNCATALOGUED_ID: 1, "air": 1, "parking": 2}


def test_provisioned_devices_land_in_their_dataset_and_readings_cost_no_lookup(
        cdo: TestClient, public_client: TestClient, hub: Hub) -> None:
    create(cdo, dataset_body())
    assigner = hub.store.assign_dataset
    assert assigner is not None
    calls: list[str] = []

    def counting(conn: Connection, entity_id: str, types: Sequence[str]) -> str:
        calls.append(entity_id)
        return assigner(conn, entity_id, types)

    hub.store.assign_dataset = counting
    # Devices are provisioned and report with real credentials, one a request.
    operator = city_people(hub).operator
    provisioned = public_client.post("/ingest/v1/devices", json=device_body(),
                                     headers=apikey(operator))
    assert provisioned.status_code == 201
    assert calls == ["urn:ngsi-ld:AirQualityObserved:aq-0001"]
    readings = [{"deviceId": "aq-0001", "observedAt": f"2024-03-01T10:0{i}:00Z", "pm25": i}
                for i in range(5)]
    stored = public_client.post("/ingest/v1/readings", json=readings,
                                headers=device_key(provisioned.json()["deviceKey"]))
    assert stored.status_code == 200 and stored.json()["stored"] == 5
    assert len(calls) == 1  # readings update entities that already have their dataset
    assert counts(hub) == {"air": 1}


def test_imported_files_land_in_their_dataset(hub: Hub, tmp_path: Path) -> None:
    purposes_in(hub)
    hub.catalog.create_dataset(SYSTEM, domain_dataset(hub, dataset_body()))
    entities_file = tmp_path / "entities.json"
    entities_file.write_text(json.dumps([
        {**aq_entity("f1"), "@context": ENV_CONTEXT},
        {"id": "urn:ngsi-ld:Building:f2", "type": "Building"}]))
    assert import_ngsild(hub, entities_file).entities == 2
    readings_file = tmp_path / "meters.csv"
    readings_file.write_text("sensor,time,pm\nm1,2024-01-15T10:00:00Z,12\n"
                             "m2,2024-01-15T10:00:00Z,9\n")
    mapping = CsvMapping(entity_type="AirQualityObserved", id_column="sensor",
                         time_column="time", context=ENV_CONTEXT,
                         attributes=[parse_attr_option("pm=pm25:GQ")])
    assert import_csv(hub, readings_file, mapping).entities == 2
    assert counts(hub) == {"air": 3, UNCATALOGUED_ID: 1}
    assert dataset_of(hub, "urn:ngsi-ld:AirQualityObserved:m1") == "air"


def test_the_highest_priority_rule_wins_at_ingest(cdo: TestClient, hub: Hub) -> None:
    create(cdo, dataset_body())
    create(cdo, dataset_body("air-north", owner="university", rules=[
        {"entityType": "AirQualityObserved", "idPattern": ".*:north-.*", "priority": 10}]))
    for name in ("north-1", "south-1", "north-2"):
        post_entity(cdo, aq_entity(name), ENV_LINK)
    assert counts(hub) == {"air": 1, "air-north": 2}
    assert dataset_of(hub, "urn:ngsi-ld:AirQualityObserved:south-1") == "air"


def test_rule_changes_move_existing_entities_and_report_how_many(cdo: TestClient,
                                                                 hub: Hub) -> None:
    for name in ("north-1", "north-2", "south-1"):
        post_entity(cdo, aq_entity(name), ENV_LINK)
    assert counts(hub) == {UNCATALOGUED_ID: 3}
    created = create(cdo, dataset_body())
    assert created["entitiesMoved"] == 3 and created["entityCount"] == 3
    narrowed = set_rules(cdo, "air", [{"entityType": "AirQualityObserved",
                                       "idPattern": ".*:north-\\d"}])
    assert narrowed.status_code == 200, narrowed.text
    assert (narrowed.json()["entitiesMoved"], narrowed.json()["entityCount"]) == (1, 2)
    assert counts(hub) == {"air": 2, UNCATALOGUED_ID: 1}
    same = set_rules(cdo, "air", [{"entityType": "AirQualityObserved",
                                   "idPattern": ".*:north-\\d"}])
    assert same.json()["entitiesMoved"] == 0
    # A stricter dataset's rule at the same priority takes the ties.
    stricter = create(cdo, dataset_body("air-internal", classification="internal",
                                        licence=""))
    assert stricter["entitiesMoved"] == 3
    assert counts(hub) == {"air-internal": 3}
    # Rules set to none: everything falls back to uncatalogued.
    emptied = set_rules(cdo, "air-internal", [])
    assert emptied.json()["entitiesMoved"] == 3
    assert counts(hub) == {"air": 2, UNCATALOGUED_ID: 1}
    bad = set_rules(cdo, "air", [{"entityType": "AirQualityObserved", "idPattern": "("}])
    assert bad.status_code == 400 and "rules[0]" in bad.json()["detail"]
    assert set_rules(cdo, "ghost", []).status_code == 404


def test_an_entity_that_gains_a_type_is_re_evaluated(cdo: TestClient, hub: Hub) -> None:
    create(cdo, dataset_body())
    post_entity(cdo, {"id": "urn:ngsi-ld:Device:d1", "type": "Device"}, {})
    assert dataset_of(hub, "urn:ngsi-ld:Device:d1") == UNCATALOGUED_ID
    hub.entities.append(SYSTEM, "urn:ngsi-ld:Device:d1", {"type": [AQ], "attrs": {}})
    assert dataset_of(hub, "urn:ngsi-ld:Device:d1") == "air"


def test_rules_changed_by_another_process_apply_to_the_next_entity(hub: Hub) -> None:
    other = Hub(hub.settings)
    try:
        hub.entities.create(SYSTEM, {"id": "urn:ngsi-ld:AirQualityObserved:1",
                                     "type": [AQ], "attrs": {}})  # compiles the empty rules
        purposes_in(other)
        change = other.catalog.create_dataset(SYSTEM, domain_dataset(other, dataset_body()))
        assert change.entities_moved == 1
        hub.entities.create(SYSTEM, {"id": "urn:ngsi-ld:AirQualityObserved:2",
                                     "type": [AQ], "attrs": {}})
        assert counts(hub) == {"air": 2}
    finally:
        other.close()


def test_a_rule_change_waits_for_a_creation_in_flight(hub: Hub) -> None:
    """A creation that chose its dataset under the old rules commits before the rule change
    re-evaluates entities, so the change moves it too; no entity is left misplaced."""
    purposes_in(hub)
    hub.catalog.create_dataset(SYSTEM, domain_dataset(hub, dataset_body()))
    hub.catalog.create_dataset(SYSTEM, domain_dataset(hub, dataset_body(
        "air-b", owner="university", rules=None)))
    assigner = hub.store.assign_dataset
    assert assigner is not None
    assigned, proceed = threading.Event(), threading.Event()

    def slow(conn: Connection, entity_id: str, types: Sequence[str]) -> str:
        chosen = assigner(conn, entity_id, types)
        assigned.set()
        proceed.wait(10)
        return chosen

    hub.store.assign_dataset = slow
    creation = threading.Thread(target=hub.entities.create, args=(SYSTEM, {
        "id": "urn:ngsi-ld:AirQualityObserved:1", "type": [AQ], "attrs": {}}))
    creation.start()
    assert assigned.wait(10)
    change = threading.Thread(target=hub.catalog.set_rules, args=(
        SYSTEM, "air-b", (AssignmentRule(AQ, priority=5),)))
    change.start()
    change.join(0.5)
    assert change.is_alive()  # waiting for the creation to commit
    proceed.set()
    creation.join(10)
    change.join(10)
    assert counts(hub) == {"air-b": 1}


# --- the CDO's view and the audit trail -------------------------------------------------

def test_duplicates_and_uncatalogued_entities_are_reported_to_the_cdo(cdo: TestClient) -> None:
    create(cdo, dataset_body(spatialCoverage=[5.0, 52.0, 5.2, 52.2]))
    create(cdo, dataset_body("uni-air", owner="university", rules=None,
                             spatialCoverage=[5.1, 52.0, 5.2, 52.2]))  # inside air's
    create(cdo, dataset_body("far-air", owner="university", rules=None,
                             spatialCoverage=[6.0, 53.0, 6.1, 53.1]))  # elsewhere
    create(cdo, dataset_body("env-air-2", rules=None,  # the same owner as air
                             spatialCoverage=[5.0, 52.0, 5.05, 52.2]))
    post_entity(cdo, {"id": "urn:ngsi-ld:Building:b1", "type": "Building"}, {})
    post_entity(cdo, {"id": "urn:ngsi-ld:Building:b2", "type": "Building"}, {})
    found = cdo.get("/catalog/v1/duplicates", headers=ENV_LINK)
    assert found.status_code == 200
    assert found.json() == [{"datasets": ["air", "uni-air"],
                             "sharedTypes": ["AirQualityObserved"],
                             "reason": "coverages overlap (100% of the smaller one)"}]
    report = cdo.get("/catalog/v1/report").json()
    assert report["uncatalogued"] == {"entities": 2, "types": [
        {"type": "Building", "entities": 2}]}
    assert report["duplicates"][0]["sharedTypes"] == [AQ]


def test_catalog_changes_are_audited_and_the_chain_verifies(cdo: TestClient,
                                                            hub: Hub) -> None:
    post_entity(cdo, aq_entity("a1"), ENV_LINK)
    create(cdo, dataset_body())
    set_rules(cdo, "air", [])
    send(cdo, "PUT", "/catalog/v1/datasets/air", dataset_body(rules=None))  # unchanged
    with hub.engine.connect() as conn:
        rows = conn.execute(select(audit_log.c.actor, audit_log.c.action, audit_log.c.target,
                                   audit_log.c.details).where(
            audit_log.c.action.startswith("catalog."), audit_log.c.target != OPERATIONS,
        ).order_by(audit_log.c.seq)).all()  # not the client fixture's purpose
    assert [(r.action, r.target) for r in rows] == [
        ("catalog.purpose.create", "monitoring"), ("catalog.purpose.create", "mobility"),
        ("catalog.dataset.create", "air"), ("catalog.entities.reassign", "catalog"),
        ("catalog.rules.set", "air"), ("catalog.entities.reassign", "catalog")]
    assert {r.actor for r in rows} == {CDO.subject}
    created = json.loads(rows[2].details)
    assert created["classification"] == "open" and created["entityTypes"] == [AQ]
    assert json.loads(rows[3].details) == {"entitiesMoved": 1, "byDataset": {"air": 1}}
    assert json.loads(rows[5].details) == {"entitiesMoved": 1,
                                           "byDataset": {UNCATALOGUED_ID: 1}}
    assert hub.audit.verify().ok


def test_a_refused_change_leaves_no_trace(cdo: TestClient, hub: Hub) -> None:
    before = hub.audit.head()
    body = dataset_body(purposes=["astrology"])
    assert send(cdo, "POST", "/catalog/v1/datasets", body).status_code == 400
    assert hub.audit.head() == before
    with pytest.raises(BadRequestData, match="unknown purposes"):
        hub.catalog.load(SYSTEM, [], [domain_dataset(hub, dataset_body()),
                                      domain_dataset(hub, body)])
    assert [e.dataset.id for e in hub.catalog.datasets()] == [UNCATALOGUED_ID]


# --- loading catalogs: the demo city and the CLI ----------------------------------------

def test_demo_city_entities_land_in_their_datasets(public_client: TestClient,
                                                   hub: Hub) -> None:
    first = load_demo_catalog(hub)
    assert set(first.datasets.values()) == {Outcome.CREATED}
    # Each department's operator provisions its sensors (and only with its own key).
    feeder = CityFeeder(public_client, build_city(5, sensors=12), NO_FAULTS,
                        operator_keys(hub))
    assert feeder.provision().created == 20
    expected = {demo_dataset(name): 2 for name in ("air-quality", "noise", "traffic",
                                                   "parking", "waste", "streetlights")}
    assert counts(hub) == {**expected, demo_dataset("districts"): 8}
    assert {k.entity_type for k in KINDS} == {"AirQualityObserved", "NoiseLevelObserved",
                                              "TrafficFlowObserved", "ParkingSpot",
                                              "WasteContainer", "Streetlight"}
    parking = hub.catalog.dataset(demo_dataset("parking")).dataset
    assert parking.classification is Classification.INTERNAL
    again = load_demo_catalog(hub)
    assert set(again.datasets.values()) | set(again.purposes.values()) == {Outcome.UNCHANGED}
    assert again.entities_moved == 0
    assert hub.catalog.report(SYSTEM).duplicates == []


runner = CliRunner()


@pytest.fixture
def cli_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """A fresh SQLite file the CLI is pointed at, and a hub on it for checking."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("URBANHUB_DATABASE_URL", url)
    get_settings.cache_clear()
    hub = Hub(Settings(database_url=url, mqtt_url=None))
    hub.upgrade_schema()
    yield hub
    hub.close()
    get_settings.cache_clear()


def test_cli_loads_a_yaml_catalog_idempotently_and_lists_it(cli_hub: Hub,
                                                            tmp_path: Path) -> None:
    cli_hub.entities.create(SYSTEM, {"id": "urn:ngsi-ld:AirQualityObserved:x", "type": [AQ],
                                     "attrs": {}})
    cli_hub.entities.create(SYSTEM, {"id": "urn:ngsi-ld:Building:y",
                                     "type": [VOCAB + "Building"], "attrs": {}})
    document = {"purposes": [{"id": "monitoring", "description": "Monitoring",
                              "kind": "operations"}],
                "@context": ENV_CONTEXT,
                "datasets": [{k: v for k, v in dataset_body().items() if k != "@context"}]}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(document))
    first = runner.invoke(cli_app, ["catalog", "load", str(path)])
    assert first.exit_code == 0, first.output
    assert "created" in first.output and "entities moved to another dataset: 1" in first.output
    second = runner.invoke(cli_app, ["catalog", "load", str(path)])
    assert second.exit_code == 0 and "created" not in second.output
    assert "unchanged" in second.output and "moved to another dataset: 0" in second.output
    listed = runner.invoke(cli_app, ["catalog", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "AirQualityObserved" in listed.output and UNCATALOGUED_ID in listed.output
    assert "1 entities match no assignment rule: Building (1)" in listed.output
    assert counts(cli_hub) == {"air": 1, UNCATALOGUED_ID: 1}

    document["datasets"][0]["classification"] = "secret"
    path.write_text(yaml.safe_dump(document))
    refused = runner.invoke(cli_app, ["catalog", "load", str(path)])
    assert refused.exit_code == 1
    assert "datasets[0].classification" in refused.output
    (tmp_path / "broken.json").write_text("{")
    assert runner.invoke(cli_app, ["catalog", "load", str(tmp_path / "broken.json")]
                         ).exit_code == 2
    assert runner.invoke(cli_app, ["catalog", "load", str(tmp_path / "c.txt")]).exit_code == 2
    assert "catalog" in runner.invoke(cli_app, ["--help"]).output


# --- the migration ----------------------------------------------------------------------



def test_the_migration_puts_existing_entities_in_the_uncatalogued_dataset(
        fresh_database_url: str) -> None:
    engine = make_engine(fresh_database_url)
    try:
        upgrade(engine, "0003")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO entities (id, types, created_at, modified_at) VALUES"
                " ('urn:x:1', '[\"urn:t:A\"]', :now, :now)"), {"now": "2024-01-01 00:00:00"})
            conn.execute(text("INSERT INTO attributes (entity_id, name, dataset_id, instance)"
                              " VALUES ('urn:x:1', 'urn:a:n', '', '{}')"))
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT dataset_id FROM entities")).scalar_one() == \
                UNCATALOGUED_ID
            assert conn.execute(text("SELECT count(*) FROM attributes")).scalar_one() == 1
        command.downgrade(alembic_config(engine), "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM attributes")).scalar_one() == 1
            assert "dataset_id" not in list(conn.execute(text("SELECT * FROM entities")).keys())
        upgrade(engine)
    finally:
        engine.dispose()
