"""Consent of data subjects per purpose, and who may record it.

The city is the controller of its data, so its own staff record what data subjects
decide: stewards and the CDO of a city department (with a govern credential), or one of
the hub's own components integrating a consent channel (``Caller.system``). A data
subject portal, where people give and withdraw consent themselves, is not part of this
service: it would authenticate the people and call it as such an integration.

A consent counts from the moment it is recorded: ``ConsentService.consenting_entities``,
which the enforcement point adds to every query of consent-based data, reads the consent
table in that query, so a grant or withdrawal applies from the next query on, with nothing
cached. The audit trail
holds a digest of the subject id, never the id, and not the evidence text, which may
name the person.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection, Engine, Select

from urbanhub.governance.audit import AuditEvent
from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.consent import Consent, check_evidence, check_subject_id, subject_digest
from urbanhub.model.errors import BadRequestData, Conflict, Forbidden
from urbanhub.model.governance import OrganisationKind, Role
from urbanhub.model.identity import Scope, authorise
from urbanhub.ngsild.timeutil import format_datetime, utcnow
from urbanhub.store import consents as store
from urbanhub.store.audit import AuditLog
from urbanhub.store.catalog import get_purpose

CITY_DATA_PROTECTION = frozenset({Role.CDO, Role.STEWARD})


def authorise_subject_rights(caller: Caller, action: str) -> None:
    """Refuse unless the caller acts for the city on data subjects' decisions: a steward or
    the CDO of a city department with a govern credential, or a hub component."""
    if SYSTEM_ROLE in caller.roles:
        return
    authorise(caller, action, Scope.GOVERN, CITY_DATA_PROTECTION)
    if caller.organisation_kind is not OrganisationKind.DEPARTMENT:
        raise Forbidden(f"{action} is for the city's stewards and CDO, who act for the "
                        f"controller; {caller.organisation} is not a city department.")


def audit_target(subject: str) -> str:
    """How audit entries about a subject are found again without holding the id."""
    return f"subject-sha256:{subject_digest(subject)}"


class ConsentService:
    def __init__(self, engine: Engine, audit: AuditLog,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.audit = audit
        self.clock = clock

    def consenting_entities(self, purpose: str, subject_attribute: str,
                            now: datetime) -> Select[tuple[str]]:
        """SQL for the ids of entities whose subjects consent to ``purpose`` at ``now``
        (``urbanhub.store.consents.consenting_entities``): the enforcement point's filter."""
        return store.consenting_entities(purpose, subject_attribute, now)

    def grant(self, caller: Caller, subject: str, purpose: str, source: str,
              expires_at: datetime | None = None) -> Consent:
        """Record that ``subject`` consents to ``purpose`` from now (until ``expires_at``).

        A consent given while another is in force adds to it (a renewal with a later
        expiry, say); a withdrawal ends all of them.
        """
        authorise_subject_rights(caller, "Recording consent")
        consent = Consent(id=f"consent-{secrets.token_hex(8)}", subject=subject,
                          purpose=purpose, granted_at=self.clock(), source=source,
                          recorded_by=caller.subject, expires_at=expires_at)
        with self.audit.transaction() as conn:
            _check_purpose(conn, purpose)
            store.insert_consent(conn, consent)
            self.audit.append([AuditEvent(caller.subject, "governance.consent.grant",
                                          audit_target(subject), {
                                              "consent": consent.id, "purpose": purpose,
                                              "expiresAt": format_datetime(expires_at)
                                              if expires_at else None})], conn)
        return consent

    def withdraw(self, caller: Caller, subject: str, purpose: str,
                 source: str) -> list[Consent]:
        """End every consent of ``subject`` for ``purpose`` in force now; 409 when none is."""
        authorise_subject_rights(caller, "Recording a withdrawal of consent")
        check_subject_id(subject)
        source = check_evidence(source, "The withdrawal's source")
        with self.audit.transaction() as conn:
            _check_purpose(conn, purpose)
            now = self.clock()
            ended = store.list_consents(conn, subject, purpose, now)
            if not ended:
                raise Conflict(f"Subject {subject} has no consent in force for purpose "
                               f"{purpose} to withdraw.")
            store.withdraw_consents(conn, [c.id for c in ended], now, caller.subject, source)
            self.audit.append([AuditEvent(caller.subject, "governance.consent.withdraw",
                                          audit_target(subject), {
                                              "consents": [c.id for c in ended],
                                              "purpose": purpose})], conn)
        return [replace(c, withdrawn_at=now, withdrawn_by=caller.subject,
                        withdrawal_source=source) for c in ended]

    def consents(self, caller: Caller, subject: str,
                 purpose: str | None = None) -> list[Consent]:
        """Every consent a subject gave, newest first, withdrawn and expired ones too."""
        authorise_subject_rights(caller, "Reading consent records")
        check_subject_id(subject)
        with self.engine.connect() as conn:
            return store.list_consents(conn, subject, purpose)


def _check_purpose(conn: Connection, purpose: str) -> None:
    if get_purpose(conn, purpose) is None:
        raise BadRequestData(f"Unknown purpose {purpose}: consent is given for registered "
                             "purposes (see /catalog/v1/purposes).")
