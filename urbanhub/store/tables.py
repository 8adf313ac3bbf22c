"""The relational schema. Alembic migrations in ``migrations/`` create and upgrade it.

Current state and history are separate on purpose: "latest value per sensor" is a primary
key lookup in ``attributes`` rather than a scan of ``history`` (see DESIGN.md, measured
facts), and ``rollup_hourly`` keeps city-wide hourly aggregates sub-second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from urbanhub.model.catalog import UNCATALOGUED_ID


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; ``timestamptz`` on PostgreSQL, sortable text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

entities = Table(
    "entities", metadata,
    Column("id", Text, primary_key=True),
    Column("types", Text, nullable=False),  # JSON list of expanded type IRIs
    Column("scope", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
    # Bounding box of the ``location`` GeoProperty: a cheap index-backed prefilter for
    # geo-queries on both backends (PostgreSQL adds a PostGIS column when available).
    Column("min_lon", Float), Column("min_lat", Float),
    Column("max_lon", Float), Column("max_lat", Float),
    # The catalog dataset the entity belongs to (``datasets.id``), set by the assignment
    # rules; not the NGSI-LD datasetId of ``attributes.dataset_id``. The default catches
    # rows written outside the hub: they land in the internal "uncatalogued" dataset.
    Column("dataset_id", Text, nullable=False, server_default=UNCATALOGUED_ID),
)
Index("ix_entities_bbox", entities.c.min_lon, entities.c.min_lat)
Index("ix_entities_dataset_id", entities.c.dataset_id)

entity_types = Table(
    "entity_types", metadata,
    Column("entity_id", Text, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
    Column("type", Text, nullable=False),
    PrimaryKeyConstraint("entity_id", "type"),
)
Index("ix_entity_types_type", entity_types.c.type, entity_types.c.entity_id)

attributes = Table(
    "attributes", metadata,
    Column("entity_id", Text, ForeignKey("entities.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),  # expanded IRI
    Column("dataset_id", Text, nullable=False),  # "" for the default instance
    Column("instance", Text, nullable=False),  # JSON of the normalized instance
    Column("observed_at", UTCDateTime),
    Column("value_num", Float),
    PrimaryKeyConstraint("entity_id", "name", "dataset_id"),
)
Index("ix_attributes_name", attributes.c.name)

history = Table(
    "history", metadata,
    Column("entity_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("dataset_id", Text, nullable=False),
    Column("observed_at", UTCDateTime, nullable=False),  # observedAt, else modifiedAt
    Column("value_num", Float),
    Column("instance", Text, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("entity_id", "name", "dataset_id", "observed_at"),
)

# An entity deleted while history of it remains: which catalog dataset that history
# belongs to (its retention, who may read it) and the types to show it with. Removed when
# an entity of the same id is created again, and by disposal once no history is left.
entity_tombstones = Table(
    "entity_tombstones", metadata,
    Column("entity_id", Text, primary_key=True),
    Column("dataset_id", Text, nullable=False),
    Column("types", Text, nullable=False),  # JSON list of expanded type IRIs
    Column("deleted_at", UTCDateTime, nullable=False),
)
Index("ix_entity_tombstones_dataset", entity_tombstones.c.dataset_id)

rollup_hourly = Table(
    "rollup_hourly", metadata,
    Column("entity_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("dataset_id", Text, nullable=False),
    Column("hour", UTCDateTime, nullable=False),
    Column("n", Integer, nullable=False),
    Column("total", Float, nullable=False),
    Column("total_sq", Float, nullable=False),
    Column("minimum", Float, nullable=False),
    Column("maximum", Float, nullable=False),
    PrimaryKeyConstraint("entity_id", "name", "dataset_id", "hour"),
)
Index("ix_rollup_hourly_hour", rollup_hourly.c.hour)

# PostgreSQL only (migration 0012): the hours of complete past days, moved here from
# rollup_hourly by compaction (urbanhub.store.rollups). ``hours`` holds each hour's offset
# from ``day`` (0-23, ascending); the other arrays hold that hour's figures, in step.
rollup_daily = Table(
    "rollup_daily", metadata,
    Column("entity_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("dataset_id", Text, nullable=False),
    Column("day", UTCDateTime, nullable=False),
    Column("hours", postgresql.ARRAY(SmallInteger), nullable=False),
    Column("n", postgresql.ARRAY(Integer), nullable=False),
    Column("total", postgresql.ARRAY(Float), nullable=False),
    Column("total_sq", postgresql.ARRAY(Float), nullable=False),
    Column("minimum", postgresql.ARRAY(Float), nullable=False),
    Column("maximum", postgresql.ARRAY(Float), nullable=False),
    PrimaryKeyConstraint("entity_id", "name", "day", "dataset_id"),
)

# Devices (urbanhub.ingest.devices): the mapping a device writes with, and its governance.
# ``risk_tier`` is the tier in force (the override's, else derived from the attributes'
# categories), kept as a column so lists filter on it. A device key is kept as the SHA-256
# of its secret (``credential_hash``, checked on HTTP) and, for MQTT devices, as the
# Mosquitto PBKDF2-SHA512 hash of the whole key (``broker_password_hash``, written to the
# broker's password file); never the key itself.
devices = Table(
    "devices", metadata,
    Column("id", Text, primary_key=True),
    Column("entity_id", Text, nullable=False, unique=True),
    Column("entity_type", Text, nullable=False),  # expanded IRI
    Column("attributes", Text, nullable=False),  # JSON: measurement key -> mapping, category
    Column("transport", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
    Column("owner", Text),  # organisation id; NULL only for devices older than 0007
    Column("manufacturer", Text),
    Column("model", Text),
    Column("location", Text),  # JSON: GeoJSON geometry
    Column("status", Text, nullable=False),
    Column("risk_tier", Text, nullable=False),
    Column("tier_override", Text),
    Column("tier_justification", Text),
    Column("tier_overridden_by", Text),
    Column("tier_overridden_at", UTCDateTime),
    Column("approved_by", Text),
    Column("approved_at", UTCDateTime),
    Column("credential_id", Text),  # the key id of the device key
    Column("credential_hash", Text),
    Column("broker_password_hash", Text),
    Column("credential_issued_at", UTCDateTime),
)
Index("ix_devices_owner", devices.c.owner)
Index("ix_devices_credential_id", devices.c.credential_id, unique=True)

# One row: bumped by every device change, so each process can tell with one primary-key
# read whether the devices it holds in memory (status included) are still current.
device_revision = Table(
    "device_revision", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("source", Text, nullable=False),  # "mqtt", "http", "file"
    Column("topic", Text),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)
Index("ix_dead_letters_received_at", dead_letters.c.received_at)

# The audit trail (urbanhub.governance.audit): one row per hash-chained entry. ``seq`` is the
# primary key (the last defence against a forked chain) and the rowid on SQLite; ``details``
# is kept as the exact canonical JSON text that was hashed (JSONB would renormalise it).
audit_log = Table(
    "audit_log", metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True,
           autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text),
    Column("details", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
)
Index("ix_audit_log_target", audit_log.c.target)
Index("ix_audit_log_actor", audit_log.c.actor)

# Identities (urbanhub.governance.identity): organisations, their members, the roles the city
# gave each member (a table of their own, so "who holds role R" is an index lookup) and API
# keys. A key row keeps the SHA-256 of its secret, never the secret.
organisations = Table(
    "organisations", metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

members = Table(
    "members", metadata,
    Column("subject", Text, primary_key=True),
    Column("organisation_id", Text, ForeignKey("organisations.id"), nullable=False),
    Column("oidc_issuer", Text),
    Column("oidc_subject", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_members_oidc"),
)
Index("ix_members_organisation_id", members.c.organisation_id)

member_roles = Table(
    "member_roles", metadata,
    Column("subject", Text, ForeignKey("members.subject", ondelete="CASCADE"), nullable=False),
    Column("role", Text, nullable=False),
    PrimaryKeyConstraint("subject", "role"),
)
Index("ix_member_roles_role", member_roles.c.role)

api_keys = Table(
    "api_keys", metadata,
    Column("key_id", Text, primary_key=True),
    Column("subject", Text, ForeignKey("members.subject"), nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated, as OAuth 2.0 writes scopes
    Column("label", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)
Index("ix_api_keys_subject", api_keys.c.subject)
# The data catalog (urbanhub.governance.catalog). Scalars the catalog filters or shows in
# lists are columns; lists and maps are JSON, always read and written whole.
purposes = Table(
    "purposes", metadata,
    Column("id", Text, primary_key=True),
    Column("description", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
)

datasets = Table(
    "datasets", metadata,
    Column("id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("steward", Text, nullable=False),
    Column("classification", Text, nullable=False),
    Column("licence", Text, nullable=False),
    Column("theme", Text),
    Column("legal_basis", Text, nullable=False),
    Column("retention", Text, nullable=False),  # ISO 8601 duration
    Column("update_frequency", Text),  # ISO 8601 duration
    Column("purposes", JSON, nullable=False),  # purpose ids
    Column("entity_types", JSON, nullable=False),  # expanded type IRIs
    Column("attribute_classes", JSON, nullable=False),  # attribute IRI -> classification
    Column("identifiers", JSON, nullable=False),  # attribute IRIs
    Column("subject_attribute", Text),  # attribute IRI holding the data subject's id
    Column("spatial_coverage", JSON),  # GeoJSON Polygon or MultiPolygon
    Column("rules", JSON, nullable=False),  # [{entity_type, id_pattern, priority}]
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
)
Index("ix_datasets_owner", datasets.c.owner)

# One row: bumped whenever the assignment rules change, so every process can tell, with
# one primary-key read, whether its compiled rules are still current.
catalog_revision = Table(
    "catalog_revision", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

# Data quality (urbanhub.governance.quality): each dataset's rules, read and written whole,
# and flags kept only for readings that failed a rule. ``quality_flags`` is keyed like
# ``history`` (``dataset_id`` is the NGSI-LD datasetId) and holds a QualityFlag bit mask, so
# the report counts failures per rule with integer arithmetic.
quality_rules = Table(
    "quality_rules", metadata,
    Column("dataset_id", Text, primary_key=True),  # catalog dataset (``datasets.id``)
    Column("rules", JSON, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
)

quality_flags = Table(
    "quality_flags", metadata,
    Column("entity_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("dataset_id", Text, nullable=False),
    Column("observed_at", UTCDateTime, nullable=False),
    Column("flags", Integer, nullable=False),
    PrimaryKeyConstraint("entity_id", "name", "dataset_id", "observed_at"),
)

# Data-use requests (urbanhub.governance.requests): a request, the privacy board's decision
# on it (at most one), and the grants an approval creates, one per dataset. Grants are
# never deleted: a revocation is recorded on the row, so the register shows what was
# allowed when.
data_use_requests = Table(
    "data_use_requests", metadata,
    Column("id", Text, primary_key=True),
    Column("requester", Text, nullable=False),  # member subject
    Column("organisation", Text, nullable=False),  # the grantee organisation
    Column("grantee_role", Text),  # the grant is further limited to this role
    Column("datasets", JSON, nullable=False),  # dataset ids
    Column("attributes", JSON, nullable=False),  # stricter attribute IRIs asked for
    Column("action", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("justification", Text, nullable=False),
    Column("duration", Text, nullable=False),  # ISO 8601 duration asked for
    Column("status", Text, nullable=False),
    Column("filed_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime),  # decided or withdrawn
)
Index("ix_data_use_requests_organisation", data_use_requests.c.organisation)
Index("ix_data_use_requests_status", data_use_requests.c.status)

data_use_decisions = Table(
    "data_use_decisions", metadata,
    Column("request_id", Text, ForeignKey("data_use_requests.id"), primary_key=True),
    Column("outcome", Text, nullable=False),  # approved or rejected
    Column("decided_by", Text, nullable=False),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("reason", Text),  # required for a rejection, a note for an approval
    Column("pseudonymised", Boolean),
    Column("min_group_size", Integer),
    Column("dp_epsilon", Float),
    Column("duration", Text),  # ISO 8601 duration granted
)

grants = Table(
    "grants", metadata,
    Column("id", Text, primary_key=True),
    Column("request_id", Text, ForeignKey("data_use_requests.id"), nullable=False),
    Column("dataset", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("purpose", Text, nullable=False),
    Column("grantee_organisation", Text),
    Column("grantee_role", Text),
    Column("attributes", JSON, nullable=False),  # stricter attribute IRIs covered
    Column("pseudonymised", Boolean, nullable=False),
    Column("min_group_size", Integer),
    Column("dp_epsilon", Float),
    Column("valid_from", UTCDateTime, nullable=False),
    Column("valid_until", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("revoked_by", Text),
    Column("revocation_reason", Text),
)
Index("ix_grants_request_id", grants.c.request_id)
Index("ix_grants_grantee_organisation", grants.c.grantee_organisation)

# One row, bumped with every grant change: each process's cache of grants is current
# exactly when its revision equals this one (see urbanhub.governance.requests.GrantService).
grant_revision = Table(
    "grant_revision", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

# Consent (urbanhub.governance.consent): one row per consent given by a data subject for a
# purpose. A withdrawal sets withdrawn_at (and who recorded it, on what evidence) on the
# rows it ends; nothing is deleted, so the history of a subject's consent stays readable.
consents = Table(
    "consents", metadata,
    Column("id", Text, primary_key=True),
    Column("subject", Text, nullable=False),  # the data subject's pseudonymous id
    Column("purpose", Text, nullable=False),
    Column("granted_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("source", Text, nullable=False),  # how the consent was given (evidence)
    Column("recorded_by", Text, nullable=False),
    Column("withdrawn_at", UTCDateTime),
    Column("withdrawal_source", Text),
    Column("withdrawn_by", Text),
)
Index("ix_consents_purpose_subject", consents.c.purpose, consents.c.subject)
Index("ix_consents_subject", consents.c.subject)
