"""Data quality API under ``/governance/v1/quality``: rules, report, silent entities.

Attribute names in rules are NGSI-LD terms of the body's ``@context`` (or of a ``Link``
header) or full IRIs; answers compact them with the ``Link`` header's context.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt
from starlette.concurrency import run_in_threadpool

from urbanhub.api.catalog import _request_body
from urbanhub.api.jsonld import hub_of, link_context, read_body, terms_for
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.governance.catalog_documents import validated
from urbanhub.governance.quality import (
    AttributeRule,
    Measure,
    QualityReport,
    QualityRules,
    exact_duration,
)
from urbanhub.model.errors import BadRequestData
from urbanhub.model.governance import format_duration
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import check_name
from urbanhub.ngsild.timeutil import format_datetime

router = APIRouter(prefix="/governance/v1/quality", tags=["Data quality"],
                   responses=problem_responses(400, 401, 403, 404, 409, 413, 415, 503))
Number = StrictInt | StrictFloat


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AttributeRuleDocument(_Document):
    min: Number | None = Field(None, description="Smallest valid value.")
    max: Number | None = Field(None, description="Largest valid value.")
    unit_code: str | None = Field(None, alias="unitCode",
                                  description="Expected UN/CEFACT unit code (CEL, GQ, …).")
    required: StrictBool = Field(False, description="Every entity must have the attribute.")
    max_repeats: StrictInt | None = Field(
        None, alias="maxRepeats", description="How many readings in a row may have the same "
                                              "value; the ones after are flagged.")


class QualityRulesDocument(_Document):
    context: Any = Field(None, alias="@context")
    attributes: dict[str, AttributeRuleDocument] = Field(
        default_factory=dict, description="Rules by attribute name (term or IRI).")
    max_staleness: str | None = Field(
        None, alias="maxStaleness", description="ISO 8601 duration: an entity whose newest "
                                                "observation is older is stale (PT2H).")


class FailingRuleOut(_Document):
    rule: str
    attribute: str | None = None
    limit: float | int | str | None = None
    count: int = Field(description="Readings (validity, expected readings) or entities "
                                   "(required attributes, staleness).")


class MeasureOut(_Document):
    score: float | None = Field(description="Share that met the rules, 0 to 1; null when "
                                            "nothing could be judged.")
    passed: int | None
    total: int | None
    failing: list[FailingRuleOut]
    reason: str | None = Field(None, description="Why there is no score.")


class WindowOut(_Document):
    start: str
    end: str
    update_periods: int = Field(alias="updatePeriods")


class CompletenessOut(_Document):
    required_attributes: MeasureOut = Field(alias="requiredAttributes")
    expected_readings: MeasureOut = Field(alias="expectedReadings")


class QualityReportOut(_Document):
    dataset: str
    generated_at: str = Field(alias="generatedAt")
    window: WindowOut
    entities: int
    completeness: CompletenessOut
    validity: MeasureOut
    timeliness: MeasureOut


class SilentEntityOut(_Document):
    entity_id: str = Field(alias="entityId")
    last_seen: str = Field(alias="lastSeen")
    silent_for: str = Field(alias="silentFor", description="ISO 8601 duration.")
    device_id: str | None = Field(alias="deviceId")


class SilentEntitiesOut(_Document):
    threshold: str
    threshold_from: str = Field(alias="thresholdFrom",
                                description="maxStaleness, else updateFrequency.")
    total: int
    entities: list[SilentEntityOut]


# --- conversions --------------------------------------------------------------------------------

def to_rules(document: QualityRulesDocument, terms: TermMap) -> QualityRules:
    """The domain rules a document describes, names expanded; 400 naming what is wrong."""
    rules: dict[str, AttributeRule] = {}
    for name, given in document.attributes.items():
        try:
            iri = terms.expand(check_name(name))
            if iri in rules:
                raise BadRequestData(f"it names {iri}, as another attribute does.")
            rules[iri] = AttributeRule(iri, given.min, given.max, given.unit_code,
                                       given.required, given.max_repeats)
        except BadRequestData as exc:
            raise BadRequestData(f"attributes.{name}: {exc.detail}") from exc
    staleness = (exact_duration(document.max_staleness, "maxStaleness")
                 if document.max_staleness is not None else None)
    return QualityRules(rules, staleness)


def rules_document(rules: QualityRules, terms: TermMap) -> dict[str, Any]:
    stored = rules.to_json()
    stored["attributes"] = {terms.compact(name): rule
                            for name, rule in stored["attributes"].items()}
    return stored


def _measure(measure: Measure, terms: TermMap) -> MeasureOut:
    share = measure.share
    return MeasureOut(
        score=share.score if share else None, passed=share.part if share else None,
        total=share.whole if share else None, reason=measure.reason,
        failing=[FailingRuleOut(rule=f.rule, count=f.count, limit=f.limit,
                                attribute=terms.compact(f.attribute) if f.attribute else None)
                 for f in measure.failing])


def report_view(report: QualityReport, terms: TermMap) -> QualityReportOut:
    return QualityReportOut(
        dataset=report.dataset_id, generatedAt=format_datetime(report.generated_at),
        window=WindowOut(start=format_datetime(report.window.start),
                         end=format_datetime(report.window.end),
                         updatePeriods=report.window.periods),
        entities=report.entities,
        completeness=CompletenessOut(
            requiredAttributes=_measure(report.required_attributes, terms),
            expectedReadings=_measure(report.expected_readings, terms)),
        validity=_measure(report.validity, terms),
        timeliness=_measure(report.timeliness, terms))


# --- routes -----------------------------------------------------------------------------------

@router.get("/{dataset_id}/rules")
def get_rules(dataset_id: str, request: Request) -> dict[str, Any]:
    """The dataset's quality rules (readable by everyone, like the catalog)."""
    rules = hub_of(request).quality.rules(dataset_id)
    return rules_document(rules, terms_for(request, link_context(request)))


