"""Smart Data Models: shipped schemas, offline validation on every write, NGSI-v2 conversion."""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import urbanhub.sdm.validate as sdm_validate
from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import CORE_CONTEXT_URL, ContextLoader, ContextResolver
from urbanhub.ngsild.entity import Entity, parse_entity
from urbanhub.sdm.convert import known_types, v2_to_ngsi_ld
from urbanhub.sdm.models import MODELS, declared_types, load_schema, schema_registry
from urbanhub.sdm.validate import model_view, validate_entity

LD = {"Content-Type": "application/ld+json"}
SDM = "https://raw.githubusercontent.com/smart-data-models/dataModel.{}/master/context.jsonld"
ENV, PARKING = SDM.format("Environment"), SDM.format("Parking")
SIX = ["AirQualityObserved", "NoiseLevelObserved", "ParkingSpot", "Streetlight",
       "TrafficFlowObserved", "WasteContainer"]
SCHEMAS = Path(sdm_validate.__file__).parent / "schemas"
RESOLVER = ContextResolver(ContextLoader())


def link(context: str) -> dict[str, str]:
    return {"Link": f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; '
                    'type="application/ld+json"'}


def example(sdm_dir: Path, model: str, name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((sdm_dir / model / name).read_text())
    return payload


def parsed(payload: dict[str, Any]) -> Entity:
    return parse_entity(payload, RESOLVER.resolve(payload.get("@context")))


def violations(payload: dict[str, Any]) -> list[str]:
    with pytest.raises(BadRequestData) as caught:
        validate_entity(parsed(payload))
    return caught.value.errors


def parking(**attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "urn:ngsi-ld:ParkingSpot:p1", "type": "ParkingSpot",
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2, 41]}},
        "status": {"type": "Property", "value": "free"},
        "category": {"type": "Property", "value": ["onStreet"]},
        "refParkingSite": {"type": "Relationship", "object": "urn:ngsi-ld:ParkingSite:s1"},
        "@context": PARKING}
    body.update(attrs)
    return {k: v for k, v in body.items() if v is not None}


# --- shipped package data --------------------------------------------------------------

def test_schemas_ship_unchanged_with_licence_and_attribution(sdm_dir: Path) -> None:
    assert known_types() == SIX
    for model in SIX:
        assert (SCHEMAS / model / "schema.json").read_bytes() == (
            sdm_dir / model / "schema.json").read_bytes()
    assert (SCHEMAS / "common-schema.json").read_bytes() == (
        sdm_dir / "common-schema.json").read_bytes()
    assert (SCHEMAS / "LICENSE-CC-BY-4.0.txt").read_bytes() == (
        sdm_dir / "LICENSE-CC-BY-4.0.txt").read_bytes()
    readme = (SCHEMAS / "README.md").read_text()
    assert "Creative Commons Attribution 4.0" in readme and "smart-data-models" in readme
    assert json.loads((SCHEMAS / "Environment-schema.json").read_text())["definitions"][
        "airQualityLevel"]["type"] == "string"


# --- validation of the published examples ----------------------------------------------

@pytest.mark.parametrize("model", SIX)
@pytest.mark.parametrize("name", ["example-normalized.jsonld", "example.jsonld"])
def test_every_ngsi_ld_example_is_valid(sdm_dir: Path, model: str, name: str) -> None:
    validate_entity(parsed(example(sdm_dir, model, name)))


@pytest.mark.parametrize("model", SIX)
@pytest.mark.parametrize("name", ["example-normalized.json", "example.json"])
def test_every_converted_v2_example_is_valid(sdm_dir: Path, model: str, name: str) -> None:
    validate_entity(parsed(v2_to_ngsi_ld(example(sdm_dir, model, name))))


def test_known_type_is_recognised_by_its_expanded_iri() -> None:
    view = model_view("AirQualityObserved")
    assert view.type_iri == "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved"
    assert view.names["https://smartdatamodels.org/dataModel.Environment/pm25"] == "pm25"
    assert view.names["https://uri.etsi.org/ngsi-ld/location"] == "location"


# --- what counts as a violation --------------------------------------------------------

