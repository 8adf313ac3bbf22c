"""Stakeholders and identities: organisations, their members, API keys, and scopes.

Pure rules only; the identity service (urbanhub.governance.identity) stores and audits them.
Roles say what a person does in the city and are governed by Urbanhub (a CDO assigns them),
never by an identity provider. Scopes say what one credential may be used for: a key can
carry fewer scopes than its holder's roles allow, so a dashboard's key cannot write.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from urbanhub.model.caller import ANONYMOUS, Caller
from urbanhub.model.errors import BadRequestData, Forbidden, Unauthenticated
from urbanhub.model.governance import OrganisationKind, Role


class Scope(StrEnum):
    """What a credential may be used for."""

    READ = "read"  # read data and the identity register
    WRITE = "write"  # write entities, provision devices, ingest readings
    GOVERN = "govern"  # change what governs the data: catalog, identities, reviews


#: The roles a member can hold; ``public`` is what everyone without membership has.
MEMBER_ROLES = frozenset(Role) - {Role.PUBLIC}

#: The scopes each role may put on a credential; a caller gets the union over its roles.
ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.CDO: frozenset(Scope),
    Role.STEWARD: frozenset(Scope),
    Role.PRIVACY_BOARD: frozenset({Scope.READ, Scope.GOVERN}),
    Role.OPERATOR: frozenset({Scope.READ, Scope.WRITE}),
    Role.ANALYST: frozenset({Scope.READ}),
    Role.PUBLIC: frozenset({Scope.READ}),
}

#: Longest an API key may live: a forgotten key stops working within a year at most.
MAX_API_KEY_LIFETIME = timedelta(days=365)
# Subjects may not contain ":" so that "system:…" and "oidc:…" callers never collide with them.
_SUBJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
_ORGANISATION_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def allowed_scopes(roles: Iterable[str]) -> frozenset[Scope]:
    """The scopes a holder of ``roles`` may use (unknown role names allow nothing)."""
    return frozenset().union(*(ROLE_SCOPES[Role(r)] for r in roles if r in ROLE_SCOPES))


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Member roles from their names; at least one, and never ``public``."""
    roles = set()
    for name in names:
        if name not in MEMBER_ROLES:
            raise BadRequestData(f"{str(name)!r} is not a member role; member roles are "
                                 f"{', '.join(sorted(MEMBER_ROLES))}.")
        roles.add(Role(name))
    if not roles:
        raise BadRequestData("A member needs at least one role.")
    return frozenset(roles)


def parse_scopes(names: Iterable[str]) -> frozenset[Scope]:
    """Scopes from their names; at least one."""
    scopes = set()
    for name in names:
        if name not in frozenset(Scope):
            raise BadRequestData(f"Unknown scope {str(name)!r}; scopes are "
                                 f"{', '.join(s.value for s in Scope)}.")
        scopes.add(Scope(name))
    if not scopes:
        raise BadRequestData("An API key needs at least one scope.")
    return frozenset(scopes)


@dataclass(frozen=True)
class Organisation:
    """A stakeholder: a city department, a private partner, a university, civil society."""

    id: str
    name: str
    kind: OrganisationKind

    def __post_init__(self) -> None:
        if not _ORGANISATION_ID.fullmatch(self.id):
            raise BadRequestData(f"Organisation id {self.id!r} must be 1 to 64 lowercase "
                                 "letters, digits, '.', '_' or '-', starting with a letter "
                                 "or digit.")
        if not self.name.strip() or len(self.name) > 200:
            raise BadRequestData("An organisation name must be 1 to 200 characters.")
        object.__setattr__(self, "kind", OrganisationKind(self.kind))


@dataclass(frozen=True)
class Member:
    """A person or service of an organisation, with the roles the city gave it.

    ``oidc_issuer`` and ``oidc_subject`` link the member to its identity-provider account,
    so a bearer token of that account authenticates as this member.
    """

    subject: str
    organisation: str
    roles: frozenset[Role]
    oidc_issuer: str | None = None
    oidc_subject: str | None = None

    def __post_init__(self) -> None:
        check_subject(self.subject)
        object.__setattr__(self, "roles", parse_roles(self.roles))
        if (self.oidc_issuer is None) != (self.oidc_subject is None):
            raise BadRequestData("An OIDC identity needs both the issuer and the subject.")
        for name, value in (("issuer", self.oidc_issuer), ("subject", self.oidc_subject)):
            if value is not None and not 0 < len(value) <= 255:
                raise BadRequestData(f"The OIDC {name} must be 1 to 255 characters.")

    @property
    def allowed_scopes(self) -> frozenset[Scope]:
        return allowed_scopes(self.roles)


def check_subject(subject: str) -> None:
    if not _SUBJECT.fullmatch(subject) or subject == ANONYMOUS:
        raise BadRequestData(f"Subject {subject!r} must be 1 to 128 letters, digits, '.', "
                             "'_', '@', '+' or '-', starting with a letter or digit "
                             "(and not 'anonymous').")


class KeyStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class ApiKey:
    """What is kept of an API key: never its secret, only the secret's hash (in the store)."""

    key_id: str
    subject: str
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", parse_scopes(self.scopes))
        if self.created_at.tzinfo is None or self.expires_at.tzinfo is None:
            raise BadRequestData("API key times must be timezone-aware.")
        if self.expires_at <= self.created_at:
            raise BadRequestData("An API key must expire after it is created.")
        if self.label is not None and len(self.label) > 100:
            raise BadRequestData("An API key label must be at most 100 characters.")

    def status(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        return KeyStatus.ACTIVE if now < self.expires_at else KeyStatus.EXPIRED


def check_key_lifetime(lifetime: timedelta) -> None:
    if not timedelta(0) < lifetime <= MAX_API_KEY_LIFETIME:
        raise BadRequestData(f"An API key must expire within {MAX_API_KEY_LIFETIME.days} days "
                             "of being issued.")


@dataclass(frozen=True)
class KeyFormat:
    """How one kind of secret key is spelled: ``<prefix>_<key id>_<secret>``.

    The key id (16 hex digits, not secret) finds the record; the secret (32 random bytes,
    URL-safe base64) is checked against the record's hash. API keys and device keys share
    the format and differ by prefix, so a key sent in the wrong header is told apart.
    """

    prefix: str
    name: str  # "API key", as error messages say it
    scheme: str  # the WWW-Authenticate scheme of a 401 about this kind of key

    def issue(self) -> tuple[str, str, str]:
        """A new key: its id, its secret, and the whole text handed over once."""
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        return key_id, secret, self.format(key_id, secret)

    def format(self, key_id: str, secret: str) -> str:
        return f"{self.prefix}_{key_id}_{secret}"

    def parse(self, text: str) -> tuple[str, str]:
        """Key id and secret of a presented key; Unauthenticated when it is not shaped
        like one."""
        match = re.fullmatch(re.escape(self.prefix) + r"_([0-9a-f]{16})_([A-Za-z0-9_-]{43})",
                             text)
        if match is None:
            raise Unauthenticated(f"The {self.name} is malformed: Urbanhub {self.name}s look "
                                  f"like {self.prefix}_<16 hex digits>_<43 characters>.",
                                  scheme=self.scheme)
        return match.group(1), match.group(2)


API_KEY = KeyFormat("uh", "API key", "ApiKey")


def parse_api_key(text: str) -> tuple[str, str]:
    """Key id and secret of a presented key; Unauthenticated when it is not shaped like one."""
    return API_KEY.parse(text)


def hash_secret(secret: str) -> str:
    """SHA-256 of a key's secret, hex-encoded.

    A plain fast hash is right here, unlike for passwords: the secret is 32 random bytes
    (256 bits), so a stolen hash cannot be reversed by guessing however fast guesses are,
    and slow password hashes (bcrypt, Argon2) would only add ~100 ms to every request.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Constant-time comparison, so response timing reveals nothing about the stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def member_caller(member: Member, organisation: Organisation,
                  scopes: frozenset[Scope]) -> Caller:
    """The caller a member's credential authenticates as; ``scopes`` are cut down to what the
    member's current roles allow, so taking a role away also narrows keys issued before."""
    return Caller(subject=member.subject, roles=frozenset(r.value for r in member.roles),
                  organisation=organisation.id, organisation_kind=organisation.kind,
                  scopes=frozenset(s.value for s in scopes & member.allowed_scopes))


def authorise(caller: Caller, action: str, scope: Scope | None,
              roles: frozenset[Role] = MEMBER_ROLES) -> None:
    """Refuse unless ``caller`` holds one of ``roles`` and its credential carries ``scope``
    (any credential will do when ``scope`` is None).

    ``action`` completes the sentence "… needs …" in the error, e.g. "Creating an
    organisation". Without credentials this is a 401 (log in), otherwise a 403.
    """
    if not caller.authenticated:
        raise Unauthenticated(f"{action} needs credentials: send an API key "
                              "(Authorization: ApiKey …) or a bearer token.")
    if not caller.roles & roles:
        wanted = ("membership of an organisation" if roles == MEMBER_ROLES
                  else "the role " + " or ".join(sorted(r.value for r in roles)))
        raise Forbidden(f"{action} needs {wanted}; {caller.subject} has the roles "
                        f"{', '.join(sorted(caller.roles)) or 'none'}.")
    if scope is not None and scope not in caller.scopes:
        raise Forbidden(f"{action} needs the {scope.value} scope; this credential has "
                        f"{', '.join(sorted(caller.scopes)) or 'no scope'}.")


def may_govern_identities(caller: Caller) -> bool:
    """CDOs govern identities (other members' keys included), with a govern-scoped credential."""
    return Role.CDO in caller.roles and Scope.GOVERN in caller.scopes


def check_key_scopes(issuer: Caller, holder: Member, scopes: frozenset[Scope]) -> None:
    """A key carries only scopes its holder's roles allow and the issuing credential has,
    so no credential can mint a more powerful one."""
    beyond_roles = scopes - holder.allowed_scopes
    if beyond_roles:
        raise Forbidden(f"The roles of {holder.subject} do not allow the scopes "
                        f"{', '.join(sorted(beyond_roles))}; they allow "
                        f"{', '.join(sorted(holder.allowed_scopes))}.")
    beyond_credential = scopes - issuer.scopes
    if beyond_credential:
        raise Forbidden(f"A key cannot carry scopes the credential issuing it lacks: "
                        f"{', '.join(sorted(beyond_credential))}.")
