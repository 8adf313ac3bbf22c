"""Query parameters shared by the NGSI-LD entity and temporal routes.

The routes read the raw query string (NGSI-LD parameters are comma lists, options sets and
a query language); these helpers parse them once, with the same errors everywhere, and
document them in the OpenAPI schema.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request

from urbanhub.hub.query import EntityQuery
from urbanhub.hub.runtime import Hub
from urbanhub.model.errors import BadRequestData, TooManyResults
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import check_entity_id, check_name
from urbanhub.ngsild.geo import parse_geo_query
from urbanhub.ngsild.q import parse_q, parse_scope_q

ANY_JSON = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}},
    "application/ld+json": {"schema": {"type": "object"}}}}}
ANY_JSON_LIST = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "array"}},
    "application/ld+json": {"schema": {"type": "array"}}}}}

_PARAMETERS: dict[str, tuple[str, str]] = {
    "type": ("string", "Entity types, comma-separated (terms of the @context)."),
    "id": ("string", "Entity ids, comma-separated."),
    "idPattern": ("string", "Regular expression the entity id must match."),
    "attrs": ("string", "Only entities with one of these attributes; project to them."),
    "pick": ("string", "Attributes to keep in the response."),
    "omit": ("string", "Attributes to drop from the response."),
    "q": ("string", "NGSI-LD query language filter, e.g. pm25>25;status==\"on\"."),
    "scopeQ": ("string", "Scope query, e.g. /city/north/#."),
    "georel": ("string", "near;maxDistance==m, within, contains, intersects, …"),
    "geometry": ("string", "Point, LineString, Polygon, Multi…"),
    "coordinates": ("string", "GeoJSON coordinates of the query geometry."),
    "geoproperty": ("string", "GeoProperty the geo-query applies to (default location)."),
    "limit": ("integer", "Page size."),
    "offset": ("integer", "Entities to skip."),
    "count": ("boolean", "Return the total in the NGSILD-Results-Count header."),
    "options": ("string", "keyValues, concise, sysAttrs, noOverwrite, temporalValues, …"),
    "format": ("string", "Representation, e.g. normalized, concise, keyValues."),
    "lang": ("string", "Preferred language of LanguageProperty values."),
    "details": ("boolean", "Return detailed type or attribute descriptions."),
    "datasetId": ("string", "The attribute instance to act on."),
    "deleteAll": ("boolean", "Delete every instance of the attribute."),
    "timerel": ("string", "before, after or between."),
    "timeAt": ("string", "ISO 8601 date-time the time relation refers to."),
    "endTimeAt": ("string", "End of the interval for timerel=between."),
    "timeproperty": ("string", "observedAt (default) or modifiedAt."),
    "lastN": ("integer", "Only the newest N instances of each attribute."),
    "aggrMethods": ("string", "totalCount, distinctCount, sum, sumsq, avg, min, max, stddev."),
    "aggrPeriodDuration": ("string", "ISO 8601 duration of each aggregation period."),
    "source": ("string", "Only dead letters from this adapter (mqtt, http, file)."),
}
MAX_INT = 2**31 - 1  # what every backend takes in LIMIT/OFFSET

#: Parameters of an entity query (GET /entities and GET /temporal/entities).
ENTITY_QUERY = ("type", "id", "idPattern", "attrs", "q", "scopeQ", "georel", "geometry",
                "coordinates", "geoproperty", "limit", "offset", "count", "options", "format")


def documented(*names: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI ``openapi_extra`` for parameters the routes read from the raw query string."""
    extra: dict[str, Any] = dict(body or {})
    extra["parameters"] = [
        {"name": name, "in": "query", "required": False, "description": _PARAMETERS[name][1],
         "schema": {"type": _PARAMETERS[name][0]} | (
             {"minimum": 0, "maximum": MAX_INT} if _PARAMETERS[name][0] == "integer" else {})}
        for name in names]
    return extra


def split_param(value: str | None, name: str) -> list[str] | None:
    """A comma-separated parameter as a list; None when absent, 400 when empty."""
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise BadRequestData(f"{name} is empty.")
    return items


def int_param(raw: str | None, name: str, default: int) -> int:
    """A whole number from 0 to MAX_INT: larger ones overflow the databases' LIMIT/OFFSET."""
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequestData(f"{name} must be a whole number, got {raw!r}.") from exc
    if value < 0:
        raise BadRequestData(f"{name} must not be negative.")
    if value > MAX_INT:
        raise BadRequestData(f"{name} must be at most {MAX_INT}.")
    return value


def flag_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


def limit_offset(request: Request, hub: Hub) -> tuple[int, int]:
    """limit and offset, checked against the configured maximum page size."""
    params = request.query_params
    limit = int_param(params.get("limit"), "limit", hub.settings.default_page_size)
    offset = int_param(params.get("offset"), "offset", 0)
    if limit > hub.settings.max_page_size:
        raise TooManyResults(f"limit may be at most {hub.settings.max_page_size}.")
    return limit, offset


def page(request: Request, hub: Hub) -> tuple[int, int, bool]:
    """limit, offset and count (NGSI-LD queries: limit=0 only asks for the count)."""
    params = request.query_params
    limit, offset = limit_offset(request, hub)
    # options=count is how some clients (and NGSI-LD before v1.3) ask for the count.
    count = flag_param(request, "count") or "count" in (
        split_param(params.get("options"), "options") or [])
    if limit == 0 and not count:
        raise BadRequestData("limit=0 is only allowed together with count=true.")
    return limit, offset, count


def entity_query(request: Request, hub: Hub, terms: TermMap,
                 attrs: list[str] | None) -> EntityQuery:
    """The entity selection of a query request (type, id, idPattern, attrs, q, scopeQ, geo).

    ``attrs`` are expanded attribute names the entities must have one of.
    """
    params = request.query_params
    limit, offset, count = page(request, hub)
    types = split_param(params.get("type"), "type")
    ids = split_param(params.get("id"), "id")
    id_pattern = params.get("idPattern")
    if id_pattern is not None:
        try:
            re.compile(id_pattern)
        except re.error as exc:
            raise BadRequestData(f"idPattern is not a valid regular expression: {exc}") from exc
    query = EntityQuery(
        types=[terms.expand(check_name(t, "entity type")) for t in types] if types else None,
        ids=[check_entity_id(i) for i in ids] if ids else None, id_pattern=id_pattern,
        attrs=attrs or None, limit=limit, offset=offset, count=count)
    if "q" in params:
        query.predicates.append(parse_q(params["q"], terms))
    if "scopeQ" in params:
        query.predicates.append(parse_scope_q(params["scopeQ"]))
    geo = parse_geo_query(params.get("georel"), params.get("geometry"),
                          params.get("coordinates"), params.get("geoproperty"), terms)
    if geo is not None:
        query.predicates.append(geo.predicate)
        query.bbox = geo.bbox
    if not (types or ids or id_pattern or attrs or query.predicates):
        raise BadRequestData("Give at least one of type, id, idPattern, attrs, q, scopeQ or a "
                             "geo-query.")
    return query
