"""Data-use requests API under ``/governance/v1``: requests, the board's decisions, grants.

Thin: bodies are validated here (Pydantic), the rules about who may do what live in the
request service and the pure model. Attribute names are terms of the ``Link`` header's
@context or full IRIs, expanded on the way in and compacted with the same context on the
way out, like the catalog's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field, StrictFloat, StrictInt
from starlette.responses import Response

from urbanhub.api.jsonld import hub_of, link_context, terms_for
from urbanhub.api.models import Body, CamelModel
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.governance.catalog_documents import CatalogId
from urbanhub.governance.requests import RequestView
from urbanhub.model.governance import Action, Role, format_duration
from urbanhub.model.requests import (
    MAX_DATASETS,
    MAX_JUSTIFICATION,
    MAX_REASON,
    Conditions,
    GrantRecord,
    GrantStatus,
    RequestDecision,
    RequestStatus,
    parse_access_duration,
)
from urbanhub.ngsild.context import TermMap
from urbanhub.ngsild.entity import check_name

PREFIX = "/governance/v1"
router = APIRouter(prefix=PREFIX, tags=["Data-use requests"],
                   responses=problem_responses(400, 401, 403, 404, 409, 503))
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Items to skip.")]
DURATION = ("ISO 8601 duration of exact length (weeks, days, hours), at most P730D, "
            "e.g. P90D.")


class RequestIn(Body):
    datasets: list[CatalogId] = Field(min_length=1, max_length=MAX_DATASETS,
                                      description="Ids of catalog datasets.")
    attributes: list[str] = Field(default_factory=list, max_length=200, description=(
        "Attributes classified more strictly than their dataset that you also need "
        "(terms of the Link header's @context, or IRIs)."))
    action: Action
    purpose: CatalogId = Field(description="A registered purpose.")
    justification: str = Field(max_length=MAX_JUSTIFICATION,
                               description="Why you need this data, for the privacy board.")
    duration: str = Field(max_length=40, description=DURATION)
    grantee_role: Role | None = Field(None, description=(
        "Limit the grant to members of your organisation with this role."))


class ApprovalIn(Body):
    pseudonymised: bool = Field(False, description="Identifiers are pseudonymised.")
    min_group_size: StrictInt | None = Field(None, description=(
        "Aggregates only, each over at least this many subjects (k ≥ 2)."))
    dp_epsilon: StrictFloat | StrictInt | None = Field(None, description=(
        "Differential-privacy budget per query (0 < ε ≤ 10)."))
    duration: str | None = Field(None, max_length=40, description=(
        "Access granted, at most what was asked for (the default)."))
    note: str | None = Field(None, max_length=MAX_REASON, description="For the requester.")


class ReasonIn(Body):
    reason: str = Field(max_length=MAX_REASON, description="Shown to the requester.")


class ConditionsOut(CamelModel):
    pseudonymised: bool
    min_group_size: int | None
    dp_epsilon: float | None


class DecisionOut(CamelModel):
    request_id: str
    outcome: RequestStatus
    decided_by: str
    decided_at: datetime
    reason: str | None
    conditions: ConditionsOut | None
    duration: str | None
    grants: list[str]


class RequestOut(CamelModel):
    id: str
    requester: str
    organisation: str
    grantee_role: Role | None
    datasets: list[str]
    attributes: list[str]
    action: Action
    purpose: str
    justification: str
    duration: str
    status: RequestStatus
    filed_at: datetime
    closed_at: datetime | None
    decision: DecisionOut | None


class GrantOut(CamelModel):
    id: str
    request_id: str
    dataset: str
    action: Action
    purpose: str
    grantee_organisation: str | None
    grantee_role: Role | None
    attributes: list[str]
    pseudonymised: bool
    min_group_size: int | None
    dp_epsilon: float | None
    valid_from: datetime
    valid_until: datetime
    status: GrantStatus
    revoked_at: datetime | None
    revoked_by: str | None
    revocation_reason: str | None


def _terms(request: Request) -> TermMap:
    return terms_for(request, link_context(request))


def _decision_out(decision: RequestDecision) -> DecisionOut:
    conditions = decision.conditions
    return DecisionOut(
        request_id=decision.request_id, outcome=decision.outcome,
        decided_by=decision.decided_by, decided_at=decision.decided_at,
        reason=decision.reason,
        conditions=None if conditions is None else ConditionsOut(
            pseudonymised=conditions.pseudonymised, min_group_size=conditions.min_group_size,
            dp_epsilon=conditions.dp_epsilon),
        duration=format_duration(decision.duration) if decision.duration else None,
        grants=list(decision.grant_ids))


def _request_out(view: RequestView, terms: TermMap) -> RequestOut:
    r = view.request
    return RequestOut(
        id=r.id, requester=r.requester, organisation=r.organisation,
        grantee_role=r.grantee_role, datasets=list(r.datasets),
        attributes=sorted(terms.compact(a) for a in r.attributes), action=r.action,
        purpose=r.purpose, justification=r.justification,
        duration=format_duration(r.duration), status=r.status, filed_at=r.filed_at,
        closed_at=r.closed_at,
        decision=_decision_out(view.decision) if view.decision is not None else None)


def _grant_out(record: GrantRecord, terms: TermMap, now: datetime) -> GrantOut:
    g = record.grant
    return GrantOut(
        id=g.id, request_id=record.request_id, dataset=g.dataset, action=g.action,
        purpose=g.purpose, grantee_organisation=g.grantee_organisation,
        grantee_role=g.grantee_role, attributes=sorted(terms.compact(a) for a in g.attributes),
        pseudonymised=g.pseudonymised, min_group_size=g.min_group_size,
        dp_epsilon=g.dp_epsilon, valid_from=g.valid_from, valid_until=g.valid_until,
        status=record.status(now), revoked_at=record.revoked_at, revoked_by=record.revoked_by,
        revocation_reason=record.revocation_reason)


# --- requests ------------------------------------------------------------------------------

@router.post("/data-use-requests", status_code=201)
def file_request(body: RequestIn, request: Request, response: Response,
                 caller: CallerDep) -> RequestOut:
    """Ask for data (any member): the grant goes to your organisation, or to one role of it,
    once the privacy board approves."""
    terms = _terms(request)
    view = hub_of(request).requests.file(
        caller, datasets=tuple(body.datasets), action=body.action, purpose=body.purpose,
        justification=body.justification, duration=parse_access_duration(body.duration),
        attributes=frozenset(terms.expand(check_name(a)) for a in body.attributes),
        grantee_role=body.grantee_role)
    response.headers["Location"] = f"{PREFIX}/data-use-requests/{view.request.id}"
    return _request_out(view, terms)


@router.get("/data-use-requests")
def list_requests(request: Request, caller: CallerDep, status: RequestStatus | None = None,
                  limit: Limit = 100, offset: Offset = 0) -> list[RequestOut]:
    """Requests, newest first: your organisation's; the board's and CDO's view is all."""
    terms = _terms(request)
    return [_request_out(v, terms) for v in hub_of(request).requests.requests(
        caller, status, limit=limit, offset=offset)]


