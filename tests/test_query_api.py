"""q and geo-queries over HTTP, on SQLite and PostgreSQL (PostGIS pushdown when present).

The city: four air sensors, two parks, a road and a district around Heidelberg's old town.
Each query checks exactly which ids come back.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fastapi.testclient import TestClient

from urbanhub.hub.runtime import Hub
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.geo import EARTH_RADIUS_M, parse_geo_query
from urbanhub.ngsild.q import parse_q
from urbanhub.store.entities import EntityFilter

JSON = {"Content-Type": "application/json"}
ENV_CONTEXT = ("https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/"
               "master/context.jsonld")
ENV_LINK = {"Link": f'<{ENV_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; '
                    'type="application/ld+json"'}
LAT = 49.41
#: Longitude offset of a point 1000 m east of (8.69, 49.41) on the sphere.
KM_EAST = math.degrees(1000 / (EARTH_RADIUS_M * math.cos(math.radians(LAT))))
#: Latitude offset of 50 m.
M50 = math.degrees(50 / EARTH_RADIUS_M)
Q_BOX = [[8.68, 49.40], [8.71, 49.40], [8.71, 49.42], [8.68, 49.42], [8.68, 49.40]]


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}


def polygon(ring: list[list[float]]) -> dict[str, Any]:
    return {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [ring]}}


def box(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


CITY: list[dict[str, Any]] = [
    {"id": "urn:ngsi-ld:AirSensor:s1", "type": "AirSensor",
     "temperature": {"type": "Property", "value": 21.5, "unitCode": "CEL",
                     "observedAt": "2024-03-01T10:00:00Z",
                     "accuracy": {"type": "Property", "value": 0.5}},
     "status": {"type": "Property", "value": "ok"},
     "installedAt": {"type": "Property", "value": "2023-05-01T08:00:00Z"},
     "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"},
     "config": {"type": "Property", "value": {"mode": "eco", "limits": {"max": 40}}},
     "name": {"type": "LanguageProperty", "languageMap": {"en": "Old Bridge",
                                                          "de": "Alte Brücke"}},
     "readings": {"type": "ListProperty", "valueList": [18, 31]},
     "observationSpace": polygon(box(8.689, 49.409, 8.691, 49.411)),
     "location": point(8.69, LAT)},
    {"id": "urn:ngsi-ld:AirSensor:s2", "type": "AirSensor",
     "temperature": {"type": "Property", "value": 25, "observedAt": "2024-03-02T10:00:00Z"},
     "status": {"type": "Property", "value": "ok"},
     "installedAt": {"type": "Property", "value": "2024-06-01T08:00:00Z"},
     "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:d2"},
     "config": {"type": "Property", "value": {"mode": "full", "limits": {"max": 50}}},
     "readings": {"type": "ListProperty", "valueList": [12, 14]},
     "location": point(8.69 + KM_EAST, LAT)},
    {"id": "urn:ngsi-ld:AirSensor:s3", "type": "AirSensor",
     "temperature": [
         {"type": "Property", "value": 15, "observedAt": "2024-03-01T10:00:00Z"},
         {"type": "Property", "value": 30, "datasetId": "urn:ngsi-ld:Dataset:backup"}],
     "status": {"type": "Property", "value": "broken"},
     "location": point(8.69, 49.455)},
    {"id": "urn:ngsi-ld:AirSensor:s4", "type": "AirSensor",
     "temperature": {"type": "Property", "value": "n/a"},
     "status": {"type": "Property", "value": "ok"}},
    {"id": "urn:ngsi-ld:AirSensor:s5", "type": "AirSensor",
     "temperature": {"type": "Property", "value": 10},
     "status": {"type": "Property", "value": "ok"},
     "location": point(8.95, 49.9)},
    {"id": "urn:ngsi-ld:Park:p1", "type": "Park", "location": polygon(Q_BOX)},
    {"id": "urn:ngsi-ld:Park:p2", "type": "Park",
     "location": polygon(box(8.70, 49.41, 8.72, 49.43))},
    {"id": "urn:ngsi-ld:Road:r1", "type": "Road",
     "location": {"type": "GeoProperty", "value": {
         "type": "LineString", "coordinates": [[8.675, 49.405], [8.695, 49.415]]}}},
    {"id": "urn:ngsi-ld:District:d1", "type": "District",
     "location": polygon(box(8.6, 49.3, 8.8, 49.5))},
]


@pytest.fixture
def city(client: TestClient) -> TestClient:
    response = client.post("/ngsi-ld/v1/entityOperations/create", json=CITY, headers=JSON)
    assert response.status_code == 201, response.text
    return client


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [entity["id"].rsplit(":", 1)[1] for entity in response.json()]


def query(client: TestClient, **params: Any) -> list[str]:
    return ids(client.get("/ngsi-ld/v1/entities", params={"limit": 100, **params}))


@pytest.mark.parametrize(("q", "expected"), [
    ("temperature>20", ["s1", "s2", "s3"]),  # s3 through its backup instance (30)
    ("temperature>20;status==\"ok\"", ["s1", "s2"]),
    ("temperature>=25|status==\"broken\"", ["s2", "s3"]),
    # ; binds tighter than |, parentheses change it
    ("status==\"broken\"|temperature>24;status==\"ok\"", ["s2", "s3"]),
    ("(status==\"broken\"|temperature>24);status==\"ok\"", ["s2"]),
    ("temperature==20..26", ["s1", "s2"]),
    ("temperature!=20..26", ["s3", "s4", "s5"]),  # a string is "unequal" to numbers (§4.9)
    ("temperature==15,25", ["s2", "s3"]),
    ("status==\"ok\",\"broken\"", ["s1", "s2", "s3", "s4", "s5"]),
    ("status!=\"ok\"", ["s3"]),
    ("status~=^br", ["s3"]),
    ("status!~=^br", ["s1", "s2", "s4", "s5"]),
    ("temperature.observedAt>=2024-03-02T00:00:00Z", ["s2"]),
    ("installedAt<2024-01-01T00:00:00Z", ["s1"]),
    ("refDevice==urn:ngsi-ld:Device:d1", ["s1"]),
    ("refDevice", ["s1", "s2"]),
    ("config[mode]==\"eco\"", ["s1"]),
    ("config[limits.max]>45", ["s2"]),
    ("temperature.accuracy<1", ["s1"]),
    ("temperature.unitCode==\"CEL\"", ["s1"]),
    ("name==\"Alte Brücke\"", ["s1"]),
    ("name[en]~=Bridge", ["s1"]),
    ("readings>30", ["s1"]),  # ListProperty: any item (no value_num in SQL)
    ("readings!=12", ["s1"]),
    ("temperature<20", ["s3", "s5"]),
    ("nothing", []),
])
def test_q_selects_exactly(city: TestClient, q: str, expected: list[str]) -> None:
    assert query(city, type="AirSensor", q=q) == expected


def test_q_without_type_and_terms_from_context(client: TestClient) -> None:
    body = {"id": "urn:ngsi-ld:AirQualityObserved:a1", "type": "AirQualityObserved",
            "pm25": {"type": "Property", "value": 12.5}, "@context": ENV_CONTEXT}
    assert client.post("/ngsi-ld/v1/entities", json=body,
                       headers={"Content-Type": "application/ld+json"}).status_code == 201
    found = client.get("/ngsi-ld/v1/entities", params={"q": "pm25>10"}, headers=ENV_LINK)
    assert ids(found) == ["a1"]
    # Without the context pm25 expands to another IRI and matches nothing.
    assert query(client, q="pm25>10") == []


def test_count_and_paging_with_q(city: TestClient) -> None:
    params = {"type": "AirSensor", "q": "temperature>20", "count": "true"}
    first = city.get("/ngsi-ld/v1/entities", params={**params, "limit": 2})
    assert ids(first) == ["s1", "s2"]
    assert first.headers["NGSILD-Results-Count"] == "3"
    second = city.get("/ngsi-ld/v1/entities", params={**params, "limit": 2, "offset": 2})
    assert ids(second) == ["s3"]
    assert second.headers["NGSILD-Results-Count"] == "3"
    only_count = city.get("/ngsi-ld/v1/entities", params={**params, "limit": 0})
    assert only_count.json() == []
    assert only_count.headers["NGSILD-Results-Count"] == "3"


def test_near_uses_metres_on_the_sphere(city: TestClient) -> None:
    def near(rel: str) -> list[str]:
        return query(city, type="AirSensor", georel=f"near;{rel}", geometry="Point",
                     coordinates="[8.69,49.41]")
    # s2 is 1000 m east of s1, s3 about 5 km north, s4 has no location, s5 is far away.
    assert near("maxDistance==1010") == ["s1", "s2"]
    assert near("maxDistance==990") == ["s1"]
    assert near("minDistance==990") == ["s2", "s3", "s5"]
    assert near("minDistance==1010") == ["s3", "s5"]


def test_near_measures_to_the_nearest_edge(city: TestClient) -> None:
    south = f"[8.69,{49.40 - M50}]"  # 50 m south of p1's southern edge
    found = query(city, georel="near;maxDistance==60", geometry="Point", coordinates=south)
    assert found == ["d1", "p1"]  # the district contains the point: distance 0
    found = query(city, georel="near;maxDistance==40", geometry="Point", coordinates=south)
    assert found == ["d1"]


@pytest.mark.parametrize(("georel", "geometry", "coordinates", "expected"), [
    ("within", "Polygon", [Q_BOX], ["p1", "s1", "s2"]),
    ("contains", "Polygon", [Q_BOX], ["d1", "p1"]),
    ("intersects", "Polygon", [Q_BOX], ["d1", "p1", "p2", "r1", "s1", "s2"]),
    ("disjoint", "Polygon", [Q_BOX], ["s3", "s5"]),  # s4 has no location: never matches
    ("equals", "Polygon", [Q_BOX], ["p1"]),
    ("overlaps", "Polygon", [Q_BOX], ["p2"]),
    ("contains", "Point", [8.69, 49.41], ["d1", "p1", "s1"]),
    ("intersects", "LineString", [[8.65, 49.455], [8.75, 49.455]], ["d1", "s3"]),
    ("within", "MultiPolygon", [[box(8.68, 49.40, 8.70, 49.42)], [box(8.94, 49.89, 8.96, 49.91)]],
     ["s1", "s5"]),
    ("intersects", "MultiPoint", [[8.69, 49.455], [8.95, 49.9]], ["d1", "s3", "s5"]),
])
def test_geo_relations(city: TestClient, georel: str, geometry: str, coordinates: Any,
                       expected: list[str]) -> None:
    found = query(city, georel=georel, geometry=geometry, coordinates=json.dumps(coordinates))
    assert sorted(found) == expected


def test_geoproperty_other_than_location(city: TestClient) -> None:
    found = query(city, georel="within", geometry="Polygon",
                  coordinates=f"[{Q_BOX}]".replace(" ", ""), geoproperty="observationSpace")
    assert found == ["s1"]


def test_percent_encoded_coordinates_are_accepted(city: TestClient) -> None:
    found = query(city, type="AirSensor", georel="near;maxDistance==10", geometry="Point",
                  coordinates="%5B8.69%2C49.41%5D")
    assert found == ["s1"]


def test_q_and_geo_together(city: TestClient) -> None:
    found = query(city, type="AirSensor", q="temperature>22", georel="near;maxDistance==2000",
                  geometry="Point", coordinates="[8.69,49.41]")
    assert found == ["s2"]


def test_post_query_with_q_and_geo_q(city: TestClient) -> None:
    body = {"type": "Query", "entities": [{"type": "AirSensor"}], "q": "temperature>20",
            "geoQ": {"georel": "near;maxDistance==1010", "geometry": "Point",
                     "coordinates": [8.69, 49.41]}}
    response = city.post("/ngsi-ld/v1/entityOperations/query", json=body, headers=JSON,
                         params={"count": "true"})
    assert ids(response) == ["s1", "s2"]
    assert response.headers["NGSILD-Results-Count"] == "2"
    body = {"type": "Query", "geoQ": {"georel": "within", "geometry": "Polygon",
                                      "coordinates": [Q_BOX]}, "q": "status"}
    assert ids(city.post("/ngsi-ld/v1/entityOperations/query", json=body,
                         headers=JSON)) == ["s1", "s2"]


@pytest.mark.parametrize(("params", "detail"), [
    ({"q": "temperature>="}, "expected a value after '>=' at position 13 (the end)"),
    ({"q": "(temperature>1"}, "'(' at position 0 is not closed"),
    ({"q": "temperature>1)"}, "')' has no matching '('"),
    ({"q": "temperature>1;"}, "after ';'"),
    ({"q": "|temperature"}, "expected an attribute"),
    ({"q": "temperature=1"}, "use '=='"),
    ({"q": "temperature~=a("}, "invalid regular expression"),
    ({"q": "temp'erature>1"}, "unexpected \"'\""),
    ({"q": "status==ok"}, "put strings in double quotes"),
    ({"q": "temperature>1,2"}, "a list of values can only follow == or !="),
    ({"q": "config[mode==\"eco\""}, "'[' at position 6 is not closed"),
    ({"georel": "near;maxDistance==10", "geometry": "Point"}, "missing or empty: coordinates"),
    ({"georel": "nearby", "geometry": "Point", "coordinates": "[8,49]"}, "'nearby' is unknown"),
    ({"georel": "near", "geometry": "Point", "coordinates": "[8,49]"}, "maxDistance"),
    ({"georel": "near;maxDistance==far", "geometry": "Point", "coordinates": "[8,49]"},
     "non-negative number of metres"),
    ({"georel": "within", "geometry": "Circle", "coordinates": "[8,49]"}, "'Circle'"),
    ({"georel": "within", "geometry": "Point", "coordinates": "[8,"}, "JSON array"),
    ({"georel": "within", "geometry": "Point", "coordinates": "[188,49]"},
     "longitude 188.0 is outside"),
    ({"georel": "within", "geometry": "Polygon",
      "coordinates": "[[[8,49],[9,49],[9,50],[8,50]]]"}, "is not closed"),
    ({"georel": "within", "geometry": "Polygon", "coordinates": "[[8,49],[9,49],[9,50],[8,49]]"},
     "must be a list of positions"),
    ({"georel": "within", "geometry": "Point", "coordinates": "[8,\"49\"]"},
     "coordinates[1] must be a number"),
    ({"georel": "near;maxDistance==5", "geometry": "Polygon",
      "coordinates": "[[[8,49],[9,49],[9,50],[8,49]]]"}, "near measures from a Point"),
])
def test_bad_queries_are_400_problem_json(city: TestClient, params: dict[str, str],
                                          detail: str) -> None:
    response = city.get("/ngsi-ld/v1/entities", params={"type": "AirSensor", **params})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert detail in problem["detail"], problem["detail"]


def test_bad_q_in_post_query_is_400(city: TestClient) -> None:
    for body, detail in [
        ({"type": "Query", "q": "temperature>>1"}, "'>1'"),
        ({"type": "Query", "geoQ": {"georel": "within", "geometry": "Point"}},
         "missing or empty: coordinates"),
    ]:
        response = city.post("/ngsi-ld/v1/entityOperations/query", json=body, headers=JSON)
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert detail in response.json()["detail"]


def test_sql_prefilter_is_a_superset_that_prunes(hub: Hub, city: TestClient) -> None:
    """q pushdown drops s5 (10) in SQL but keeps rows SQL cannot judge (strings, lists)."""
    terms = TermMap().finish()
    clause = hub.store.prefilter(parse_q("temperature>20", terms))
    assert clause is not None
    with hub.store.read() as conn:
        candidates = hub.store.select_ids(conn, EntityFilter(extra=[clause]))
    assert candidates == [f"urn:ngsi-ld:AirSensor:s{n}" for n in (1, 2, 3, 4)]
    geo = parse_geo_query("disjoint", "Polygon", f"[{Q_BOX}]", None, terms)
    assert geo is not None
    clause = hub.store.prefilter(geo.predicate)
    if hub.store.dialect == "postgresql" and hub.store.postgis:
        assert clause is not None
        with hub.store.read() as conn:
            candidates = hub.store.select_ids(conn, EntityFilter(extra=[clause]))
        assert candidates == ["urn:ngsi-ld:AirSensor:s3", "urn:ngsi-ld:AirSensor:s5"]
    else:
        assert clause is None
