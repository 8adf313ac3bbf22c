"""NGSI-LD entity provision and consumption over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.ngsi import ENV as ENV_CONTEXT
from tests.ngsi import ENV_LINK, LD, air_quality


def sensor(entity_id: str = "urn:ngsi-ld:AirQualityObserved:s1", pm25: float = 12.5,
           **extra: Any) -> dict[str, Any]:
    return air_quality(entity_id, pm25, **extra)


def test_create_then_retrieve_normalized_and_key_values(client: TestClient) -> None:
    created = client.post("/ngsi-ld/v1/entities", json=sensor(), headers=LD)
    assert created.status_code == 201
    assert created.headers["location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:s1"

    got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:s1", headers=ENV_LINK)
    assert got.status_code == 200
    body = got.json()
    assert body["type"] == "AirQualityObserved"
    assert body["pm25"] == {"type": "Property", "value": 12.5, "unitCode": "GQ",
                            "observedAt": "2024-03-01T10:00:00Z"}
    assert ENV_CONTEXT in got.headers["link"]

    kv = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:s1",
                    params={"options": "keyValues"}, headers=ENV_LINK).json()
    assert kv["pm25"] == 12.5
    assert kv["location"] == {"type": "Point", "coordinates": [116.4, 39.9]}


def test_other_context_sees_expanded_names(client: TestClient) -> None:
    client.post("/ngsi-ld/v1/entities", json=sensor(), headers=LD)
    body = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:s1").json()
    assert body["type"] == "https://smartdatamodels.org/dataModel.Environment/AirQualityObserved"
    assert "https://smartdatamodels.org/dataModel.Environment/pm25" in body
    assert "location" in body  # a core term compacts the same for everyone


def test_duplicate_create_is_409_and_keeps_the_first(client: TestClient) -> None:
    assert client.post("/ngsi-ld/v1/entities", json=sensor(pm25=1), headers=LD).status_code == 201
    again = client.post("/ngsi-ld/v1/entities", json=sensor(pm25=2), headers=LD)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"
    kept = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:s1",
                      params={"options": "keyValues"}, headers=ENV_LINK).json()
    assert kept["pm25"] == 1


def test_bad_input_gets_problem_json(client: TestClient) -> None:
    cases = [
        (b"{not json", {"Content-Type": "application/json"}, 400, "InvalidRequest"),
        (b'{"id": "no-uri", "type": "T"}', {"Content-Type": "application/json"}, 400,
         "BadRequestData"),
        (b'{"id": "urn:a:b"}', {"Content-Type": "application/json"}, 400, "BadRequestData"),
        (b'{"id": "urn:a:b", "type": "T", "p": {"type": "Property"}}',
         {"Content-Type": "application/json"}, 400, "BadRequestData"),
        (b'{"id": "urn:a:b", "type": "T", "loc": {"type": "GeoProperty", "value": '
         b'{"type": "Point", "coordinates": "x"}}}', {"Content-Type": "application/json"},
         400, "BadRequestData"),
        (b'{"id": "urn:a:b", "type": "T", "p": {"type": "Property", "value": 1, '
         b'"observedAt": "yesterday"}}', {"Content-Type": "application/json"}, 400,
         "BadRequestData"),
        (b'{"id": "urn:a:b", "type": "T"}', {"Content-Type": "text/plain"}, 415,
         "UnsupportedMediaType"),
        (b'{"id": "urn:a:b", "type": "T", "@context": []}', {"Content-Type": "application/json"},
         400, "BadRequestData"),
    ]
    for body, headers, status, kind in cases:
        response = client.post("/ngsi-ld/v1/entities", content=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"].endswith(kind), (body, problem)
        assert problem["detail"]
    count = client.get("/ngsi-ld/v1/entities", params={"type": "T", "count": "true",
                                                         "limit": 0})
    assert count.headers["ngsild-results-count"] == "0"


def test_oversized_body_is_413(client: TestClient) -> None:
    client.app.state.hub.settings.max_body_bytes = 1000  # type: ignore[attr-defined]
    big = sensor(note={"type": "Property", "value": "x" * 2000})
    response = client.post("/ngsi-ld/v1/entities", json=big, headers=LD)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_entity_is_404(client: TestClient) -> None:
    response = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:X:missing")
    assert response.status_code == 404
    assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    assert client.delete("/ngsi-ld/v1/entities/urn:ngsi-ld:X:missing").status_code == 404


def test_unreachable_remote_context_is_503(client: TestClient) -> None:
    body = sensor()
    body["@context"] = "http://127.0.0.1:9/never.jsonld"
    response = client.post("/ngsi-ld/v1/entities", json=body, headers=LD)
    assert response.status_code == 503
    assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"


def test_a_context_reference_that_is_not_a_url_is_400_and_nothing_is_stored(
        client: TestClient) -> None:
    body = sensor()
    for reference in ("not a url", "file:///etc/passwd", "urn:example:context"):
        body["@context"] = reference
        response = client.post("/ngsi-ld/v1/entities", json=body, headers=LD)
        assert response.status_code == 400, reference
        assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
        assert "neither an http(s) URL nor a context object" in response.json()["detail"]
    assert client.get(f"/ngsi-ld/v1/entities/{body['id']}").status_code == 404


def test_attribute_operations(client: TestClient) -> None:
    eid = "urn:ngsi-ld:AirQualityObserved:s1"
    client.post("/ngsi-ld/v1/entities", json=sensor(), headers=LD)
    # append a new attribute, then noOverwrite keeps the old value and reports it
    appended = client.post(f"/ngsi-ld/v1/entities/{eid}/attrs",
                           json={"no2": {"type": "Property", "value": 40},
                                 "@context": ENV_CONTEXT}, headers=LD)
    assert appended.status_code == 204
    kept = client.post(f"/ngsi-ld/v1/entities/{eid}/attrs", params={"options": "noOverwrite"},
                       json={"no2": {"type": "Property", "value": 99}, "@context": ENV_CONTEXT},
                       headers=LD)
    assert kept.status_code == 207
    assert kept.json()["notUpdated"][0]["attributeName"] == "no2"
    # PATCH .../attrs updates existing ones only
    patched = client.patch(f"/ngsi-ld/v1/entities/{eid}/attrs",
                           json={"no2": {"type": "Property", "value": 41},
                                 "o3": {"type": "Property", "value": 5},
                                 "@context": ENV_CONTEXT}, headers=LD)
    assert patched.status_code == 207
    assert [n["attributeName"] for n in patched.json()["notUpdated"]] == ["o3"]
    # partial update of one attribute keeps its other members
    assert client.patch(f"/ngsi-ld/v1/entities/{eid}/attrs/pm25", json={"value": 20.0,
                        "@context": ENV_CONTEXT}, headers=LD).status_code == 204
    body = client.get(f"/ngsi-ld/v1/entities/{eid}", headers=ENV_LINK).json()
    assert body["no2"]["value"] == 41
    assert "o3" not in body
    assert body["pm25"]["value"] == 20.0 and body["pm25"]["unitCode"] == "GQ"
    # delete an attribute, then it is gone and deleting again is 404
    assert client.delete(f"/ngsi-ld/v1/entities/{eid}/attrs/no2",
                         headers=ENV_LINK).status_code == 204
    assert client.delete(f"/ngsi-ld/v1/entities/{eid}/attrs/no2",
                         headers=ENV_LINK).status_code == 404
    assert "no2" not in client.get(f"/ngsi-ld/v1/entities/{eid}", headers=ENV_LINK).json()


def test_replace_and_merge(client: TestClient) -> None:
    eid = "urn:ngsi-ld:AirQualityObserved:s1"
    client.post("/ngsi-ld/v1/entities", json=sensor(), headers=LD)
    replaced = client.put(f"/ngsi-ld/v1/entities/{eid}",
                          json={"no2": {"type": "Property", "value": 3},
                                "@context": ENV_CONTEXT}, headers=LD)
    assert replaced.status_code == 204
    body = client.get(f"/ngsi-ld/v1/entities/{eid}", headers=ENV_LINK).json()
    assert "pm25" not in body and body["no2"]["value"] == 3
    merged = client.patch(f"/ngsi-ld/v1/entities/{eid}",
                          json={"pm25": {"type": "Property", "value": 7},
                                "@context": ENV_CONTEXT}, headers=LD)
    assert merged.status_code == 204
    body = client.get(f"/ngsi-ld/v1/entities/{eid}", headers=ENV_LINK).json()
    assert body["pm25"]["value"] == 7 and body["no2"]["value"] == 3


def test_query_by_type_with_paging_and_count(client: TestClient) -> None:
    for i in range(25):
        client.post("/ngsi-ld/v1/entities", json=sensor(f"urn:ngsi-ld:AirQualityObserved:{i:03d}"),
                    headers=LD)
    first = client.get("/ngsi-ld/v1/entities", params={"type": "AirQualityObserved",
                                                       "count": "true", "limit": 10},
                       headers=ENV_LINK)
    assert first.status_code == 200
    assert first.headers["ngsild-results-count"] == "25"
    ids = [e["id"] for e in first.json()]
    assert ids == [f"urn:ngsi-ld:AirQualityObserved:{i:03d}" for i in range(10)]
    last = client.get("/ngsi-ld/v1/entities", params={"type": "AirQualityObserved",
                                                      "offset": 20, "limit": 10},
                      headers=ENV_LINK).json()
    assert len(last) == 5
    by_pattern = client.get("/ngsi-ld/v1/entities", params={"idPattern": ".*:00[1-3]$"}).json()
    assert [e["id"][-3:] for e in by_pattern] == ["001", "002", "003"]
    too_many = client.get("/ngsi-ld/v1/entities", params={"type": "X", "limit": 5000})
    assert too_many.status_code == 403
    assert client.get("/ngsi-ld/v1/entities").status_code == 400
    assert client.get("/ngsi-ld/v1/entities", params={"idPattern": "("}).status_code == 400


def test_batch_operations_report_per_entity(client: TestClient) -> None:
    good = sensor("urn:ngsi-ld:AirQualityObserved:b1")
    bad = {"id": "not a uri", "type": "AirQualityObserved", "@context": ENV_CONTEXT}
    response = client.post("/ngsi-ld/v1/entityOperations/create", json=[good, bad], headers=LD)
    assert response.status_code == 207
    body = response.json()
    assert body["success"] == ["urn:ngsi-ld:AirQualityObserved:b1"]
    assert body["errors"][0]["error"]["status"] == 400
    upsert = client.post("/ngsi-ld/v1/entityOperations/upsert",
                         json=[sensor("urn:ngsi-ld:AirQualityObserved:b1", pm25=99),
                               sensor("urn:ngsi-ld:AirQualityObserved:b2")], headers=LD)
    assert upsert.status_code == 201  # b2 was created; only created ids are listed
    assert upsert.json() == ["urn:ngsi-ld:AirQualityObserved:b2"]
    got = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:b1",
                     params={"options": "keyValues"}, headers=ENV_LINK).json()
    assert got["pm25"] == 99
    deleted = client.post("/ngsi-ld/v1/entityOperations/delete",
                          json=["urn:ngsi-ld:AirQualityObserved:b1", "urn:ngsi-ld:X:none"],
                          headers={"Content-Type": "application/json"})
    assert deleted.status_code == 207
    assert deleted.json()["success"] == ["urn:ngsi-ld:AirQualityObserved:b1"]


def test_types_and_attributes(client: TestClient) -> None:
    client.post("/ngsi-ld/v1/entities", json=sensor(), headers=LD)
    types = client.get("/ngsi-ld/v1/types", headers=ENV_LINK).json()
    assert types["typeList"] == ["AirQualityObserved"]
    info = client.get("/ngsi-ld/v1/types/AirQualityObserved", headers=ENV_LINK).json()
    assert info["entityCount"] == 1
    names = {a["attributeName"]: a["attributeTypes"] for a in info["attributeDetails"]}
    assert names == {"pm25": ["Property"], "location": ["GeoProperty"]}
    attrs = client.get("/ngsi-ld/v1/attributes", headers=ENV_LINK).json()
    assert sorted(attrs["attributeList"]) == ["location", "pm25"]
    assert client.get("/ngsi-ld/v1/types/Nothing").status_code == 404


def test_smart_data_model_examples_round_trip(client: TestClient, sdm_dir: Path) -> None:
    for folder in sorted(p for p in sdm_dir.iterdir() if p.is_dir()):
        for name, form in (("example-normalized.jsonld", "normalized"),
                           ("example.jsonld", "keyValues")):
            payload = json.loads((folder / name).read_text())
            context = payload["@context"]
            client.delete(f"/ngsi-ld/v1/entities/{payload['id']}")
            created = client.post("/ngsi-ld/v1/entities", json=payload, headers=LD)
            assert created.status_code == 201, (folder.name, name, created.text)
            got = client.get(f"/ngsi-ld/v1/entities/{payload['id']}",
                             params={"options": form},
                             headers={"Accept": "application/ld+json"} | (
                                 {"Link": f'<{context}>; rel="http://www.w3.org/ns/json-ld#'
                                          'context"; type="application/ld+json"'}
                                 if isinstance(context, str) else {}))
            if not isinstance(context, str):
                continue  # a list context is echoed back as the core context
            assert got.status_code == 200
            body = got.json()
            body.pop("@context")
            expected = {k: v for k, v in payload.items() if k != "@context"}
            assert body == expected, (folder.name, name)


def test_huge_paging_numbers_are_400_not_overflows(client: TestClient) -> None:
    for path in ("/ngsi-ld/v1/entities", "/ngsi-ld/v1/temporal/entities",
                 "/ingest/v1/devices", "/ingest/v1/dead-letters"):
        for name in ("limit", "offset"):
            response = client.get(path, params={"type": "T", name: 10**20})
            assert response.status_code == 400, (path, name, response.text)
            assert response.json()["detail"] == f"{name} must be at most {2**31 - 1}."
    lastn = client.get("/ngsi-ld/v1/temporal/entities", params={"type": "T", "lastN": 10**20})
    assert lastn.status_code == 400
