"""Data-use requests and the grants they lead to.

Who may do what:

* any member files a request for their own organisation (perhaps for one role of it);
* the privacy board approves (with conditions, for as long as asked or less) or rejects
  with a reason, but never a request of a board member's own organisation;
* the requester withdraws a request still pending;
* the CDO revokes a grant with a reason, which stops access at once;
* the board and the CDO see every request, decision and grant; other members see their
  own organisation's.

Every change is written in one transaction with its audit entry. Grants reach the policy
decision point through ``GrantService.grants_for``, which the enforcement point calls on
every read: it answers from memory and checks one revision number, bumped in the same
transaction as every grant change, so a new or revoked grant counts from the next read,
in this process or any other.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from urbanhub.governance.audit import AuditEvent
from urbanhub.governance.revisions import RevisionedCache
from urbanhub.model.caller import Caller
from urbanhub.model.errors import BadRequestData, Conflict, ResourceNotFound
from urbanhub.model.governance import Action, Dataset, Grant, Role, format_duration
from urbanhub.model.identity import Scope, authorise
from urbanhub.model.requests import (
    MAX_REASON,
    Conditions,
    DataUseRequest,
    GrantRecord,
    GrantStatus,
    RequestDecision,
    RequestStatus,
    approval_grants,
    check_may_decide,
    check_may_withdraw,
    check_requested_attributes,
    required_text,
    sees_everything,
)
from urbanhub.ngsild.timeutil import format_datetime, utcnow
from urbanhub.store import grants as store
from urbanhub.store.audit import AuditLog
from urbanhub.store.catalog import get_dataset, get_purpose

BOARD = frozenset({Role.PRIVACY_BOARD})
CDO = frozenset({Role.CDO})
_REQUEST_ID = re.compile(r"req-[0-9a-f]{16}")
_GRANT_ID = re.compile(r"grant-[0-9a-f]{16}")


def new_request_id() -> str:
    return f"req-{secrets.token_hex(8)}"


def new_grant_id() -> str:
    return f"grant-{secrets.token_hex(8)}"


def is_request_id(text: str) -> bool:
    """Whether ``text`` could name a request: anything else is not even looked up."""
    return _REQUEST_ID.fullmatch(text) is not None


def is_grant_id(text: str) -> bool:
    return _GRANT_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class RequestView:
    """A request with the board's decision on it, once there is one."""

    request: DataUseRequest
    decision: RequestDecision | None = None


def _conditions_details(conditions: Conditions) -> dict[str, Any]:
    return {"pseudonymised": conditions.pseudonymised,
            "minGroupSize": conditions.min_group_size, "dpEpsilon": conditions.dp_epsilon}