@router.put("/{dataset_id}/rules", openapi_extra=_request_body(QualityRulesDocument))
async def set_rules(dataset_id: str, request: Request, caller: CallerDep) -> dict[str, Any]:
    """Replace the dataset's quality rules (CDO, or a steward of the owning organisation);
    an empty document removes them. Audited."""
    payload, context = await read_body(request)
    document = validated(QualityRulesDocument, payload)
    terms = await run_in_threadpool(terms_for, request, context)
    rules = await run_in_threadpool(hub_of(request).quality.set_rules, caller, dataset_id,
                                    to_rules(document, terms))
    return rules_document(rules, terms)


@router.get("/{dataset_id}", response_model=QualityReportOut, response_model_by_alias=True,
            response_model_exclude_none=True)
def quality_report(dataset_id: str, request: Request, caller: CallerDep,
                   window: str = Query("P1D", description="ISO 8601 duration up to the "
                                                          "report's time.")
                   ) -> QualityReportOut:
    """Completeness, validity and timeliness of the dataset, with the rules that failed."""
    found = hub_of(request).quality.report(caller, dataset_id,
                                                exact_duration(window, "window"))
    return report_view(found, terms_for(request, link_context(request)))


@router.get("/{dataset_id}/silent", response_model=SilentEntitiesOut,
            response_model_by_alias=True)
def silent_entities(dataset_id: str, request: Request, caller: CallerDep,
                    limit: int = Query(100, ge=1, le=1000),
                    offset: int = Query(0, ge=0)) -> SilentEntitiesOut:
    """Entities (with their device, if one is registered) silent beyond the expected
    interval, longest silent first."""
    found = hub_of(request).quality.silent(caller, dataset_id, limit=limit, offset=offset)
    return SilentEntitiesOut(
        threshold=format_duration(found.threshold), thresholdFrom=found.threshold_source,
        total=found.total, entities=[SilentEntityOut(
            entityId=s.entity_id, lastSeen=format_datetime(s.last_seen),
            silentFor=format_duration(found.as_of - s.last_seen), deviceId=s.device_id)
            for s in found.entities])
