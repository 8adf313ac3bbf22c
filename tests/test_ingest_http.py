"""HTTP batch ingest (/ingest/v1/readings) and the dead-letter store, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient

from tests.test_devices import ENV_LINK, SDM, device_body
from urbanhub.hub.runtime import Hub

EID = "urn:ngsi-ld:AirQualityObserved:aq-0001"


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


def test_mixed_batch_stores_valid_and_dead_letters_the_rest(client: TestClient,
                                                            hub: Hub) -> None:
    assert client.post("/ingest/v1/devices", json=device_body()).status_code == 201
    response = client.post("/ingest/v1/readings", json=MIXED)
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

    entity = client.get(f"/ngsi-ld/v1/entities/{EID}", headers=ENV_LINK).json()
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

    replay = client.post("/ingest/v1/readings", json=MIXED).json()
    assert replay["accepted"] == 4 and replay["stored"] == 0
    assert len(history(hub)) == 4


def test_observed_at_defaults_to_receive_time(client: TestClient, hub: Hub) -> None:
    client.post("/ingest/v1/devices", json=device_body())
    first = client.post("/ingest/v1/readings", json=[{"deviceId": "aq-0001", "pm25": 1}])
    second = client.post("/ingest/v1/readings", json=[{"deviceId": "aq-0001", "pm25": 2}])
    assert first.json()["stored"] == 1 and second.json()["stored"] == 1
    rows = history(hub)
    assert [r.value_num for r in rows] == [1.0, 2.0]
    assert rows[0].observed_at < rows[1].observed_at


def test_fragments_use_the_link_context(client: TestClient, hub: Hub) -> None:
    client.post("/ingest/v1/devices", json=device_body())
    fragment = {"id": EID, "type": "AirQualityObserved",
                "pm25": {"type": "Property", "value": 9, "observedAt": "2024-03-02T00:00:00Z"}}
    response = client.post("/ingest/v1/readings", json=[fragment], headers=ENV_LINK)
    assert response.json() == {"accepted": 1, "stored": 1, "rejected": []}
    assert history(hub)[0].name == SDM + "pm25"


def test_bad_bodies_are_400_and_dead_lettered(client: TestClient) -> None:
    json_headers = {"Content-Type": "application/json"}
    not_array = client.post("/ingest/v1/readings", content=b'{"deviceId": "x"}',
                            headers=json_headers)
    assert not_array.status_code == 400
    assert not_array.headers["content-type"] == "application/problem+json"
    broken = client.post("/ingest/v1/readings", content=b"\xff\xfe[", headers=json_headers)
    assert broken.status_code == 400
    letters = dead_letters(client)
    assert [letter["reason"][:24] for letter in letters] == ["The body is not valid JS",
                                                             "The body must be a JSON "]
    assert letters[0]["payloadEncoding"] == "base64"
    assert base64.b64decode(letters[0]["payload"]) == b"\xff\xfe["
    assert letters[1]["payload"] == '{"deviceId": "x"}'
    assert client.post("/ingest/v1/readings", content=b"[]",
                       headers={"Content-Type": "text/csv"}).status_code == 415
    assert client.post("/ingest/v1/readings", json=[]).json() == {
        "accepted": 0, "stored": 0, "rejected": []}


def test_oversized_body_is_413(client: TestClient, hub: Hub) -> None:
    hub.settings.max_body_bytes = 1000
    items = [{"deviceId": "aq-0001", "pm25": index} for index in range(100)]
    response = client.post("/ingest/v1/readings", json=items)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_health_counts_readings_and_dead_letters(client: TestClient) -> None:
    client.post("/ingest/v1/devices", json=device_body())
    client.post("/ingest/v1/readings", json=[{"deviceId": "aq-0001", "pm25": 1, "x": 2}])
    health = client.get("/health").json()
    assert health["deadLetters"] == 1
    assert health["ingest"]["readings_stored"] == 1
    assert health["ingest"]["http_dead_letters"] == 1
    assert health["checks"]["broker"] == {"status": "disabled"}


def test_deleted_device_stops_writing(client: TestClient) -> None:
    client.post("/ingest/v1/devices", json=device_body())
    assert client.delete("/ingest/v1/devices/aq-0001").status_code == 204
    response = client.post("/ingest/v1/readings", json=[{"deviceId": "aq-0001", "pm25": 1}])
    assert response.json()["rejected"][0]["reason"] == "unknown device 'aq-0001'"
