"""Ingest API: device provisioning, HTTP batches of readings, and the dead-letter store.

Wire formats are documented in docs/ingest.md; the demo city and partners depend on them.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from urbanhub.api.jsonld import JSON, JSON_LD, hub_of, link_context, read_raw_body
from urbanhub.api.params import documented, limit_offset
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.ingest.pipeline import IngestReport, Rejected
from urbanhub.model.errors import (
    BadRequestData,
    InvalidRequest,
)
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.timeutil import format_datetime
from urbanhub.store.dead_letters import list_dead_letters
from urbanhub.store.devices import DeviceRecord

router = APIRouter(prefix="/ingest/v1", tags=["Ingest"],
                   responses=problem_responses(400, 403, 404, 409, 413, 415, 503))

_JSON_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}},
    "application/ld+json": {"schema": {"type": "object"}}}}}
_JSON_ARRAY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "items": {}}},
    "application/ld+json": {"schema": {"type": "array", "items": {}}}}}}
def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def _render_device(record: DeviceRecord, terms: TermMap) -> dict[str, Any]:
    attributes = []
    for object_id, spec in record.attributes.items():
        item = {"object_id": object_id, "name": terms.compact(spec["name"]),
                "type": spec["type"]}
        if spec.get("unitCode"):
            item["unitCode"] = spec["unitCode"]
        attributes.append(item)
    return {"deviceId": record.id, "entityId": record.entity_id,
            "entityType": terms.compact(record.entity_type), "transport": record.transport,
            "attributes": attributes, "createdAt": format_datetime(record.created_at),
            "modifiedAt": format_datetime(record.modified_at)}


# --- devices -------------------------------------------------------------------------------

@router.post("/devices", status_code=201, openapi_extra=_JSON_BODY)
async def provision_device(request: Request, caller: CallerDep) -> Response:
    """Register a device and create its entity (type and static attributes) if it is new."""
    raw = await read_raw_body(request, {JSON, JSON_LD})
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from exc
    context = payload.pop("@context", None) if isinstance(payload, dict) else None
    linked = link_context(request)
    if context is not None and linked is not None:
        raise BadRequestData("Send the @context in the body or in a Link header, not both.")
    hub = hub_of(request)
    terms = hub.contexts.resolve(context if context is not None else linked)
    record = await run_in_threadpool(hub.devices.provision, caller, payload, terms)
    return _json(_render_device(record, terms), 201,
                 {"Location": f"/ingest/v1/devices/{record.id}"})


@router.get("/devices", openapi_extra=documented("limit", "offset"))
async def list_devices(request: Request) -> Response:
    limit, offset = limit_offset(request, hub_of(request))
    hub = hub_of(request)
    terms = hub.contexts.resolve(link_context(request))
    records, total = await run_in_threadpool(hub.devices.page, limit=limit, offset=offset)
    return _json([_render_device(r, terms) for r in records],
                 headers={"X-Total-Count": str(total)})


@router.get("/devices/{device_id}")
async def get_device(device_id: str, request: Request) -> Response:
    hub = hub_of(request)
    terms = hub.contexts.resolve(link_context(request))
    record = await run_in_threadpool(hub.devices.get, device_id)
    return _json(_render_device(record, terms))


@router.delete("/devices/{device_id}", status_code=204)
async def delete_device(device_id: str, request: Request) -> Response:
    """Forget the device; its entity and history stay."""
    await run_in_threadpool(hub_of(request).devices.delete, device_id)
    return Response(status_code=204)


# --- readings ------------------------------------------------------------------------------

@router.post("/readings", openapi_extra=_JSON_ARRAY)
async def post_readings(request: Request) -> Response:
    """Store a JSON array of measurements and NGSI-LD fragments; bad elements dead-letter."""
    raw = await read_raw_body(request, {JSON, JSON_LD})
    hub = hub_of(request)
    context = link_context(request)
    try:
        items = orjson.loads(raw)
        problem = None if isinstance(items, list) else "The body must be a JSON array."
    except orjson.JSONDecodeError as exc:
        problem = f"The body is not valid JSON: {exc}"
    if problem is not None:
        await run_in_threadpool(hub.ingest.ingest, [], [Rejected(problem, raw, "http")])
        hub.metrics.add("http_dead_letters")
        raise BadRequestData(problem)
    report = await run_in_threadpool(_ingest_items, request, items, context)
    return _json({"accepted": report.accepted, "stored": report.stored,
                  "rejected": [{"index": r.index, "reason": r.reason}
                               for r in report.rejected]})


def _ingest_items(request: Request, items: list[Any], context: Any) -> IngestReport:
    hub = hub_of(request)
    batch = hub.readings.http_items(items, context, hub.ingest.clock())
    report = hub.ingest.ingest(batch.readings, batch.rejected, batch.origins)
    hub.metrics.add("http_batches")
    hub.metrics.add("http_dead_letters", len(report.rejected))
    return report


# --- dead letters --------------------------------------------------------------------------

@router.get("/dead-letters", openapi_extra=documented("limit", "offset", "source"))
async def dead_letters(request: Request) -> Response:
    """What ingest refused, newest first, with the raw payload (text, or base64)."""
    limit, offset = limit_offset(request, hub_of(request))
    source = request.query_params.get("source")
    hub = hub_of(request)

    def read() -> list[dict[str, Any]]:
        with hub.store.read() as conn:
            return list_dead_letters(conn, limit=limit, offset=offset, source=source)

    rows = await run_in_threadpool(read)
    return _json([_render_dead_letter(row) for row in rows])


def _render_dead_letter(row: dict[str, Any]) -> dict[str, Any]:
    payload = bytes(row["payload"])
    try:
        shown, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        shown, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    return {"id": row["id"], "receivedAt": format_datetime(row["received_at"]),
            "source": row["source"], "topic": row["topic"], "reason": row["reason"],
            "payload": shown, "payloadEncoding": encoding}
