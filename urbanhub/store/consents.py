"""Repository for consent records, and the SQL that finds whose records a use may include.

``consenting_entities`` is what the enforcement point adds to every query on a dataset
whose legal basis is consent. It is a plain SELECT, compiled for whichever backend runs
it: the subject's id is read out of the stored attribute instance with ``json_extract`` on
SQLite and ``jsonb`` operators on PostgreSQL (``subject_value``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Text, case, func, insert, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from urbanhub.model.consent import Consent
from urbanhub.store.tables import attributes, consents


class subject_value(FunctionElement[str]):
    """The text of an attribute instance's ``value`` (Property) or ``object``
    (Relationship), from its JSON column; NULL when neither is a JSON string.

    Only strings name a subject, on both backends alike: without the type check
    PostgreSQL's ``->>`` would turn the number 123 into '123' where SQLite keeps a number.
    """

    type = Text()
    inherit_cache = True
    name = "subject_value"


@compiles(subject_value, "sqlite")
def _subject_value_sqlite(element: subject_value, compiler: SQLCompiler, **kw: Any) -> str:
    instance = compiler.process(element.clauses, **kw)
    return " ".join(
        ["CASE", *(f"WHEN json_type({instance}, '$.{key}') = 'text' "
                   f"THEN json_extract({instance}, '$.{key}')" for key in ("value", "object")),
         "END"])


@compiles(subject_value, "postgresql")
def _subject_value_postgresql(element: subject_value, compiler: SQLCompiler,
                              **kw: Any) -> str:
    instance = f"CAST({compiler.process(element.clauses, **kw)} AS jsonb)"
    return " ".join(
        ["CASE", *(f"WHEN jsonb_typeof({instance} -> '{key}') = 'string' "
                   f"THEN {instance} ->> '{key}'" for key in ("value", "object")),
         "END"])


def valid_consent(now: datetime) -> ColumnElement[bool]:
    """Consent rows in force at ``now``: given, not expired, not withdrawn."""
    return ((consents.c.granted_at <= now)
            & or_(consents.c.expires_at.is_(None), consents.c.expires_at > now)
            & or_(consents.c.withdrawn_at.is_(None), consents.c.withdrawn_at > now))


def consenting_entities(purpose: str, subject_attribute: str,
                        now: datetime) -> Select[tuple[str]]:
    """SELECT of the ids of entities whose subjects all consent to ``purpose`` at ``now``.

    An entity qualifies when it has the subject attribute (expanded IRI) and every instance
    of it (one per datasetId) names a subject with a valid consent. An entity without the
    attribute, or whose value is not a string, names no subject that could have consented
    and is left out: on consent-based data, whatever cannot be shown to be consented is
    excluded. Use it as ``entities.c.id.in_(consenting_entities(...))``.
    """
    consenting = select(consents.c.subject).where(consents.c.purpose == purpose,
                                                  valid_consent(now))
    consented = case((subject_value(attributes.c.instance).in_(consenting), 1), else_=0)
    return (select(attributes.c.entity_id).where(attributes.c.name == subject_attribute)
            .group_by(attributes.c.entity_id).having(func.min(consented) == 1))


def _consent(row: Row[Any]) -> Consent:
    return Consent(id=row.id, subject=row.subject, purpose=row.purpose,
                   granted_at=row.granted_at, source=row.source, recorded_by=row.recorded_by,
                   expires_at=row.expires_at, withdrawn_at=row.withdrawn_at,
                   withdrawal_source=row.withdrawal_source, withdrawn_by=row.withdrawn_by)


def insert_consent(conn: Connection, consent: Consent) -> None:
    conn.execute(insert(consents).values(
        id=consent.id, subject=consent.subject, purpose=consent.purpose,
        granted_at=consent.granted_at, expires_at=consent.expires_at, source=consent.source,
        recorded_by=consent.recorded_by))


def list_consents(conn: Connection, subject: str, purpose: str | None = None,
                  now: datetime | None = None) -> list[Consent]:
    """A subject's consents, newest first; for one purpose, and only those in force at
    ``now``, when given."""
    query = select(consents).where(consents.c.subject == subject)
    if purpose is not None:
        query = query.where(consents.c.purpose == purpose)
    if now is not None:
        query = query.where(valid_consent(now))
    return [_consent(row) for row in conn.execute(
        query.order_by(consents.c.granted_at.desc(), consents.c.id))]


def withdraw_consents(conn: Connection, ids: Sequence[str], at: datetime, by: str,
                      source: str) -> None:
    conn.execute(consents.update().where(consents.c.id.in_(list(ids))).values(
        withdrawn_at=at, withdrawn_by=by, withdrawal_source=source))
