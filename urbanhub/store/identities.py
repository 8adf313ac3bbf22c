"""Repository for organisations, members (with their roles) and API keys.

Writers call these inside the audit trail's transaction (``AuditLog.transaction``), which
serialises them, so "check, then insert" cannot race another identity change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, delete, insert, select, update
from sqlalchemy.engine import Row

from urbanhub.model.governance import OrganisationKind, Role
from urbanhub.model.identity import ApiKey, Member, Organisation, Scope
from urbanhub.store.tables import api_keys, member_roles, members, organisations


def _organisation(row: Row[Any]) -> Organisation:
    return Organisation(row.id, row.name, OrganisationKind(row.kind))


def insert_organisation(conn: Connection, organisation: Organisation, at: datetime) -> None:
    conn.execute(insert(organisations).values(id=organisation.id, name=organisation.name,
                                              kind=organisation.kind.value, created_at=at))


def get_organisation(conn: Connection, organisation_id: str) -> Organisation | None:
    row = conn.execute(select(organisations).where(organisations.c.id == organisation_id)).first()
    return None if row is None else _organisation(row)


def list_organisations(conn: Connection) -> list[Organisation]:
    return [_organisation(row)
            for row in conn.execute(select(organisations).order_by(organisations.c.id))]


def _members(conn: Connection, where: ColumnElement[bool] | None = None) -> list[Member]:
    query = select(members).order_by(members.c.subject)
    if where is not None:
        query = query.where(where)
    rows = conn.execute(query).all()
    roles: dict[str, set[Role]] = defaultdict(set)
    if rows:
        subjects = [row.subject for row in rows]
        for subject, role in conn.execute(select(member_roles.c.subject, member_roles.c.role)
                                          .where(member_roles.c.subject.in_(subjects))):
            roles[subject].add(Role(role))
    return [Member(row.subject, row.organisation_id, frozenset(roles[row.subject]),
                   row.oidc_issuer, row.oidc_subject) for row in rows]


def get_member(conn: Connection, subject: str) -> Member | None:
    found = _members(conn, members.c.subject == subject)
    return found[0] if found else None


def member_by_oidc(conn: Connection, issuer: str, subject: str) -> Member | None:
    """The member linked to an identity-provider account, if any."""
    found = _members(conn, (members.c.oidc_issuer == issuer) & (members.c.oidc_subject == subject))
    return found[0] if found else None


def list_members(conn: Connection, organisation_id: str | None = None) -> list[Member]:
    return _members(conn, None if organisation_id is None
                    else members.c.organisation_id == organisation_id)


def subjects_with_role(conn: Connection, role: Role) -> list[str]:
    return list(conn.scalars(select(member_roles.c.subject).where(member_roles.c.role == role.value)
                             .order_by(member_roles.c.subject)))


def insert_member(conn: Connection, member: Member, at: datetime) -> None:
    conn.execute(insert(members).values(
        subject=member.subject, organisation_id=member.organisation,
        oidc_issuer=member.oidc_issuer, oidc_subject=member.oidc_subject, created_at=at))
    _insert_roles(conn, member.subject, member.roles)


def update_member(conn: Connection, member: Member) -> None:
    """Store a member's roles and OIDC identity (its subject and organisation are fixed)."""
    conn.execute(update(members).where(members.c.subject == member.subject).values(
        oidc_issuer=member.oidc_issuer, oidc_subject=member.oidc_subject))
    conn.execute(delete(member_roles).where(member_roles.c.subject == member.subject))
    _insert_roles(conn, member.subject, member.roles)


def _insert_roles(conn: Connection, subject: str, roles: Iterable[Role]) -> None:
    conn.execute(insert(member_roles), [{"subject": subject, "role": role.value}
                                        for role in sorted(roles)])


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(row.key_id, row.subject, frozenset(Scope(s) for s in row.scopes.split()),
                  row.created_at, row.expires_at, row.revoked_at, row.label)


def insert_api_key(conn: Connection, key: ApiKey, secret_hash: str) -> None:
    conn.execute(insert(api_keys).values(
        key_id=key.key_id, subject=key.subject, secret_hash=secret_hash,
        scopes=" ".join(sorted(key.scopes)), label=key.label, created_at=key.created_at,
        expires_at=key.expires_at, revoked_at=key.revoked_at))


def api_key_with_hash(conn: Connection, key_id: str) -> tuple[ApiKey, str] | None:
    """A key and the hash of its secret: what authentication compares against."""
    row = conn.execute(select(api_keys).where(api_keys.c.key_id == key_id)).first()
    return None if row is None else (_api_key(row), row.secret_hash)


def get_api_key(conn: Connection, key_id: str) -> ApiKey | None:
    found = api_key_with_hash(conn, key_id)
    return None if found is None else found[0]


def list_api_keys(conn: Connection, subject: str | None = None) -> list[ApiKey]:
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
    if subject is not None:
        query = query.where(api_keys.c.subject == subject)
    return [_api_key(row) for row in conn.execute(query)]


def revoke_api_key(conn: Connection, key_id: str, at: datetime) -> None:
    conn.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=at))
