"""NGSI-v2 entities (normalized or keyValues) to NGSI-LD normalized payloads.

Partners and older FIWARE deployments (Orion v2, IoT Agents) publish Smart Data Models as
NGSI-v2; the hub speaks NGSI-LD only. The mapping follows what the SDM repositories
publish side by side (example-normalized.json -> example-normalized.jsonld):

- ``id``: kept when it is a URN or a URL with an authority (``scheme://``); anything else
  is a v2 local id, even when it contains a colon (``santander:daoiz_velarde_1_5:3``),
  and becomes ``urn:ngsi-ld:{type}:{id}``.
- ``@context``: the shipped SDM context of the type; the core context for other types.
- Relationships: v2 ``Relationship`` attributes and, by the SDM naming rule, attributes
  named ``ref<Type>`` (v2 often types them ``Text``). Target ids that are not URIs become
  ``urn:ngsi-ld:<Type>:<id>``, ``<Type>`` taken from the name (``refParkingSite`` ->
  ``ParkingSite``).
- Geometry: ``geo:json`` and GeoJSON values become GeoProperties; the simple v2 location
  types (``geo:point``, ``geo:line``, ``geo:polygon``, ``geo:box``, "lat, lon" strings)
  are turned into GeoJSON (lon, lat order).
- ``DateTime`` values become JSON-LD typed values ``{"@type": "DateTime", "@value": …}``.
- Metadata: ``timestamp`` / ``dateObserved`` / ``TimeInstant`` -> ``observedAt`` (UTC; a
  time without an offset is taken as UTC, as Orion stores it), ``unitCode`` ->
  ``unitCode``, any other metadata -> a sub-Property.
- ``null`` values are dropped: NGSI-LD has no null Property; absence means the same.
- v2 values are loosely typed (IoT Agents send numbers as text, the AirQualityObserved
  v2 example sends ``precipitation`` as Boolean ``false`` where its keyValues twin and the
  schema say ``0``). For known types a scalar is aligned with the JSON type the schema
  declares when the conversion is exact (bool/numeric text -> number, number -> text,
  integral float -> integer); anything else is left for the validator to refuse.
"""

from __future__ import annotations

import math
import re
from typing import Any

from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import CORE_CONTEXT_URL
from urbanhub.ngsild.entity import GEOMETRY_TYPES
from urbanhub.ngsild.timeutil import keep_utc_datetime
from urbanhub.sdm.models import MODELS, declared_types, known_types

__all__ = ["known_types", "v2_to_ngsi_ld"]

_KEPT_ID = re.compile(r"^(urn:|[A-Za-z][A-Za-z0-9+.\-]*://)", re.IGNORECASE)
_REF = re.compile(r"^ref([A-Z]\w*)$")
_OBSERVED_AT = ("timestamp", "dateObserved", "TimeInstant")
_DATE_TYPES = {"DateTime", "ISO8601"}
_GEO_TYPES = {"geo:json", "geo:point", "geo:line", "geo:polygon", "geo:box"}


def v2_to_ngsi_ld(payload: dict[str, Any], *, key_values: bool | None = None) -> dict[str, Any]:
    """Convert one NGSI-v2 entity; ``key_values=None`` detects the representation."""
    if not isinstance(payload, dict):
        raise BadRequestData("An NGSI-v2 entity must be a JSON object.")
    entity_id, entity_type = payload.get("id"), payload.get("type")
    if not isinstance(entity_id, str) or not entity_id:
        raise BadRequestData("An NGSI-v2 entity needs a string 'id'.")
    if not isinstance(entity_type, str) or not entity_type:
        raise BadRequestData("An NGSI-v2 entity needs a string 'type'.")
    attrs = {k: v for k, v in payload.items() if k not in ("id", "type")}
    if key_values is None:
        key_values = not attrs or not all(
            isinstance(v, dict) and "value" in v for v in attrs.values())
    declared = declared_types(entity_type) if entity_type in MODELS else {}
    out: dict[str, Any] = {"id": _entity_urn(entity_id, entity_type), "type": entity_type}
    for name, raw in attrs.items():
        if key_values:
            attribute = _attribute(name, raw, None, {}, declared.get(name))
        else:
            if not isinstance(raw, dict) or "value" not in raw:
                raise BadRequestData(f"Normalized NGSI-v2 attribute {name!r} has no 'value'.")
            metadata = raw.get("metadata", {})
            if not isinstance(metadata, dict):
                raise BadRequestData(f"metadata of {name!r} must be an object.")
            attribute = _attribute(name, raw["value"], raw.get("type"), metadata,
                                   declared.get(name))
        if attribute is not None:
            out[name] = attribute
    model = MODELS.get(entity_type)
    out["@context"] = model.context_url if model else CORE_CONTEXT_URL
    return out