@router.get("/data-use-requests/{request_id}")
def get_request(request_id: str, request: Request, caller: CallerDep) -> RequestOut:
    return _request_out(hub_of(request).requests.request(caller, request_id), _terms(request))


@router.post("/data-use-requests/{request_id}/approval")
def approve_request(request_id: str, body: ApprovalIn, request: Request,
                    caller: CallerDep) -> RequestOut:
    """Approve a pending request (privacy board, govern scope; not your own organisation's).
    Its grants are valid from now for the duration granted."""
    conditions = Conditions(body.pseudonymised, body.min_group_size,
                            None if body.dp_epsilon is None else float(body.dp_epsilon))
    duration = (parse_access_duration(body.duration, "The duration granted")
                if body.duration is not None else None)
    view = hub_of(request).requests.approve(caller, request_id, conditions, duration,
                                            body.note)
    return _request_out(view, _terms(request))


@router.post("/data-use-requests/{request_id}/rejection")
def reject_request(request_id: str, body: ReasonIn, request: Request,
                   caller: CallerDep) -> RequestOut:
    """Reject a pending request with a reason (privacy board, govern scope)."""
    view = hub_of(request).requests.reject(caller, request_id, body.reason)
    return _request_out(view, _terms(request))


@router.post("/data-use-requests/{request_id}/withdrawal")
def withdraw_request(request_id: str, request: Request, caller: CallerDep) -> RequestOut:
    """Withdraw your own pending request."""
    view = hub_of(request).requests.withdraw(caller, request_id)
    return _request_out(view, _terms(request))


@router.get("/decisions")
def list_decisions(request: Request, caller: CallerDep, limit: Limit = 100,
                   offset: Offset = 0) -> list[DecisionOut]:
    """The board's decisions, newest first, on your organisation's requests (board and CDO:
    on all)."""
    return [_decision_out(d) for d in hub_of(request).requests.decisions(
        caller, limit=limit, offset=offset)]


# --- grants --------------------------------------------------------------------------------

@router.get("/grants")
def list_grants(request: Request, caller: CallerDep, status: GrantStatus | None = None,
                limit: Limit = 100, offset: Offset = 0) -> list[GrantOut]:
    """Grants, newest first: your organisation's (board and CDO: all); ``status`` filters
    on active, expired or revoked now."""
    grants = hub_of(request).grants
    terms, now = _terms(request), grants.clock()
    return [_grant_out(g, terms, now) for g in grants.grants(caller, status, limit=limit,
                                                             offset=offset)]


@router.get("/grants/{grant_id}")
def get_grant(grant_id: str, request: Request, caller: CallerDep) -> GrantOut:
    grants = hub_of(request).grants
    return _grant_out(grants.grant(caller, grant_id), _terms(request), grants.clock())


@router.post("/grants/{grant_id}/revocation")
def revoke_grant(grant_id: str, body: ReasonIn, request: Request,
                 caller: CallerDep) -> GrantOut:
    """Revoke a grant at once, with a reason (CDO, govern scope)."""
    grants = hub_of(request).grants
    return _grant_out(grants.revoke(caller, grant_id, body.reason), _terms(request),
                      grants.clock())
