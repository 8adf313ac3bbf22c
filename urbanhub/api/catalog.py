"""Data catalog API: purposes, datasets and assignment rules, the CDO's report.

The catalog describes what the city holds and why, so it is readable by everyone; changes
need the CDO or the owning organisation's steward (``urbanhub.governance.catalog``).
Entity types and attribute names in bodies are terms of the body's ``@context``
(``application/ld+json``) or of a ``Link`` header, or full IRIs; responses compact them
with the ``Link`` header's context.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from urbanhub.api.jsonld import hub_of, link_context, read_body, terms_for
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.governance.catalog import (
    CatalogEntry,
    DatasetChange,
    check_may_edit_datasets,
    require_governor,
)
from urbanhub.governance.catalog_documents import (
    CatalogReportView,
    DatasetChangeView,
    DatasetDocument,
    DatasetView,
    DuplicateView,
    PurposeDocument,
    RulesDocument,
    TypeCount,
    UncataloguedView,
    change_view,
    dataset_payload,
    dataset_view,
    duplicate_view,
    purpose_document,
    to_dataset,
    to_purpose,
    to_rules,
    validated,
)
from urbanhub.model.errors import BadRequestData
from urbanhub.ngsild.context import TermMap

router = APIRouter(prefix="/catalog/v1", tags=["Catalog"],
                   responses=problem_responses(400, 403, 404, 409, 413, 415, 503))


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON body read by hand (size limit, @context rules), from its model.

    The schema is inlined (no ``$defs``) so that it resolves inside the OpenAPI document.
    """
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    content = {"schema": inline(schema)}
    return {"requestBody": {"required": True, "content": {
        "application/json": content, "application/ld+json": content}}}


def _reader_terms(request: Request) -> TermMap:
    return terms_for(request, link_context(request))


def _view(entry: CatalogEntry, terms: TermMap) -> DatasetView:
    return dataset_view(entry.dataset, terms, entity_count=entry.entity_count,
                        built_in=entry.built_in, created_at=entry.created_at,
                        modified_at=entry.modified_at)


def _change_view(change: DatasetChange, terms: TermMap) -> DatasetChangeView:
    return change_view(_view(change.entry, terms), change.entities_moved)


# --- purposes -------------------------------------------------------------------------------

@router.get("/purposes", response_model=list[PurposeDocument])
def list_purposes(request: Request) -> list[PurposeDocument]:
    """The register of purposes data may be collected and used for."""
    return [purpose_document(p) for p in hub_of(request).catalog.purposes()]


@router.post("/purposes", status_code=201, response_model=PurposeDocument,
             openapi_extra=_request_body(PurposeDocument))
async def create_purpose(request: Request, response: Response,
                         caller: CallerDep) -> PurposeDocument:
    """Register a purpose (CDO)."""
    require_governor(caller, "register purposes")
    payload, _ = await read_body(request)
    purpose = to_purpose(validated(PurposeDocument, payload))
    await run_in_threadpool(hub_of(request).catalog.create_purpose, caller, purpose)
    response.headers["Location"] = f"/catalog/v1/purposes/{purpose.id}"
    return purpose_document(purpose)


# --- datasets -------------------------------------------------------------------------------

@router.get("/datasets", response_model=list[DatasetView], response_model_exclude_none=True)
def list_datasets(request: Request) -> list[DatasetView]:
    """Every dataset with its entity count, the built-in uncatalogued dataset first."""
    terms = _reader_terms(request)
    return [_view(entry, terms) for entry in hub_of(request).catalog.datasets()]


@router.get("/datasets/{dataset_id}", response_model=DatasetView,
            response_model_exclude_none=True)
def get_dataset(dataset_id: str, request: Request) -> DatasetView:
    return _view(hub_of(request).catalog.dataset(dataset_id), _reader_terms(request))


@router.post("/datasets", status_code=201, response_model=DatasetChangeView,
             response_model_exclude_none=True, openapi_extra=_request_body(DatasetDocument))
async def create_dataset(request: Request, response: Response,
                         caller: CallerDep) -> DatasetChangeView:
    """Add a dataset (CDO, or a steward of the owning organisation; rules: CDO only)."""
    check_may_edit_datasets(caller)
    payload, context = await read_body(request)
    document = validated(DatasetDocument, dataset_payload(payload))
    terms = await run_in_threadpool(terms_for, request, context)
    change = await run_in_threadpool(hub_of(request).catalog.create_dataset, caller,
                                     to_dataset(document, terms))
    response.headers["Location"] = f"/catalog/v1/datasets/{document.id}"
    return _change_view(change, terms)


@router.put("/datasets/{dataset_id}", response_model=DatasetChangeView,
            response_model_exclude_none=True, openapi_extra=_request_body(DatasetDocument))
async def replace_dataset(dataset_id: str, request: Request,
                          caller: CallerDep) -> DatasetChangeView:
    """Replace a dataset's description; a GET result may be sent back as it is."""
    check_may_edit_datasets(caller)
    payload, context = await read_body(request)
    if isinstance(payload, dict):
        payload.setdefault("id", dataset_id)
        if payload["id"] != dataset_id:
            raise BadRequestData("The dataset id in the body differs from the one in the URL.")
    document = validated(DatasetDocument, dataset_payload(payload))
    terms = await run_in_threadpool(terms_for, request, context)
    change = await run_in_threadpool(hub_of(request).catalog.replace_dataset, caller,
                                     to_dataset(document, terms))
    return _change_view(change, terms)


@router.put("/datasets/{dataset_id}/rules", response_model=DatasetChangeView,
            response_model_exclude_none=True, openapi_extra=_request_body(RulesDocument))
async def set_rules(dataset_id: str, request: Request, caller: CallerDep) -> DatasetChangeView:
    """Replace the dataset's assignment rules (CDO); every entity is re-evaluated and
    ``entitiesMoved`` says how many changed dataset."""
    require_governor(caller, "set assignment rules")
    payload, context = await read_body(request)
    document = validated(RulesDocument, payload)
    terms = await run_in_threadpool(terms_for, request, context)
    rules = to_rules(document.rules, terms, f"Dataset {dataset_id}")
    change = await run_in_threadpool(hub_of(request).catalog.set_rules, caller, dataset_id,
                                     rules)
    return _change_view(change, terms)


# --- the CDO's view -------------------------------------------------------------------------

@router.get("/duplicates", response_model=list[DuplicateView])
def duplicates(request: Request, caller: CallerDep) -> list[DuplicateView]:
    """Datasets of different organisations with a shared type and overlapping coverage."""
    terms = _reader_terms(request)
    return [duplicate_view(d, terms) for d in hub_of(request).catalog.duplicates(caller)]


@router.get("/report", response_model=CatalogReportView)
def report(request: Request, caller: CallerDep) -> CatalogReportView:
    """What needs the CDO's attention: uncatalogued entities by type, and duplicates."""
    terms = _reader_terms(request)
    found = hub_of(request).catalog.report(caller)
    return CatalogReportView(
        uncatalogued=UncataloguedView(
            entities=found.uncatalogued_entities,
            types=[TypeCount(type=terms.compact(t), entities=n)
                   for t, n in found.uncatalogued_types]),
        duplicates=[duplicate_view(d, terms) for d in found.duplicates])
