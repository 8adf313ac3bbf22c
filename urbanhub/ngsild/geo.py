"""NGSI-LD geo-queries (ETSI GS CIM 009 v1.8 §4.10): parse, validate, evaluate with shapely.

The shapely predicate is the reference on every backend; SQL only prefilters (the
``location`` bounding-box columns everywhere, PostGIS relations on PostgreSQL), and the
predicate re-checks each candidate, so both backends return the same entities.

Decided here where the standard is silent:

- The entity side is the default instance (no datasetId) of the GeoProperty, the one the
  ``location`` index columns hold. Entities without it never match, not even ``disjoint``:
  a relation with nothing cannot be evaluated, and "has no location" is not "far away".
- Relations read "entity geometry <georel> query geometry": ``within`` finds entities
  inside the query polygon, ``contains`` entities whose geometry contains the query one.
- Coordinates are WGS84 longitude/latitude; distances are metres on a sphere of the mean
  Earth radius (the sphere PostGIS uses for geography with ``use_spheroid = false``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import numpy as np
import shapely
from shapely.errors import GEOSException
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import NGSI_LD, TermMap
from urbanhub.ngsild.entity import DEFAULT_DATASET, GEOMETRY_TYPES, Entity, check_name

EARTH_RADIUS_M = 6_371_008.8
LOCATION = NGSI_LD + "location"
RELATIONS = ("near", "within", "contains", "intersects", "disjoint", "equals", "overlaps")
_DISTANCE = re.compile(r"(maxDistance|minDistance)==(.*)")
#: Relative widening of the distance prefilters, far above the projection error below.
_SLACK = 0.01

Box = tuple[float, float, float, float]


class GeoPredicate:
    """A compiled geo-query; the fields let a store push the relation down to SQL."""

    __slots__ = ("_test", "distance", "geoproperty", "min_distance", "reference", "relation")

    def __init__(self, relation: str, reference: dict[str, Any], geoproperty: str,
                 distance: float | None, min_distance: bool,
                 test: Callable[[Entity], bool]) -> None:
        self.relation = relation
        self.reference = reference
        self.geoproperty = geoproperty
        self.distance = distance
        self.min_distance = min_distance
        self._test = test

    def __call__(self, entity: Entity) -> bool:
        return self._test(entity)


@dataclass
class GeoQuery:
    predicate: GeoPredicate
    bbox: Box | None


def parse_geo_query(georel: str | None, geometry: str | None, coordinates: str | None,
                    geoproperty: str | None, terms: TermMap) -> GeoQuery | None:
    """Validate the four geo-query parameters; None when no geo-query was asked for."""
    given = {"georel": georel, "geometry": geometry, "coordinates": coordinates}
    if all(value is None for value in given.values()):
        return None
    missing = [name for name, value in given.items() if value is None or not value.strip()]
    if missing:
        raise BadRequestData(
            f"A geo-query needs georel, geometry and coordinates together; missing or empty: "
            f"{', '.join(missing)}.")
    assert georel is not None and geometry is not None and coordinates is not None
    relation, distance, min_distance = _parse_georel(georel.strip())
    geometry = geometry.strip()
    if geometry not in GEOMETRY_TYPES:
        raise BadRequestData(f"geometry {geometry!r} is not supported; use one of "
                             f"{', '.join(sorted(GEOMETRY_TYPES))}.")
    if relation == "near" and geometry != "Point":
        raise BadRequestData(f"georel near measures from a Point; geometry is {geometry}.")
    reference = {"type": geometry, "coordinates": _parse_coordinates(coordinates)}
    _check_structure(geometry, reference["coordinates"])
    ref_shape = shape(reference)
    if not ref_shape.is_valid:
        raise BadRequestData(f"The {geometry} in coordinates is not valid: "
                             f"{explain_validity(ref_shape)}.")
    attr = terms.expand(check_name(geoproperty.strip(), "geoproperty")) if geoproperty else \
        LOCATION
    test = _compile(relation, ref_shape, attr, distance, min_distance)
    predicate = GeoPredicate(relation, reference, attr, distance, min_distance, test)
    bbox = _prefilter_box(relation, ref_shape, distance, min_distance) if attr == LOCATION \
        else None
    return GeoQuery(predicate, bbox)


def _parse_georel(text: str) -> tuple[str, float | None, bool]:
    relation, *modifiers = text.split(";")
    if relation not in RELATIONS:
        raise BadRequestData(f"georel {relation!r} is unknown; use one of "
                             f"{', '.join(RELATIONS)} (near with ;maxDistance== or "
                             f";minDistance==).")
    if relation != "near":
        if modifiers:
            raise BadRequestData(f"georel {relation} takes no modifiers, got "
                                 f"{';'.join(modifiers)!r}.")
        return relation, None, False
    found = _DISTANCE.fullmatch(modifiers[0]) if len(modifiers) == 1 else None
    if found is None:
        raise BadRequestData("georel near needs exactly one of maxDistance==<metres> or "
                             f"minDistance==<metres> (e.g. near;maxDistance==500), got {text!r}.")
    try:
        metres = float(found.group(2))
    except ValueError:
        metres = math.nan
    if not math.isfinite(metres) or metres < 0:
        raise BadRequestData(f"{found.group(1)} must be a non-negative number of metres, got "
                             f"{found.group(2)!r}.")
    return relation, metres, found.group(1) == "minDistance"


def _parse_coordinates(text: str) -> Any:
    """JSON coordinates, also when they arrive still percent-encoded or as a JSON string."""
    for candidate in dict.fromkeys((text.strip(), unquote(text).strip())):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, list):
            return value
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise BadRequestData(f"coordinates must be a JSON array such as [8.68,49.41], got {shown!r}.")


def _check_structure(geometry: str, coordinates: Any) -> None:
    """Name the first thing wrong in the nesting, the numbers or the rings."""
    if geometry == "Point":
        _position(coordinates, "")
    elif geometry == "MultiPoint":
        _positions(coordinates, "", 1, "a MultiPoint needs a list of positions")
    elif geometry == "LineString":
        _positions(coordinates, "", 2, "a LineString needs at least two positions")
    elif geometry == "MultiLineString":
        for index, line in enumerate(_nonempty(coordinates, "", "a list of LineStrings")):
            _positions(line, f"[{index}]", 2, "a LineString needs at least two positions")
    elif geometry == "Polygon":
        _polygon(coordinates, "")
    else:
        for index, polygon in enumerate(_nonempty(coordinates, "", "a list of Polygons")):
            _polygon(polygon, f"[{index}]")


def _nonempty(node: Any, where: str, what: str) -> list[Any]:
    if not isinstance(node, list) or not node:
        raise BadRequestData(f"coordinates{where} must be {what}, got {_short(node)}.")
    return node


def _polygon(node: Any, where: str) -> None:
    for index, ring in enumerate(_nonempty(node, where, "a list of linear rings")):
        at = f"{where}[{index}]"
        positions = _positions(ring, at, 4, "a linear ring needs at least four positions")
        if positions[0] != positions[-1]:
            raise BadRequestData(f"The ring coordinates{at} is not closed: its first position "
                                 f"{list(positions[0])} differs from its last "
                                 f"{list(positions[-1])}.")


def _positions(node: Any, where: str, minimum: int, why: str) -> list[tuple[float, float]]:
    if not isinstance(node, list) or not node or not isinstance(node[0], list):
        raise BadRequestData(f"coordinates{where} must be a list of positions "
                             f"[[lon, lat], …], got {_short(node)}.")
    positions = [_position(item, f"{where}[{index}]") for index, item in enumerate(node)]
    if len(positions) < minimum:
        raise BadRequestData(f"coordinates{where}: {why}, got {len(positions)}.")
    return positions


def _position(node: Any, where: str) -> tuple[float, float]:
    if not isinstance(node, list) or len(node) not in (2, 3):
        raise BadRequestData(f"coordinates{where} must be a position [longitude, latitude], "
                             f"got {_short(node)}.")
    for index, number in enumerate(node):
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(
                number):
            raise BadRequestData(f"coordinates{where}[{index}] must be a number, got "
                                 f"{_short(number)}.")
    lon, lat = float(node[0]), float(node[1])
    if not -180 <= lon <= 180:
        raise BadRequestData(f"coordinates{where}: longitude {lon} is outside -180..180.")
    if not -90 <= lat <= 90:
        raise BadRequestData(f"coordinates{where}: latitude {lat} is outside -90..90.")
    return lon, lat


def _short(node: Any) -> str:
    text = json.dumps(node)
    return text if len(text) <= 40 else text[:37] + "..."


# --- evaluation ---------------------------------------------------------------------------

def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two WGS84 positions."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlam = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def distance_m(lon: float, lat: float, geometry: BaseGeometry) -> float:
    """Metres from a point to the nearest part of a geometry (0 inside a polygon).

    Without pyproj we project the geometry azimuthal-equidistantly on the sphere around the
    point: distances from the centre stay exact for every vertex, and only the interior of
    each edge is approximated (a great-circle edge becomes a straight segment). For a city,
    with edges of a few kilometres within tens of kilometres of the centre, that moves the
    result by millimetres, far below GPS accuracy; the SQL prefilters keep a 1 % margin.
    """
    if geometry.geom_type == "Point":
        return haversine_m(lon, lat, geometry.x, geometry.y)
    projected = shapely.transform(geometry, _azimuthal_equidistant(lon, lat))
    return float(shapely.distance(shapely.Point(0.0, 0.0), projected))


def _azimuthal_equidistant(lon0: float, lat0: float) -> Callable[[Any], Any]:
    lam0, phi0 = math.radians(lon0), math.radians(lat0)
    sin0, cos0 = math.sin(phi0), math.cos(phi0)

    def project(coords: Any) -> Any:
        lam = np.radians(coords[:, 0]) - lam0
        phi = np.radians(coords[:, 1])
        # Haversine form of the central angle: accurate for short distances, unlike arccos.
        h = np.sin((phi - phi0) / 2) ** 2 + cos0 * np.cos(phi) * np.sin(lam / 2) ** 2
        c = 2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
        with np.errstate(invalid="ignore", divide="ignore"):
            k = np.where(c > 0, c / np.sin(c), 1.0)
        x = EARTH_RADIUS_M * k * np.cos(phi) * np.sin(lam)
        y = EARTH_RADIUS_M * k * (cos0 * np.sin(phi) - sin0 * np.cos(phi) * np.cos(lam))
        return np.column_stack((x, y))
    return project


def entity_geometry(entity: Entity, attr: str) -> BaseGeometry | None:
    """The shape of the default instance of a GeoProperty, if the entity has one."""
    instance = (entity["attrs"].get(attr) or {}).get(DEFAULT_DATASET)
    if not instance or instance.get("type") != "GeoProperty":
        return None
    value = instance.get("value")
    if not isinstance(value, dict):
        return None
    try:
        return shape(value)
    except (GEOSException, ValueError, TypeError, IndexError, AttributeError):
        return None


def _compile(relation: str, ref: BaseGeometry, attr: str, distance: float | None,
             min_distance: bool) -> Callable[[Entity], bool]:
    shapely.prepare(ref)  # the query geometry is tested against every candidate
    check: Callable[[BaseGeometry], bool]
    if relation == "near":
        assert distance is not None and ref.geom_type == "Point"
        lon, lat = ref.x, ref.y

        def near(geometry: BaseGeometry) -> bool:
            metres = distance_m(lon, lat, geometry)
            return metres >= distance if min_distance else metres <= distance
        check = near
    else:
        # Written with the prepared query geometry first: "g within ref" is "ref contains g".
        relate: dict[str, Callable[[BaseGeometry], bool]] = {
            "within": lambda g: bool(shapely.contains(ref, g)),
            "contains": lambda g: bool(shapely.within(ref, g)),
            "intersects": lambda g: bool(shapely.intersects(ref, g)),
            "disjoint": lambda g: bool(shapely.disjoint(ref, g)),
            "equals": lambda g: bool(shapely.equals(g, ref)),
            "overlaps": lambda g: bool(shapely.overlaps(ref, g)),
        }
        check = relate[relation]

    def test(entity: Entity) -> bool:
        geometry = entity_geometry(entity, attr)
        if geometry is None or geometry.is_empty:
            return False
        try:
            return check(geometry)
        except GEOSException:  # an invalid stored geometry matches nothing
            return False
    return test


def _prefilter_box(relation: str, ref: BaseGeometry, distance: float | None,
                   min_distance: bool) -> Box | None:
    """A box every matching entity's location box overlaps; None if no such box helps."""
    if relation == "disjoint" or min_distance:
        return None  # matches lie outside any box around the query geometry
    min_lon, min_lat, max_lon, max_lat = ref.bounds
    if relation != "near":
        return min_lon, min_lat, max_lon, max_lat
    assert distance is not None
    angle = distance * (1 + _SLACK) / EARTH_RADIUS_M + 1e-9
    lat = math.radians(min_lat)
    low, high = math.degrees(lat - angle), math.degrees(lat + angle)
    if low <= -90 or high >= 90 or math.cos(lat) <= math.sin(angle):
        return -180.0, max(low, -90.0), 180.0, min(high, 90.0)
    # The widest longitude a circle of this radius reaches (the tangent meridian).
    spread = math.degrees(math.asin(math.sin(angle) / math.cos(lat)))
    if min_lon - spread < -180 or max_lon + spread > 180:
        return -180.0, low, 180.0, high
    return min_lon - spread, low, max_lon + spread, high
