"""NGSI-LD context information API (ETSI GS CIM 009): entities, batch, types, attributes."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from urbanhub.api.jsonld import (
    GEO_JSON,
    hub_of,
    link_context,
    negotiate,
    ngsi_response,
    read_body,
    terms_for,
)
from urbanhub.api.params import (
    ANY_JSON,
    ANY_JSON_LIST,
    ENTITY_QUERY,
    documented,
    entity_query,
    flag_param,
    page,
    split_param,
)
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.hub.entities import UpdateResult
from urbanhub.hub.query import EntityQuery
from urbanhub.model.caller import Caller
from urbanhub.model.errors import (
    BadRequestData,
    InvalidRequest,
    ResourceNotFound,
)
from urbanhub.ngsild.context import CORE_CONTEXT_URL, TermMap
from urbanhub.ngsild.entity import (
    Entity,
    check_entity_id,
    check_name,
    geometry_of,
    parse_attributes,
    parse_entity,
    parse_instance,
    render_entity,
)
from urbanhub.ngsild.geo import LOCATION, parse_geo_query
from urbanhub.ngsild.q import parse_q, parse_scope_q

router = APIRouter(prefix="/ngsi-ld/v1", tags=["NGSI-LD"],
                   responses=problem_responses(400, 403, 404, 406, 409, 413, 415, 422, 503))

def _geo_documented(*names: str) -> dict[str, Any]:
    """``documented`` plus geometryProperty, which only the GeoJSON-capable routes read."""
    extra = documented(*names)
    extra["parameters"].append({
        "name": "geometryProperty", "in": "query", "required": False, "schema": {"type": "string"},
        "description": "GeoProperty that is the Feature geometry (application/geo+json)."})
    return extra


def _options(request: Request) -> tuple[str, bool]:
    """The representation (normalized, concise, keyValues) and whether sysAttrs are wanted."""
    options = set(split_param(request.query_params.get("options"), "options") or [])
    unknown = options - {"keyValues", "concise", "normalized", "sysAttrs", "noOverwrite",
                         "replace", "update", "count"}
    if unknown:
        raise BadRequestData(f"Unknown options: {', '.join(sorted(unknown))}.")
    form = request.query_params.get("format")
    if form is None:
        form = "keyValues" if "keyValues" in options else (
            "concise" if "concise" in options else "normalized")
    if form not in ("normalized", "concise", "keyValues", "simplified"):
        raise BadRequestData(f"Unknown format {form!r}.")
    return ("keyValues" if form == "simplified" else form), "sysAttrs" in options


def _projection(request: Request, terms: TermMap) -> tuple[list[str] | None, set[str] | None]:
    """Attribute names the response keeps (attrs/pick) and drops (omit), expanded."""
    params = request.query_params
    keep = split_param(params.get("pick"), "pick") or split_param(params.get("attrs"), "attrs")
    omit = split_param(params.get("omit"), "omit")
    if params.get("pick") and params.get("omit"):
        raise BadRequestData("pick and omit cannot be used together.")
    keep_iris = [terms.expand(check_name(a)) for a in keep if a not in ("id", "type")] \
        if keep else None
    omit_iris = {terms.expand(check_name(a)) for a in omit} if omit else None
    return keep_iris, omit_iris


def _render(entity: Entity, request: Request, terms: TermMap, keep: list[str] | None = None,
            omit: set[str] | None = None) -> dict[str, Any]:
    form, sys_attrs = _options(request)
    names = keep
    if omit:
        names = [n for n in entity["attrs"] if n not in omit and (keep is None or n in keep)]
    return render_entity(entity, terms, form=form, sys_attrs=sys_attrs, attrs=names,
                         lang=request.query_params.get("lang"))


def _update_result(result: UpdateResult, terms: TermMap) -> Response | None:
    if not result.not_updated:
        return None
    body = {"updated": [terms.compact(n) for n in result.updated],
            "notUpdated": [{"attributeName": terms.compact(n), "reason": why}
                           for n, why in result.not_updated]}
    return Response(orjson.dumps(body), status_code=207, media_type="application/json")


# --- entities -------------------------------------------------------------------------

@router.post("/entities", status_code=201, openapi_extra=ANY_JSON)
@router.post("/entities/", status_code=201, include_in_schema=False)  # as ngsildclient posts
async def create_entity(request: Request, caller: CallerDep) -> Response:
    payload, context = await read_body(request)
    terms = await run_in_threadpool(terms_for, request, context)
    entity = parse_entity(payload, terms)
    hub = hub_of(request)
    await run_in_threadpool(hub.entities.create, caller, entity)
    return Response(status_code=201, headers={"Location": f"/ngsi-ld/v1/entities/{entity['id']}"})


@router.get("/entities", openapi_extra=_geo_documented(*ENTITY_QUERY, "pick", "omit", "lang"))
def query_entities(request: Request, caller: CallerDep) -> Response:
    media = negotiate(request, geo=True)
    context = link_context(request)
    terms = terms_for(request, context)
    hub = hub_of(request)
    keep, omit = _projection(request, terms)
    attrs = [terms.expand(check_name(a))
             for a in split_param(request.query_params.get("attrs"), "attrs") or []]
    query = entity_query(request, hub, terms, attrs)
    limit = query.limit
    query.limit += 1  # one more than the page tells whether a next page exists
    result = hub.queries.query(caller, query)
    entities, more = result.entities[:limit], len(result.entities) > limit
    headers = {"NGSILD-Results-Count": str(result.total)} if result.total is not None else {}
    links = _page_links(request, query.offset, limit, more)
    if media == GEO_JSON:
        collection = {"type": "FeatureCollection", "features": [
            _feature(e, request, terms, keep, omit) for e in entities]}
        return _geo_response(collection, context, {**headers, **links})
    body = [_render(e, request, terms, keep, omit) for e in entities]
    return ngsi_response(request, body, context, headers={**headers, **links})


def _page_links(request: Request, offset: int, limit: int, more: bool) -> dict[str, str]:
    """RFC 8288 Link header with rel="prev"/"next" (CIM 009 §6.3.10 pagination)."""
    links = []
    if offset > 0 and limit > 0:
        prev = request.url.include_query_params(offset=max(offset - limit, 0), limit=limit)
        links.append(f'<{prev.path}?{prev.query}>; rel="prev"; type="application/ld+json"')
    if more and limit > 0:
        nxt = request.url.include_query_params(offset=offset + limit, limit=limit)
        links.append(f'<{nxt.path}?{nxt.query}>; rel="next"; type="application/ld+json"')
    return {"Link": ", ".join(links)} if links else {}


def _feature(entity: Entity, request: Request, terms: TermMap, keep: list[str] | None,
             omit: set[str] | None) -> dict[str, Any]:
    """GeoJSON Feature representation of an entity (CIM 009 §4.5.16)."""
    name = request.query_params.get("geometryProperty")
    geo_attr = terms.expand(check_name(name)) if name else LOCATION
    properties = _render(entity, request, terms, keep, omit)
    return {"id": properties.pop("id"), "type": "Feature",
            "geometry": geometry_of(entity, geo_attr), "properties": properties}


def _geo_response(data: dict[str, Any], context: Any, headers: dict[str, str]) -> Response:
    """GeoJSON has no Link-header convention for JSON-LD: the @context goes in the body."""
    data["@context"] = context if context is not None else CORE_CONTEXT_URL
    return Response(orjson.dumps(data), media_type=GEO_JSON, headers=headers)


@router.get("/entities/{entity_id:path}/attrs/{attr}", include_in_schema=False)
async def unsupported_get_attr(entity_id: str, attr: str) -> Response:
    raise InvalidRequest("GET on a single attribute is not part of NGSI-LD; use "
                         "GET /entities/{id}?pick=attr.")


@router.post("/entities/{entity_id:path}/attrs", status_code=204,
             openapi_extra=documented("options", body=ANY_JSON))
async def append_attributes(entity_id: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    payload, context = await read_body(request)
    terms = await run_in_threadpool(terms_for, request, context)
    fragment = _fragment(payload, terms)
    options = split_param(request.query_params.get("options"), "options") or []
    no_overwrite = "noOverwrite" in options
    result = await run_in_threadpool(hub_of(request).entities.append, caller,
                                     entity_id, fragment,
                                             no_overwrite=no_overwrite)
    return _update_result(result, terms) or Response(status_code=204)


@router.patch("/entities/{entity_id:path}/attrs", status_code=204, openapi_extra=ANY_JSON)
async def update_attributes(entity_id: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    payload, context = await read_body(request)
    terms = await run_in_threadpool(terms_for, request, context)
    result = await run_in_threadpool(hub_of(request).entities.update, caller,
                                     entity_id,
                                             _fragment(payload, terms))
    return _update_result(result, terms) or Response(status_code=204)


@router.patch("/entities/{entity_id:path}/attrs/{attr}", status_code=204, openapi_extra=ANY_JSON)
async def patch_attribute(entity_id: str, attr: str, request: Request,
                          caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    check_name(attr)
    payload, context = await read_body(request)
    terms = await run_in_threadpool(terms_for, request, context)
    if not isinstance(payload, dict):
        raise BadRequestData("The attribute fragment must be a JSON object.")
    body = {k: v for k, v in payload.items() if k != "@context"}
    has_content = "type" in body or any(
        k in body for k in ("value", "object", "languageMap", "vocab", "json", "valueList",
                            "objectList"))
    instance = parse_instance(attr, body if has_content else {**body, "value": 0}, terms)
    if not has_content:
        instance.pop("value")
        instance.pop("type")
    await run_in_threadpool(hub_of(request).entities.patch_attribute, caller,
                            entity_id,
                                             terms.expand(attr), instance)
    return Response(status_code=204)


@router.delete("/entities/{entity_id:path}/attrs/{attr}", status_code=204,
               openapi_extra=documented("datasetId", "deleteAll"))
def delete_attribute(entity_id: str, attr: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    check_name(attr)
    terms = terms_for(request, link_context(request))
    params = request.query_params
    hub_of(request).entities.delete_attribute(
        caller, entity_id, terms.expand(attr), dataset_id=params.get("datasetId"),
        delete_all=flag_param(request, "deleteAll"))
    return Response(status_code=204)


# Whole-entity routes come after the .../attrs routes: ids are matched as paths (an id
# may hold '/', e.g. http://example.org/a), so the longer patterns must be tried first.

@router.get("/entities/{entity_id:path}",
            openapi_extra=_geo_documented("attrs", "pick", "omit", "options", "format",
                                          "lang"))
def retrieve_entity(entity_id: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    media = negotiate(request, geo=True)
    context = link_context(request)
    terms = terms_for(request, context)
    keep, omit = _projection(request, terms)
    entity = hub_of(request).queries.get_entity(caller, entity_id)
    if media == GEO_JSON:
        return _geo_response(_feature(entity, request, terms, keep, omit), context, {})
    return ngsi_response(request, _render(entity, request, terms, keep, omit), context)


@router.put("/entities/{entity_id:path}", status_code=204, openapi_extra=ANY_JSON)
async def replace_entity(entity_id: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    payload, context = await read_body(request)
    terms = await run_in_threadpool(terms_for, request, context)
    entity = parse_entity(payload, terms, need_id=False, need_type=False)
    await run_in_threadpool(hub_of(request).entities.replace, caller, entity_id,
                            entity)
    return Response(status_code=204)


@router.patch("/entities/{entity_id:path}", status_code=204, openapi_extra=ANY_JSON)
async def merge_entity(entity_id: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    payload, context = await read_body(request, allow_merge_patch=True)
    terms = await run_in_threadpool(terms_for, request, context)
    entity = parse_entity(payload, terms, need_id=False, need_type=False)
    if entity.get("id", entity_id) != entity_id:
        raise BadRequestData("The entity id in the body differs from the one in the URL.")
    await run_in_threadpool(hub_of(request).entities.merge, caller, entity_id,
                            entity)
    return Response(status_code=204)


@router.delete("/entities/{entity_id:path}", status_code=204)
def delete_entity(entity_id: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    hub_of(request).entities.delete(caller, entity_id)
    return Response(status_code=204)


# --- batch operations ----------------------------------------------------------------

@router.post("/entityOperations/{operation}",
             openapi_extra=documented("options", "limit", "offset", "count", body=ANY_JSON_LIST))
@router.post("/entityOperations/{operation}/", include_in_schema=False)  # as ngsildclient posts
async def batch_operation(operation: str, request: Request, caller: CallerDep) -> Response:
    if operation not in ("create", "upsert", "update", "delete", "query"):
        raise BadRequestData(f"Unknown batch operation {operation!r}.")
    payload, context = await read_body(request)
    if operation == "query":
        return await _batch_query(request, caller, payload, context)
    if not isinstance(payload, list):
        raise BadRequestData("A batch operation takes a JSON array.")
    if not payload:
        raise BadRequestData("A batch operation needs at least one entity.")
    options = set(split_param(request.query_params.get("options"), "options") or [])
    hub = hub_of(request)

    def parse(item: Any) -> Entity:
        item_context = item.get("@context", context) if isinstance(item, dict) else context
        return parse_entity(item, terms_for(request, item_context),
                            need_type=operation != "update")

    result = await run_in_threadpool(
        hub.entities.batch,
        caller, operation, payload, parse,
        **({"update_mode": "update" if "update" in options else "replace"}
           if operation == "upsert" else {}),
        **({"no_overwrite": "noOverwrite" in options} if operation == "update" else {}))
    errors = [{"entityId": entity_id, "error": {"type": exc.problem_type, "title": exc.title,
                                                "status": exc.status, "detail": exc.detail}}
              for entity_id, exc in result.failed]
    if not result.failed:
        if result.created:  # create, and an upsert that created entities (§6.15.3.1)
            return Response(orjson.dumps(result.created), status_code=201,
                            media_type="application/json")
        return Response(status_code=204)
    # 207 also when nothing succeeded: the per-entity errors are the answer (§6.14-6.17).
    return Response(orjson.dumps({"success": result.succeeded, "errors": errors}), status_code=207,
                    media_type="application/json")


async def _batch_query(request: Request, caller: Caller, payload: Any, context: Any) -> Response:
    """POST /entityOperations/query: a Query object in the body instead of parameters."""
    if not isinstance(payload, dict) or payload.get("type") != "Query":
        raise BadRequestData('The body must be a Query object ({"type": "Query", …}).')
    terms = await run_in_threadpool(terms_for, request, context)
    hub = hub_of(request)
    limit, offset, count = page(request, hub)
    selectors = payload.get("entities") or []
    if not isinstance(selectors, list):
        raise BadRequestData("Query.entities must be a list of entity selectors.")
    types = [terms.expand(check_name(s["type"], "entity type")) for s in selectors
             if isinstance(s, dict) and s.get("type")]
    ids = [check_entity_id(s["id"]) for s in selectors if isinstance(s, dict) and s.get("id")]
    attrs = payload.get("attrs")
    query = EntityQuery(types=types or None, ids=ids or None,
                        attrs=[terms.expand(check_name(a)) for a in attrs] if attrs else None,
                        limit=limit, offset=offset, count=count)
    if "q" in payload:
        query.predicates.append(parse_q(str(payload["q"]), terms))
    if "scopeQ" in payload:
        query.predicates.append(parse_scope_q(str(payload["scopeQ"])))
    geo_q = payload.get("geoQ")
    if isinstance(geo_q, dict):
        coordinates = geo_q.get("coordinates")
        text = orjson.dumps(coordinates).decode() if coordinates is not None else None
        geo = parse_geo_query(geo_q.get("georel"), geo_q.get("geometry"), text,
                              geo_q.get("geoproperty"), terms)
        if geo is not None:
            query.predicates.append(geo.predicate)
            query.bbox = geo.bbox
    result = await run_in_threadpool(hub.queries.query, caller, query)
    body = [_render(e, request, terms, query.attrs) for e in result.entities]
    headers = {"NGSILD-Results-Count": str(result.total)} if result.total is not None else {}
    return ngsi_response(request, body, context, headers=headers)


# --- types and attributes ------------------------------------------------------------

@router.get("/types", openapi_extra=documented("details"))
def list_types(request: Request, caller: CallerDep) -> Response:
    context = link_context(request)
    terms = terms_for(request, context)
    summaries = hub_of(request).queries.types(caller)
    if flag_param(request, "details"):
        body: Any = [{"id": s.type, "type": "EntityType", "typeName": terms.compact(s.type),
                      "attributeNames": sorted(terms.compact(a) for a in s.attributes)}
                     for s in summaries]
    else:
        body = {"id": "urn:ngsi-ld:EntityTypeList:" + str(abs(hash(tuple(
            s.type for s in summaries)))), "type": "EntityTypeList",
            "typeList": [terms.compact(s.type) for s in summaries]}
    return ngsi_response(request, body, context)


@router.get("/types/{type_name}")
def type_info(type_name: str, request: Request, caller: CallerDep) -> Response:
    context = link_context(request)
    terms = terms_for(request, context)
    wanted = terms.expand(check_name(type_name, "entity type"))
    for summary in hub_of(request).queries.types(caller):
        if summary.type == wanted:
            body = {"id": wanted, "type": "EntityTypeInfo", "typeName": terms.compact(wanted),
                    "entityCount": summary.count,
                    "attributeDetails": [
                        {"id": name, "type": "Attribute", "attributeName": terms.compact(name),
                         "attributeTypes": sorted(kinds)}
                        for name, kinds in sorted(summary.attributes.items())]}
            return ngsi_response(request, body, context)
    raise ResourceNotFound(f"No entity of type {type_name} exists.")


@router.get("/attributes", openapi_extra=documented("details"))
def list_attributes(request: Request, caller: CallerDep) -> Response:
    context = link_context(request)
    terms = terms_for(request, context)
    summary = hub_of(request).queries.attributes(caller)
    if flag_param(request, "details"):
        body: Any = [{"id": name, "type": "Attribute", "attributeName": terms.compact(name),
                      "typeNames": sorted(terms.compact(t) for t in info["types"])}  # type: ignore[attr-defined]
                     for name, info in sorted(summary.items())]
    else:
        body = {"id": "urn:ngsi-ld:AttributeList:" + str(abs(hash(tuple(sorted(summary))))),
                "type": "AttributeList",
                "attributeList": sorted(terms.compact(name) for name in summary)}
    return ngsi_response(request, body, context)


@router.get("/attributes/{attr}")
def attribute_info(attr: str, request: Request, caller: CallerDep) -> Response:
    context = link_context(request)
    terms = terms_for(request, context)
    wanted = terms.expand(check_name(attr))
    info = hub_of(request).queries.attributes(caller).get(wanted)
    if info is None:
        raise ResourceNotFound(f"No entity has an attribute {attr}.")
    body = {"id": wanted, "type": "Attribute", "attributeName": terms.compact(wanted),
            "typeNames": sorted(terms.compact(t) for t in info["types"]),  # type: ignore[attr-defined]
            "attributeTypes": sorted(info["attributeTypes"])}  # type: ignore[call-overload]
    return ngsi_response(request, body, context)


# --- helpers ---------------------------------------------------------------------------

def _fragment(payload: Any, terms: TermMap) -> Entity:
    if not isinstance(payload, dict):
        raise BadRequestData("The attributes fragment must be a JSON object.")
    fragment: Entity = {"attrs": parse_attributes(payload, terms)}
    if not fragment["attrs"]:
        raise BadRequestData("The fragment has no attributes.")
    return fragment



