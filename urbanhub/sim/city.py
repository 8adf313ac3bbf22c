"""The demo city "Riverton": districts that tile the city and sensors placed inside them.

District shapes and figures are fixed so that a rerun (with any seed) finds the same city;
the seed only decides where sensors stand and, in ``patterns``, what they measure.
Districts differ on purpose (population, traffic, land use) so that indicators computed
per district show a spread.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta, timezone
from functools import cached_property
from typing import Any

from shapely.geometry import Point, Polygon

from urbanhub.ngsild.context import CORE_CONTEXT_URL

CITY_NAME = "Riverton"
CITY_SLUG = "riverton"
#: Local time of the city (fixed offset: the patterns need no time-zone database).
CITY_TZ = timezone(timedelta(hours=1), "UTC+01:00")

_SDM = "https://raw.githubusercontent.com/smart-data-models/dataModel.{}/master/context.jsonld"
DISTRICT_TYPE = "District"
DISTRICT_CONTEXT = CORE_CONTEXT_URL


@dataclass(frozen=True)
class AttributeSpec:
    """One measured attribute: the device's short key, the SDM name and its unit."""

    object_id: str
    name: str
    unit_code: str | None = None
    spikeable: bool = False  # a spike fault can hit it (continuous, unbounded measurements)


@dataclass(frozen=True)
class SensorKind:
    key: str  # short code used in device ids
    entity_type: str
    context: str
    attributes: tuple[AttributeSpec, ...]


AIR_QUALITY = SensorKind("aq", "AirQualityObserved", _SDM.format("Environment"), (
    AttributeSpec("p25", "pm25", "GQ", spikeable=True),
    AttributeSpec("p10", "pm10", "GQ", spikeable=True),
    AttributeSpec("no2", "no2", "GQ", spikeable=True),
    AttributeSpec("o3", "o3", "GQ"),
    AttributeSpec("t", "temperature", "CEL"),
))
NOISE = SensorKind("noise", "NoiseLevelObserved", _SDM.format("Environment"), (
    AttributeSpec("laeq", "LAeq", "2N", spikeable=True),
    AttributeSpec("lamax", "LAmax", "2N", spikeable=True),
))
TRAFFIC = SensorKind("traffic", "TrafficFlowObserved", _SDM.format("Transportation"), (
    AttributeSpec("n", "intensity", spikeable=True),  # vehicles per hour
    AttributeSpec("v", "averageVehicleSpeed", "KMH"),
    AttributeSpec("occ", "occupancy", "C62"),
))
PARKING = SensorKind("parking", "ParkingSpot", _SDM.format("Parking"), (
    AttributeSpec("s", "status"),
))
WASTE = SensorKind("waste", "WasteContainer", _SDM.format("WasteManagement"), (
    AttributeSpec("f", "fillingLevel", "C62"),
))
STREETLIGHT = SensorKind("light", "Streetlight", _SDM.format("Streetlighting"), (
    AttributeSpec("p", "powerState"),
    AttributeSpec("lux", "illuminanceLevel", "C62"),
    AttributeSpec("w", "powerConsumption", "WTT"),
))
KINDS: tuple[SensorKind, ...] = (AIR_QUALITY, NOISE, TRAFFIC, PARKING, WASTE, STREETLIGHT)


@dataclass(frozen=True)
class District:
    """A district polygon with the figures that make districts differ."""

    index: int
    slug: str
    name: str
    population: int
    land_use: str  # centre, industrial, residential, mixed, suburban
    traffic: float  # how busy its roads are relative to the centre (1.0)
    ring: tuple[tuple[float, float], ...]  # closed lon/lat ring

    @property
    def entity_id(self) -> str:
        return f"urn:ngsi-ld:{DISTRICT_TYPE}:{CITY_SLUG}-{self.slug}"

    @cached_property
    def polygon(self) -> Polygon:
        return Polygon(self.ring)

    @property
    def collection_days(self) -> tuple[int, int]:
        """Weekdays (Monday = 0) on which waste is collected, staggered across districts."""
        first = self.index % 4
        return first, first + 3

    def entity(self) -> dict[str, Any]:
        """The district as an NGSI-LD entity (normalized form, with its @context)."""
        return {
            "id": self.entity_id, "type": DISTRICT_TYPE,
            "name": {"type": "Property", "value": self.name},
            "population": {"type": "Property", "value": self.population, "unitCode": "IE"},
            "landUse": {"type": "Property", "value": self.land_use},
            "location": {"type": "GeoProperty",
                         "value": {"type": "Polygon", "coordinates": [list(map(list, self.ring))]}},
            "@context": DISTRICT_CONTEXT,
        }


