"""Repository for data-use requests, the privacy board's decisions and the grants they create.

Writers call these inside the audit trail's transaction (``AuditLog.transaction``), which
serialises them: "read the status, then change it" cannot race another decision, and the
grant revision is bumped by one writer at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, insert, select, update
from sqlalchemy.engine import Row

from urbanhub.model.governance import Action, Grant, Role, format_duration
from urbanhub.model.requests import (
    Conditions,
    DataUseRequest,
    GrantRecord,
    GrantStatus,
    RequestDecision,
    RequestStatus,
    parse_access_duration,
)
from urbanhub.store.tables import data_use_decisions, data_use_requests, grant_revision, grants

_REVISION_ROW = 1


# --- the grant revision -------------------------------------------------------------------

def grants_revision(conn: Connection) -> int:
    """The revision of the grants; 0 before any grant was ever created."""
    found = conn.scalar(select(grant_revision.c.revision).where(
        grant_revision.c.id == _REVISION_ROW))
    return int(found or 0)


def bump_grants_revision(conn: Connection) -> None:
    """Tell every process its cached grants are stale (inside the audit transaction)."""
    bumped = conn.execute(update(grant_revision).where(
        grant_revision.c.id == _REVISION_ROW).values(revision=grant_revision.c.revision + 1))
    if bumped.rowcount == 0:
        conn.execute(insert(grant_revision).values(id=_REVISION_ROW, revision=1))


# --- requests -----------------------------------------------------------------------------

def _request(row: Row[Any]) -> DataUseRequest:
    return DataUseRequest(
        id=row.id, requester=row.requester, organisation=row.organisation,
        datasets=tuple(row.datasets), action=Action(row.action), purpose=row.purpose,
        justification=row.justification, duration=parse_access_duration(row.duration),
        filed_at=row.filed_at, attributes=frozenset(row.attributes),
        grantee_role=Role(row.grantee_role) if row.grantee_role else None,
        status=RequestStatus(row.status), closed_at=row.closed_at)


def insert_request(conn: Connection, request: DataUseRequest) -> None:
    conn.execute(insert(data_use_requests).values(
        id=request.id, requester=request.requester, organisation=request.organisation,
        grantee_role=request.grantee_role.value if request.grantee_role else None,
        datasets=list(request.datasets), attributes=sorted(request.attributes),
        action=request.action.value, purpose=request.purpose,
        justification=request.justification,
        duration=format_duration(request.duration), status=request.status.value,
        filed_at=request.filed_at, closed_at=request.closed_at))


def get_request(conn: Connection, request_id: str) -> DataUseRequest | None:
    row = conn.execute(select(data_use_requests).where(
        data_use_requests.c.id == request_id)).first()
    return None if row is None else _request(row)


def list_requests(conn: Connection, *, organisation: str | None, status: RequestStatus | None,
                  limit: int, offset: int) -> list[DataUseRequest]:
    """Requests, newest first; of one organisation when given."""
    query = select(data_use_requests)
    if organisation is not None:
        query = query.where(data_use_requests.c.organisation == organisation)
    if status is not None:
        query = query.where(data_use_requests.c.status == status.value)
    query = query.order_by(data_use_requests.c.filed_at.desc(), data_use_requests.c.id)
    return [_request(row) for row in conn.execute(query.limit(limit).offset(offset))]


def close_request(conn: Connection, request_id: str, status: RequestStatus,
                  at: datetime) -> None:
    conn.execute(update(data_use_requests).where(data_use_requests.c.id == request_id)
                 .values(status=status.value, closed_at=at))


# --- decisions ----------------------------------------------------------------------------

def insert_decision(conn: Connection, decision: RequestDecision) -> None:
    conditions = decision.conditions
    conn.execute(insert(data_use_decisions).values(
        request_id=decision.request_id, outcome=decision.outcome.value,
        decided_by=decision.decided_by, decided_at=decision.decided_at, reason=decision.reason,
        pseudonymised=conditions.pseudonymised if conditions else None,
        min_group_size=conditions.min_group_size if conditions else None,
        dp_epsilon=conditions.dp_epsilon if conditions else None,
        duration=format_duration(decision.duration) if decision.duration else None))


def decisions(conn: Connection, request_ids: Sequence[str] | None = None, *,
              organisation: str | None = None, limit: int | None = None,
              offset: int = 0) -> list[RequestDecision]:
    """Decisions, newest first, with the ids of the grants each approval created.

    Of the requests named (any number), or of one organisation's requests, or all.
    """
    query = select(data_use_decisions)
    if request_ids is not None:
        query = query.where(data_use_decisions.c.request_id.in_(list(request_ids)))
    if organisation is not None:
        query = query.where(data_use_decisions.c.request_id.in_(
            select(data_use_requests.c.id).where(
                data_use_requests.c.organisation == organisation)))
    query = query.order_by(data_use_decisions.c.decided_at.desc(),
                           data_use_decisions.c.request_id).offset(offset)
    rows = conn.execute(query if limit is None else query.limit(limit)).all()
    grant_ids: dict[str, list[str]] = {}
    if rows:
        for request_id, grant_id in conn.execute(
                select(grants.c.request_id, grants.c.id)
                .where(grants.c.request_id.in_([row.request_id for row in rows]))
                .order_by(grants.c.request_id, grants.c.id)):
            grant_ids.setdefault(request_id, []).append(grant_id)
    return [_decision(row, tuple(grant_ids.get(row.request_id, ()))) for row in rows]


def _decision(row: Row[Any], grant_ids: tuple[str, ...]) -> RequestDecision:
    approved = RequestStatus(row.outcome) is RequestStatus.APPROVED
    return RequestDecision(
        request_id=row.request_id, outcome=RequestStatus(row.outcome),
        decided_by=row.decided_by, decided_at=row.decided_at, reason=row.reason,
        conditions=Conditions(bool(row.pseudonymised), row.min_group_size, row.dp_epsilon)
        if approved else None,
        duration=parse_access_duration(row.duration) if row.duration else None,
        grant_ids=grant_ids)


# --- grants -------------------------------------------------------------------------------

def _grant(row: Row[Any]) -> GrantRecord:
    grant = Grant(
        id=row.id, action=Action(row.action), dataset=row.dataset, purpose=row.purpose,
        valid_from=row.valid_from, valid_until=row.valid_until,
        grantee_organisation=row.grantee_organisation,
        grantee_role=Role(row.grantee_role) if row.grantee_role else None,
        attributes=frozenset(row.attributes), pseudonymised=bool(row.pseudonymised),
        min_group_size=row.min_group_size, dp_epsilon=row.dp_epsilon)
    return GrantRecord(grant, row.request_id, row.revoked_at, row.revoked_by,
                       row.revocation_reason)


def insert_grants(conn: Connection, request_id: str, created: Sequence[Grant]) -> None:
    conn.execute(insert(grants), [{
        "id": g.id, "request_id": request_id, "dataset": g.dataset, "action": g.action.value,
        "purpose": g.purpose, "grantee_organisation": g.grantee_organisation,
        "grantee_role": g.grantee_role.value if g.grantee_role else None,
        "attributes": sorted(g.attributes), "pseudonymised": g.pseudonymised,
        "min_group_size": g.min_group_size, "dp_epsilon": g.dp_epsilon,
        "valid_from": g.valid_from, "valid_until": g.valid_until} for g in created])


def get_grant(conn: Connection, grant_id: str) -> GrantRecord | None:
    row = conn.execute(select(grants).where(grants.c.id == grant_id)).first()
    return None if row is None else _grant(row)


def unrevoked_grants(conn: Connection) -> list[Grant]:
    """Every grant not revoked, expired ones included: what the enforcement point caches."""
    return [_grant(row).grant for row in conn.execute(
        select(grants).where(grants.c.revoked_at.is_(None)).order_by(grants.c.id))]


def list_grants(conn: Connection, *, organisation: str | None, status: GrantStatus | None,
                now: datetime, limit: int, offset: int) -> list[GrantRecord]:
    """Grants, newest first; of one grantee organisation when given; ``status`` at ``now``."""
    query = select(grants)
    if organisation is not None:
        query = query.where(grants.c.grantee_organisation == organisation)
    if status is not None:
        query = query.where(_status_clause(status, now))
    query = query.order_by(grants.c.valid_from.desc(), grants.c.id)
    return [_grant(row) for row in conn.execute(query.limit(limit).offset(offset))]


def _status_clause(status: GrantStatus, now: datetime) -> ColumnElement[bool]:
    if status is GrantStatus.REVOKED:
        return grants.c.revoked_at.is_not(None)
    unrevoked = grants.c.revoked_at.is_(None)
    if status is GrantStatus.EXPIRED:
        return unrevoked & (grants.c.valid_until <= now)
    return unrevoked & (grants.c.valid_until > now)


def revoke_grant(conn: Connection, grant_id: str, by: str, reason: str, at: datetime) -> None:
    conn.execute(update(grants).where(grants.c.id == grant_id).values(
        revoked_at=at, revoked_by=by, revocation_reason=reason))