def _entity_urn(entity_id: str, entity_type: str) -> str:
    return entity_id if _KEPT_ID.match(entity_id) else f"urn:ngsi-ld:{entity_type}:{entity_id}"


def _attribute(name: str, value: Any, v2_type: Any, metadata: dict[str, Any],
               wanted: frozenset[str] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    attribute: dict[str, Any]
    if v2_type == "Relationship" or _REF.match(name):
        attribute = {"type": "Relationship", "object": _targets(name, value)}
    elif v2_type in _GEO_TYPES or _is_geojson(value):
        attribute = {"type": "GeoProperty", "value": _geometry(name, value, v2_type)}
    else:
        value = _align(value, wanted)
        if v2_type in _DATE_TYPES and isinstance(value, str):
            value = {"@type": "DateTime", "@value": value}
        attribute = {"type": "Property", "value": value}
    for key, item in metadata.items():
        meta_value = item.get("value") if isinstance(item, dict) else item
        if key in _OBSERVED_AT and "observedAt" not in attribute:
            attribute["observedAt"] = keep_utc_datetime(meta_value, f"{name}.{key}")
        elif key == "unitCode":
            if not isinstance(meta_value, str) or not meta_value:
                raise BadRequestData(f"{name}.unitCode must be a non-empty string.")
            attribute["unitCode"] = meta_value
        elif key not in _OBSERVED_AT:
            sub = _attribute(key, meta_value, item.get("type") if isinstance(item, dict)
                             else None, {}, None)
            if sub is not None:
                attribute[key] = sub
    return attribute


def _targets(name: str, value: Any) -> str | list[str]:
    match = _REF.match(name)
    target_type = match.group(1) if match else name[:1].upper() + name[1:]
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item for item in items):
        raise BadRequestData(f"Relationship {name!r} must hold entity ids, got {value!r}.")
    urns = [_entity_urn(item, target_type) for item in items]
    return urns if isinstance(value, list) else urns[0]


def _is_geojson(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in GEOMETRY_TYPES and \
        "coordinates" in value


def _geometry(name: str, value: Any, v2_type: Any) -> dict[str, Any]:
    """GeoJSON for a v2 location; the simple v2 forms are "lat, lon" strings."""
    if v2_type in (None, "geo:json") or _is_geojson(value):
        if not _is_geojson(value):
            raise BadRequestData(f"{name!r} is typed geo:json but holds no GeoJSON geometry.")
        return {"type": value["type"], "coordinates": value["coordinates"]}
    points = [_lon_lat(name, item) for item in (value if isinstance(value, list) else [value])]
    if v2_type == "geo:point" and len(points) == 1:
        return {"type": "Point", "coordinates": points[0]}
    if v2_type == "geo:line" and len(points) >= 2:
        return {"type": "LineString", "coordinates": points}
    if v2_type == "geo:polygon" and len(points) >= 4:
        return {"type": "Polygon", "coordinates": [points]}
    if v2_type == "geo:box" and len(points) == 2:
        west, east = sorted(point[0] for point in points)
        south, north = sorted(point[1] for point in points)
        return {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north],
                                                    [west, north], [west, south]]]}
    raise BadRequestData(f"{name!r} has too few or too many points for {v2_type}.")


def _lon_lat(name: str, text: Any) -> list[float]:
    parts = text.split(",") if isinstance(text, str) else []
    try:
        lat, lon = (float(part) for part in parts)
    except ValueError as exc:
        raise BadRequestData(f"{name!r}: {text!r} is not a 'lat, lon' pair.") from exc
    return [lon, lat]


def _align(value: Any, wanted: frozenset[str] | None) -> Any:
    """Give a scalar the JSON type the schema wants, when that loses nothing."""
    if not wanted or isinstance(value, dict | list):
        return value
    numeric = {"number", "integer"} & wanted
    if isinstance(value, bool):
        return int(value) if numeric and "boolean" not in wanted else value
    if isinstance(value, str) and numeric and "string" not in wanted:
        try:
            number = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
        return number if not isinstance(number, float) or math.isfinite(number) else value
    if isinstance(value, int | float) and "string" in wanted and not numeric:
        return str(value)
    if isinstance(value, float) and wanted == {"integer"} and value.is_integer():
        return int(value)
    return value
