"""The device registry (/ingest/v1/devices): provisioning, risk tiers, approval, status,
device keys and the audit trail, on SQLite and PostgreSQL; the pure rules without a database.

Each HTTP request states who sends it: a real API key of a person in ``tests.stakeholders``,
or a real device key issued by the registry.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import operator_headers
from tests.stakeholders import People, apikey, device_key
from urbanhub.config import Settings
from urbanhub.hub.runtime import Hub
from urbanhub.model.caller import Caller
from urbanhub.model.devices import (
    CATEGORY_TIERS,
    Approval,
    DataCategory,
    DeviceGovernance,
    DeviceStatus,
    RiskTier,
    Sender,
    TierOverride,
    declared_category_problem,
    derive_tier,
    infer_category,
)
from urbanhub.model.errors import BadRequestData, Conflict, Unauthenticated
from urbanhub.store.db import alembic_config, make_engine, upgrade

ENV_CONTEXT = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
               "master/context.jsonld")
ENV_LINK = {"Link": f'<{ENV_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; '
                    'type="application/ld+json"'}
SDM = "https://smartdatamodels.org/dataModel.Environment/"
DEVICES = "/ingest/v1/devices"
READINGS = "/ingest/v1/readings"
CAMERA_EID = "urn:ngsi-ld:Camera:cam-0001"


@pytest.fixture
def client(public_client: TestClient) -> TestClient:
    """Here the API has no default caller: every request names the API key or device key
    it sends (conftest's ``client`` would add a city operator's key to each)."""
    return public_client


def device_body(device_id: str = "aq-0001", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "deviceId": device_id, "entityId": f"urn:ngsi-ld:AirQualityObserved:{device_id}",
        "entityType": "AirQualityObserved", "@context": ENV_CONTEXT, "transport": "MQTT",
        "attributes": [{"object_id": "pm25", "name": "pm25", "type": "Property",
                        "unitCode": "GQ"},
                       {"object_id": "n", "name": "no2", "type": "Property", "unitCode": "GQ"}],
        "staticAttributes": {"location": {"type": "GeoProperty", "value": {
            "type": "Point", "coordinates": [2.35, 48.85]}}}}
    body.update(extra)
    return body


def camera_body(device_id: str = "cam-0001", **extra: Any) -> dict[str, Any]:
    """A traffic camera that reads licence plates: an identifier, so high risk."""
    return {"deviceId": device_id, "entityId": f"urn:ngsi-ld:Camera:{device_id}",
            "entityType": "Camera", "transport": "HTTP",
            "attributes": [{"object_id": "plate", "name": "vehiclePlateIdentifier"},
                           {"object_id": "n", "name": "intensity"}], **extra}


def provision(client: TestClient, key: str, body: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    response = client.post(DEVICES, json=body or device_body(), headers=apikey(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def audit_rows(hub: Hub, prefix: str = "") -> list[dict[str, Any]]:
    with hub.engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, action, target, details FROM audit_log "
                                 "ORDER BY seq")).all()
    return [{"actor": r.actor, "action": r.action, "target": r.target,
             "details": json.loads(r.details)} for r in rows if r.action.startswith(prefix)]


def camera_history(hub: Hub) -> list[Any]:
    with hub.store.read() as conn:
        return hub.store.history_rows(conn, [CAMERA_EID], None, None, None)


# --- provisioning ------------------------------------------------------------------------

def test_provision_creates_device_and_entity(client: TestClient, hub: Hub,
                                             people: People) -> None:
    created = client.post(DEVICES, json=device_body(manufacturer="Acme", model="AQ-9"),
                          headers=apikey(people.operator))
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/ingest/v1/devices/aq-0001"
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    assert body["attributes"][1]["name"] == "no2"  # in the caller's context
    assert (body["owner"], body["manufacturer"], body["model"]) == ("environment", "Acme",
                                                                    "AQ-9")
    assert (body["status"], body["riskTier"], body["derivedRiskTier"]) == ("active", "low",
                                                                          "low")
    assert body["location"] == {"type": "Point", "coordinates": [2.35, 48.85]}
    assert body["deviceKey"].startswith("uhd_") and "cannot show it again" in body["warning"]
    assert body["keyId"] == body["deviceKey"].split("_")[1]
    plain = client.get(f"{DEVICES}/aq-0001").json()
    assert plain["attributes"][1]["name"] == SDM + "no2"  # core context only: the full IRI
    assert "deviceKey" not in plain and plain["keyId"] == body["keyId"]

    entity = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:aq-0001",
                        headers={**ENV_LINK, **operator_headers(hub)}).json()
    assert entity["type"] == "AirQualityObserved"
    assert entity["location"]["value"] == {"type": "Point", "coordinates": [2.35, 48.85]}

    stored = hub.devices.get("aq-0001").attributes
    assert stored == {
        "pm25": {"name": SDM + "pm25", "type": "Property", "unitCode": "GQ",
                 "category": "environmental"},
        "n": {"name": SDM + "no2", "type": "Property", "unitCode": "GQ",
              "category": "environmental"}}

    shown = client.get(f"{DEVICES}/aq-0001", headers=ENV_LINK).json()
    assert shown["entityType"] == "AirQualityObserved"
    assert shown["attributes"] == [
        {"object_id": "pm25", "name": "pm25", "type": "Property", "unitCode": "GQ",
         "category": "environmental"},
        {"object_id": "n", "name": "no2", "type": "Property", "unitCode": "GQ",
         "category": "environmental"}]


def test_device_location_is_its_entitys_location(client: TestClient, hub: Hub,
                                                  people: People) -> None:
    point = {"type": "Point", "coordinates": [5.1, 52.1]}
    body = device_body(location=point)
    del body["staticAttributes"]
    assert provision(client, people.operator, body)["location"] == point
    entity = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:aq-0001",
                        headers=operator_headers(hub)).json()
    assert entity["location"]["value"] == point
    twice = client.post(DEVICES, json=device_body("aq-0002", location=point),
                        headers=apikey(people.operator))
    assert twice.status_code == 400 and "location is given twice" in twice.json()["detail"]


def test_context_from_link_header(client: TestClient, hub: Hub, people: People) -> None:
    body = device_body()
    del body["@context"]
    created = client.post(DEVICES, json=body, headers={**ENV_LINK, **apikey(people.operator)})
    assert created.status_code == 201
    assert hub.devices.get("aq-0001").entity_type == SDM + "AirQualityObserved"
    both = client.post(DEVICES, json=device_body("aq-0002"),
                       headers={**ENV_LINK, **apikey(people.operator)})
    assert both.status_code == 400


def test_duplicate_device_is_409(client: TestClient, people: People) -> None:
    provision(client, people.operator)
    again = client.post(DEVICES, json=device_body(), headers=apikey(people.operator))
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    same_entity = device_body("aq-0002", entityId="urn:ngsi-ld:AirQualityObserved:aq-0001")
    assert client.post(DEVICES, json=same_entity,
                       headers=apikey(people.operator)).status_code == 409


def test_existing_entity_is_kept(client: TestClient, hub: Hub, people: People) -> None:
    entity = {"id": "urn:ngsi-ld:AirQualityObserved:aq-0001", "type": "AirQualityObserved",
              "name": {"type": "Property", "value": "kept"}}
    assert client.post("/ngsi-ld/v1/entities", json=entity,
                       headers=apikey(people.operator)).status_code == 201
    provision(client, people.operator)
    got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:aq-0001",
                     headers=operator_headers(hub)).json()
    assert got["name"]["value"] == "kept"
    assert "location" not in got


def test_bad_bodies_name_each_problem(client: TestClient, people: People) -> None:
    operator = apikey(people.operator)
    bad = {"deviceId": "a/b", "entityId": "not a uri", "transport": "LoRa", "colour": "red",
           "owner": 7, "manufacturer": "", "model": "m" * 201, "location": {"type": "Nowhere"},
           "attributes": [{"object_id": "y", "type": "Property", "unitCode": 7},
                          {"object_id": "pm25"}, {"object_id": "pm25"},
                          {"object_id": "observedAt"},
                          {"object_id": "x", "type": "LanguageProperty"}, "nope",
                          {"object_id": "c", "category": "gossip"},
                          {"object_id": "d", "category": ["environmental"]},
                          {"object_id": "plate", "name": "plateNumber",
                           "category": "environmental"}],
           "staticAttributes": {"location": {"type": "GeoProperty", "value": "here"}}}
    response = client.post(DEVICES, json=bad, headers=operator)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    for expected in ("unknown member 'colour'", "deviceId", "entityId", "entityType",
                     "transport", "owner must be", "manufacturer must be", "model must be",
                     "attributes[0].unitCode", "attributes[2].object_id 'pm25' "
                     "is declared twice", "attributes[3].object_id 'observedAt' is reserved",
                     "attributes[4].type", "attributes[5] must be an object",
                     "attributes[6].category must be one of environmental",
                     "attributes[7].category must be one of",
                     "attributes[8] is identifier (high risk) by its name; declaring it "
                     "environmental (low risk) would lower",
                     "staticAttributes.location"):
        assert any(expected in error for error in errors), (expected, errors)
    for body, status in ((b"[1, 2]", 400), (b"{nope", 400), (b"", 400)):
        answer = client.post(DEVICES, content=body,
                             headers={"Content-Type": "application/json", **operator})
        assert answer.status_code == status, body
    no_attrs = device_body(attributes=[])
    assert client.post(DEVICES, json=no_attrs, headers=operator).status_code == 400
    text_body = client.post(DEVICES, content=b"{}",
                            headers={"Content-Type": "text/plain", **operator})
    assert text_body.status_code == 415
    assert client.get(DEVICES).json() == []


def test_provisioning_needs_a_manager_of_the_owner(client: TestClient, hub: Hub,
                                                   people: People) -> None:
    anonymous = client.post(DEVICES, json={"not": "even a device"})
    assert anonymous.status_code == 401
    assert "credentials" in anonymous.json()["detail"]
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    analyst = client.post(DEVICES, json=device_body(), headers=apikey(people.analyst))
    assert analyst.status_code == 403 and "operator" in analyst.json()["detail"]
    board = client.post(DEVICES, json=device_body(), headers=apikey(people.privacy_board))
    assert board.status_code == 403
    foreign = client.post(DEVICES, json=device_body(owner="environment"),
                          headers=apikey(people.partner))
    assert foreign.status_code == 403
    assert "steward or operator of organisation environment" in foreign.json()["detail"]
    nowhere = client.post(DEVICES, json=device_body(owner="atlantis"),
                          headers=apikey(people.cdo))
    assert nowhere.status_code == 400 and "atlantis does not exist" in nowhere.json()["detail"]
    assert client.get(DEVICES).json() == []
    assert provision(client, people.cdo, device_body(owner="partner"))["owner"] == "partner"
    assert provision(client, people.steward, device_body("aq-0002"))["owner"] == "environment"
    # An organisation creates entities, its devices' too, only in datasets it owns.
    city_entity = client.post(DEVICES, json=device_body("aq-0003"), headers=apikey(
        people.partner))
    assert city_entity.status_code == 403 and "may not write to it" in city_entity.json()[
        "detail"]
    assert provision(client, people.partner, device_body("partner-0003"))["owner"] == "partner"
    with pytest.raises(BadRequestData, match="Name the owner"):
        hub.devices.provision(Caller.system("test"), device_body("aq-0004"),
                              hub.contexts.resolve(ENV_CONTEXT))


def test_the_key_is_shown_once_and_kept_only_as_hashes(client: TestClient, hub: Hub,
                                                       people: People) -> None:
    mqtt = provision(client, people.operator)
    http = provision(client, people.operator, camera_body())
    key_id, secret = mqtt["deviceKey"].split("_")[1], mqtt["deviceKey"].split("_", 2)[2]
    listed = client.get(DEVICES).json()
    assert all("deviceKey" not in d and "credentialHash" not in str(d) for d in listed)
    with hub.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(text(
            "SELECT id, credential_id, credential_hash, broker_password_hash FROM devices"))}
        dump = str(conn.execute(text("SELECT * FROM devices")).all())
    assert mqtt["deviceKey"] not in dump and secret not in dump
    assert rows["aq-0001"].credential_id == key_id
    assert rows["aq-0001"].credential_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert rows["aq-0001"].broker_password_hash.startswith("$7$101$")
    assert rows["cam-0001"].broker_password_hash is None  # an HTTP device needs no broker
    assert hub.devices.authenticate(http["deviceKey"]).device_id == "cam-0001"
    for wrong in ("", mqtt["deviceKey"][:-1] + ("A" if mqtt["deviceKey"][-1] != "A" else "B"),
                  "uh_" + mqtt["deviceKey"][4:]):
        with pytest.raises(Unauthenticated):
            hub.devices.authenticate(wrong)


# --- risk tiers ---------------------------------------------------------------------------

def test_the_risk_tier_follows_what_a_device_collects(client: TestClient,
                                                      people: People) -> None:
    operator = people.operator
    assert provision(client, operator)["riskTier"] == "low"
    parking = provision(client, operator, {
        "deviceId": "park-1", "entityId": "urn:ngsi-ld:ParkingSpot:park-1",
        "entityType": "ParkingSpot", "attributes": [{"object_id": "s", "name": "status"}],
        "@context": "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/"
                    "master/context.jsonld"})
    assert parking["attributes"][0]["category"] == "occupancy"
    assert (parking["riskTier"], parking["status"]) == ("medium", "active")
    camera = provision(client, operator, camera_body())
    assert [a["category"] for a in camera["attributes"]] == ["identifier", "traffic_count"]
    assert (camera["riskTier"], camera["status"]) == ("high", "pending_approval")
    tracker = provision(client, operator, {
        "deviceId": "tag-1", "entityId": "urn:ngsi-ld:Tag:tag-1", "entityType": "Tag",
        "attributes": [{"object_id": "where", "name": "whereabouts", "type": "GeoProperty"},
                       {"object_id": "b", "name": "batteryLevel"}]})
    assert [a["category"] for a in tracker["attributes"]] == ["location_of_people",
                                                              "asset_status"]
    assert tracker["riskTier"] == "high"
    unknown = provision(client, operator, {
        "deviceId": "x-1", "entityId": "urn:ngsi-ld:Thing:x-1", "entityType": "Thing",
        "attributes": [{"object_id": "q", "name": "quux"},
                       {"object_id": "r", "name": "rawPm", "category": "environmental"}]})
    assert [a["category"] for a in unknown["attributes"]] == ["other", "environmental"]
    assert unknown["riskTier"] == "medium"
    riskier = provision(client, operator, device_body(
        "aq-0002", attributes=[{"object_id": "mic", "name": "LAeq", "category": "audio"}]))
    assert (riskier["riskTier"], riskier["status"]) == ("high", "pending_approval")


def test_a_high_risk_device_writes_only_once_the_privacy_board_approves(
        client: TestClient, hub: Hub, people: People) -> None:
    key = provision(client, people.operator, camera_body())["deviceKey"]
    reading = [{"deviceId": "cam-0001", "observedAt": "2024-03-01T10:00:00Z",
                "plate": "AB-123-C", "n": 12}]
    refused = client.post(READINGS, json=reading, headers=device_key(key))
    assert refused.status_code == 200
    assert refused.json()["accepted"] == 0
    assert refused.json()["rejected"] == [{"index": 0, "reason": "device cam-0001 awaits the "
                                           "privacy board's approval (high risk tier)"}]
    assert camera_history(hub) == []
    letters = client.get("/ingest/v1/dead-letters").json()
    assert [letter["reason"][:22] for letter in letters] == ["device cam-0001 awaits"]
    assert "AB-123-C" in letters[0]["payload"]
    summary = audit_rows(hub, "ingest.")[-1]
    assert summary["actor"] == "device:cam-0001"
    assert summary["details"]["refused"] == [{"device": "cam-0001", "reason": "pending_approval",
                                              "count": 1, "example": refused.json()[
                                                  "rejected"][0]["reason"]}]

    approve = f"{DEVICES}/cam-0001/approve"
    assert client.post(approve).status_code == 401
    assert client.post(approve, headers=apikey(people.operator)).status_code == 403
    cdo = client.post(approve, headers=apikey(people.cdo))
    assert cdo.status_code == 403 and "privacy_board" in cdo.json()["detail"]
    approved = client.post(approve, json={"comment": "plates kept 48 h, DPIA 2024-07"},
                           headers=apikey(people.privacy_board))
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active"
    assert approved.json()["approval"]["by"] == "pia"
    again = client.post(approve, headers=apikey(people.privacy_board))
    assert again.status_code == 409 and "only a device pending approval" in again.json()[
        "detail"]

    stored = client.post(READINGS, json=reading, headers=device_key(key))
    assert stored.json() == {"accepted": 2, "stored": 2, "rejected": []}
    assert len(camera_history(hub)) == 2
    assert audit_rows(hub, "device.approve")[0]["details"] == {
        "tier": "high", "comment": "plates kept 48 h, DPIA 2024-07"}


def test_a_suspended_device_is_refused_then_reactivated(client: TestClient, hub: Hub,
                                                        people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    path = f"{DEVICES}/aq-0001"

    def send(value: int) -> dict[str, Any]:
        answer = client.post(READINGS, json=[{
            "deviceId": "aq-0001", "observedAt": f"2024-03-01T10:0{value}:00Z", "pm25": value}],
            headers=device_key(key))
        assert answer.status_code == 200
        result: dict[str, Any] = answer.json()
        return result

    assert send(1)["stored"] == 1
    assert client.patch(path, json={"status": "suspended"}).status_code == 401
    partner = client.patch(path, json={"status": "suspended"}, headers=apikey(people.partner))
    assert partner.status_code == 403
    suspended = client.patch(path, json={"status": "suspended", "reason": "tampered case"},
                             headers=apikey(people.operator))
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert send(2)["rejected"] == [{"index": 0, "reason": "device aq-0001 is suspended"}]
    reactivated = client.patch(path, json={"status": "active"}, headers=apikey(people.steward))
    assert reactivated.json()["status"] == "active"
    assert send(3)["stored"] == 1
    assert [e["details"] for e in audit_rows(hub, "device.status")] == [
        {"before": "active", "after": "suspended", "reason": "tampered case"},
        {"before": "suspended", "after": "active", "reason": None}]

    unchanged = client.patch(path, json={"status": "active"}, headers=apikey(people.operator))
    assert unchanged.status_code == 200
    assert len(audit_rows(hub, "device.status")) == 2  # nothing changed, nothing audited
    for body in ({"status": "pending_approval"}, {}, {"reason": "why not"},
                 {"status": "suspended", "owner": "partner"}, {"status": "asleep"},
                 {"status": "suspended", "colour": "red"}):
        answer = client.patch(path, json=body, headers=apikey(people.operator))
        assert answer.status_code == 400, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
    missing = client.patch(f"{DEVICES}/nope", json={"status": "suspended"},
                           headers=apikey(people.operator))
    assert missing.status_code == 404

    retired = client.patch(path, json={"status": "retired"}, headers=apikey(people.cdo))
    assert retired.json()["status"] == "retired"
    assert send(4)["rejected"][0]["reason"] == "device aq-0001 is retired"
    back = client.patch(path, json={"status": "active"}, headers=apikey(people.operator))
    assert back.status_code == 409 and "stays so" in back.json()["detail"]


def test_a_tier_override_needs_a_justification_and_the_right_role(
        client: TestClient, hub: Hub, people: People) -> None:
    provision(client, people.operator, camera_body())
    override = f"{DEVICES}/cam-0001/override-tier"
    operator, board = apikey(people.operator), apikey(people.privacy_board)
    for body in ({"tier": "low"}, {"tier": "low", "justification": "   "},
                 {"tier": "lowest", "justification": "x"},
                 {"tier": "low", "justification": "x" * 2001}):
        answer = client.post(override, json=body, headers=operator)
        assert answer.status_code == 400, (body, answer.text)
    assert "justification" in client.post(override, json={"tier": "low"},
                                           headers=operator).json()["detail"]
    assert client.post(override, json={"tier": "low", "justification": "x"}).status_code == 401
    lowering = client.post(override, json={"tier": "medium", "justification": "plates are "
                                           "hashed on the device"}, headers=operator)
    assert lowering.status_code == 403
    assert "Lowering a high risk tier needs the role cdo or privacy_board" in lowering.json()[
        "detail"]
    lowered = client.post(override, json={"tier": "medium", "justification": " plates are "
                                          "hashed on the device "}, headers=board)
    assert lowered.status_code == 200, lowered.text
    shown = lowered.json()
    assert (shown["riskTier"], shown["derivedRiskTier"], shown["status"]) == (
        "medium", "high", "active")  # no approval needed below high
    assert shown["tierOverride"]["justification"] == "plates are hashed on the device"
    assert shown["tierOverride"]["by"] == "pia"
    # The derived tier is still high: an operator may not lower it further either.
    assert client.post(override, json={"tier": "low", "justification": "x"},
                       headers=operator).status_code == 403

    provision(client, people.operator)
    raised = client.post(f"{DEVICES}/aq-0001/override-tier", headers=operator, json={
        "tier": "high", "justification": "sits in a school playground"})
    assert (raised.json()["riskTier"], raised.json()["status"]) == ("high", "pending_approval")
    back = client.post(f"{DEVICES}/aq-0001/override-tier", headers=operator, json={
        "tier": "low", "justification": "moved"})
    assert back.status_code == 403
    assert client.post(f"{DEVICES}/aq-0001/override-tier", headers=apikey(people.cdo), json={
        "tier": "low", "justification": "moved"}).json()["status"] == "active"
    assert client.post(f"{DEVICES}/nope/override-tier", headers=board, json={
        "tier": "low", "justification": "x"}).status_code == 404
    assert [(e["actor"], e["details"]["before"], e["details"]["after"])
            for e in audit_rows(hub, "device.tier")] == [
        ("pia", "high", "medium"), ("olga", "low", "high"), ("carla", "high", "low")]


def test_rotating_the_key_retires_the_old_one(client: TestClient, hub: Hub,
                                              people: People) -> None:
    old = provision(client, people.operator)["deviceKey"]
    rotate = f"{DEVICES}/aq-0001/rotate-credential"
    assert client.post(rotate).status_code == 401
    assert client.post(rotate, headers=apikey(people.partner)).status_code == 403
    rotated = client.post(rotate, headers=apikey(people.operator))
    assert rotated.status_code == 200 and rotated.headers["cache-control"] == "no-store"
    new = rotated.json()["deviceKey"]
    assert new != old and rotated.json()["keyId"] == new.split("_")[1]
    reading = [{"deviceId": "aq-0001", "pm25": 1}]
    stale = client.post(READINGS, json=reading, headers=device_key(old))
    assert stale.status_code == 401 and stale.json()["detail"] == "The device key is not valid."
    assert client.post(READINGS, json=reading, headers=device_key(new)).json()["stored"] == 1
    assert audit_rows(hub, "device.key")[0]["details"] == {
        "keyId": new.split("_")[1], "previousKeyId": old.split("_")[1]}


def test_lists_filter_by_status_tier_and_owner(client: TestClient, people: People) -> None:
    for number in range(3):
        provision(client, people.operator, device_body(f"aq-{number:04d}"))
    provision(client, people.operator, camera_body())
    provision(client, people.partner, device_body("partner-0100"))
    client.patch(f"{DEVICES}/aq-0001", json={"status": "suspended"},
                 headers=apikey(people.operator))

    def ids(**params: Any) -> list[str]:
        answer = client.get(DEVICES, params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-total-count"] == str(len(answer.json()))
        return [d["deviceId"] for d in answer.json()]

    assert ids(status="suspended") == ["aq-0001"]
    assert ids(status="pending_approval") == ["cam-0001"]
    assert ids(tier="high") == ["cam-0001"]
    assert ids(owner="partner") == ["partner-0100"]
    assert ids(owner="environment", tier="low", status="active") == ["aq-0000", "aq-0002"]
    for bad in ({"status": "asleep"}, {"tier": "extreme"}):
        answer = client.get(DEVICES, params=bad)
        assert answer.status_code == 400
        assert answer.headers["content-type"] == "application/problem+json"


def test_list_get_delete(client: TestClient, hub: Hub, people: People) -> None:
    for number in range(3):
        provision(client, people.operator, device_body(f"aq-{number:04d}"))
    first = client.get(DEVICES, params={"limit": 2})
    assert [d["deviceId"] for d in first.json()] == ["aq-0000", "aq-0001"]
    assert first.headers["x-total-count"] == "3"
    rest = client.get(DEVICES, params={"limit": 2, "offset": 2}).json()
    assert [d["deviceId"] for d in rest] == ["aq-0002"]
    assert client.get(DEVICES, params={"limit": 100000}).status_code == 403
    assert client.get(DEVICES, params={"limit": "x"}).status_code == 400

    assert client.delete(f"{DEVICES}/aq-0001").status_code == 401
    assert client.delete(f"{DEVICES}/aq-0001", headers=apikey(people.partner)).status_code == 403
    assert client.delete(f"{DEVICES}/aq-0001",
                         headers=apikey(people.operator)).status_code == 204
    missing = client.get(f"{DEVICES}/aq-0001")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert client.delete(f"{DEVICES}/aq-0001",
                         headers=apikey(people.operator)).status_code == 404
    # the entity is data, not configuration: it stays
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:aq-0001",
                      headers=operator_headers(hub)).status_code == 200


def test_only_the_cdo_gives_a_device_to_another_organisation(client: TestClient,
                                                             people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    path = f"{DEVICES}/aq-0001"
    reading = [{"deviceId": "aq-0001", "observedAt": "2024-03-01T10:00:00Z", "pm25": 1}]
    assert client.post(READINGS, json=reading, headers=apikey(people.partner)).json()[
        "accepted"] == 0
    assert client.patch(path, json={"owner": "partner"},
                        headers=apikey(people.operator)).status_code == 403
    assert client.patch(path, json={"owner": "atlantis"},
                        headers=apikey(people.cdo)).status_code == 400
    given = client.patch(path, json={"owner": "partner"}, headers=apikey(people.cdo))
    assert given.status_code == 200 and given.json()["owner"] == "partner"
    assert client.post(READINGS, json=reading, headers=apikey(people.partner)).json()[
        "stored"] == 1
    assert client.patch(path, json={"status": "suspended"},
                        headers=apikey(people.operator)).status_code == 403
    assert client.post(READINGS, json=reading, headers=device_key(key)).json()[
        "accepted"] == 1  # the device's own key still works


def test_every_change_is_audited_and_the_chain_verifies(client: TestClient, hub: Hub,
                                                        people: People) -> None:
    provision(client, people.operator, camera_body())
    client.post(f"{DEVICES}/cam-0001/approve", headers=apikey(people.privacy_board))
    client.patch(f"{DEVICES}/cam-0001", json={"status": "suspended"},
                 headers=apikey(people.operator))
    client.post(f"{DEVICES}/cam-0001/override-tier", headers=apikey(people.privacy_board),
                json={"tier": "medium", "justification": "plates blurred on the device"})
    client.post(f"{DEVICES}/cam-0001/rotate-credential", headers=apikey(people.operator))
    client.post(READINGS, json=[{"deviceId": "cam-0001", "n": 1}],
                headers=apikey(people.operator))
    client.delete(f"{DEVICES}/cam-0001", headers=apikey(people.cdo))
    device_events = [(e["actor"], e["action"]) for e in audit_rows(hub)
                     if e["target"] in ("device:cam-0001", "ingest:http")]
    assert device_events == [("olga", "device.provision"), ("pia", "device.approve"),
                             ("olga", "device.status"), ("pia", "device.tier.override"),
                             ("olga", "device.key.rotate"), ("olga", "ingest.refused"),
                             ("carla", "device.delete")]
    provisioned = audit_rows(hub, "device.provision")[0]["details"]
    assert provisioned["categories"] == {"plate": "identifier", "n": "traffic_count"}
    assert (provisioned["tier"], provisioned["status"]) == ("high", "pending_approval")
    report = hub.audit.verify()
    assert report.ok, report.message()


def test_another_process_sees_every_change_at_its_next_batch(client: TestClient, hub: Hub,
                                                             people: People) -> None:
    """Two hubs on one database: the second holds devices in memory and must not keep
    letting a device write after the first suspended it."""
    key = provision(client, people.operator)["deviceKey"]
    other = Hub(Settings(database_url=hub.settings.database_url, mqtt_url=None))
    try:
        def write(value: int) -> int:
            batch = other.readings.http_items(
                [{"deviceId": "aq-0001", "observedAt": f"2024-03-01T10:0{value}:00Z",
                  "pm25": value}], None, other.ingest.clock())
            return other.ingest.ingest(batch.readings, batch.rejected, batch.origins,
                                       sender=Sender.of_device("aq-0001")).stored

        assert other.devices.authenticate(key).device_id == "aq-0001"
        assert write(1) == 1
        client.patch(f"{DEVICES}/aq-0001", json={"status": "suspended"},
                     headers=apikey(people.operator))
        assert write(2) == 0
        client.patch(f"{DEVICES}/aq-0001", json={"status": "active"},
                     headers=apikey(people.operator))
        assert write(3) == 1
        rotated = client.post(f"{DEVICES}/aq-0001/rotate-credential",
                              headers=apikey(people.operator)).json()["deviceKey"]
        assert other.devices.authenticate(rotated).device_id == "aq-0001"
        with pytest.raises(Unauthenticated):
            other.devices.authenticate(key)
    finally:
        other.close()


# --- the pure rules ---------------------------------------------------------------------

@pytest.mark.parametrize(("entity_type", "attribute", "kind", "expected"), [
    ("AirQualityObserved", SDM + "pm25", "Property", DataCategory.ENVIRONMENTAL),
    ("NoiseLevelObserved", "https://smartdatamodels.org/dataModel.Environment/LAeq",
     "Property", DataCategory.ENVIRONMENTAL),  # a sound level, not a recording
    ("Streetlight", "urn:x:powerConsumption", "Property", DataCategory.ENERGY),
    ("Streetlight", "status", "Property", DataCategory.ASSET_STATUS),
    ("https://smartdatamodels.org/dataModel.Parking/ParkingSpot",
     "https://smartdatamodels.org/dataModel.Parking/status", "Property",
     DataCategory.OCCUPANCY),
    ("TrafficFlowObserved", "occupancy", "Property", DataCategory.TRAFFIC_COUNT),
    ("OffStreetParking", "occupancy", "Property", DataCategory.OCCUPANCY),
    ("Camera", "VEHICLEPLATEIDENTIFIER", "Property", DataCategory.IDENTIFIER),
    ("Camera", "image", "Property", DataCategory.IMAGE),
    ("Microphone", "audioRecording", "Property", DataCategory.AUDIO),
    ("Bike", "location", "GeoProperty", DataCategory.LOCATION_OF_PEOPLE),
    ("Bike", "whereabouts", "GeoProperty", DataCategory.LOCATION_OF_PEOPLE),
    ("Bike", "whereabouts", "Property", DataCategory.OTHER),
])
def test_categories_are_inferred_from_well_known_names(entity_type: str, attribute: str,
                                                       kind: str,
                                                       expected: DataCategory) -> None:
    assert infer_category(entity_type, attribute, kind) is expected


def test_the_tier_rule_covers_every_category_and_takes_the_highest() -> None:
    assert set(CATEGORY_TIERS) == set(DataCategory)
    assert derive_tier([]) is RiskTier.LOW
    assert derive_tier([DataCategory.ENERGY, DataCategory.ENVIRONMENTAL]) is RiskTier.LOW
    assert derive_tier([DataCategory.ENERGY, DataCategory.OCCUPANCY]) is RiskTier.MEDIUM
    assert derive_tier([DataCategory.OTHER, DataCategory.IMAGE]) is RiskTier.HIGH
    assert declared_category_problem(DataCategory.OTHER, DataCategory.ENERGY) is None
    assert declared_category_problem(DataCategory.ENERGY, DataCategory.IMAGE) is None
    assert declared_category_problem(DataCategory.OCCUPANCY,
                                     DataCategory.TRAFFIC_COUNT) is None  # same tier
    assert declared_category_problem(DataCategory.IMAGE, DataCategory.OTHER) is not None


def test_status_transitions() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    high = DeviceGovernance.provisioned("env", RiskTier.HIGH)
    assert high.status is DeviceStatus.PENDING_APPROVAL
    with pytest.raises(Conflict, match="awaits"):
        high.with_status(DeviceStatus.ACTIVE, "d")
    suspended = high.with_status(DeviceStatus.SUSPENDED, "d")
    assert suspended.with_status(DeviceStatus.ACTIVE, "d").status is (
        DeviceStatus.PENDING_APPROVAL)  # never approved: back to the board
    approved = high.approved(Approval("pia", now), "d")
    assert approved.status is DeviceStatus.ACTIVE
    assert approved.with_status(DeviceStatus.SUSPENDED, "d").with_status(
        DeviceStatus.ACTIVE, "d").status is DeviceStatus.ACTIVE
    low = DeviceGovernance.provisioned("env", RiskTier.LOW)
    raised = low.overridden(TierOverride(RiskTier.HIGH, "why", "olga", now))
    assert (raised.tier, raised.status) == (RiskTier.HIGH, DeviceStatus.PENDING_APPROVAL)
    lowered = high.overridden(TierOverride(RiskTier.MEDIUM, "why", "pia", now))
    assert (lowered.tier, lowered.status) == (RiskTier.MEDIUM, DeviceStatus.ACTIVE)
    retired = low.with_status(DeviceStatus.RETIRED, "d")
    with pytest.raises(Conflict):
        retired.with_status(DeviceStatus.SUSPENDED, "d")
    with pytest.raises(Conflict):
        low.approved(Approval("pia", now), "d")
    with pytest.raises(BadRequestData):
        low.with_status(DeviceStatus.PENDING_APPROVAL, "d")


# --- the migration ------------------------------------------------------------------------



def test_the_migration_keeps_existing_devices_writing(fresh_database_url: str) -> None:
    """Devices provisioned before 0007 become active, with categories and the derived tier,
    no owner and no key; a key is theirs once rotated. The downgrade drops it all again."""
    engine = make_engine(fresh_database_url)
    try:
        upgrade(engine, "0005")
        legacy = {"aq": {"pm25": {"name": SDM + "pm25", "type": "Property", "unitCode": "GQ"}},
                  "cam": {"plate": {"name": "urn:x:plateNumber", "type": "Property"}}}
        with engine.begin() as conn:
            for device_id, attributes in legacy.items():
                conn.execute(text(
                    "INSERT INTO devices (id, entity_id, entity_type, attributes, transport, "
                    "created_at, modified_at) VALUES (:id, :entity, 'urn:t:Thing', :attrs, "
                    "'MQTT', :now, :now)"), {"id": device_id, "entity": f"urn:x:{device_id}",
                                             "attrs": json.dumps(attributes),
                                             "now": datetime(2024, 1, 1)})
        upgrade(engine)
        hub = Hub(Settings(database_url=fresh_database_url, mqtt_url=None), engine=engine)
        aq, cam = hub.devices.get("aq"), hub.devices.get("cam")
        assert aq.attributes["pm25"]["category"] == "environmental"
        assert cam.attributes["plate"]["category"] == "identifier"
        assert (aq.governance.owner, aq.governance.status, aq.governance.tier) == (
            None, DeviceStatus.ACTIVE, RiskTier.LOW)
        assert (cam.governance.status, cam.governance.tier) == (DeviceStatus.ACTIVE,
                                                                RiskTier.HIGH)
        assert aq.credential is None and cam.credential is None
        hub.entities.create(Caller.system("test"), {"id": "urn:x:aq", "type": ["urn:t:Thing"],
                                                    "attrs": {}})
        batch = hub.readings.mqtt_messages([(b"urbanhub/devices/aq/attrs", b'{"pm25": 3}',
                                             1.7e9)], "urbanhub")
        assert hub.ingest.ingest(batch.readings, batch.rejected, batch.origins,
                                 sender=Sender.component("mqtt")).stored == 1
        key = hub.devices.rotate_key(Caller.system("test"), "aq").key
        assert hub.devices.authenticate(key).device_id == "aq"
        command.downgrade(alembic_config(engine), "0005")
        with engine.connect() as conn:
            columns = list(conn.execute(text("SELECT * FROM devices")).keys())
            assert "status" not in columns and "credential_hash" not in columns
            assert conn.execute(text("SELECT count(*) FROM devices")).scalar_one() == 2
        upgrade(engine)
    finally:
        engine.dispose()
