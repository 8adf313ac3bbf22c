"""Identity API under ``/governance/v1``: organisations, members, API keys, and "who am I".

Thin: bodies are validated here (Pydantic), every rule about who may do what lives in the
identity service and the pure model, which this router only calls.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from urbanhub.api.jsonld import hub_of
from urbanhub.api.models import Body as _Body
from urbanhub.api.models import CamelModel as _Camel
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.governance.identity import IdentityService
from urbanhub.model.errors import BadRequestData
from urbanhub.model.governance import OrganisationKind, Role
from urbanhub.model.identity import (
    MAX_API_KEY_LIFETIME,
    ApiKey,
    KeyStatus,
    Member,
    Organisation,
    Scope,
)

PREFIX = "/governance/v1"
router = APIRouter(prefix=PREFIX, tags=["Identities"],
                   responses=problem_responses(400, 401, 403, 404, 409, 503))
SHOWN_ONCE = "Store this key now: Urbanhub keeps only its hash and cannot show it again."


class OrganisationIn(_Body):
    id: str = Field(max_length=64, description="Lowercase letters, digits, '.', '_', '-'.")
    name: str = Field(max_length=200)
    kind: OrganisationKind


class MemberIn(_Body):
    subject: str = Field(max_length=128, description="The member's id in Urbanhub.")
    organisation: str = Field(max_length=64)
    roles: list[Role] = Field(min_length=1, max_length=len(Role),
                              description="Any of the roles but public.")
    oidc_subject: str | None = Field(None, max_length=255, description=(
        "The `sub` of the member's identity-provider account, to log in with bearer tokens."))
    oidc_issuer: str | None = Field(None, max_length=255,
                                    description="Default: the configured OIDC issuer.")


class MemberPatch(_Body):
    roles: list[Role] | None = Field(None, max_length=len(Role))
    oidc_subject: str | None = Field(None, max_length=255,
                                     description="null unlinks the identity-provider account.")
    oidc_issuer: str | None = Field(None, max_length=255)


class ApiKeyIn(_Body):
    subject: str | None = Field(None, max_length=128,
                                description="Whose key (default: yours; others' need a CDO).")
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    expires_in_days: int = Field(ge=1, le=MAX_API_KEY_LIFETIME.days)
    label: str | None = Field(None, max_length=100, description="What the key is for.")


class OrganisationOut(_Camel):
    id: str
    name: str
    kind: OrganisationKind


class MemberOut(_Camel):
    subject: str
    organisation: str
    roles: list[Role]
    oidc_issuer: str | None
    oidc_subject: str | None


class ApiKeyOut(_Camel):
    key_id: str
    subject: str
    scopes: list[Scope]
    label: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    status: KeyStatus


class IssuedKeyOut(ApiKeyOut):
    key: str = Field(description="The whole key, shown this once.")
    warning: str = SHOWN_ONCE


class CallerOut(_Camel):
    subject: str
    authenticated: bool
    roles: list[str]
    organisation: str | None
    organisation_kind: str | None
    scopes: list[str]
    purpose: str | None


def _identities(request: Request) -> IdentityService:
    return hub_of(request).identities


def _organisation_out(organisation: Organisation) -> OrganisationOut:
    return OrganisationOut(id=organisation.id, name=organisation.name, kind=organisation.kind)


def _member_out(member: Member) -> MemberOut:
    return MemberOut(subject=member.subject, organisation=member.organisation,
                     roles=sorted(member.roles), oidc_issuer=member.oidc_issuer,
                     oidc_subject=member.oidc_subject)


def _key_fields(key: ApiKey, now: datetime) -> dict[str, Any]:
    return {"key_id": key.key_id, "subject": key.subject, "scopes": sorted(key.scopes),
            "label": key.label, "created_at": key.created_at, "expires_at": key.expires_at,
            "revoked_at": key.revoked_at, "status": key.status(now)}


def _oidc_account(identities: IdentityService, subject: str | None,
                  issuer: str | None) -> tuple[str | None, str | None]:
    """(issuer, subject) of the identity-provider account to link, (None, None) for none;
    the issuer defaults to the configured one."""
    if not subject:
        if issuer:
            raise BadRequestData("oidcIssuer needs the oidcSubject of the account to link.")
        return None, None
    if issuer:
        return issuer, subject
    if identities.oidc is None:
        raise BadRequestData("Name the oidcIssuer: no OIDC issuer is configured on this hub.")
    return identities.oidc.issuer, subject


# --- who am I ------------------------------------------------------------------------------

@router.get("/me")
def me(caller: CallerDep) -> CallerOut:
    """The caller as the hub sees it: subject, roles, organisation and credential scopes."""
    return CallerOut(subject=caller.subject, authenticated=caller.authenticated,
                     roles=sorted(caller.roles), organisation=caller.organisation,
                     organisation_kind=caller.organisation_kind, scopes=sorted(caller.scopes),
                     purpose=caller.purpose)


# --- organisations -------------------------------------------------------------------------

@router.post("/organisations", status_code=201)
def create_organisation(body: OrganisationIn, request: Request, response: Response,
                        caller: CallerDep) -> OrganisationOut:
    """Register an organisation (CDO, govern scope)."""
    organisation = _identities(request).create_organisation(
        caller, Organisation(body.id, body.name, body.kind))
    response.headers["Location"] = f"{PREFIX}/organisations/{organisation.id}"
    return _organisation_out(organisation)


@router.get("/organisations")
def list_organisations(request: Request, caller: CallerDep) -> list[OrganisationOut]:
    """Every organisation (members only)."""
    return [_organisation_out(o) for o in _identities(request).organisations(caller)]


@router.get("/organisations/{organisation_id}")
def get_organisation(organisation_id: str, request: Request,
                     caller: CallerDep) -> OrganisationOut:
    return _organisation_out(_identities(request).organisation(caller, organisation_id))


# --- members -------------------------------------------------------------------------------

@router.post("/members", status_code=201)
def add_member(body: MemberIn, request: Request, response: Response,
               caller: CallerDep) -> MemberOut:
    """Add a member to an organisation with its roles (CDO, govern scope)."""
    identities = _identities(request)
    issuer, oidc_subject = _oidc_account(identities, body.oidc_subject, body.oidc_issuer)
    member = identities.add_member(caller, Member(
        body.subject, body.organisation, frozenset(body.roles), issuer, oidc_subject))
    response.headers["Location"] = f"{PREFIX}/members/{member.subject}"
    return _member_out(member)


@router.get("/members")
def list_members(request: Request, caller: CallerDep,
                 organisation: str | None = None) -> list[MemberOut]:
    """Every member, or those of one organisation (members only)."""
    return [_member_out(m) for m in _identities(request).members(caller, organisation)]


@router.get("/members/{subject}")
def get_member(subject: str, request: Request, caller: CallerDep) -> MemberOut:
    return _member_out(_identities(request).member(caller, subject))


@router.patch("/members/{subject}")
def change_member(subject: str, body: MemberPatch, request: Request,
                  caller: CallerDep) -> MemberOut:
    """Change a member's roles and/or linked OIDC account (CDO, govern scope); fields left
    out stay as they are."""
    identities = _identities(request)
    changes: dict[str, Any] = {}
    sent = body.model_fields_set
    if "roles" in sent:
        if body.roles is None:
            raise BadRequestData("roles cannot be null: a member keeps at least one role.")
        changes["roles"] = frozenset(body.roles)
    if sent & {"oidc_subject", "oidc_issuer"}:
        changes["oidc_issuer"], changes["oidc_subject"] = _oidc_account(
            identities, body.oidc_subject, body.oidc_issuer)
    if not changes:
        raise BadRequestData("Nothing to change: send roles and/or oidcSubject.")
    member = identities.update_member(caller, subject, lambda m: replace(m, **changes))
    return _member_out(member)


# --- API keys ------------------------------------------------------------------------------

@router.post("/api-keys", status_code=201)
def issue_api_key(body: ApiKeyIn, request: Request, response: Response,
                  caller: CallerDep) -> IssuedKeyOut:
    """Issue an API key: for yourself, or as a CDO for any member. The key is in this
    response only; scopes must be allowed by the holder's roles and by your credential."""
    identities = _identities(request)
    issued = identities.issue_api_key(caller, body.subject or caller.subject,
                                      frozenset(body.scopes),
                                      timedelta(days=body.expires_in_days), body.label)
    response.headers["Location"] = f"{PREFIX}/api-keys/{issued.record.key_id}"
    response.headers["Cache-Control"] = "no-store"
    return IssuedKeyOut(**_key_fields(issued.record, identities.clock()), key=issued.key)


@router.get("/api-keys")
def list_api_keys(request: Request, caller: CallerDep,
                  subject: str | None = None) -> list[ApiKeyOut]:
    """Your keys; a CDO sees everyone's (or one subject's). Never secrets or hashes."""
    identities = _identities(request)
    now = identities.clock()
    return [ApiKeyOut(**_key_fields(k, now)) for k in identities.api_keys(caller, subject)]


@router.get("/api-keys/{key_id}")
def get_api_key(key_id: str, request: Request, caller: CallerDep) -> ApiKeyOut:
    identities = _identities(request)
    return ApiKeyOut(**_key_fields(identities.api_key(caller, key_id), identities.clock()))


@router.delete("/api-keys/{key_id}", status_code=204, response_class=Response)
def revoke_api_key(key_id: str, request: Request, caller: CallerDep) -> None:
    """Revoke a key at once: your own, or as a CDO anyone's."""
    _identities(request).revoke_api_key(caller, key_id)
