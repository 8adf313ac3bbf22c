"""Device provisioning (/ingest/v1/devices), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from urbanhub.hub.runtime import Hub

ENV_CONTEXT = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
               "master/context.jsonld")
ENV_LINK = {"Link": f'<{ENV_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; '
                    'type="application/ld+json"'}
SDM = "https://smartdatamodels.org/dataModel.Environment/"


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


def test_provision_creates_device_and_entity(client: TestClient, hub: Hub) -> None:
    created = client.post("/ingest/v1/devices", json=device_body())
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/ingest/v1/devices/aq-0001"
    assert created.json()["attributes"][1]["name"] == "no2"  # in the caller's context
    plain = client.get("/ingest/v1/devices/aq-0001").json()
    assert plain["attributes"][1]["name"] == SDM + "no2"  # core context only: the full IRI

    entity = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:aq-0001",
                        headers=ENV_LINK).json()
    assert entity["type"] == "AirQualityObserved"
    assert entity["location"]["value"] == {"type": "Point", "coordinates": [2.35, 48.85]}

    stored = hub.devices.get("aq-0001").attributes
    assert stored == {"pm25": {"name": SDM + "pm25", "type": "Property", "unitCode": "GQ"},
                      "n": {"name": SDM + "no2", "type": "Property", "unitCode": "GQ"}}

    shown = client.get("/ingest/v1/devices/aq-0001", headers=ENV_LINK).json()
    assert shown["entityType"] == "AirQualityObserved"
    assert shown["attributes"] == [
        {"object_id": "pm25", "name": "pm25", "type": "Property", "unitCode": "GQ"},
        {"object_id": "n", "name": "no2", "type": "Property", "unitCode": "GQ"}]


def test_context_from_link_header(client: TestClient, hub: Hub) -> None:
    body = device_body()
    del body["@context"]
    assert client.post("/ingest/v1/devices", json=body, headers=ENV_LINK).status_code == 201
    assert hub.devices.get("aq-0001").entity_type == SDM + "AirQualityObserved"
    both = client.post("/ingest/v1/devices", json=device_body("aq-0002"), headers=ENV_LINK)
    assert both.status_code == 400


def test_duplicate_device_is_409(client: TestClient) -> None:
    assert client.post("/ingest/v1/devices", json=device_body()).status_code == 201
    again = client.post("/ingest/v1/devices", json=device_body())
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    same_entity = device_body("aq-0002", entityId="urn:ngsi-ld:AirQualityObserved:aq-0001")
    assert client.post("/ingest/v1/devices", json=same_entity).status_code == 409


def test_existing_entity_is_kept(client: TestClient) -> None:
    entity = {"id": "urn:ngsi-ld:AirQualityObserved:aq-0001", "type": "AirQualityObserved",
              "name": {"type": "Property", "value": "kept"}}
    assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
    assert client.post("/ingest/v1/devices", json=device_body()).status_code == 201
    got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:aq-0001").json()
    assert got["name"]["value"] == "kept"
    assert "location" not in got


def test_bad_bodies_name_each_problem(client: TestClient) -> None:
    bad = {"deviceId": "a/b", "entityId": "not a uri", "transport": "LoRa", "colour": "red",
           "attributes": [{"object_id": "y", "type": "Property", "unitCode": 7},
                          {"object_id": "pm25"}, {"object_id": "pm25"},
                          {"object_id": "observedAt"},
                          {"object_id": "x", "type": "LanguageProperty"}, "nope"],
           "staticAttributes": {"location": {"type": "GeoProperty", "value": "here"}}}
    response = client.post("/ingest/v1/devices", json=bad)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    for expected in ("unknown member 'colour'", "deviceId", "entityId", "entityType",
                     "transport", "attributes[0].unitCode", "attributes[2].object_id 'pm25' "
                     "is declared twice", "attributes[3].object_id 'observedAt' is reserved",
                     "attributes[4].type", "attributes[5] must be an object",
                     "staticAttributes.location"):
        assert any(expected in error for error in errors), (expected, errors)
    for body, status in ((b"[1, 2]", 400), (b"{nope", 400), (b"", 400)):
        answer = client.post("/ingest/v1/devices", content=body,
                             headers={"Content-Type": "application/json"})
        assert answer.status_code == status, body
    no_attrs = device_body(attributes=[])
    assert client.post("/ingest/v1/devices", json=no_attrs).status_code == 400
    text = client.post("/ingest/v1/devices", content=b"{}", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    assert client.get("/ingest/v1/devices").json() == []


def test_list_get_delete(client: TestClient) -> None:
    for number in range(3):
        assert client.post("/ingest/v1/devices",
                           json=device_body(f"aq-{number:04d}")).status_code == 201
    first = client.get("/ingest/v1/devices", params={"limit": 2})
    assert [d["deviceId"] for d in first.json()] == ["aq-0000", "aq-0001"]
    assert first.headers["x-total-count"] == "3"
    rest = client.get("/ingest/v1/devices", params={"limit": 2, "offset": 2}).json()
    assert [d["deviceId"] for d in rest] == ["aq-0002"]
    assert client.get("/ingest/v1/devices", params={"limit": 100000}).status_code == 403
    assert client.get("/ingest/v1/devices", params={"limit": "x"}).status_code == 400

    assert client.delete("/ingest/v1/devices/aq-0001").status_code == 204
    missing = client.get("/ingest/v1/devices/aq-0001")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert client.delete("/ingest/v1/devices/aq-0001").status_code == 404
    # the entity is data, not configuration: it stays
    assert client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:aq-0001"
                      ).status_code == 200
