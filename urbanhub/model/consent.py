"""Consent of data subjects, per purpose, and how subjects are named.

Pure rules only; the consent service (urbanhub.governance.consent) stores and audits them.
A data subject is known to Urbanhub only by a pseudonymous id, the value of a dataset's
subject attribute. A consent is valid from when it was recorded until it expires or is
withdrawn; a withdrawal ends it without deleting it, so what was allowed when stays
provable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from urbanhub.model.errors import BadRequestData
from urbanhub.model.requests import required_text

#: Letters, digits and ``. _ : ~ -``: what opaque tokens and URNs use, and no ``@`` or
#: spaces, so an e-mail address or a name is refused rather than stored as an "id".
_SUBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:~-]{2,127}")
MAX_EVIDENCE = 2000


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


def check_subject_id(subject: object) -> str:
    if not isinstance(subject, str) or not _SUBJECT_ID.fullmatch(subject):
        raise BadRequestData(f"Subject id {subject!r} is not a pseudonymous id: 3 to 128 "
                             "letters, digits, '.', '_', ':', '~' or '-', starting with a "
                             "letter or digit (no names or e-mail addresses).")
    return subject


def subject_digest(subject: str) -> str:
    """SHA-256 of a subject id, hex: what the audit trail keeps instead of the id.

    The trail cannot be edited, so it must not hold the id of someone who may ask to be
    erased; the digest still lets whoever holds the id find the entries about them.
    """
    return hashlib.sha256(subject.encode()).hexdigest()


def check_evidence(text: str, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadRequestData(f"{what} must say how it was given (form, channel, reference); "
                             "it is the evidence of the subject's will.")
    return required_text(text, what, MAX_EVIDENCE)


@dataclass(frozen=True)
class Consent:
    """One consent of a data subject for one purpose, as recorded."""

    id: str
    subject: str
    purpose: str
    granted_at: datetime
    source: str  # how it was given: the evidence
    recorded_by: str
    expires_at: datetime | None = None
    withdrawn_at: datetime | None = None
    withdrawal_source: str | None = None
    withdrawn_by: str | None = None

    def __post_init__(self) -> None:
        check_subject_id(self.subject)
        object.__setattr__(self, "source", check_evidence(self.source, "The consent's source"))
        times = (self.granted_at, self.expires_at, self.withdrawn_at)
        if any(t is not None and t.tzinfo is None for t in times):
            raise BadRequestData("Consent times must be timezone-aware.")
        if self.expires_at is not None and self.expires_at <= self.granted_at:
            raise BadRequestData("A consent must expire after it is given.")

    def status(self, now: datetime) -> ConsentStatus:
        if self.withdrawn_at is not None and self.withdrawn_at <= now:
            return ConsentStatus.WITHDRAWN
        if self.expires_at is not None and self.expires_at <= now:
            return ConsentStatus.EXPIRED
        return ConsentStatus.ACTIVE