def test_each_violation_is_named_with_its_path() -> None:
    errors = violations(parking(
        status={"type": "Property", "value": "maybe"},
        category={"type": "Property", "value": ["onStreet", "sky"]},
        width={"type": "Property", "value": -1},
        name={"type": "Property", "value": 5},
        timeInstant={"type": "Property", "value": "yesterday"}))
    assert errors == [
        "category[1]: 'sky' is not one of ['onStreet', 'offStreet']",
        "name: 5 is not of type 'string'",
        "status: 'maybe' is not one of ['closed', 'free', 'occupied', 'unknown']",
        "timeInstant: 'yesterday' is not a 'date-time'",
        "width: -1 is less than the minimum of 0",
    ]


def test_nested_violations_name_the_inner_path() -> None:
    errors = violations(parking(address={"type": "Property",
                                         "value": {"streetAddress": 12}}))
    assert errors == ["address.streetAddress: 12 is not of type 'string'"]
    # a location that is a plain Property, not a GeoJSON geometry
    assert violations(example_aqo(location="Plaza de Espana")) == [
        "location: 'Plaza de Espana' is not valid under any of the given schemas"]


def example_aqo(**attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "urn:ngsi-ld:AirQualityObserved:a1", "type": "AirQualityObserved",
        "dateObserved": {"type": "Property", "value": "2024-03-01T10:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2, 41]}},
        "@context": ENV}
    body.update(attrs)
    return body


def test_dates_are_checked_by_their_json_ld_value() -> None:
    validate_entity(parsed(example_aqo(dateObserved={"type": "Property", "value": {
        "@type": "DateTime", "@value": "2016-03-15T11:00:00"}})))
    assert violations(example_aqo(dateObserved={"type": "Property", "value": {
        "@type": "DateTime", "@value": "15/03/2016"}})) == [
        "dateObserved: '15/03/2016' is not a 'date-time'"]
    assert violations(example_aqo(dateObserved={"type": "Property", "value": "2016-03-15"})) == [
        "dateObserved: '2016-03-15' is not a 'date-time'"]


def test_relaxed_constraints_accept_both_conventions_but_not_nonsense() -> None:
    validate_entity(parsed(example_aqo(windDirection=270, tsp=73.3)))
    assert violations(example_aqo(windDirection=400, tsp=-1)) == [
        "tsp: -1 is less than the minimum of 0",
        "windDirection: 400 is greater than the maximum of 360"]


def test_attribute_of_another_vocabulary_is_not_the_models() -> None:
    # "pm25" under the default vocabulary is not SDM pm25, so the schema does not apply
    body = example_aqo(**{"https://uri.etsi.org/ngsi-ld/default-context/pm25": -5,
                          "https://uri.etsi.org/ngsi-ld/default-context/dateObserved": "no"})
    validate_entity(parsed(body))
    body["pm25"] = -5
    assert violations(body) == ["pm25: -5 is less than the minimum of 0"]


def test_absent_required_attributes_do_not_refuse_a_write() -> None:
    # NGSI-LD entities are built up over several writes; what is present must be valid
    validate_entity(parsed({"id": "urn:ngsi-ld:ParkingSpot:p2", "type": "ParkingSpot",
                            "@context": PARKING}))
    body = example_aqo(pm25={"type": "Property", "value": 3, "observedAt": "2024-03-01T10:00:00Z"})
    del body["dateObserved"], body["location"]
    validate_entity(parsed(body))


def test_every_instance_and_language_is_checked() -> None:
    two = [{"type": "Property", "value": 10},
           {"type": "Property", "value": -3, "datasetId": "urn:ngsi-ld:Dataset:b"}]
    assert violations(example_aqo(pm25=two)) == ["pm25: -3 is less than the minimum of 0"]
    validate_entity(parsed(example_aqo(name={"type": "LanguageProperty",
                                             "languageMap": {"en": "Square", "es": "Plaza"}})))


def test_single_relationship_satisfies_an_array_of_ids() -> None:
    device = {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"}
    validate_entity(parsed(parking(refDevice=device)))
    assert violations(parking(refDevice={"type": "Property", "value": []})) == [
        "refDevice: [] should be non-empty"]


def test_multi_typed_entity_is_checked_against_each_known_model() -> None:
    body = example_aqo(relativeHumidity=2, sonometerClass="5")
    body["type"] = ["AirQualityObserved", "NoiseLevelObserved"]
    assert violations(body) == ["relativeHumidity: 2 is greater than the maximum of 1",
                                "sonometerClass: '5' is not one of ['0', '1', '2']"]
    body["type"] = ["NoiseLevelObserved"]
    assert violations(body) == ["sonometerClass: '5' is not one of ['0', '1', '2']"]


def test_unknown_types_are_not_validated() -> None:
    validate_entity(parsed({"id": "urn:ngsi-ld:T:1", "type": "T", "pm25": -5}))
    # the same short name in the default vocabulary is not the Smart Data Model type
    validate_entity(parsed({"id": "urn:ngsi-ld:AirQualityObserved:x",
                            "type": "AirQualityObserved", "pm25": -5}))


# --- offline and compiled once ---------------------------------------------------------

def test_validation_never_touches_the_network(monkeypatch: pytest.MonkeyPatch,
                                              sdm_dir: Path) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("validation tried to use the network")

    entities = [parsed(example(sdm_dir, m, "example-normalized.jsonld")) for m in SIX]
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for cached in (schema_registry, load_schema, declared_types, model_view,
                   sdm_validate._views_by_type_iri):
        cached.cache_clear()
    for entity in entities:  # compiles every schema, resolving each $ref, offline
        validate_entity(entity)


def test_compiled_validator_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    entity = parsed(example_aqo())
    validate_entity(entity)
    first = model_view("AirQualityObserved")
    assert model_view("AirQualityObserved") is first
    assert sdm_validate._views_by_type_iri()[first.type_iri].validator is first.validator

    def no_compiling(_schema: object) -> None:
        raise AssertionError("schema compiled again")

    monkeypatch.setattr(sdm_validate, "validator_for", no_compiling)
    validate_entity(entity)
    assert violations(example_aqo(pm25=-1)) == ["pm25: -1 is less than the minimum of 0"]


# --- the converter ---------------------------------------------------------------------

def test_converter_maps_v2_normalized_like_the_published_ld_examples(sdm_dir: Path) -> None:
    converted = v2_to_ngsi_ld(example(sdm_dir, "ParkingSpot", "example-normalized.json"))
    assert converted == {
        "id": "urn:ngsi-ld:ParkingSpot:santander:daoiz_velarde_1_5:3",
        "type": "ParkingSpot",
        "status": {"type": "Property", "value": "free", "observedAt": "2018-09-21T12:00:00.000Z",
                   "parkingPermit": {"type": "Property", "value": "yes"}},
        "category": {"type": "Property", "value": ["onStreet"]},
        "refParkingSite": {"type": "Relationship",
                           "object": "urn:ngsi-ld:ParkingSite:santander:daoiz_velarde_1_5"},
        "name": {"type": "Property", "value": "A-13"},
        "location": {"type": "GeoProperty", "value": {
            "type": "Point", "coordinates": [-3.80356167695194, 43.46296641666926]}},
        "@context": PARKING}
    air = v2_to_ngsi_ld(example(sdm_dir, "AirQualityObserved", "example-normalized.json"))
    assert air["co"] == {"type": "Property", "value": 500, "unitCode": "GP"}
    assert air["dateObserved"]["value"] == {"@type": "DateTime", "@value": "2016-03-15T11:00:00"}
    assert air["refPointOfInterest"]["object"] == (
        "urn:ngsi-ld:PointOfInterest:28079004-Pza.deEspanya")
    assert air["precipitation"]["value"] == 0  # v2 says Boolean false; the schema, a number


def test_converter_detects_key_values_and_keeps_uri_ids(sdm_dir: Path) -> None:
    waste = example(sdm_dir, "WasteContainer", "example.json")
    converted = v2_to_ngsi_ld(waste)
    assert converted["id"] == "urn:ngsi-ld:wastecontainer:1021:AAWD"
    assert converted["binCapacity"] == {"type": "Property", "value": 43}
    assert converted["location"]["type"] == "GeoProperty"
    assert converted["@context"] == SDM.format("WasteManagement")
    assert v2_to_ngsi_ld(waste, key_values=True) == converted
    with pytest.raises(BadRequestData, match="has no 'value'"):
        v2_to_ngsi_ld(waste, key_values=False)


def test_converter_aligns_loose_v2_scalars_only_when_exact() -> None:
    converted = v2_to_ngsi_ld({"id": "x", "type": "WasteContainer", "binCapacity": "43.5",
                               "wardId": 21, "binColor": True, "temperature": "warm",
                               "location": "41.1, 2.2", "refDevice": ["d1", "urn:ngsi-ld:D:2"],
                               "note": None})
    assert converted["binCapacity"]["value"] == 43.5
    assert converted["wardId"]["value"] == "21"
    assert converted["binColor"]["value"] is True  # no exact text for a boolean
    assert converted["temperature"]["value"] == "warm"  # left for the validator to refuse
    assert converted["location"]["value"] == "41.1, 2.2"  # keyValues carries no geo type
    assert converted["refDevice"] == {"type": "Relationship",
                                      "object": ["urn:ngsi-ld:Device:d1", "urn:ngsi-ld:D:2"]}
    assert "note" not in converted
    assert violations(converted) == ["binColor: True is not of type 'string'",
                                     "location: '41.1, 2.2' is not valid under any of the "
                                     "given schemas",
                                     "temperature: 'warm' is not of type 'number'"]


def test_converter_turns_simple_v2_locations_into_geojson() -> None:
    def geo(v2_type: str, value: Any) -> Any:
        payload = {"id": "urn:x:1", "type": "Thing",
                   "where": {"type": v2_type, "value": value}}
        return v2_to_ngsi_ld(payload)["where"]

    assert geo("geo:point", "41.1, 2.2") == {
        "type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.2, 41.1]}}
    assert geo("geo:line", ["41, 2", "42, 3"])["value"]["coordinates"] == [[2, 41], [3, 42]]
    assert geo("geo:box", ["42, 3", "41, 2"])["value"]["coordinates"] == [
        [[2, 41], [3, 41], [3, 42], [2, 42], [2, 41]]]
    for v2_type, bad in (("geo:point", "north"), ("geo:point", "1, 2, 3"),
                         ("geo:line", ["41, 2"]), ("geo:json", {"type": "Point"})):
        with pytest.raises(BadRequestData):
            geo(v2_type, bad)


def test_converter_refuses_what_is_not_a_v2_entity() -> None:
    payloads: list[Any] = [
        [], {"type": "T"}, {"id": "x"}, {"id": "", "type": "T"},
        {"id": "x", "type": "T", "a": {"value": 1, "metadata": []}},
        {"id": "x", "type": "T", "refA": 5},
        {"id": "x", "type": "T", "a": {"value": 1, "metadata": {"timestamp": {"value": "noon"}}}},
    ]
    for payload in payloads:
        with pytest.raises(BadRequestData):
            v2_to_ngsi_ld(payload)
    unknown = v2_to_ngsi_ld({"id": "t1", "type": "Thing", "a": 1})
    assert unknown == {"id": "urn:ngsi-ld:Thing:t1", "type": "Thing",
                       "a": {"type": "Property", "value": 1}, "@context": CORE_CONTEXT_URL}


# --- through the API, on SQLite and PostgreSQL ------------------------------------------

def test_converted_v2_examples_are_accepted_and_read_back(client: TestClient,
                                                          sdm_dir: Path) -> None:
    for model in SIX:
        for name in ("example-normalized.json", "example.json"):
            converted = v2_to_ngsi_ld(example(sdm_dir, model, name))
            client.delete(f"/ngsi-ld/v1/entities/{converted['id']}")
            created = client.post("/ngsi-ld/v1/entities", json=converted, headers=LD)
            assert created.status_code == 201, (model, name, created.text)
            got = client.get(f"/ngsi-ld/v1/entities/{converted['id']}",
                             headers=link(converted["@context"]))
            assert got.status_code == 200
            expected = {k: v for k, v in converted.items() if k != "@context"}
            assert got.json() == expected, (model, name)


def test_schema_violation_is_400_problem_naming_each_and_nothing_is_stored(
        client: TestClient) -> None:
    body = parking(status={"type": "Property", "value": "maybe"},
                   width={"type": "Property", "value": -1},
                   name={"type": "Property", "value": 5})
    response = client.post("/ngsi-ld/v1/entities", json=body, headers=LD)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert problem["errors"] == [
        "name: 5 is not of type 'string'",
        "status: 'maybe' is not one of ['closed', 'free', 'occupied', 'unknown']",
        "width: -1 is less than the minimum of 0"]
    for error in problem["errors"]:
        assert error in problem["detail"]
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:ParkingSpot:p1").status_code == 404
    count = client.get("/ngsi-ld/v1/entities", params={"type": "ParkingSpot", "count": "true"},
                       headers=link(PARKING))
    assert count.headers["ngsild-results-count"] == "0"
    batch = client.post("/ngsi-ld/v1/entityOperations/create", json=[body], headers=LD)
    assert batch.json()["errors"][0]["error"]["status"] == 400
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:ParkingSpot:p1").status_code == 404


def test_updates_that_break_the_schema_are_refused_and_the_old_value_kept(
        client: TestClient, sdm_dir: Path) -> None:
    original = example(sdm_dir, "AirQualityObserved", "example-normalized.jsonld")
    eid = original["id"]
    assert client.post("/ngsi-ld/v1/entities", json=original, headers=LD).status_code == 201
    url = f"/ngsi-ld/v1/entities/{eid}"

    patched = client.patch(f"{url}/attrs", headers=LD, json={
        "relativeHumidity": {"type": "Property", "value": 1.5},
        "co": {"type": "Property", "value": 400}, "@context": ENV})
    assert patched.status_code == 400
    assert patched.json()["errors"] == [
        "relativeHumidity: 1.5 is greater than the maximum of 1"]
    partial = client.patch(f"{url}/attrs/airQualityIndex", headers=LD,
                           json={"value": "bad", "@context": ENV})
    assert partial.status_code == 400
    assert partial.json()["errors"] == ["airQualityIndex: 'bad' is not of type 'integer'"]
    appended = client.post(f"{url}/attrs", headers=LD,
                           json={"pm25": {"type": "Property", "value": -2}, "@context": ENV})
    assert appended.status_code == 400
    replacement = copy.deepcopy(original)
    del replacement["id"]
    replacement["windSpeed"]["value"] = -1
    replaced = client.put(url, json=replacement, headers=LD)
    assert replaced.status_code == 400
    assert replaced.json()["errors"] == ["windSpeed: -1 is less than the minimum of 0"]
    merged = client.patch(url, json={"co": {"type": "Property", "value": "lots"},
                                     "@context": ENV}, headers=LD)
    assert merged.status_code == 400

    kept = client.get(url, params={"options": "keyValues"}, headers=link(ENV)).json()
    assert kept["relativeHumidity"] == 0.54
    assert kept["airQualityIndex"] == 65
    assert kept["windSpeed"] == 0.64 and kept["co"] == 500  # nothing of a refused write
    assert "pm25" not in kept
    fine = client.patch(f"{url}/attrs", headers=LD, json={
        "relativeHumidity": {"type": "Property", "value": 0.6}, "@context": ENV})
    assert fine.status_code == 204


def test_unknown_type_is_stored_without_validation(client: TestClient) -> None:
    body = {"id": "urn:ngsi-ld:Bench:1", "type": "Bench", "status": "maybe", "width": -1}
    assert client.post("/ngsi-ld/v1/entities", json=body).status_code == 201
    got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Bench:1",
                     params={"options": "keyValues"}).json()
    assert got["width"] == -1


def test_models_table_matches_the_shipped_contexts() -> None:
    assert sorted(MODELS) == SIX
    for model in MODELS.values():
        assert model.context_url == SDM.format(model.subject)
        assert model_view(model.name).type_iri == (
            f"https://smartdatamodels.org/dataModel.{model.subject}/{model.name}")
