"""HTTP batch ingest (/ingest/v1/readings), its gate and the dead-letter store, on SQLite and
PostgreSQL. Every request names its credential: a device key, or a person's API key."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import operator_headers
from tests.stakeholders import People, apikey, device_key
from tests.test_devices import (
    DEVICES,
    ENV_LINK,
    READINGS,
    SDM,
    audit_rows,
    device_body,
    provision,
)
from urbanhub.hub.runtime import Hub

EID = "urn:ngsi-ld:AirQualityObserved:aq-0001"


@pytest.fixture
def client(public_client: TestClient) -> TestClient:
    """Here the API has no default caller: every request names the API key or device key
    it sends (conftest's ``client`` would add a city operator's key to each)."""
    return public_client


def history(hub: Hub, entity_id: str = EID) -> list[Any]:
    """The measured history of an entity (not the static attributes set at provisioning)."""
    with hub.store.read() as conn:
        return hub.store.history_rows(conn, [entity_id], [SDM + "pm25", SDM + "no2"], None,
                                      None)


def dead_letters(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/ingest/v1/dead-letters", params={"limit": 100})
    assert response.status_code == 200
    return list(response.json())


MIXED: list[Any] = [
    {"deviceId": "aq-0001", "observedAt": "2024-03-01T10:00:00Z", "pm25": 12.3, "n": 40},
    {"deviceId": "aq-0001", "observedAt": "2024-03-01T10:05:00Z", "pm25": 13, "so2": 1},
    {"deviceId": "aq-9999", "pm25": 1},
    "not an object",
    {"deviceId": "aq-0001", "observedAt": "2024-03-01T10:10:00Z", "pm25": "high"},
    {"deviceId": "aq-0001", "observedAt": "yesterday", "pm25": 1},
    {"id": EID, "type": "AirQualityObserved", SDM + "pm25": {
         "type": "Property", "value": 14.5, "observedAt": "2024-03-01T10:15:00Z"}},
    {"id": "urn:ngsi-ld:AirQualityObserved:nobody", "temperature": {
        "type": "Property", "value": 1, "observedAt": "2024-03-01T10:15:00Z"}},
    {"id": EID, "pm25": {"type": "Property"}},
    {"observedAt": "2024-03-01T10:00:00Z"},
]


def test_mixed_batch_stores_valid_and_dead_letters_the_rest(client: TestClient, hub: Hub,
                                                            people: People) -> None:
    provision(client, people.operator)
    gateway = apikey(people.operator)
    response = client.post(READINGS, json=MIXED, headers=gateway)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 4  # pm25+n, pm25 of element 1, the fragment's pm25
    assert body["stored"] == 4
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 7, 8, 9]
    assert "'so2' is not declared by device aq-0001" in reasons[1]
    assert "unknown device 'aq-9999'" in reasons[2]
    assert "JSON object" in reasons[3]
    assert "expected a number" in reasons[4]
    assert "yesterday" in reasons[5]
    assert "unknown entity urn:ngsi-ld:AirQualityObserved:nobody" in reasons[7]
    assert "has no 'value'" in reasons[8]
    assert "deviceId" in reasons[9]

    entity = client.get(f"/ngsi-ld/v1/entities/{EID}",
                        headers={**ENV_LINK, **operator_headers(hub)}).json()
    assert entity["pm25"] == {"type": "Property", "value": 14.5,
                              "observedAt": "2024-03-01T10:15:00Z"}
    assert entity["no2"] == {"type": "Property", "value": 40, "unitCode": "GQ",
                             "observedAt": "2024-03-01T10:00:00Z"}
    rows = history(hub)
    assert [(r.name.rsplit("/", 1)[1], r.value_num) for r in rows] == [
        ("no2", 40.0), ("pm25", 12.3), ("pm25", 13.0), ("pm25", 14.5)]

    letters = dead_letters(client)
    assert len(letters) == 8
    assert {letter["source"] for letter in letters} == {"http"}
    by_reason = {letter["reason"]: letter["payload"] for letter in letters}
    so2 = next(payload for reason, payload in by_reason.items() if "so2" in reason)
    assert '"so2":1' in so2

    summary = audit_rows(hub, "ingest.refused")
    assert len(summary) == 1  # one entry for the batch, grouped by device and reason
    assert summary[0]["actor"] == "olga" and summary[0]["target"] == "ingest:http"
    assert summary[0]["details"]["total"] == 8
    assert [(g["device"], g["reason"], g["count"]) for g in summary[0]["details"][
        "refused"]] == [(None, "invalid", 3), (None, "unknown_entity", 1),
                        ("aq-0001", "invalid", 2), ("aq-0001", "undeclared_attribute", 1),
                        ("aq-9999", "unknown_device", 1)]

    replay = client.post(READINGS, json=MIXED, headers=gateway).json()
    assert replay["accepted"] == 4 and replay["stored"] == 0
    assert len(history(hub)) == 4


def test_a_device_sends_with_its_own_key(client: TestClient, hub: Hub,
                                         people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    measurement = [{"deviceId": "aq-0001", "observedAt": "2024-03-01T10:00:00Z", "pm25": 3}]
    answer = client.post(READINGS, json=measurement, headers=device_key(key))
    assert answer.json() == {"accepted": 1, "stored": 1, "rejected": []}
    undeclared = client.post(READINGS, json=[{"deviceId": "aq-0001", "pm25": 4, "so2": 1}],
                             headers=device_key(key)).json()
    assert undeclared["stored"] == 1
    assert undeclared["rejected"] == [{"index": 0, "reason": "attribute 'so2' is not "
                                                             "declared by device aq-0001"}]
    refused = audit_rows(hub, "ingest.refused")[-1]
    assert refused["actor"] == "device:aq-0001"
    assert refused["details"]["refused"][0]["reason"] == "undeclared_attribute"


def test_readings_without_a_valid_credential_store_nothing(client: TestClient, hub: Hub,
                                                           people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    body = [{"deviceId": "aq-0001", "observedAt": "2024-03-01T10:00:00Z", "pm25": 1}]
    key_id = key.split("_")[1]
    wrong_secret = f"uhd_{key_id}_{'A' * 43}"
    cases = [  # headers, status, detail, device named in the audit
        ({}, 401, "needs credentials: a device sends its device key (X-Device-Key)", None),
        (device_key(wrong_secret), 401, "The device key is not valid.", "aq-0001"),
        (device_key(f"uhd_{'0' * 16}_{'A' * 43}"), 401, "The device key is not valid.", None),
        (device_key("letmein"), 401, "device key is malformed", None),
        (device_key(people.operator), 401, "device key is malformed", None),  # an API key
        ({**device_key(key), **apikey(people.operator)}, 401, "Send one credential", None),
        (apikey(people.analyst), 403, "needs the write scope", None),
        (apikey(people.privacy_board), 403, "needs the write scope", None),
    ]
    for number, (headers, status, detail, device) in enumerate(cases, start=1):
        answer = client.post(READINGS, json=body, headers=headers)
        assert answer.status_code == status, (headers, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert detail in answer.json()["detail"], answer.json()
        if status == 401:
            assert "www-authenticate" in answer.headers
        letters = dead_letters(client)
        assert len(letters) == number
        assert letters[0]["payload"] == '[{"deviceId":"aq-0001","observedAt":' \
                                        '"2024-03-01T10:00:00Z","pm25":1}]'
        refused = audit_rows(hub, "ingest.refused")
        assert len(refused) == number
        assert refused[-1]["details"]["refused"] == [{
            "device": device, "reason": "unauthenticated" if status == 401 else "not_permitted",
            "count": 1, "example": answer.json()["detail"][:200]}]
    twice = client.post(READINGS, json=body, headers=[("X-Device-Key", key),
                                                      ("X-Device-Key", key)])
    assert twice.status_code == 401
    # A bad API key is refused by authentication itself, like on every route.
    assert client.post(READINGS, json=body, headers=apikey("uh_nope")).status_code == 401
    assert history(hub) == []
    assert hub.audit.verify().ok


def test_a_gateway_writes_only_its_organisations_devices(client: TestClient, hub: Hub,
                                                         people: People) -> None:
    provision(client, people.operator)  # environment's
    provision(client, people.partner, device_body("partner-0100"))  # the partner's
    partner_eid = "urn:ngsi-ld:AirQualityObserved:partner-0100"
    batch = [
        {"deviceId": "partner-0100", "observedAt": "2024-03-01T10:00:00Z", "pm25": 1},
        {"deviceId": "aq-0001", "observedAt": "2024-03-01T10:00:00Z", "pm25": 2},
        {"id": EID, SDM + "pm25": {"type": "Property", "value": 3,
                                   "observedAt": "2024-03-01T10:01:00Z"}},
        {"id": partner_eid, SDM + "pm25": {"type": "Property", "value": 4,
                                           "observedAt": "2024-03-01T10:01:00Z"}},
    ]
    answer = client.post(READINGS, json=batch, headers=apikey(people.partner)).json()
    assert (answer["accepted"], answer["stored"]) == (2, 2)  # nothing valid lost
    assert answer["rejected"] == [
        {"index": 1, "reason": "device aq-0001 is not owned by organisation partner"},
        {"index": 2, "reason": "device aq-0001 is not owned by organisation partner"}]
    assert [r.value_num for r in history(hub, partner_eid)] == [1.0, 4.0]
    assert history(hub) == []
    summary = audit_rows(hub, "ingest.refused")[-1]
    assert summary["actor"] == "pete"
    assert summary["details"]["refused"] == [{
        "device": "aq-0001", "reason": "not_permitted", "count": 2,
        "example": "device aq-0001 is not owned by organisation partner"}]
    ours = client.post(READINGS, json=batch, headers=apikey(people.steward)).json()
    assert (ours["stored"], [r["index"] for r in ours["rejected"]]) == (2, [0, 3])
    # The CDO's key is an organisation's key too: the city data office owns no device.
    assert client.post(READINGS, json=batch, headers=apikey(people.cdo)).json()[
        "accepted"] == 0
    # An entity no device writes is held to the NGSI-LD write rules: the dataset's owner.
    district = {"id": "urn:ngsi-ld:District:north", "type": "District"}
    assert client.post("/ngsi-ld/v1/entities", json=district,
                       headers=apikey(people.operator)).status_code == 201
    fragment = [{"id": district["id"], "population": {"type": "Property", "value": 5}}]
    refused = client.post(READINGS, json=fragment, headers=apikey(people.partner)).json()
    assert refused["accepted"] == 0
    assert "pete of partner may not write to it" in refused["rejected"][0]["reason"]
    assert client.post(READINGS, json=fragment, headers=apikey(people.steward)).json()[
        "stored"] == 1


def test_a_device_key_writes_only_its_own_readings(client: TestClient, hub: Hub,
                                                   people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    provision(client, people.operator, device_body("aq-0002"))
    district = {"id": "urn:ngsi-ld:District:north", "type": "District"}
    assert client.post("/ngsi-ld/v1/entities", json=district,
                       headers=apikey(people.operator)).status_code == 201
    batch = [
        {"deviceId": "aq-0001", "observedAt": "2024-03-01T10:00:00Z", "pm25": 1},
        {"deviceId": "aq-0002", "observedAt": "2024-03-01T10:00:00Z", "pm25": 2},
        {"id": district["id"], "population": {"type": "Property", "value": 5}},
        {"id": EID, SDM + "pm25": {"type": "Property", "value": 3,
                                   "observedAt": "2024-03-01T10:01:00Z"}},
    ]
    answer = client.post(READINGS, json=batch, headers=device_key(key)).json()
    assert answer["stored"] == 2
    assert [r["index"] for r in answer["rejected"]] == [1, 2]
    assert all("the device key of aq-0001 writes only that device's readings" in r["reason"]
               for r in answer["rejected"])
    assert [r.value_num for r in history(hub)] == [1.0, 3.0]
    # A gateway key may still write entities that no device writes.
    gateway = client.post(READINGS, json=batch[2:3], headers=apikey(people.operator))
    assert gateway.json()["stored"] == 1


def test_observed_at_defaults_to_receive_time(client: TestClient, hub: Hub,
                                              people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    first = client.post(READINGS, json=[{"deviceId": "aq-0001", "pm25": 1}],
                        headers=device_key(key))
    second = client.post(READINGS, json=[{"deviceId": "aq-0001", "pm25": 2}],
                         headers=device_key(key))
    assert first.json()["stored"] == 1 and second.json()["stored"] == 1
    rows = history(hub)
    assert [r.value_num for r in rows] == [1.0, 2.0]
    assert rows[0].observed_at < rows[1].observed_at


def test_fragments_use_the_link_context(client: TestClient, hub: Hub, people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    fragment = {"id": EID, "type": "AirQualityObserved",
                "pm25": {"type": "Property", "value": 9, "observedAt": "2024-03-02T00:00:00Z"}}
    response = client.post(READINGS, json=[fragment], headers={**ENV_LINK, **device_key(key)})
    assert response.json() == {"accepted": 1, "stored": 1, "rejected": []}
    assert history(hub)[0].name == SDM + "pm25"


def test_bad_bodies_are_400_and_dead_lettered(client: TestClient, hub: Hub,
                                              people: People) -> None:
    json_headers = {"Content-Type": "application/json", **apikey(people.operator)}
    not_array = client.post(READINGS, content=b'{"deviceId": "x"}', headers=json_headers)
    assert not_array.status_code == 400
    assert not_array.headers["content-type"] == "application/problem+json"
    broken = client.post(READINGS, content=b"\xff\xfe[", headers=json_headers)
    assert broken.status_code == 400
    letters = dead_letters(client)
    assert [letter["reason"][:24] for letter in letters] == ["The body is not valid JS",
                                                             "The body must be a JSON "]
    assert letters[0]["payloadEncoding"] == "base64"
    assert base64.b64decode(letters[0]["payload"]) == b"\xff\xfe["
    assert letters[1]["payload"] == '{"deviceId": "x"}'
    assert [e["details"]["refused"][0]["reason"] for e in audit_rows(hub, "ingest.")] == [
        "invalid", "invalid"]
    assert client.post(READINGS, content=b"[]", headers={
        "Content-Type": "text/csv", **apikey(people.operator)}).status_code == 415
    assert client.post(READINGS, json=[], headers=apikey(people.operator)).json() == {
        "accepted": 0, "stored": 0, "rejected": []}


def test_oversized_body_is_413(client: TestClient, hub: Hub, people: People) -> None:
    hub.settings.max_body_bytes = 1000
    items = [{"deviceId": "aq-0001", "pm25": index} for index in range(100)]
    response = client.post(READINGS, json=items, headers=apikey(people.operator))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_health_counts_readings_and_dead_letters(client: TestClient, people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    client.post(READINGS, json=[{"deviceId": "aq-0001", "pm25": 1, "x": 2}],
                headers=device_key(key))
    health = client.get("/health").json()
    assert health["deadLetters"] == 1
    assert health["ingest"]["readings_stored"] == 1
    assert health["ingest"]["http_dead_letters"] == 1
    assert health["checks"]["broker"] == {"status": "disabled"}


def test_deleted_device_stops_writing(client: TestClient, people: People) -> None:
    key = provision(client, people.operator)["deviceKey"]
    assert client.delete(f"{DEVICES}/aq-0001", headers=apikey(people.operator)).status_code == 204
    with_key = client.post(READINGS, json=[{"deviceId": "aq-0001", "pm25": 1}],
                           headers=device_key(key))
    assert with_key.status_code == 401  # its key went with it
    response = client.post(READINGS, json=[{"deviceId": "aq-0001", "pm25": 1}],
                           headers=apikey(people.operator))
    assert response.json()["rejected"][0]["reason"] == "unknown device 'aq-0001'"
