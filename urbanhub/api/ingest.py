"""Ingest API: the device registry, HTTP batches of readings, and the dead-letter store.

Thin: provisioning bodies are checked by the registry (it names every problem at once),
the other bodies here (Pydantic); every rule about who may do what is in the registry and
the pure model. Wire formats are documented in docs/ingest.md; the demo city and partners
depend on them.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from urbanhub.api.jsonld import JSON, JSON_LD, hub_of, link_context, read_raw_body
from urbanhub.api.params import documented, limit_offset
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.hub.runtime import Hub
from urbanhub.ingest.devices import InvalidDeviceKey, IssuedDevice
from urbanhub.ingest.pipeline import IngestReport, Rejected
from urbanhub.model.caller import Caller
from urbanhub.model.devices import (
    MAX_JUSTIFICATION,
    DeviceStatus,
    Refusal,
    RiskTier,
    Sender,
)
from urbanhub.model.errors import (
    BadRequestData,
    Forbidden,
    InvalidRequest,
    Unauthenticated,
)
from urbanhub.model.identity import Scope, authorise
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.timeutil import format_datetime
from urbanhub.store.dead_letters import list_dead_letters
from urbanhub.store.devices import DeviceFilter, DeviceRecord

router = APIRouter(prefix="/ingest/v1", tags=["Ingest"],
                   responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 503))
DEVICE_KEY_HEADER = "X-Device-Key"
SHOWN_ONCE = "Store this device key now: Urbanhub keeps only hashes of it and cannot show it again."
# Declared for the OpenAPI document; the route reads the header itself (it must also see
# the header sent twice).
_device_key = APIKeyHeader(name=DEVICE_KEY_HEADER, auto_error=False, scheme_name="DeviceKey",
                           description="A device's own key (uhd_…): its readings only.")

_JSON_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object"}},
    "application/ld+json": {"schema": {"type": "object"}}}}}
_JSON_ARRAY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "array", "items": {}}},
    "application/ld+json": {"schema": {"type": "array", "items": {}}}}}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DevicePatch(_Body):
    status: DeviceStatus | None = Field(None, description="suspended, active or retired.")
    reason: str | None = Field(None, max_length=500, description="Why (kept in the audit).")
    owner: str | None = Field(None, max_length=64,
                              description="Give the device to this organisation (CDO).")


class ApprovalIn(_Body):
    comment: str | None = Field(None, max_length=2000)


class TierOverrideIn(_Body):
    tier: RiskTier
    justification: str = Field(max_length=MAX_JUSTIFICATION,
                               description="Why the derived tier does not fit the device.")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def _terms(request: Request) -> TermMap:
    return hub_of(request).contexts.resolve(link_context(request))


def _render_device(record: DeviceRecord, terms: TermMap) -> dict[str, Any]:
    """A device as the API shows it: never its key nor a hash of it."""
    attributes = []
    for object_id, spec in record.attributes.items():
        item = {"object_id": object_id, "name": terms.compact(spec["name"]),
                "type": spec["type"]}
        if spec.get("unitCode"):
            item["unitCode"] = spec["unitCode"]
        item["category"] = spec["category"]
        attributes.append(item)
    governance, credential = record.governance, record.credential
    override, approval = governance.override, governance.approval
    return {
        "deviceId": record.id, "entityId": record.entity_id,
        "entityType": terms.compact(record.entity_type), "transport": record.transport,
        "owner": governance.owner, "manufacturer": record.manufacturer, "model": record.model,
        "location": record.location, "attributes": attributes,
        "status": governance.status.value, "riskTier": governance.tier.value,
        "derivedRiskTier": governance.derived_tier.value,
        "tierOverride": None if override is None else {
            "tier": override.tier.value, "justification": override.justification,
            "by": override.by, "at": format_datetime(override.at)},
        "approval": None if approval is None else {
            "by": approval.by, "at": format_datetime(approval.at)},
        "keyId": credential.key_id if credential else None,
        "keyIssuedAt": format_datetime(credential.issued_at) if credential else None,
        "createdAt": format_datetime(record.created_at),
        "modifiedAt": format_datetime(record.modified_at)}


def _issued(issued: IssuedDevice, terms: TermMap, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    """A device with its new key: shown in this response only, never cached."""
    body = {**_render_device(issued.record, terms), "deviceKey": issued.key,
            "warning": SHOWN_ONCE}
    return _json(body, status, {"Cache-Control": "no-store", **(headers or {})})


# --- devices -------------------------------------------------------------------------------

@router.post("/devices", status_code=201, openapi_extra=_JSON_BODY)
async def provision_device(request: Request, caller: CallerDep) -> Response:
    """Register a device and create its entity (type and static attributes) if it is new
    (the CDO, or a steward or operator of the owning organisation). The answer holds the
    device key, shown this once; a high-risk device waits for the privacy board."""
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
    issued = await run_in_threadpool(hub.devices.provision, caller, payload, terms)
    return _issued(issued, terms, 201, {"Location": f"/ingest/v1/devices/{issued.record.id}"})


@router.get("/devices", openapi_extra=documented("limit", "offset"))
def list_devices(request: Request, status: DeviceStatus | None = None,
                 tier: RiskTier | None = None, owner: str | None = None) -> Response:
    """Devices by id, filtered by status, risk tier and owner (``X-Total-Count``)."""
    hub = hub_of(request)
    limit, offset = limit_offset(request, hub)
    records, total = hub.devices.page(DeviceFilter(status, tier, owner), limit=limit,
                                      offset=offset)
    terms = _terms(request)
    return _json([_render_device(r, terms) for r in records],
                 headers={"X-Total-Count": str(total)})


@router.get("/devices/{device_id}")
def get_device(device_id: str, request: Request) -> Response:
    return _json(_render_device(hub_of(request).devices.get(device_id), _terms(request)))


@router.patch("/devices/{device_id}")
def change_device(device_id: str, body: DevicePatch, request: Request,
                  caller: CallerDep) -> Response:
    """Suspend, reactivate or retire a device (the CDO, or a steward or operator of its
    organisation), or give it to another organisation (the CDO): one change a request."""
    devices = hub_of(request).devices
    sent = body.model_fields_set
    if body.status is not None and "owner" not in sent:
        record = devices.set_status(caller, device_id, body.status, body.reason)
    elif body.owner is not None and sent == {"owner"}:
        record = devices.set_owner(caller, device_id, body.owner)
    else:
        raise BadRequestData("Send either a status (with an optional reason) or an owner.")
    return _json(_render_device(record, _terms(request)))


@router.post("/devices/{device_id}/approve")
def approve_device(device_id: str, request: Request, caller: CallerDep,
                   body: ApprovalIn | None = None) -> Response:
    """The privacy board lets a high-risk device pending approval write."""
    record = hub_of(request).devices.approve(caller, device_id, body.comment if body else None)
    return _json(_render_device(record, _terms(request)))


@router.post("/devices/{device_id}/override-tier")
def override_tier(device_id: str, body: TierOverrideIn, request: Request,
                  caller: CallerDep) -> Response:
    """Set the device's risk tier, with a justification. Lowering a high tier needs the
    privacy board or the CDO; other overrides also the owner's stewards and operators."""
    record = hub_of(request).devices.override_tier(caller, device_id, body.tier,
                                                   body.justification)
    return _json(_render_device(record, _terms(request)))


