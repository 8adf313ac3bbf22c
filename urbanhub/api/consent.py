"""Consent and erasure API under ``/governance/v1``: what data subjects decided, and erasure.

For the city's stewards and CDO (and hub integrations) recording what data subjects ask
for; a portal where subjects act themselves is out of scope (see
``urbanhub.governance.consent``). Subjects are named by their pseudonymous ids only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field

from urbanhub.api.jsonld import hub_of
from urbanhub.api.models import Body, CamelModel
from urbanhub.api.problems import problem_responses
from urbanhub.api.security import CallerDep
from urbanhub.governance.catalog_documents import CatalogId
from urbanhub.governance.erasure import DatasetErasure, ErasureReport
from urbanhub.model.consent import MAX_EVIDENCE, Consent, ConsentStatus
from urbanhub.model.requests import MAX_REASON

PREFIX = "/governance/v1"
router = APIRouter(prefix=PREFIX, tags=["Consent and erasure"],
                   responses=problem_responses(400, 401, 403, 409))
SUBJECT = "The data subject's pseudonymous id (3-128 letters, digits, . _ : ~ -)."


class ConsentIn(Body):
    subject: str = Field(max_length=128, description=SUBJECT)
    purpose: CatalogId = Field(description="A registered purpose.")
    source: str = Field(max_length=MAX_EVIDENCE, description=(
        "How the consent was given: form, channel, reference (the evidence)."))
    expires_at: datetime | None = Field(None, description="When it lapses (with offset).")


class WithdrawalIn(Body):
    subject: str = Field(max_length=128, description=SUBJECT)
    purpose: CatalogId
    source: str = Field(max_length=MAX_EVIDENCE, description="How it was withdrawn.")


class ErasureIn(Body):
    subject: str = Field(max_length=128, description=SUBJECT)
    reason: str = Field(max_length=MAX_REASON, description=(
        "Why (e.g. the request's reference); kept in the audit trail, so do not name the "
        "person."))


class ConsentOut(CamelModel):
    id: str
    subject: str
    purpose: str
    status: ConsentStatus
    granted_at: datetime
    expires_at: datetime | None
    source: str
    recorded_by: str
    withdrawn_at: datetime | None
    withdrawal_source: str | None
    withdrawn_by: str | None


class DatasetErasureOut(CamelModel):
    dataset: str | None = Field(description="null: entities that no longer exist.")
    entities: int
    history_rows: int = Field(description="History instances of the erased entities.")
    rollup_hours: int = Field(description="Hourly rollups of the erased entities, deleted.")
    former_values: int = Field(description=(
        "History instances naming the subject in entities that name someone else now, or "
        "no longer exist."))
    quality_flags: int = Field(description="Quality flags of the history rows deleted.")


class ErasureOut(CamelModel):
    subject_sha256: str
    erased_at: datetime
    datasets: list[DatasetErasureOut]
    devices_removed: list[str] = Field(description="Devices that wrote erased entities.")


def _consent_out(consent: Consent, now: datetime) -> ConsentOut:
    return ConsentOut(
        id=consent.id, subject=consent.subject, purpose=consent.purpose,
        status=consent.status(now), granted_at=consent.granted_at,
        expires_at=consent.expires_at, source=consent.source,
        recorded_by=consent.recorded_by, withdrawn_at=consent.withdrawn_at,
        withdrawal_source=consent.withdrawal_source, withdrawn_by=consent.withdrawn_by)


def _dataset_out(line: DatasetErasure) -> DatasetErasureOut:
    return DatasetErasureOut(dataset=line.dataset, entities=line.entities,
                             history_rows=line.history_rows, rollup_hours=line.rollup_hours,
                             former_values=line.former_values,
                             quality_flags=line.quality_flags)


def _erasure_out(report: ErasureReport) -> ErasureOut:
    return ErasureOut(subject_sha256=report.subject_digest, erased_at=report.erased_at,
                      datasets=[_dataset_out(line) for line in report.datasets],
                      devices_removed=list(report.devices_removed))


@router.post("/consents", status_code=201)
def record_consent(body: ConsentIn, request: Request, caller: CallerDep) -> ConsentOut:
    """Record a subject's consent to a purpose, from now (city steward or CDO, govern
    scope). It counts from the next query of consent-based data on."""
    consents = hub_of(request).consents
    consent = consents.grant(caller, body.subject, body.purpose, body.source, body.expires_at)
    return _consent_out(consent, consents.clock())


@router.post("/consents/withdrawals")
def record_withdrawal(body: WithdrawalIn, request: Request,
                      caller: CallerDep) -> list[ConsentOut]:
    """Record that a subject withdrew consent to a purpose: every consent in force for it
    ends now and the subject's records leave the next query. Answers the consents ended."""
    consents = hub_of(request).consents
    ended = consents.withdraw(caller, body.subject, body.purpose, body.source)
    now = consents.clock()
    return [_consent_out(c, now) for c in ended]


@router.get("/consents")
def list_consents(request: Request, caller: CallerDep,
                  subject: Annotated[str, Query(max_length=128, description=SUBJECT)],
                  purpose: Annotated[CatalogId | None, Query()] = None,
                  ) -> list[ConsentOut]:
    """A subject's consents, newest first, withdrawn and expired ones included."""
    consents = hub_of(request).consents
    now = consents.clock()
    return [_consent_out(c, now) for c in consents.consents(caller, subject, purpose)]


@router.post("/erasures")
def erase_subject(body: ErasureIn, request: Request, caller: CallerDep) -> ErasureOut:
    """Erase every record of a data subject, in one transaction (city steward or CDO,
    govern scope), and report what was deleted per dataset. The audit trail keeps the
    counts and the SHA-256 of the subject id, never the id."""
    return _erasure_out(hub_of(request).erasures.erase(caller, body.subject, body.reason))