class DataUseRequests:
    """Filing, deciding and withdrawing data-use requests; listing requests and decisions."""

    def __init__(self, engine: Engine, audit: AuditLog, grants: GrantService,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.audit = audit
        self.grants = grants
        self.clock = clock

    # --- changes ------------------------------------------------------------------------

    def file(self, caller: Caller, *, datasets: tuple[str, ...], action: Action, purpose: str,
             justification: str, duration: timedelta, attributes: frozenset[str] = frozenset(),
             grantee_role: Role | None = None) -> RequestView:
        """File a request for the caller's organisation; 400 naming any unknown dataset,
        purpose or attribute."""
        authorise(caller, "Filing a data-use request", None)
        if caller.organisation is None:
            raise BadRequestData(f"{caller.subject} belongs to no organisation, and grants go "
                                 "to organisations.")
        request = DataUseRequest(
            id=new_request_id(), requester=caller.subject,
            organisation=caller.organisation, datasets=datasets, action=action,
            purpose=purpose, justification=justification, duration=duration,
            filed_at=self.clock(), attributes=attributes, grantee_role=grantee_role)
        with self._changing() as (conn, events):
            if get_purpose(conn, purpose) is None:
                raise BadRequestData(f"Unknown purpose {purpose}: data is only used for "
                                     "registered purposes (see /catalog/v1/purposes).")
            check_requested_attributes(attributes, self._datasets(conn, datasets).values())
            store.insert_request(conn, request)
            events.append(AuditEvent(caller.subject, "governance.request.file",
                                     f"request:{request.id}", {
                                         "organisation": request.organisation,
                                         "granteeRole": grantee_role, "datasets": list(datasets),
                                         "attributes": sorted(attributes),
                                         "action": request.action.value, "purpose": purpose,
                                         "duration": format_duration(duration),
                                         "justification": request.justification}))
        return RequestView(request)

    def approve(self, caller: Caller, request_id: str, conditions: Conditions = Conditions(),
                duration: timedelta | None = None, note: str | None = None) -> RequestView:
        """Approve a pending request: its grants start now and last ``duration`` (at most,
        and by default, what was asked for)."""
        authorise(caller, "Approving a data-use request", Scope.GOVERN, BOARD)
        with self._changing() as (conn, events):
            request = self._request(conn, request_id)
            check_may_decide(caller, request, "approved")
            now = self.clock()
            granted = duration if duration is not None else request.duration
            created = approval_grants(request, self._datasets(conn, request.datasets),
                                      conditions, granted, now, new_grant_id)
            decision = RequestDecision(request.id, RequestStatus.APPROVED, caller.subject, now,
                                       note, conditions, granted,
                                       tuple(sorted(g.id for g in created)))
            store.insert_decision(conn, decision)
            store.close_request(conn, request.id, RequestStatus.APPROVED, now)
            store.insert_grants(conn, request.id, created)
            store.bump_grants_revision(conn)
            events.append(AuditEvent(caller.subject, "governance.request.approve",
                                     f"request:{request.id}", {
                                         "conditions": _conditions_details(conditions),
                                         "duration": format_duration(granted),
                                         "validUntil": format_datetime(now + granted),
                                         "grants": {g.id: g.dataset for g in created},
                                         "note": decision.reason}))
        self.grants.changed()
        return RequestView(replace(request, status=RequestStatus.APPROVED, closed_at=now),
                           decision)

    def reject(self, caller: Caller, request_id: str, reason: str) -> RequestView:
        """Reject a pending request; the reason is required and shown to the requester."""
        authorise(caller, "Rejecting a data-use request", Scope.GOVERN, BOARD)
        with self._changing() as (conn, events):
            request = self._request(conn, request_id)
            check_may_decide(caller, request, "rejected")
            now = self.clock()
            decision = RequestDecision(request.id, RequestStatus.REJECTED, caller.subject, now,
                                       reason)
            store.insert_decision(conn, decision)
            store.close_request(conn, request.id, RequestStatus.REJECTED, now)
            events.append(AuditEvent(caller.subject, "governance.request.reject",
                                     f"request:{request.id}", {"reason": decision.reason}))
        return RequestView(replace(request, status=RequestStatus.REJECTED, closed_at=now),
                           decision)

    def withdraw(self, caller: Caller, request_id: str) -> RequestView:
        """The requester takes back a request the board has not decided yet."""
        authorise(caller, "Withdrawing a data-use request", None)
        with self._changing() as (conn, events):
            request = self._visible(conn, caller, request_id)
            check_may_withdraw(caller, request)
            now = self.clock()
            store.close_request(conn, request.id, RequestStatus.WITHDRAWN, now)
            events.append(AuditEvent(caller.subject, "governance.request.withdraw",
                                     f"request:{request.id}", {}))
        return RequestView(replace(request, status=RequestStatus.WITHDRAWN, closed_at=now))

    # --- reads --------------------------------------------------------------------------

    def requests(self, caller: Caller, status: RequestStatus | None = None, *,
                 limit: int = 100, offset: int = 0) -> list[RequestView]:
        """Requests newest first: the caller's organisation's, or all for board and CDO."""
        authorise(caller, "Listing data-use requests", Scope.READ)
        with self.engine.connect() as conn:
            found = store.list_requests(conn, organisation=_scope(caller), status=status,
                                        limit=limit, offset=offset)
            decided = {d.request_id: d for d in store.decisions(
                conn, [r.id for r in found if r.status in (RequestStatus.APPROVED,
                                                           RequestStatus.REJECTED)])}
        return [RequestView(r, decided.get(r.id)) for r in found]

    def request(self, caller: Caller, request_id: str) -> RequestView:
        authorise(caller, "Reading a data-use request", Scope.READ)
        with self.engine.connect() as conn:
            request = self._visible(conn, caller, request_id)
            decided = store.decisions(conn, [request_id])
        return RequestView(request, decided[0] if decided else None)

    def decisions(self, caller: Caller, *, limit: int = 100,
                  offset: int = 0) -> list[RequestDecision]:
        """The board's decisions newest first, on the caller's organisation's requests or,
        for board and CDO, on all."""
        authorise(caller, "Listing decisions on data-use requests", Scope.READ)
        with self.engine.connect() as conn:
            return store.decisions(conn, organisation=_scope(caller), limit=limit,
                                   offset=offset)

    # --- internals ----------------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[tuple[Connection, list[AuditEvent]]]:
        """A write transaction whose audit events are appended before it commits."""
        events: list[AuditEvent] = []
        with self.audit.transaction() as conn:
            yield conn, events
            self.audit.append(events, conn)

    @staticmethod
    def _datasets(conn: Connection, dataset_ids: tuple[str, ...]) -> dict[str, Dataset]:
        found = {i: record.dataset for i in dataset_ids
                 if (record := get_dataset(conn, i)) is not None}
        unknown = [i for i in dataset_ids if i not in found]
        if unknown:
            raise BadRequestData(f"Unknown datasets: {', '.join(unknown)}; requests name "
                                 "datasets of the catalog (see /catalog/v1/datasets).")
        return found

    @staticmethod
    def _request(conn: Connection, request_id: str) -> DataUseRequest:
        request = store.get_request(conn, request_id) if is_request_id(request_id) else None
        if request is None:
            raise ResourceNotFound(f"No data-use request {request_id}.")
        return request

    @staticmethod
    def _visible(conn: Connection, caller: Caller, request_id: str) -> DataUseRequest:
        """The request, if the caller may see it (one answer for hidden and missing)."""
        request = store.get_request(conn, request_id) if is_request_id(request_id) else None
        if request is None or not (sees_everything(caller)
                                   or request.organisation == caller.organisation):
            raise ResourceNotFound(f"No data-use request {request_id} visible to you.")
        return request


def _scope(caller: Caller) -> str | None:
    """The organisation whose records the caller sees; None for all of them."""
    return None if sees_everything(caller) else caller.organisation or ""


def _grants_by_organisation(conn: Connection, revision: int
                             ) -> dict[str | None, tuple[Grant, ...]]:
    """The unrevoked grants by grantee organisation (None: any)."""
    by_organisation: dict[str | None, list[Grant]] = {}
    for grant in store.unrevoked_grants(conn):
        by_organisation.setdefault(grant.grantee_organisation, []).append(grant)
    return {k: tuple(v) for k, v in by_organisation.items()}


class GrantService:
    """The grants register: what the enforcement point asks on every read, what people list,
    and revocation."""

    def __init__(self, engine: Engine, audit: AuditLog,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.audit = audit
        self.clock = clock
        self._index = RevisionedCache(engine.connect, store.grants_revision,
                                      _grants_by_organisation)

    def grants_for(self, caller: Caller) -> list[Grant]:
        """The unrevoked grants whose grantee is the caller's organisation and/or one of its
        roles, whatever their validity: the policy decision point checks that against the
        time of the read, so an expired grant stops covering with no job to run.

        Costs nothing but a look-up in a per-process index, which follows the grants'
        revision (see ``governance.revisions``): a revocation applies at once in this process
        and within a second in every other.
        """
        index = self._index.get()
        return [g for organisation in dict.fromkeys((caller.organisation, None))
                for g in index.get(organisation, ())
                if g.grantee_role is None or g.grantee_role.value in caller.roles]

    def changed(self) -> None:
        """Grants were issued or revoked through this process: reads see it at once."""
        self._index.changed()

    def grants(self, caller: Caller, status: GrantStatus | None = None, *, limit: int = 100,
               offset: int = 0) -> list[GrantRecord]:
        """Grants newest first: the caller's organisation's, or all for board and CDO;
        ``status`` (active, expired, revoked) as of now."""
        authorise(caller, "Listing grants", Scope.READ)
        with self.engine.connect() as conn:
            return store.list_grants(conn, organisation=_scope(caller), status=status,
                                     now=self.clock(), limit=limit, offset=offset)

    def grant(self, caller: Caller, grant_id: str) -> GrantRecord:
        authorise(caller, "Reading a grant", Scope.READ)
        with self.engine.connect() as conn:
            return self._visible(conn, caller, grant_id)

    def revoke(self, caller: Caller, grant_id: str, reason: str) -> GrantRecord:
        """The CDO ends a grant at once, saying why; revoking it again is a conflict."""
        authorise(caller, "Revoking a grant", Scope.GOVERN, CDO)
        reason = required_text(reason, "The reason for a revocation", MAX_REASON)
        with self.audit.transaction() as conn:
            record = self._visible(conn, caller, grant_id)
            if record.revoked_at is not None:
                raise Conflict(f"Grant {grant_id} was already revoked at "
                               f"{format_datetime(record.revoked_at)} by {record.revoked_by}.")
            now = self.clock()
            store.revoke_grant(conn, grant_id, caller.subject, reason, now)
            store.bump_grants_revision(conn)
            self.audit.append([AuditEvent(caller.subject, "governance.grant.revoke",
                                          f"grant:{grant_id}", {
                                              "reason": reason, "request": record.request_id,
                                              "dataset": record.grant.dataset})], conn)
        self.changed()
        return replace(record, revoked_at=now, revoked_by=caller.subject,
                       revocation_reason=reason)

    @staticmethod
    def _visible(conn: Connection, caller: Caller, grant_id: str) -> GrantRecord:
        record = store.get_grant(conn, grant_id) if is_grant_id(grant_id) else None
        if record is None or not (sees_everything(caller) or record.grant.grantee_organisation
                                  == caller.organisation):
            raise ResourceNotFound(f"No grant {grant_id} visible to you.")
        return record
