"""ETSI GS CIM 009 v1.8 behaviour of entity provision and consumption, clause by clause."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient

from tests.ngsi import CONTEXT_REL, ENV, ENV_LINK, LD, air_quality

BASE = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
JSON = {"Content-Type": "application/json"}
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
AQ = "urn:ngsi-ld:AirQualityObserved:c1"


def air(entity_id: str = AQ, pm25: float = 12.5, **extra: Any) -> dict[str, Any]:
    return air_quality(entity_id, pm25, **extra)


def create(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post(f"{BASE}/entities", json=body, headers=LD)
    assert response.status_code == 201, response.text


def get(client: TestClient, entity_id: str = AQ, **params: str) -> dict[str, Any]:
    response = client.get(f"{BASE}/entities/{entity_id}", params=params, headers=ENV_LINK)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_problem(response: Any, status: int, kind: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if kind is not None:
        assert response.json()["type"] == ERRORS + kind


# --- §6.4.3.1 create, §6.5 retrieve: status codes, Location, ids ----------------------------

def test_create_answers_201_with_location_of_the_entity(client: TestClient) -> None:
    response = client.post(f"{BASE}/entities", json=air(), headers=LD)
    assert response.status_code == 201
    assert response.content == b""
    assert response.headers["location"] == f"{BASE}/entities/{AQ}"
    assert client.get(response.headers["location"], headers=ENV_LINK).status_code == 200


def test_create_of_an_existing_id_is_409_already_exists(client: TestClient) -> None:
    create(client, air())
    assert_problem(client.post(f"{BASE}/entities", json=air(), headers=LD), 409,
                   "AlreadyExists")


def test_invalid_id_in_the_url_is_400_and_unknown_id_is_404(client: TestClient) -> None:
    for method in ("get", "delete"):
        assert_problem(getattr(client, method)(f"{BASE}/entities/not-a-uri"), 400,
                       "BadRequestData")
        assert_problem(getattr(client, method)(f"{BASE}/entities/urn:ngsi-ld:X:none"), 404,
                       "ResourceNotFound")
    patch = client.patch(f"{BASE}/entities/not-a-uri/attrs", json={"a": 1}, headers=JSON)
    assert_problem(patch, 400, "BadRequestData")
    patch = client.patch(f"{BASE}/entities/urn:ngsi-ld:X:none/attrs", json={"a": 1},
                         headers=JSON)
    assert_problem(patch, 404, "ResourceNotFound")


def test_content_type_and_accept_errors(client: TestClient) -> None:
    assert_problem(client.post(f"{BASE}/entities", content=b'{"id": "urn:a:b", "type": "T"}',
                               headers={"Content-Type": "text/plain"}), 415)
    assert_problem(client.post(f"{BASE}/entities", content=b'{"id": "urn:a:b", "type": "T"}'),
                   415)
    create(client, air())
    assert_problem(client.get(f"{BASE}/entities/{AQ}", headers={"Accept": "text/html"}), 406,
                   "NotAcceptable")
    # q=0 means "not this one"
    refused = client.get(f"{BASE}/entities/{AQ}",
                         headers={"Accept": "application/ld+json;q=0, text/csv"})
    assert_problem(refused, 406)
    preferred = client.get(f"{BASE}/entities/{AQ}",
                           headers={"Accept": "application/json;q=0.5, application/ld+json"})
    assert preferred.headers["content-type"] == "application/ld+json"


# --- §6.3.5/§6.3.6 @context in and out ------------------------------------------------------

def test_ld_json_puts_context_in_body_and_json_gives_a_link_header(client: TestClient) -> None:
    create(client, air())
    as_ld = client.get(f"{BASE}/entities/{AQ}",
                       headers={"Accept": "application/ld+json"} | ENV_LINK)
    assert as_ld.headers["content-type"] == "application/ld+json"
    assert as_ld.json()["@context"] == ENV
    assert "link" not in as_ld.headers
    as_json = client.get(f"{BASE}/entities/{AQ}", headers={"Accept": "application/json"}
                         | ENV_LINK)
    assert as_json.headers["content-type"] == "application/json"
    assert "@context" not in as_json.json()
    assert as_json.headers["link"] == f'<{ENV}>; rel="{CONTEXT_REL}"; type="application/ld+json"'
    plain = client.get(f"{BASE}/entities/{AQ}")
    assert CORE in plain.headers["link"]


def test_context_from_link_header_with_json_body(client: TestClient) -> None:
    body = air()
    body.pop("@context")
    assert client.post(f"{BASE}/entities", json=body, headers=JSON | ENV_LINK).status_code == 201
    assert get(client)["type"] == "AirQualityObserved"


# --- §4.5.16 GeoJSON representation ---------------------------------------------------------

def test_geojson_feature_and_feature_collection(client: TestClient) -> None:
    create(client, air(observationSpace={
        "type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.0, 11.0]}}))
    create(client, air("urn:ngsi-ld:AirQualityObserved:c2"))
    geo = {"Accept": "application/geo+json"} | ENV_LINK
    feature = client.get(f"{BASE}/entities/{AQ}", headers=geo)
    assert feature.status_code == 200
    assert feature.headers["content-type"] == "application/geo+json"
    body = feature.json()
    assert body["id"] == AQ and body["type"] == "Feature"
    assert body["geometry"] == {"type": "Point", "coordinates": [116.4, 39.9]}
    assert body["properties"]["type"] == "AirQualityObserved"
    assert body["properties"]["pm25"]["value"] == 12.5
    assert body["properties"]["location"]["type"] == "GeoProperty"
    assert body["@context"] == ENV

    other = client.get(f"{BASE}/entities/{AQ}", headers=geo,
                       params={"geometryProperty": "observationSpace", "options": "keyValues"})
    assert other.json()["geometry"] == {"type": "Point", "coordinates": [11.0, 11.0]}
    assert other.json()["properties"]["pm25"] == 12.5
    missing = client.get(f"{BASE}/entities/{AQ}", headers=geo,
                         params={"geometryProperty": "nowhere"})
    assert missing.json()["geometry"] is None

    collection = client.get(f"{BASE}/entities", headers=geo,
                            params={"type": "AirQualityObserved", "count": "true"})
    assert collection.headers["content-type"] == "application/geo+json"
    assert collection.headers["ngsild-results-count"] == "2"
    body = collection.json()
    assert body["type"] == "FeatureCollection" and body["@context"] == ENV
    assert sorted(f["id"] for f in body["features"]) == [AQ, "urn:ngsi-ld:AirQualityObserved:c2"]
    assert all(f["type"] == "Feature" and f["geometry"] for f in body["features"])


# --- §6.3.10 pagination, §6.3.13 count ------------------------------------------------------

def test_paging_links_and_results_count(client: TestClient) -> None:
    for i in range(5):
        create(client, air(f"urn:ngsi-ld:AirQualityObserved:p{i}"))
    params = {"type": "AirQualityObserved", "limit": "2"}
    first = client.get(f"{BASE}/entities", params=params | {"count": "true"}, headers=ENV_LINK)
    assert first.headers["ngsild-results-count"] == "5"
    links = first.headers["link"]
    assert 'rel="next"' in links and 'rel="prev"' not in links
    assert CONTEXT_REL in links  # the JSON-LD context link stays alongside
    middle = client.get(f"{BASE}/entities", params=params | {"offset": "2"}, headers=ENV_LINK)
    assert 'rel="prev"' in middle.headers["link"] and 'rel="next"' in middle.headers["link"]
    last = client.get(f"{BASE}/entities", params=params | {"offset": "4"}, headers=ENV_LINK)
    assert len(last.json()) == 1
    assert 'rel="next"' not in last.headers["link"]
    # following "next" walks every entity exactly once
    seen: list[str] = []
    url: str | None = f"{BASE}/entities?type=AirQualityObserved&limit=2"
    while url:
        page = client.get(url, headers=ENV_LINK)
        seen += [e["id"] for e in page.json()]
        url = next((part.split(">")[0].lstrip(" <") for part in page.headers["link"].split(",")
                    if 'rel="next"' in part), None)
    assert sorted(seen) == [f"urn:ngsi-ld:AirQualityObserved:p{i}" for i in range(5)]
    only_count = client.get(f"{BASE}/entities", headers=ENV_LINK,
                            params={"type": "AirQualityObserved", "limit": "0", "count": "true"})
    assert only_count.json() == [] and only_count.headers["ngsild-results-count"] == "5"


# --- §6.6 / §6.7 updates: 204, 207 UpdateResult, 404 ---------------------------------------

def test_updates_answer_204_and_partial_updates_207(client: TestClient) -> None:
    create(client, air())
    attrs = f"{BASE}/entities/{AQ}/attrs"
    assert client.post(attrs, json={"no2": 40}, headers=ENV_LINK | JSON).status_code == 204
    assert client.patch(attrs, json={"no2": 41}, headers=ENV_LINK | JSON).status_code == 204
    assert client.patch(f"{attrs}/no2", json={"value": 42},
                        headers=ENV_LINK | JSON).status_code == 204
    partial = client.patch(attrs, json={"no2": 43, "o3": 1}, headers=ENV_LINK | JSON)
    assert partial.status_code == 207
    assert partial.json() == {"updated": ["no2"], "notUpdated": [
        {"attributeName": "o3", "reason": "Attribute does not exist."}]}
    assert_problem(client.patch(f"{attrs}/o3", json={"value": 1}, headers=ENV_LINK | JSON),
                   404, "ResourceNotFound")
    assert get(client, options="keyValues")["no2"] == 43
    assert client.put(f"{BASE}/entities/{AQ}", json={"type": "AirQualityObserved", "no2": 1},
                      headers=ENV_LINK | JSON).status_code == 204
    assert client.patch(f"{BASE}/entities/{AQ}", json={"o3": 2},
                        headers=ENV_LINK | JSON).status_code == 204
    assert get(client, options="keyValues") == {"id": AQ, "type": "AirQualityObserved",
                                                "no2": 1, "o3": 2}


def test_delete_attribute_by_dataset_id_and_delete_all(client: TestClient) -> None:
    create(client, air(no2=[
        {"type": "Property", "value": 1},
        {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"},
        {"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:b"}]))
    url = f"{BASE}/entities/{AQ}/attrs/no2"
    assert client.delete(url, params={"datasetId": "urn:ngsi-ld:Dataset:a"},
                         headers=ENV_LINK).status_code == 204
    values = sorted(i["value"] for i in get(client)["no2"])
    assert values == [1, 3]
    assert_problem(client.delete(url, params={"datasetId": "urn:ngsi-ld:Dataset:a"},
                                 headers=ENV_LINK), 404, "ResourceNotFound")
    assert client.delete(url, headers=ENV_LINK).status_code == 204  # the default instance
    assert get(client)["no2"]["datasetId"] == "urn:ngsi-ld:Dataset:b"
    create(client, air("urn:ngsi-ld:AirQualityObserved:c3", no2=[
        {"type": "Property", "value": 1},
        {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:a"}]))
    assert client.delete(f"{BASE}/entities/urn:ngsi-ld:AirQualityObserved:c3/attrs/no2",
                         params={"deleteAll": "true"}, headers=ENV_LINK).status_code == 204
    assert "no2" not in get(client, "urn:ngsi-ld:AirQualityObserved:c3")


# --- §6.14-6.17 batch operations ------------------------------------------------------------

def test_batch_create_201_ids_and_207_batch_operation_result(client: TestClient) -> None:
    ok = client.post(f"{BASE}/entityOperations/create", headers=LD,
                     json=[air("urn:ngsi-ld:AirQualityObserved:b1"),
                           air("urn:ngsi-ld:AirQualityObserved:b2")])
    assert ok.status_code == 201
    assert sorted(ok.json()) == ["urn:ngsi-ld:AirQualityObserved:b1",
                                 "urn:ngsi-ld:AirQualityObserved:b2"]
    partial = client.post(f"{BASE}/entityOperations/create", headers=LD,
                          json=[air("urn:ngsi-ld:AirQualityObserved:b1"),
                                air("urn:ngsi-ld:AirQualityObserved:b3")])
    assert partial.status_code == 207
    result = partial.json()
    assert result["success"] == ["urn:ngsi-ld:AirQualityObserved:b3"]
    [error] = result["errors"]
    assert error["entityId"] == "urn:ngsi-ld:AirQualityObserved:b1"
    assert error["error"]["type"] == ERRORS + "AlreadyExists"
    assert error["error"]["status"] == 409 and error["error"]["title"]
    none = client.post(f"{BASE}/entityOperations/create", headers=LD,
                       json=[air("urn:ngsi-ld:AirQualityObserved:b1")])
    assert none.status_code == 207  # "only some or none" succeeded: still a result, not 400
    assert none.json()["success"] == [] and len(none.json()["errors"]) == 1
    assert_problem(client.post(f"{BASE}/entityOperations/create", json=[], headers=JSON), 400,
                   "BadRequestData")
    assert_problem(client.post(f"{BASE}/entityOperations/create", json={"id": "urn:a:b"},
                               headers=JSON), 400, "BadRequestData")


def test_batch_upsert_that_creates_answers_201_with_the_created_ids(client: TestClient) -> None:
    create(client, air("urn:ngsi-ld:AirQualityObserved:u1"))
    mixed = client.post(f"{BASE}/entityOperations/upsert", headers=LD,
                        json=[air("urn:ngsi-ld:AirQualityObserved:u1", pm25=1),
                              air("urn:ngsi-ld:AirQualityObserved:u2")])
    assert mixed.status_code == 201
    assert mixed.json() == ["urn:ngsi-ld:AirQualityObserved:u2"]  # only the created ones


def test_batch_upsert_update_and_delete_statuses(client: TestClient) -> None:
    create(client, air("urn:ngsi-ld:AirQualityObserved:u1"))
    mixed = client.post(f"{BASE}/entityOperations/upsert", headers=LD,
                        json=[air("urn:ngsi-ld:AirQualityObserved:u1", pm25=1),
                              air("urn:ngsi-ld:AirQualityObserved:u2")])
    assert mixed.status_code in (201, 204)
    existing = client.post(f"{BASE}/entityOperations/upsert", headers=LD,
                           json=[air("urn:ngsi-ld:AirQualityObserved:u1", pm25=2)])
    assert existing.status_code == 204
    update = client.post(f"{BASE}/entityOperations/update", headers=LD, json=[
        {"id": "urn:ngsi-ld:AirQualityObserved:u1", "type": "AirQualityObserved", "no2": 5,
         "@context": ENV},
        {"id": "urn:ngsi-ld:AirQualityObserved:none", "type": "AirQualityObserved", "no2": 5,
         "@context": ENV}])
    assert update.status_code == 207
    assert update.json()["errors"][0]["error"]["type"] == ERRORS + "ResourceNotFound"
    assert get(client, "urn:ngsi-ld:AirQualityObserved:u1", options="keyValues")["no2"] == 5
    deleted = client.post(f"{BASE}/entityOperations/delete", headers=JSON,
                          json=["urn:ngsi-ld:AirQualityObserved:u1",
                                "urn:ngsi-ld:AirQualityObserved:u2"])
    assert deleted.status_code == 204
    gone = client.post(f"{BASE}/entityOperations/delete", headers=JSON,
                       json=["urn:ngsi-ld:AirQualityObserved:u1"])
    assert gone.status_code == 207
    assert gone.json()["errors"][0]["entityId"] == "urn:ngsi-ld:AirQualityObserved:u1"


# --- §4.5 representations, §4.8 system attributes, §4.21 projection, §4.15 lang -------------

def test_sys_attrs(client: TestClient) -> None:
    create(client, air())
    plain = get(client)
    assert "createdAt" not in plain and "modifiedAt" not in plain["pm25"]
    with_sys = get(client, options="sysAttrs")
    assert with_sys["createdAt"] <= with_sys["modifiedAt"]
    assert with_sys["pm25"]["createdAt"] and with_sys["pm25"]["modifiedAt"]
    client.patch(f"{BASE}/entities/{AQ}/attrs", json={"pm25": 3}, headers=ENV_LINK | JSON)
    after = get(client, options="sysAttrs")
    assert after["pm25"]["createdAt"] == with_sys["pm25"]["createdAt"]
    assert after["pm25"]["modifiedAt"] > with_sys["pm25"]["modifiedAt"]
    assert after["modifiedAt"] > with_sys["modifiedAt"]
    assert after["createdAt"] == with_sys["createdAt"]


def test_pick_and_omit(client: TestClient) -> None:
    create(client, air(no2=4))
    picked = get(client, pick="pm25,no2", options="keyValues")
    assert picked == {"id": AQ, "type": "AirQualityObserved", "pm25": 12.5, "no2": 4}
    omitted = get(client, omit="pm25,location", options="keyValues")
    assert omitted == {"id": AQ, "type": "AirQualityObserved", "no2": 4}
    queried = client.get(f"{BASE}/entities", headers=ENV_LINK, params={
        "type": "AirQualityObserved", "pick": "no2", "options": "keyValues"}).json()
    assert queried == [{"id": AQ, "type": "AirQualityObserved", "no2": 4}]
    both = client.get(f"{BASE}/entities/{AQ}", params={"pick": "a", "omit": "b"})
    assert_problem(both, 400, "BadRequestData")


def test_language_property_and_lang(client: TestClient) -> None:
    create(client, air(name={"type": "LanguageProperty",
                             "languageMap": {"en": "Market square", "fr": "Place du marché",
                                             "@none": "Marktplatz"}}))
    full = get(client)["name"]
    assert full == {"type": "LanguageProperty", "languageMap": {
        "en": "Market square", "fr": "Place du marché", "@none": "Marktplatz"}}
    assert get(client, lang="fr")["name"] == {"type": "Property", "value": "Place du marché",
                                              "lang": "fr"}
    assert get(client, lang="de")["name"] == {"type": "Property", "value": "Marktplatz",
                                              "lang": "@none"}
    assert get(client, lang="de,en;q=0.5")["name"]["value"] == "Market square"
    assert get(client, lang="*")["name"] == full
    assert get(client, lang="fr", options="keyValues")["name"] == "Place du marché"
    assert get(client, lang="en", options="concise")["name"] == {"value": "Market square",
                                                                 "lang": "en"}


def test_key_values_and_concise_round_trips(client: TestClient) -> None:
    concise = {"id": AQ, "type": "AirQualityObserved",
               "pm25": {"value": 12.5, "unitCode": "GQ", "observedAt": "2024-03-01T10:00:00Z"},
               "no2": 4,
               "location": {"type": "Point", "coordinates": [116.4, 39.9]},
               "refDevice": {"object": "urn:ngsi-ld:Device:d1"},
               "name": {"languageMap": {"en": "Square"}}}
    create(client, concise | {"@context": ENV})
    assert get(client, options="concise") == concise
    normalized = get(client)
    assert normalized["no2"] == {"type": "Property", "value": 4}
    assert normalized["location"]["type"] == "GeoProperty"
    assert normalized["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"}
    key_values = get(client, options="keyValues")
    assert key_values["pm25"] == 12.5 and key_values["refDevice"] == "urn:ngsi-ld:Device:d1"
    # a normalized entity read back as normalized is the same document
    client.delete(f"{BASE}/entities/{AQ}")
    create(client, normalized | {"@context": ENV})
    assert get(client) == normalized
    assert get(client, format="simplified") == key_values


# --- §4.6.3 multi-typed entities, §4.18 scope -----------------------------------------------

def test_multi_type_entities(client: TestClient) -> None:
    create(client, {"id": "urn:ngsi-ld:Thing:m1", "type": ["Building", "Sensor"],
                    "height": 12, "@context": CORE})
    create(client, {"id": "urn:ngsi-ld:Thing:m2", "type": "Sensor", "height": 3,
                    "@context": CORE})
    assert get(client, "urn:ngsi-ld:Thing:m1")["type"] == ["Building", "Sensor"]

    def ids(**params: str) -> list[str]:
        response = client.get(f"{BASE}/entities", params=params)
        assert response.status_code == 200, response.text
        return sorted(e["id"] for e in response.json())

    assert ids(type="Building") == ["urn:ngsi-ld:Thing:m1"]
    assert ids(type="Sensor") == ["urn:ngsi-ld:Thing:m1", "urn:ngsi-ld:Thing:m2"]
    assert ids(type="Building,Sensor") == ["urn:ngsi-ld:Thing:m1", "urn:ngsi-ld:Thing:m2"]
    # merging a fragment with another type adds it (types are a set)
    assert client.patch(f"{BASE}/entities/urn:ngsi-ld:Thing:m2",
                        json={"type": "Building", "height": 4},
                        headers=JSON).status_code == 204
    assert ids(type="Building") == ["urn:ngsi-ld:Thing:m1", "urn:ngsi-ld:Thing:m2"]
    types = client.get(f"{BASE}/types").json()["typeList"]
    assert sorted(types) == ["Building", "Sensor"]


def test_scope(client: TestClient) -> None:
    create(client, air(scope="/city/north/park"))
    create(client, air("urn:ngsi-ld:AirQualityObserved:c2", scope=["/city/south", "/ops"]))
    assert get(client)["scope"] == "/city/north/park"
    assert get(client, "urn:ngsi-ld:AirQualityObserved:c2")["scope"] == ["/city/south", "/ops"]

    def ids(scope_q: str) -> list[str]:
        response = client.get(f"{BASE}/entities", headers=ENV_LINK,
                              params={"type": "AirQualityObserved", "scopeQ": scope_q})
        assert response.status_code == 200, response.text
        return sorted(e["id"] for e in response.json())

    assert ids("/city/#") == [AQ, "urn:ngsi-ld:AirQualityObserved:c2"]
    assert ids("/city/north/+") == [AQ]
    assert ids("/ops") == ["urn:ngsi-ld:AirQualityObserved:c2"]
    assert_problem(client.post(f"{BASE}/entities", json=air("urn:ngsi-ld:X:s", scope="city"),
                               headers=LD), 400, "BadRequestData")


def test_entity_ids_with_slashes_reach_every_route(client: TestClient) -> None:
    for entity_id in ("urn:ngsi-ld:AirQualityObserved:a/b", "http://example.org/sensors/1"):
        create(client, air(entity_id))
        for url in (f"{BASE}/entities/{entity_id}", f"{BASE}/entities/{quote(entity_id, safe='')}"):
            response = client.get(url, headers=ENV_LINK)
            assert response.status_code == 200, (url, response.text)
            assert response.json()["id"] == entity_id
        assert client.patch(f"{BASE}/entities/{entity_id}/attrs", json={"pm25": 1},
                            headers=ENV_LINK | JSON).status_code == 204
        assert client.patch(f"{BASE}/entities/{entity_id}/attrs/pm25", json={"value": 2},
                            headers=ENV_LINK | JSON).status_code == 204
        assert get(client, entity_id, options="keyValues")["pm25"] == 2
        assert client.delete(f"{BASE}/entities/{entity_id}/attrs/pm25",
                             headers=ENV_LINK).status_code == 204
        assert client.delete(f"{BASE}/entities/{entity_id}").status_code == 204
        assert client.get(f"{BASE}/entities/{entity_id}").status_code == 404