@router.post("/devices/{device_id}/rotate-credential")
def rotate_credential(device_id: str, request: Request, caller: CallerDep) -> Response:
    """A new device key, shown this once; the old one stops working at once."""
    issued = hub_of(request).devices.rotate_key(caller, device_id)
    return _issued(issued, _terms(request))


@router.delete("/devices/{device_id}", status_code=204, response_class=Response)
def delete_device(device_id: str, request: Request, caller: CallerDep) -> None:
    """Forget the device; its entity and history stay."""
    hub_of(request).devices.delete(caller, device_id)


# --- readings ------------------------------------------------------------------------------

@router.post("/readings", openapi_extra=_JSON_ARRAY, dependencies=[Depends(_device_key)])
async def post_readings(request: Request, caller: CallerDep) -> Response:
    """Store a JSON array of measurements and NGSI-LD fragments; bad elements dead-letter.

    A device sends its own readings with its device key (``X-Device-Key``); a gateway or
    partner platform sends its organisation's devices' readings with an API key having
    the write scope. Without a valid credential nothing is stored (401), and the body is
    dead-lettered and audited.
    """
    raw = await read_raw_body(request, {JSON, JSON_LD})
    hub = hub_of(request)
    try:
        sender = await run_in_threadpool(_sender, hub, request, caller)
    except (Unauthenticated, Forbidden) as exc:
        await run_in_threadpool(_refuse_body, hub, raw, exc, caller)
        raise
    context = link_context(request)
    try:
        items = orjson.loads(raw)
        problem = None if isinstance(items, list) else "The body must be a JSON array."
    except orjson.JSONDecodeError as exc:
        problem = f"The body is not valid JSON: {exc}"
    if problem is not None:
        await run_in_threadpool(hub.ingest.ingest, [], [Rejected(problem, raw, "http")],
                                sender=sender)
        hub.metrics.add("http_dead_letters")
        raise BadRequestData(problem)
    report = await run_in_threadpool(_ingest_items, hub, items, context, sender)
    return _json({"accepted": report.accepted, "stored": report.stored,
                  "rejected": [{"index": r.index, "reason": r.reason}
                               for r in report.rejected]})


def _sender(hub: Hub, request: Request, caller: Caller) -> Sender:
    """Who sends the batch: a device by its key, or a member by an API key or token."""
    keys = request.headers.getlist(DEVICE_KEY_HEADER)
    if keys:
        if len(keys) > 1 or caller.authenticated:
            raise Unauthenticated(f"Send one credential: a device key ({DEVICE_KEY_HEADER}) "
                                  "or an API key or bearer token, not several.")
        return Sender.of_device(hub.devices.authenticate(keys[0].strip()).device_id)
    if not caller.authenticated:
        raise Unauthenticated(f"Sending readings needs credentials: a device sends its device "
                              f"key ({DEVICE_KEY_HEADER}), a gateway an API key with the "
                              "write scope.")
    authorise(caller, "Sending readings", Scope.WRITE)
    return Sender.of_caller(caller)


def _refuse_body(hub: Hub, raw: bytes, error: Unauthenticated | Forbidden,
                 caller: Caller) -> None:
    """Dead-letter and audit a batch refused whole for its credential."""
    code = Refusal.UNAUTHENTICATED if isinstance(error, Unauthenticated) else (
        Refusal.NOT_PERMITTED)
    device_id = error.device_id if isinstance(error, InvalidDeviceKey) else None
    hub.ingest.ingest([], [Rejected(error.detail, raw, "http", code=code,
                                    device_id=device_id)], sender=Sender.of_caller(caller))
    hub.metrics.add("http_dead_letters")


def _ingest_items(hub: Hub, items: list[Any], context: Any, sender: Sender) -> IngestReport:
    batch = hub.readings.http_items(items, context, hub.ingest.clock())
    report = hub.ingest.ingest(batch.readings, batch.rejected, batch.origins, sender=sender)
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
