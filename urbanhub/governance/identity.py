"""The identity service: who the stakeholders are, and what a credential proves.

Organisations, members and API keys change only through here, each change in one
transaction with its audit entry (actor = the caller's subject), so the trail and the
register cannot disagree. Authentication turns an API key or an OIDC bearer token into a
Caller whose roles come from the register: the identity provider proves who someone is,
the city decides what they may do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from urbanhub.governance.audit import AuditEvent
from urbanhub.governance.oidc import OidcVerifier
from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.errors import (
    AlreadyExists,
    BadRequestData,
    Conflict,
    Forbidden,
    ResourceNotFound,
    Unauthenticated,
)
from urbanhub.model.governance import Role
from urbanhub.model.identity import (
    API_KEY,
    ApiKey,
    KeyStatus,
    Member,
    Organisation,
    Scope,
    authorise,
    check_key_lifetime,
    check_key_scopes,
    hash_secret,
    may_govern_identities,
    member_caller,
    parse_api_key,
    secret_matches,
)
from urbanhub.ngsild.timeutil import format_datetime, utcnow
from urbanhub.store import identities as store
from urbanhub.store.audit import AuditLog

CDO = frozenset({Role.CDO})


@dataclass(frozen=True)
class IssuedKey:
    """A new API key: ``key`` is the whole secret text, handed over once and never stored."""

    record: ApiKey
    key: str


def _member_details(member: Member) -> dict[str, Any]:
    return {"organisation": member.organisation, "roles": sorted(member.roles),
            "oidc_issuer": member.oidc_issuer, "oidc_subject": member.oidc_subject}


#: How long a checked API key is trusted without asking the database again, in seconds: a
#: revocation or role change made through this process applies at once, one made by
#: another process within this time.
AUTH_CACHE_S = 2.0
AUTH_CACHE_SIZE = 10_000


class IdentityService:
    """Organisations, members and API keys of one hub, and authentication against them."""

    def __init__(self, engine: Engine, audit: AuditLog, oidc: OidcVerifier | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.audit = audit
        self.oidc = oidc
        self.clock = clock
        # hash of a presented key -> (checked until, key expiry, caller): API keys are sent
        # with every request, and checking one costs four queries.
        self._authenticated: dict[str, tuple[float, datetime, Caller]] = {}

    # --- authentication -------------------------------------------------------------------

    def recently_authenticated(self, presented: str) -> Caller | None:
        """The caller of a key checked within ``AUTH_CACHE_S`` and still unexpired, else None;
        no I/O, so the HTTP layer answers it without a thread hand-off."""
        cached = self._authenticated.get(hash_secret(presented))
        if cached is not None and time.monotonic() < cached[0] and self.clock() < cached[1]:
            return cached[2]
        return None

    def authenticate_api_key(self, presented: str) -> Caller:
        """The caller an API key stands for; Unauthenticated saying why when it is not valid.

        Whether a key is expired or revoked is told only to someone holding its secret.
        Unknown key ids answer faster than wrong secrets; that reveals nothing, as key ids
        are not secret (they are listed and audited).
        """
        known = self.recently_authenticated(presented)
        if known is not None:
            return known
        key_id, secret = parse_api_key(presented)
        with self.engine.connect() as conn:
            found = store.api_key_with_hash(conn, key_id)
            if found is None or not secret_matches(secret, found[1]):
                raise Unauthenticated("The API key is not valid.", scheme="ApiKey")
            key = found[0]
            if key.revoked_at is not None:
                raise Unauthenticated(f"The API key {key_id} was revoked at "
                                      f"{format_datetime(key.revoked_at)}.", scheme="ApiKey")
            if key.status(self.clock()) is KeyStatus.EXPIRED:
                raise Unauthenticated(f"The API key {key_id} expired at "
                                      f"{format_datetime(key.expires_at)}.", scheme="ApiKey")
            member, organisation = self._member_of(conn, key.subject)
        caller = member_caller(member, organisation, key.scopes)
        if len(self._authenticated) >= AUTH_CACHE_SIZE:
            self._authenticated.clear()
        self._authenticated[hash_secret(presented)] = (
            time.monotonic() + AUTH_CACHE_S, key.expires_at, caller)
        return caller

    def authenticate_bearer(self, token: str) -> Caller:
        """The caller an OIDC token stands for: the member linked to the token's account,
        else an authenticated caller with only the public role."""
        if self.oidc is None:
            raise Unauthenticated("Bearer tokens are not accepted: OIDC is not configured on "
                                  "this hub; use an API key.", scheme="Bearer")
        identity = self.oidc.verify(token)
        with self.engine.connect() as conn:
            member = store.member_by_oidc(conn, identity.issuer, identity.subject)
            if member is None:
                return Caller(subject=f"oidc:{identity.subject}", roles=frozenset({"public"}),
                              scopes=frozenset({Scope.READ.value}))
            member, organisation = self._member_of(conn, member.subject)
        return member_caller(member, organisation, member.allowed_scopes)

    # --- the register -----------------------------------------------------------------------

    def organisations(self, caller: Caller) -> list[Organisation]:
        authorise(caller, "Listing organisations", Scope.READ)
        with self.engine.connect() as conn:
            return store.list_organisations(conn)

    def organisation(self, caller: Caller, organisation_id: str) -> Organisation:
        authorise(caller, "Reading an organisation", Scope.READ)
        with self.engine.connect() as conn:
            return self._organisation(conn, organisation_id)

    def members(self, caller: Caller, organisation_id: str | None = None) -> list[Member]:
        authorise(caller, "Listing members", Scope.READ)
        with self.engine.connect() as conn:
            return store.list_members(conn, organisation_id)

    def member(self, caller: Caller, subject: str) -> Member:
        authorise(caller, "Reading a member", Scope.READ)
        with self.engine.connect() as conn:
            return self._member(conn, subject)

    def create_organisation(self, caller: Caller, organisation: Organisation) -> Organisation:
        authorise(caller, "Creating an organisation", Scope.GOVERN, CDO)
        with self._changing() as (conn, events):
            events.append(self._insert_organisation(conn, caller, organisation))
        return organisation

    def add_member(self, caller: Caller, member: Member) -> Member:
        authorise(caller, "Adding a member", Scope.GOVERN, CDO)
        with self._changing() as (conn, events):
            events.append(self._insert_member(conn, caller, member))
        return member

    def update_member(self, caller: Caller, subject: str,
                      change: Callable[[Member], Member]) -> Member:
        """Apply ``change`` to the member as stored now (roles, OIDC identity), in one
        transaction, so concurrent changes cannot undo each other."""
        authorise(caller, "Changing a member", Scope.GOVERN, CDO)
        with self._changing() as (conn, events):
            before = self._member(conn, subject)
            after = change(before)
            if (after.subject, after.organisation) != (before.subject, before.organisation):
                raise BadRequestData("A member's subject and organisation cannot change.")
            if Role.CDO in before.roles and Role.CDO not in after.roles and (
                    store.subjects_with_role(conn, Role.CDO) == [subject]):
                raise Conflict(f"{subject} is the only CDO: make another member CDO first, "
                               "or the city could no longer govern its identities.")
            self._check_oidc_identity_free(conn, after)
            store.update_member(conn, after)
            events.append(AuditEvent(caller.subject, "identity.member.update",
                                     f"member:{subject}", {"before": _member_details(before),
                                                           "after": _member_details(after)}))
        return after

    # --- API keys ---------------------------------------------------------------------------

    def issue_api_key(self, caller: Caller, subject: str, scopes: frozenset[Scope],
                      lifetime: timedelta, label: str | None = None) -> IssuedKey:
        """A new key for ``subject``: members issue their own, CDOs anyone's."""
        if subject == caller.subject:
            authorise(caller, "Issuing an API key", None)
        else:
            authorise(caller, "Issuing an API key for another member", Scope.GOVERN, CDO)
        check_key_lifetime(lifetime)
        with self._changing() as (conn, events):
            holder = self._member(conn, subject)
            check_key_scopes(caller, holder, scopes)
            issued, event = self._issue(conn, caller, holder, scopes, lifetime, label)
            events.append(event)
        return issued

    def api_keys(self, caller: Caller, subject: str | None = None) -> list[ApiKey]:
        """Keys (never their secrets): a member's own; a CDO's choice of subject, or all."""
        authorise(caller, "Listing API keys", None)
        if not may_govern_identities(caller):
            if subject not in (None, caller.subject):
                raise ResourceNotFound(f"Only your own API keys are listed to you; "
                                       f"{subject} is not you.")
            subject = caller.subject
        with self.engine.connect() as conn:
            return store.list_api_keys(conn, subject)

    def api_key(self, caller: Caller, key_id: str) -> ApiKey:
        authorise(caller, "Reading an API key", None)
        with self.engine.connect() as conn:
            return self._visible_key(conn, caller, key_id)

    def revoke_api_key(self, caller: Caller, key_id: str) -> ApiKey:
        """Revoke a key at once (members their own, CDOs anyone's); revoking twice is a no-op."""
        authorise(caller, "Revoking an API key", None)
        with self._changing() as (conn, events):
            key = self._visible_key(conn, caller, key_id)
            if key.revoked_at is not None:
                return key
            now = self.clock()
            store.revoke_api_key(conn, key_id, now)
            events.append(AuditEvent(caller.subject, "identity.api_key.revoke",
                                     f"api_key:{key_id}", {"subject": key.subject}))
        return replace(key, revoked_at=now)

    # --- bootstrap ----------------------------------------------------------------------------

    def bootstrap(self, organisation: Organisation, subject: str,
                  lifetime: timedelta) -> IssuedKey:
        """Create the first CDO: a department, its CDO member and a key with every scope.

        Refused (Conflict) once any CDO exists: later CDOs are appointed by a CDO.
        """
        check_key_lifetime(lifetime)
        member = Member(subject, organisation.id, frozenset({Role.CDO}))
        actor = Caller.system("bootstrap")
        with self._changing() as (conn, events):
            cdos = store.subjects_with_role(conn, Role.CDO)
            if cdos:
                raise Conflict(f"A CDO already exists ({', '.join(cdos)}); bootstrap only "
                               "creates the first one. A CDO appoints the others.")
            events.append(self._insert_organisation(conn, actor, organisation))
            events.append(self._insert_member(conn, actor, member))
            issued, event = self._issue(conn, actor, member, member.allowed_scopes, lifetime,
                                        "bootstrap")
            events.append(event)
        return issued

    def service_account_key(self, caller: Caller, organisation: Organisation, subject: str,
                            roles: frozenset[Role], lifetime: timedelta,
                            label: str) -> IssuedKey:
        """A fresh key for one of the hub's own integrations (the demo city, a test
        harness), creating its organisation and member the first time; only the hub's
        own components (system callers) may ask, and everything is audited as usual."""
        if SYSTEM_ROLE not in caller.roles:
            raise Forbidden("Service accounts are created by the hub's own components only.")
        check_key_lifetime(lifetime)
        with self._changing() as (conn, events):
            if store.get_organisation(conn, organisation.id) is None:
                events.append(self._insert_organisation(conn, caller, organisation))
            member = store.get_member(conn, subject)
            if member is None:
                member = Member(subject, organisation.id, roles)
                events.append(self._insert_member(conn, caller, member))
            issued, event = self._issue(conn, caller, member, member.allowed_scopes, lifetime,
                                        label)
            events.append(event)
        return issued

    # --- internals ----------------------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[tuple[Connection, list[AuditEvent]]]:
        """A write transaction; the audit events collected in it are appended before it
        commits, so a change and its audit entries are kept together or not at all. Any
        change (a revocation, a role taken away) ends this process's cached
        authentications at once."""
        events: list[AuditEvent] = []
        with self.audit.transaction() as conn:
            yield conn, events
            self.audit.append(events, conn)
        self._authenticated.clear()

    def _insert_organisation(self, conn: Connection, caller: Caller,
                             organisation: Organisation) -> AuditEvent:
        if store.get_organisation(conn, organisation.id) is not None:
            raise AlreadyExists(f"Organisation {organisation.id} already exists.")
        store.insert_organisation(conn, organisation, self.clock())
        return AuditEvent(caller.subject, "identity.organisation.create",
                          f"organisation:{organisation.id}",
                          {"name": organisation.name, "kind": organisation.kind.value})

    def _insert_member(self, conn: Connection, caller: Caller, member: Member) -> AuditEvent:
        if store.get_organisation(conn, member.organisation) is None:
            raise BadRequestData(f"Organisation {member.organisation} does not exist.")
        if store.get_member(conn, member.subject) is not None:
            raise AlreadyExists(f"Member {member.subject} already exists.")
        self._check_oidc_identity_free(conn, member)
        store.insert_member(conn, member, self.clock())
        return AuditEvent(caller.subject, "identity.member.add", f"member:{member.subject}",
                          _member_details(member))

    def _issue(self, conn: Connection, caller: Caller, holder: Member,
               scopes: frozenset[Scope], lifetime: timedelta,
               label: str | None) -> tuple[IssuedKey, AuditEvent]:
        now = self.clock()
        key_id, secret, text = API_KEY.issue()
        record = ApiKey(key_id, holder.subject, scopes, now, now + lifetime, None, label)
        store.insert_api_key(conn, record, hash_secret(secret))
        event = AuditEvent(caller.subject, "identity.api_key.issue", f"api_key:{key_id}",
                           {"subject": holder.subject, "scopes": sorted(scopes),
                            "expires_at": format_datetime(record.expires_at), "label": label})
        return IssuedKey(record, text), event

    @staticmethod
    def _check_oidc_identity_free(conn: Connection, member: Member) -> None:
        if member.oidc_issuer is None or member.oidc_subject is None:
            return
        holder = store.member_by_oidc(conn, member.oidc_issuer, member.oidc_subject)
        if holder is not None and holder.subject != member.subject:
            raise AlreadyExists(f"The OIDC account {member.oidc_subject} of "
                                f"{member.oidc_issuer} is already linked to {holder.subject}.")

    @staticmethod
    def _organisation(conn: Connection, organisation_id: str) -> Organisation:
        organisation = store.get_organisation(conn, organisation_id)
        if organisation is None:
            raise ResourceNotFound(f"No organisation {organisation_id}.")
        return organisation

    @staticmethod
    def _member(conn: Connection, subject: str) -> Member:
        member = store.get_member(conn, subject)
        if member is None:
            raise ResourceNotFound(f"No member {subject}.")
        return member

    def _member_of(self, conn: Connection, subject: str) -> tuple[Member, Organisation]:
        member = self._member(conn, subject)
        return member, self._organisation(conn, member.organisation)

    @staticmethod
    def _visible_key(conn: Connection, caller: Caller, key_id: str) -> ApiKey:
        """The key, if it is the caller's own or the caller governs identities."""
        key = store.get_api_key(conn, key_id)
        if key is None or (key.subject != caller.subject and not may_govern_identities(caller)):
            raise ResourceNotFound(f"No API key {key_id} of yours.")
        return key
