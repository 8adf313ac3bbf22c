"""NGSI-LD temporal API (ETSI GS CIM 009 §5.6.11, §5.7.3, §5.7.4): entity history over HTTP.

The @context is handled exactly as on the entity routes (Link header or ld+json body in,
Link header or body out); the time semantics are described in ``urbanhub.hub.temporal``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from urbanhub.api.jsonld import hub_of, link_context, ngsi_response, read_body, terms_for
from urbanhub.api.params import (
    ANY_JSON,
    ENTITY_QUERY,
    documented,
    entity_query,
    int_param,
    split_param,
)
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.hub.temporal import Aggregation, TemporalEntity, TemporalQuery, TimeQuery
from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import (
    ENTITY_MEMBERS,
    Entity,
    Instance,
    check_entity_id,
    check_name,
    parse_entity,
    parse_instance,
    render_instance,
)
from urbanhub.ngsild.timeutil import format_datetime
from urbanhub.store.history import HistoryInstance

router = APIRouter(prefix="/ngsi-ld/v1", tags=["NGSI-LD temporal"],
                   responses=problem_responses(400, 403, 404, 406, 413, 415, 422, 503))

_TEMPORAL = ("timerel", "timeAt", "endTimeAt", "timeproperty", "lastN", "aggrMethods",
             "aggrPeriodDuration")
_OPTIONS = {"temporalValues", "aggregatedValues", "sysAttrs", "normalized", "count"}
_FORMATS = {"normalized": "normalized", "temporalValues": "temporalValues",
            "simplified": "temporalValues", "aggregatedValues": "aggregatedValues"}
#: The member of the simplified temporal representation that lists each type's content.
VALUES_MEMBER = {
    "Property": "values", "GeoProperty": "values", "Relationship": "objects",
    "LanguageProperty": "languageMaps", "VocabProperty": "vocabs", "JsonProperty": "jsons",
    "ListProperty": "valueLists", "ListRelationship": "objectLists",
}
_INSTANCE_NS = uuid.UUID("6f1d2a43-5b0e-4c44-9a53-0d3c1e7b8f21")


def instance_id(item: HistoryInstance) -> str:
    """A stable URN for a history instance, derived from the history primary key."""
    key = "\x1f".join((item.entity_id, item.name, item.dataset_id,
                       item.observed_at.isoformat()))
    return f"urn:ngsi-ld:attribute-instance:{uuid.uuid5(_INSTANCE_NS, key)}"


# --- routes ------------------------------------------------------------------------------

@router.get("/temporal/entities/{entity_id:path}",
            openapi_extra=documented("attrs", "options", "format", *_TEMPORAL))
def retrieve_temporal_entity(entity_id: str, request: Request, caller: CallerDep) -> Response:
    check_entity_id(entity_id)
    context = link_context(request)
    terms = terms_for(request, context)
    form, sys_attrs = _representation(request)
    query = _temporal_query(request, terms, form)
    found = hub_of(request).temporal.get_entity(caller, entity_id, query)
    return ngsi_response(request, _render(found, terms, form, sys_attrs, query, _Stamps()),
                         context)


@router.get("/temporal/entities", openapi_extra=documented(*ENTITY_QUERY, *_TEMPORAL))
def query_temporal_entities(request: Request, caller: CallerDep) -> Response:
    context = link_context(request)
    terms = terms_for(request, context)
    form, sys_attrs = _representation(request)
    query = _temporal_query(request, terms, form)
    hub = hub_of(request)
    selection = entity_query(request, hub, terms, query.attrs)
    selection.project = query.attrs
    result = hub.temporal.query(caller, selection, query)
    stamps = _Stamps()
    body = [_render(e, terms, form, sys_attrs, query, stamps) for e in result.entities]
    headers = {"NGSILD-Results-Count": str(result.total)} if result.total is not None else {}
    return ngsi_response(request, body, context, headers=headers)


@router.post("/temporal/entities", status_code=201, openapi_extra=ANY_JSON)
async def provide_temporal_entity(request: Request, caller: CallerDep) -> Response:
    """Create an entity from its temporal representation (201) or add to its history (204)."""
    payload, context = await read_body(request)
    terms = await run_in_threadpool(terms_for, request, context)
    entity, attrs = parse_temporal_entity(payload, terms)
    created = await run_in_threadpool(hub_of(request).temporal.provide, caller,
                                      entity, attrs)
    if created:
        return Response(status_code=201, headers={
            "Location": f"/ngsi-ld/v1/temporal/entities/{entity['id']}"})
    return Response(status_code=204)


# --- parsing -----------------------------------------------------------------------------

def parse_temporal_entity(payload: object, terms: TermMap,
                          ) -> tuple[Entity, dict[str, list[Instance]]]:
    """An entity in temporal representation: each attribute a list of timed instances."""
    if not isinstance(payload, dict):
        raise BadRequestData("A temporal entity must be a JSON object.")
    header = parse_entity({k: v for k, v in payload.items() if k in ENTITY_MEMBERS}, terms,
                          need_type=False)
    header.pop("attrs")
    attrs: dict[str, list[Instance]] = {}
    for name, raw in payload.items():
        if name in ENTITY_MEMBERS:
            continue
        check_name(name)
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            raise BadRequestData(f"Attribute {name!r} has no instances.")
        parsed = []
        for position, item in enumerate(items):
            instance = parse_instance(name, item, terms)
            if "observedAt" not in instance:
                raise BadRequestData(f"Instance {position} of attribute {name!r} has no "
                                     "observedAt; every temporal instance needs one.")
            parsed.append(instance)
        attrs.setdefault(terms.expand(name), []).extend(parsed)
    return header, attrs






def _representation(request: Request) -> tuple[str, bool]:
    """normalized, temporalValues or aggregatedValues, and whether sysAttrs are wanted."""
    options = set(split_param(request.query_params.get("options"), "options") or [])
    unknown = options - _OPTIONS
    if unknown:
        raise BadRequestData(f"Unknown options: {', '.join(sorted(unknown))}; the temporal "
                             f"API takes {', '.join(sorted(_OPTIONS))}.")
    forms = {o for o in options if o in ("temporalValues", "aggregatedValues", "normalized")}
    raw_format = request.query_params.get("format")
    if raw_format is not None:
        if raw_format not in _FORMATS:
            raise BadRequestData(f"Unknown format {raw_format!r}; use "
                                 f"{', '.join(sorted(_FORMATS))}.")
        forms.add(_FORMATS[raw_format])
    if len(forms) > 1:
        raise BadRequestData(f"Choose one representation, not {', '.join(sorted(forms))}.")
    return (forms.pop() if forms else "normalized"), "sysAttrs" in options


def _temporal_query(request: Request, terms: TermMap, form: str) -> TemporalQuery:
    params = request.query_params
    time = TimeQuery.parse(params.get("timerel"), params.get("timeAt"),
                           params.get("endTimeAt"), params.get("timeproperty"))
    last_n = None
    if params.get("lastN") is not None:
        last_n = int_param(params["lastN"], "lastN", 0)
        if last_n < 1:
            raise BadRequestData("lastN must be a positive whole number.")
    attrs = split_param(params.get("attrs"), "attrs")
    methods = split_param(params.get("aggrMethods"), "aggrMethods")
    duration = params.get("aggrPeriodDuration")
    aggregation = None
    if form == "aggregatedValues":
        aggregation = Aggregation.parse(methods, duration)
    elif methods is not None or duration is not None:
        raise BadRequestData("aggrMethods and aggrPeriodDuration need "
                             "options=aggregatedValues.")
    return TemporalQuery(time, [terms.expand(check_name(a)) for a in attrs] if attrs else None,
                         last_n, aggregation)


# --- rendering ---------------------------------------------------------------------------

class _Stamps(dict[tuple[datetime, ...], list[str]]):
    """Formatted times by sequence of datetimes, formatted on first use.

    Period bounds repeat across a page's entities (the same 24 hours for 1,000 sensors):
    each distinct sequence is formatted once and its list shared.
    """

    def __missing__(self, moments: tuple[datetime, ...]) -> list[str]:
        found = self[moments] = [format_datetime(moment) for moment in moments]
        return found


def _render(entity: TemporalEntity, terms: TermMap, form: str, sys_attrs: bool,
            query: TemporalQuery, stamps: _Stamps) -> dict[str, Any]:
    """``stamps`` caches formatted period bounds, which repeat across a page's entities."""
    out: dict[str, Any] = {"id": entity.id}
    if entity.types:  # unknown only for history deleted before tombstones were kept
        types = [terms.compact(t) for t in entity.types]
        out["type"] = types[0] if len(types) == 1 else types
    current = entity.current
    if current is not None:
        if current.get("scope"):
            out["scope"] = current["scope"]
        if sys_attrs:
            out["createdAt"] = current["createdAt"]
            out["modifiedAt"] = current["modifiedAt"]
    if form == "aggregatedValues":
        for name, datasets in entity.aggregates.items():
            kind = "Property"
            if current is not None and current["attrs"].get(name):
                kind = next(iter(current["attrs"][name].values())).get("type", "Property")
            groups = []
            for dataset_id, series in datasets.items():
                group: dict[str, Any] = {"type": kind}
                if dataset_id:
                    group["datasetId"] = dataset_id
                starts, ends = stamps[tuple(series.starts)], stamps[tuple(series.ends)]
                # [figure, start, end] triples; orjson writes tuples as JSON arrays.
                for method, figures in series.values.items():
                    group[method] = list(zip(figures, starts, ends, strict=True))
                groups.append(group)
            out[terms.compact(name)] = groups[0] if len(groups) == 1 else groups
        return out
    for name, items in entity.instances.items():
        if form == "temporalValues":
            out[terms.compact(name)] = _simplified(items, terms, query.time.timeproperty)
        else:
            out[terms.compact(name)] = [
                {**render_instance(item.instance, terms, form="normalized",
                                   sys_attrs=sys_attrs), "instanceId": instance_id(item)}
                for item in items]
    return out


def _simplified(items: list[HistoryInstance], terms: TermMap, timeproperty: str) -> Any:
    """``{"type": "Property", "values": [[value, time], …]}`` per datasetId and type."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for item in items:
        kind = item.instance.get("type", "Property")
        group = groups.get((item.dataset_id, kind))
        if group is None:
            group = {"type": kind, VALUES_MEMBER[kind]: []}
            if item.dataset_id:
                group["datasetId"] = item.dataset_id
            groups[(item.dataset_id, kind)] = group
        if timeproperty == "modifiedAt":
            moment = format_datetime(item.recorded_at)
        else:
            moment = item.instance.get("observedAt") or format_datetime(item.observed_at)
        content = render_instance(item.instance, terms, form="keyValues")
        group[VALUES_MEMBER[kind]].append([content, moment])
    found = list(groups.values())
    return found[0] if len(found) == 1 else found