@dataclass(frozen=True)
class Sensor:
    """A device in a district; ``level`` scales traffic-driven values at its site."""

    device_id: str
    kind: SensorKind
    district: District
    lon: float
    lat: float
    level: float

    @property
    def entity_id(self) -> str:
        return f"urn:ngsi-ld:{self.kind.entity_type}:{self.device_id}"


@dataclass(frozen=True)
class City:
    seed: int
    districts: tuple[District, ...]
    sensors: tuple[Sensor, ...]
    latitude: float
    longitude: float


# Grid of 5 x 3 corner points (4 x 2 cells); inner points are nudged so the districts do not
# look like a chessboard, and because neighbours share corners they still tile the city.
_WEST, _SOUTH, _STEP = 5.08, 52.05, 0.04
_NUDGE = {(1, 1): (0.006, -0.004), (2, 1): (-0.005, 0.006), (3, 1): (0.004, 0.003),
          (1, 0): (0.007, 0.0), (2, 0): (-0.006, 0.0), (3, 0): (0.003, 0.0),
          (1, 2): (-0.004, 0.0), (2, 2): (0.005, 0.0), (3, 2): (-0.007, 0.0),
          (0, 1): (0.0, 0.005), (4, 1): (0.0, -0.006)}
_DISTRICTS = (  # slug, name, population, land use, traffic; row-major from the south-west
    ("harbour", "Harbour", 21_000, "industrial", 1.25),
    ("old-town", "Old Town", 38_500, "centre", 1.0),
    ("riverside", "Riverside", 54_200, "residential", 0.6),
    ("eastfield", "Eastfield", 96_300, "residential", 0.8),
    ("millbrook", "Millbrook", 14_700, "suburban", 0.35),
    ("university-quarter", "University Quarter", 31_800, "mixed", 0.9),
    ("northgate", "Northgate", 72_400, "residential", 0.7),
    ("southmoor", "Southmoor", 63_100, "mixed", 0.85),
)


def _corner(col: int, row: int) -> tuple[float, float]:
    dlon, dlat = _NUDGE.get((col, row), (0.0, 0.0))
    return round(_WEST + col * _STEP + dlon, 6), round(_SOUTH + row * _STEP + dlat, 6)


def districts() -> tuple[District, ...]:
    """The eight districts; together they cover the city rectangle without overlap."""
    found = []
    for index, (slug, name, population, land_use, traffic) in enumerate(_DISTRICTS):
        row, col = divmod(index, 4)
        ring = (_corner(col, row), _corner(col + 1, row), _corner(col + 1, row + 1),
                _corner(col, row + 1), _corner(col, row))
        found.append(District(index, slug, name, population, land_use, traffic, ring))
    return tuple(found)


def build_city(seed: int = 42, sensors: int = 48) -> City:
    """The city with ``sensors`` devices, kinds in turn and spread over every district."""
    if sensors < len(KINDS):
        raise ValueError(f"the demo city needs at least {len(KINDS)} sensors, one per type")
    parts = districts()
    placed: list[Sensor] = []
    for number in range(sensors):
        kind = KINDS[number % len(KINDS)]
        serial = number // len(KINDS)
        district = parts[serial % len(parts)]
        device_id = f"{CITY_SLUG}-{kind.key}-{serial + 1:03d}"
        rng = random.Random(f"{seed}:{device_id}")
        lon, lat = _point_inside(district.polygon, rng)
        level = round(district.traffic * rng.uniform(0.75, 1.25), 3)
        placed.append(Sensor(device_id, kind, district, lon, lat, level))
    return City(seed, parts, tuple(placed), latitude=_SOUTH + _STEP, longitude=_WEST + 2 * _STEP)


def _point_inside(polygon: Polygon, rng: random.Random) -> tuple[float, float]:
    min_lon, min_lat, max_lon, max_lat = polygon.bounds
    while True:
        lon = round(rng.uniform(min_lon, max_lon), 6)
        lat = round(rng.uniform(min_lat, max_lat), 6)
        if polygon.contains(Point(lon, lat)):
            return lon, lat
