"""Geo-query parsing, distances and relations, on internal entities (no database)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import shapely

from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.geo import (
    EARTH_RADIUS_M,
    LOCATION,
    distance_m,
    haversine_m,
    parse_geo_query,
)

TERMS = TermMap().finish()
V = "https://uri.etsi.org/ngsi-ld/default-context/"


def located(geometry: dict[str, Any], attr: str = LOCATION,
            dataset: str = "") -> dict[str, Any]:
    return {"id": "urn:x:1", "type": [V + "T"],
            "attrs": {attr: {dataset: {"type": "GeoProperty", "value": geometry}}}}


def test_haversine_known_distances() -> None:
    # One degree of latitude, half the equator, and the spherical law of cosines.
    assert haversine_m(8.0, 49.0, 8.0, 50.0) == pytest.approx(EARTH_RADIUS_M * math.pi / 180)
    assert haversine_m(0, 0, 180, 0) == pytest.approx(EARTH_RADIUS_M * math.pi)
    p1, p2, dl = math.radians(49.3988), math.radians(49.4875), math.radians(8.4660 - 8.6724)
    cosines = EARTH_RADIUS_M * math.acos(math.sin(p1) * math.sin(p2)
                                         + math.cos(p1) * math.cos(p2) * math.cos(dl))
    assert haversine_m(8.6724, 49.3988, 8.4660, 49.4875) == pytest.approx(cosines, abs=0.01)


def test_distance_to_lines_and_polygons_in_metres() -> None:
    east = math.degrees(1000 / (EARTH_RADIUS_M * math.cos(math.radians(49.41))))
    line = shapely.LineString([(8.69 + east, 49.40), (8.69 + east, 49.42)])
    assert distance_m(8.69, 49.41, line) == pytest.approx(1000, abs=0.5)
    square = shapely.box(8.68, 49.40, 8.70, 49.42)
    assert distance_m(8.69, 49.41, square) == 0
    north = 49.42 + math.degrees(250 / EARTH_RADIUS_M)
    assert distance_m(8.69, north, square) == pytest.approx(250, abs=0.5)


def test_near_max_and_min_distance_and_prefilter_box() -> None:
    east = math.degrees(1000 / (EARTH_RADIUS_M * math.cos(math.radians(49.41))))
    sensor = located({"type": "Point", "coordinates": [8.69 + east, 49.41]})
    for georel, expected in [("near;maxDistance==1001", True), ("near;maxDistance==999", False),
                             ("near;minDistance==999", True), ("near;minDistance==1001", False)]:
        geo = parse_geo_query(georel, "Point", "[8.69,49.41]", None, TERMS)
        assert geo is not None
        assert geo.predicate(sensor) is expected, georel
    geo = parse_geo_query("near;maxDistance==1000", "Point", "[8.69,49.41]", None, TERMS)
    assert geo is not None and geo.bbox is not None
    west, south, east_edge, north = geo.bbox
    assert west < 8.69 - east < 8.69 + east < east_edge
    assert south < 49.41 - math.degrees(1000 / EARTH_RADIUS_M) and north > 49.419
    minimum = parse_geo_query("near;minDistance==10", "Point", "[8.69,49.41]", None, TERMS)
    assert minimum is not None and minimum.bbox is None


def test_relations_read_entity_then_query_geometry() -> None:
    square = [[[8.0, 49.0], [9.0, 49.0], [9.0, 50.0], [8.0, 50.0], [8.0, 49.0]]]
    inside = located({"type": "Point", "coordinates": [8.5, 49.5]})
    big = located({"type": "Polygon", "coordinates": [[[7, 48], [10, 48], [10, 51], [7, 51],
                                                       [7, 48]]]})
    half = located({"type": "Polygon", "coordinates": [[[8.5, 49], [9.5, 49], [9.5, 50],
                                                        [8.5, 50], [8.5, 49]]]})
    same = located({"type": "Polygon", "coordinates": square})
    outside = located({"type": "Point", "coordinates": [20, 10]})
    expected = {
        "within": {"inside", "same"}, "contains": {"big", "same"},
        "intersects": {"inside", "big", "half", "same"}, "disjoint": {"outside"},
        "equals": {"same"}, "overlaps": {"half"},
    }
    candidates = {"inside": inside, "big": big, "half": half, "same": same,
                  "outside": outside, "nowhere": {"id": "urn:x:2", "type": [], "attrs": {}}}
    for georel, names in expected.items():
        geo = parse_geo_query(georel, "Polygon", str(square), None, TERMS)
        assert geo is not None
        assert {n for n, e in candidates.items() if geo.predicate(e)} == names, georel
        if georel == "disjoint":
            assert geo.bbox is None
        else:
            assert geo.bbox == (8.0, 49.0, 9.0, 50.0)


def test_geoproperty_is_expanded_and_only_the_default_instance_counts() -> None:
    space = located({"type": "Point", "coordinates": [8.5, 49.5]}, attr=V + "space")
    geo = parse_geo_query("near;maxDistance==10", "Point", "[8.5,49.5]", "space", TERMS)
    assert geo is not None and geo.bbox is None  # the box columns only index location
    assert geo.predicate(space)
    assert not geo.predicate(located({"type": "Point", "coordinates": [8.5, 49.5]}))
    other = located({"type": "Point", "coordinates": [8.5, 49.5]},
                    dataset="urn:ngsi-ld:Dataset:x")
    near = parse_geo_query("near;maxDistance==10", "Point", "[8.5,49.5]", None, TERMS)
    assert near is not None and not near.predicate(other)


def test_no_geo_query_and_accepted_spellings() -> None:
    assert parse_geo_query(None, None, None, "location", TERMS) is None
    for coordinates in ("[8.5, 49.5]", "%5B8.5%2C49.5%5D", '"[8.5,49.5]"'):
        geo = parse_geo_query("intersects", "Point", coordinates, None, TERMS)
        assert geo is not None
        assert geo.predicate(located({"type": "Point", "coordinates": [8.5, 49.5]}))


@pytest.mark.parametrize(("args", "detail"), [
    (("within", None, "[1,2]"), "missing or empty: geometry"),
    ((None, "Point", None), "missing or empty: georel, coordinates"),
    (("within", "Point", " "), "missing or empty: coordinates"),
    (("inside", "Point", "[1,2]"), "georel 'inside' is unknown"),
    (("within;maxDistance==3", "Point", "[1,2]"), "georel within takes no modifiers"),
    (("near", "Point", "[1,2]"), "needs exactly one of maxDistance"),
    (("near;maxDistance==1;minDistance==2", "Point", "[1,2]"), "needs exactly one"),
    (("near;distance==1", "Point", "[1,2]"), "needs exactly one"),
    (("near;maxDistance==-5", "Point", "[1,2]"), "non-negative number of metres"),
    (("near;minDistance==inf", "Point", "[1,2]"), "non-negative number of metres"),
    (("near;maxDistance==5", "LineString", "[[1,2],[3,4]]"), "near measures from a Point"),
    (("within", "point", "[1,2]"), "geometry 'point' is not supported"),
    (("within", "Point", "1,2"), "must be a JSON array"),
    (("within", "Point", "{\"x\": 1}"), "must be a JSON array"),
    (("within", "Point", "[1,2,3,4]"), "must be a position [longitude, latitude]"),
    (("within", "Point", "[[1,2]]"), "must be a position"),
    (("within", "Point", "[1,-91]"), "latitude -91.0 is outside -90..90"),
    (("within", "Point", "[-181,0]"), "longitude -181.0 is outside -180..180"),
    (("within", "Point", "[1,null]"), "coordinates[1] must be a number, got null"),
    (("within", "MultiPoint", "[]"), "must be a list of positions"),
    (("within", "LineString", "[[1,2]]"), "a LineString needs at least two positions, got 1"),
    (("within", "MultiLineString", "[[1,2],[3,4]]"), "coordinates[0] must be a list of positions"),
    (("within", "Polygon", "[[[0,0],[1,0],[0,0]]]"), "a linear ring needs at least four"),
    (("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]"), "coordinates[0] is not closed"),
    (("within", "Polygon", "[[[0,0],[1,1],[1,0],[0,1],[0,0]]]"), "Self-intersection"),
    (("within", "MultiPolygon", "[[[0,0],[1,0],[1,1],[0,0]]]"),
     "coordinates[0][0] must be a list of positions"),
    (("within", "MultiPolygon", "[[[[0,0],[1,0],[1,1],[0,\"a\"]]]]"),
     "coordinates[0][0][3][1] must be a number"),
])
def test_bad_geo_queries_say_what_is_wrong(args: tuple[Any, ...], detail: str) -> None:
    with pytest.raises(BadRequestData) as caught:
        parse_geo_query(*args, None, TERMS)
    assert detail in caught.value.detail, caught.value.detail


def test_bad_geoproperty_name() -> None:
    with pytest.raises(BadRequestData) as caught:
        parse_geo_query("within", "Point", "[1,2]", "loc ation", TERMS)
    assert "geoproperty" in caught.value.detail
